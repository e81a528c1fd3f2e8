"""Draw a trained run: reconstructions, the latent space and the loss curves.

    python visualize.py                        # the run in runs/; writes its PNGs there
    python visualize.py --run-dir runs/seed3   # another run
    python visualize.py --show                 # also open the figures in windows

Writes three figures into the run directory and prints the path of each:
  reconstructions.png  clean / noisy / denoised test images, one of each class
  latent_pairs.png     the test set's codes, every pair of latent dimensions, coloured by class
  loss_curves.png      training and validation loss per epoch, the best epoch marked

Works without a display (over SSH, in CI): figures are drawn off screen unless --show is given.
"""

import argparse
import itertools
import math
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import torch

from dae import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from data import CLASS_NAMES, DataError, noisy_test_set

ROOT = Path(__file__).resolve().parent
CLASS_COLOURS = matplotlib.colormaps["tab10"].colors  # 10 distinct qualitative colours, one per class


def plot_reconstructions(clean, noisy, denoised, labels):
    """Three rows (clean, noisy, denoised) of the first test image of each class. Images are (N, 1, 28, 28)."""
    figure, axes = plt.subplots(3, len(CLASS_NAMES), figsize=(1.3 * len(CLASS_NAMES), 4.4))
    for column, class_name in enumerate(CLASS_NAMES):
        index = (labels == column).nonzero()[0].item()
        for row, images in enumerate((clean, noisy, denoised)):
            # A fixed 0-1 range: noise that leaves [0, 1] shows clipped, not rescaled into a different picture.
            axes[row, column].imshow(images[index, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[0, column].set_title(class_name, fontsize=9)
    for row, name in enumerate(("clean", "noisy", "denoised")):
        axes[row, 0].set_ylabel(name)
    figure.tight_layout()
    return figure


def plot_latent_pairs(codes, labels):
    """One scatter panel per pair (i, j), i < j, of the latent dimensions: d(d-1)/2 panels for codes (N, d)."""
    pairs = list(itertools.combinations(range(codes.shape[1]), 2))
    if not pairs:
        return None
    columns = min(len(pairs), 7)
    rows = math.ceil(len(pairs) / columns)
    panel_inches, legend_inches = 1.9, 0.7
    height = panel_inches * rows + legend_inches
    figure, axes = plt.subplots(rows, columns, figsize=(panel_inches * columns, height), squeeze=False)
    colours = torch.tensor(CLASS_COLOURS)[labels].numpy()  # (N, 3) RGB, one colour per point's class
    for axis, (i, j) in zip(axes.flat, pairs):
        axis.scatter(codes[:, i].numpy(), codes[:, j].numpy(), c=colours, s=1, alpha=0.4, linewidths=0, rasterized=True)
        axis.set_xlabel(f"z{i}", labelpad=1)
        axis.set_ylabel(f"z{j}", labelpad=1)
        axis.tick_params(labelsize=6)
    for axis in axes.flat[len(pairs):]:
        axis.remove()
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colour, label=name)
        for colour, name in zip(CLASS_COLOURS, CLASS_NAMES)
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(CLASS_NAMES), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, legend_inches / height, 1, 1))  # leave room at the bottom for the legend
    return figure


def plot_loss_curves(history: dict, best_epoch: int, stop_reason: str):
    """Training and validation L1 loss per epoch; the best epoch, and an early stop if there was one."""
    epochs = range(1, len(history["train_loss"]) + 1)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(epochs, history["train_loss"], label="training loss")
    axis.plot(epochs, history["val_loss"], label="validation loss")
    axis.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    axis.plot(best_epoch, history["val_loss"][best_epoch - 1], "o", color="black",
              label=f"best: epoch {best_epoch}, {history['val_loss'][best_epoch - 1]:.4f}")
    if stop_reason.startswith("early stopping"):
        axis.axvline(len(epochs), color="firebrick", linestyle=":", linewidth=1.5,
                     label=f"early stopping, epoch {len(epochs)}")
    axis.set_yscale("log")  # the first epochs fall fast; a log scale keeps the late ones readable
    axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    axis.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    axis.set_xlabel("epoch")
    axis.set_ylabel("L1 loss (mean absolute error)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Draw reconstructions, the latent space and the loss curves of a trained run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run-dir", default=str(ROOT / "runs"), help="the run to draw; figures are written there")
    parser.add_argument("--data-dir", default=str(ROOT / "data"), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--show", action="store_true", help="also open the figures in windows")
    args = parser.parse_args(argv)
    if not args.show:
        matplotlib.use("Agg")  # draw off screen: works with no display at all
    run_dir = Path(args.run_dir)
    try:
        model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
        clean, noisy, labels = noisy_test_set(args.data_dir, checkpoint["config"]["noise_std"])
    except (CheckpointError, DataError) as error:
        sys.exit(f"error: {error}")
    with torch.no_grad():
        codes = model.encode(noisy)  # (N, latent_dim): the codes of noisy images, as the model is used
        denoised = model.decode(codes)  # (N, 1, 28, 28)

    figures = {
        "reconstructions.png": plot_reconstructions(clean, noisy, denoised, labels),
        "latent_pairs.png": plot_latent_pairs(codes, labels),
        "loss_curves.png": plot_loss_curves(checkpoint["history"], checkpoint["best_epoch"], checkpoint["stop_reason"]),
    }
    for name, figure in figures.items():
        if figure is None:
            print(f"no {name}: a {model.latent_dim}-D latent space has no pairs of dimensions to draw")
            continue
        try:
            figure.savefig(run_dir / name, dpi=90)
        except OSError as error:
            sys.exit(f"error: cannot write {run_dir / name} ({error.strerror}): make the run directory writable")
        print(f"wrote {run_dir / name}")
    if args.show:
        plt.show()


if __name__ == "__main__":
    main()
