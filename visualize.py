"""Draw a trained run: what it does to images, what its code holds, and how it trained.

    python visualize.py                        # the newest run in runs/; writes its PNGs there
    python visualize.py --run-dir runs/seed3   # another run
    python visualize.py --show                 # also open the figures in windows

Writes five figures into the run directory and prints the path of each:
  reconstructions.png     clean / noisy / PCA / denoised test images, one of each class
  latent_pairs.png        the test set's codes as a corner plot: every pair of dimensions, coloured by class,
                          and each dimension's distribution per class on the diagonal
  latent_traversals.png   one dimension of a typical code moved across its range at a time, decoded
  noise_levels.png        test error against the strength of the noise, beside the baselines
  loss_curves.png         training and validation loss per epoch, the best epoch marked

Works without a display (over SSH, in CI): figures are drawn off screen unless --show is given.
"""

import argparse
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import torch

from baselines import DAE, NOISE_LEVELS, PrincipalComponents, choose_blur_sigma, denoisers, errors_at_noise_levels
from dae import CHECKPOINT_FILE, CheckpointError, load_checkpoint, newest_run
from data import CLASS_NAMES, DataError, load_training_split, noisy_test_set, standard_test_noise

ROOT = Path(__file__).resolve().parent
RUNS_DIR = ROOT / "runs"  # where train.py puts each run of its own
CLASS_COLOURS = matplotlib.colormaps["tab10"].colors  # 10 distinct qualitative colours, one per class
TRAVERSAL_STEPS = 9
DPI = 90  # keeps the largest figure, the corner plot, under 600 KB


def plot_reconstructions(rows: dict, labels: torch.Tensor):
    """One row per entry of `rows` (name -> images (N, 1, 28, 28)), one column per class: its first test image."""
    figure, axes = plt.subplots(len(rows), len(CLASS_NAMES), figsize=(1.3 * len(CLASS_NAMES), 1.35 * len(rows) + 0.4),
                                squeeze=False)
    for column, class_name in enumerate(CLASS_NAMES):
        index = (labels == column).nonzero()[0].item()
        for row, images in enumerate(rows.values()):
            # A fixed 0-1 range: noise that leaves [0, 1] shows clipped, not rescaled into a different picture.
            axes[row, column].imshow(images[index, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[0, column].set_title(class_name, fontsize=9)
    for row, name in enumerate(rows):
        axes[row, 0].set_ylabel(name, fontsize=9)
    figure.tight_layout()
    return figure


def code_ranges(codes: torch.Tensor) -> torch.Tensor:
    """(d, 2): a range per dimension that holds 99% of the codes, with a margin, so outliers do not squash the rest."""
    low, high = torch.quantile(codes, torch.tensor([0.005, 0.995]), dim=0)  # (d,) each
    margin = 0.05 * (high - low)
    return torch.stack([low - margin, high + margin], dim=1)


def plot_latent_pairs(codes: torch.Tensor, labels: torch.Tensor):
    """A corner plot of codes (N, d): the panel for (z_i, z_j), i < j, sits at row j, column i; the
    diagonal holds each dimension's distribution per class; each dimension keeps one range down its
    column and across its row. d(d-1)/2 scatter panels and d histograms."""
    dimensions = codes.shape[1]
    ranges = code_ranges(codes).tolist()
    panel_inches = min(3.0, max(1.3, 6 / dimensions))  # d = 2 or 3: larger panels, so the legend fits beside
    size = panel_inches * dimensions
    legend_inches = 2.2 if dimensions == 1 else 0  # d >= 2 puts the legend in the empty upper triangle
    figure, axes = plt.subplots(dimensions, dimensions, figsize=(size + legend_inches, size), squeeze=False)
    colours = torch.tensor(CLASS_COLOURS)[labels].numpy()  # (N, 3) RGB, one colour per point's class
    for row in range(dimensions):
        for column in range(dimensions):
            axis = axes[row, column]
            if column > row:
                axis.remove()  # the upper triangle would repeat the lower one, mirrored
                continue
            if column == row:
                bins = torch.linspace(*ranges[column], 41).numpy()
                for index, colour in enumerate(CLASS_COLOURS):
                    axis.hist(codes[labels == index, column].numpy(), bins=bins, histtype="step", color=colour)
                axis.set_yticks([])
            else:
                axis.scatter(codes[:, column].numpy(), codes[:, row].numpy(), c=colours, s=panel_inches**2 / 1.7,
                             alpha=0.4, linewidths=0, rasterized=True)  # points grow with the panel
                axis.set_ylim(ranges[row])
                axis.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
            axis.set_xlim(ranges[column])
            axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
            axis.tick_params(labelsize=6)
            # Labels on the outer edge only, as pair plots have them: the bottom row and the left column.
            if row == dimensions - 1:
                axis.set_xlabel(f"z{column}")
            else:
                axis.set_xticklabels([])
            if column == 0 and row > 0:
                axis.set_ylabel(f"z{row}")
            elif column != row:
                axis.set_yticklabels([])
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour, label=name)
               for colour, name in zip(CLASS_COLOURS, CLASS_NAMES)]
    figure.legend(handles=handles, loc="upper right", fontsize=10, frameon=False, title="class", title_fontsize=10)
    figure.tight_layout(rect=(0, 0, size / (size + legend_inches), 1))
    return figure


@torch.no_grad()
def plot_latent_traversals(model: torch.nn.Module, codes: torch.Tensor):
    """Row i: a typical code with z_i moved from the 2nd to the 98th percentile of its values, decoded.

    The typical code is a real image's: the test code nearest the per-dimension median. (The median
    itself need not be the code of any garment, and decodes to a blur.)
    """
    dimensions = codes.shape[1]
    median = codes.median(dim=0).values  # (d,)
    typical = codes[(codes - median).norm(dim=1).argmin()]  # (d,)
    steps = torch.linspace(0.02, 0.98, TRAVERSAL_STEPS)
    values = torch.quantile(codes, steps, dim=0).T  # (d, steps): where each dimension's codes lie
    moved = typical.repeat(dimensions, TRAVERSAL_STEPS, 1)  # (d, steps, d)
    for dimension in range(dimensions):
        moved[dimension, :, dimension] = values[dimension]
    images = model.decode(moved.view(-1, dimensions)).view(dimensions, TRAVERSAL_STEPS, 28, 28)

    figure, axes = plt.subplots(dimensions, TRAVERSAL_STEPS, squeeze=False,
                                figsize=(0.95 * TRAVERSAL_STEPS + 0.5, 1.05 * dimensions + 0.6))
    for dimension in range(dimensions):
        for step in range(TRAVERSAL_STEPS):
            axis = axes[dimension, step]
            axis.imshow(images[dimension, step].numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"{values[dimension, step]:.1f}", fontsize=7, pad=2)
        axes[dimension, 0].set_ylabel(f"z{dimension}", rotation=0, labelpad=14, va="center")
    figure.suptitle("one code dimension moved at a time (2nd to 98th percentile of the test codes), "
                    "the others held at a typical test image's code", fontsize=9)
    figure.tight_layout()
    return figure


def plot_noise_levels(levels: list, errors: dict, training_std: float):
    """Test MAE against test noise std, one line per method; the noise the model was trained with marked."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, maes in errors.items():
        axis.plot(levels, maes, marker="o", markersize=3, label=name,
                  linewidth=2.5 if name == DAE else 1.2)
    axis.axvline(training_std, color="grey", linestyle="--", linewidth=1)
    axis.annotate(f"trained at std {training_std}", (training_std, 0.97), xycoords=("data", "axes fraction"),
                  xytext=(4, 0), textcoords="offset points", fontsize=8, va="top", color="grey")
    axis.set_xlabel("std of the Gaussian noise on the test images")
    axis.set_ylabel("test mean absolute error")
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
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
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # no epoch 1.5 on short runs
    axis.set_yscale("log")  # the first epochs fall fast; a log scale keeps the late ones readable
    axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    axis.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    axis.set_xlabel("epoch")
    axis.set_ylabel("L1 loss (mean absolute error)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


@torch.no_grad()
def draw_run(run_dir: Path, data_dir) -> dict:
    """Every figure of the run in `run_dir`: file name -> matplotlib figure."""
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    config = checkpoint["config"]
    clean, noisy, labels = noisy_test_set(data_dir, config["noise_std"])
    # The baselines, fitted as evaluate.py fits them: PCA on the run's training images, the blur on its validation set.
    (train_images, _), (val_clean, val_noisy) = load_training_split(
        data_dir, config["val_size"], config["noise_std"], generator=torch.Generator().manual_seed(config["seed"])
    )
    pca = PrincipalComponents.fit(train_images).first(model.latent_dim)
    methods = denoisers(model, pca, choose_blur_sigma(val_noisy, val_clean))
    codes = model.encode(noisy)  # (N, latent_dim): the codes of noisy images, as the model is used
    levels = sorted({*NOISE_LEVELS, config["noise_std"]})
    errors = errors_at_noise_levels(methods, clean, standard_test_noise(clean.shape), levels)
    return {
        "reconstructions.png": plot_reconstructions({
            "clean": clean,
            f"noisy (std {config['noise_std']})": noisy,
            f"PCA, {pca.size} numbers": pca.decode(pca.encode(noisy)),
            f"DAE, {model.latent_dim} numbers": model.decode(codes),
        }, labels),
        "latent_pairs.png": plot_latent_pairs(codes, labels),
        "latent_traversals.png": plot_latent_traversals(model, codes),
        "noise_levels.png": plot_noise_levels(levels, errors, config["noise_std"]),
        "loss_curves.png": plot_loss_curves(checkpoint["history"], checkpoint["best_epoch"], checkpoint["stop_reason"]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Draw the figures of a trained run.", allow_abbrev=False)
    parser.add_argument("--run-dir", default=None,
                        help="the run to draw; figures are written there (default: the newest run in runs/)")
    parser.add_argument("--data-dir", default=str(ROOT / "data"),
                        help="where Fashion-MNIST is, or goes (default: data/ beside this script)")
    parser.add_argument("--show", action="store_true", help="also open the figures in windows")
    args = parser.parse_args(argv)
    if not args.show:
        matplotlib.use("Agg")  # draw off screen: works with no display at all
    try:
        run_dir = Path(args.run_dir) if args.run_dir else newest_run(RUNS_DIR)
        if args.run_dir is None:
            print(f"drawing the newest run, {run_dir} (pass --run-dir for another)")
        figures = draw_run(run_dir, args.data_dir)
    except (CheckpointError, DataError) as error:
        sys.exit(f"error: {error}")
    for name, figure in figures.items():
        try:
            figure.savefig(run_dir / name, dpi=DPI)
        except OSError as error:
            sys.exit(f"error: cannot write {run_dir / name} ({error.strerror}): make the run directory writable")
        print(f"wrote {run_dir / name}")
        if not args.show:
            plt.close(figure)  # a notebook or a test calling main() again would otherwise keep every figure
    if args.show:
        plt.show()


if __name__ == "__main__":
    main()
