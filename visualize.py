"""Draw a trained run: what it does to images, what its code holds, and how it trained.

    python visualize.py                        # the newest run in runs/; writes its PNGs there
    python visualize.py --run-dir runs/seed3   # another run
    python visualize.py --show                 # also open the figures in windows

Figures: reconstructions, latent_pairs (the codes, every pair of dimensions), latent_traversals,
samples, interpolations, latent_grid (a 2-number code only), noise_levels, loss_curves; and
explorer.html. docs/results.md shows each.
"""

import io
import math
from pathlib import Path

import cli  # first, so that Ctrl-C while torch loads is one line
import matplotlib
import matplotlib.pyplot as plt
import torch
import torchvision

import explorer
from baselines import NOISE_LEVELS, PrincipalComponents, choose_blur_sigma, denoisers, errors_at_noise_levels
from checkpoints import load_checkpoint
from data import CLASS_NAMES, DATA_DIR, standard_test_noise, write_atomically
from evaluate import describes, run_data, run_to_use, sampling_distribution
from runs import CHECKPOINT_FILE, EARLY_STOPPING

TRAVERSAL_STEPS = 9
SAMPLE_ROWS = 6  # samples.png is 6 x 6
SAMPLE_SEED = 0
INTERPOLATION_STEPS = 9  # odd: a mid-point
INTERPOLATION_PAIRS = (("T-shirt/top", "Trouser"), ("Sneaker", "Ankle boot"), ("Pullover", "Bag"))
TILE_GAP = 2  # white pixels between images
DPI = 90  # every figure under 600 KB
# The most code dimensions a figure draws, and says so
MAX_DRAWN_DIMENSIONS = 16


# ---- The figures an assignment needs: each works pasted alone below README's imports ----

def plot_reconstructions(rows: dict, labels: torch.Tensor, class_names=CLASS_NAMES):
    """One row per entry of `rows` (name -> images (N, 1, 28, 28)), one column per class: its first image,
    named by its index in `labels` (the test set's, for the test images)."""
    first_of_class = [(labels == index).nonzero()[0].item() for index in range(len(class_names))]
    chosen = torch.cat([images[first_of_class] for images in rows.values()])  # (rows * classes, 1, 28, 28)
    # A fixed 0-1 range: noise outside it shows clipped, not rescaled
    picture = torchvision.utils.make_grid(chosen.clamp(0, 1), nrow=len(class_names), padding=2, pad_value=1)[0]
    figure, axis = plt.subplots(figsize=(1.2 * len(class_names) + 1.6, 1.2 * len(rows) + 0.5))
    axis.imshow(picture.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    centres = [2 + 30 * index + 13.5 for index in range(max(len(class_names), len(rows)))]  # 28 pixels + 2 apart
    names = [f"{name}\n#{index}" for name, index in zip(class_names, first_of_class)]  # "Coat\n#25"
    axis.set_xticks(centres[: len(class_names)], names, fontsize=9)
    axis.set_yticks(centres[: len(rows)], list(rows), fontsize=9)
    axis.xaxis.tick_top()
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    figure.tight_layout()
    return figure


def plot_latent_pairs(codes: torch.Tensor, labels: torch.Tensor, class_names=CLASS_NAMES, max_dimensions: int = 16,
                      silent=()):
    """A corner plot of codes (N, d): (z_i, z_j), i < j, at row j, column i; each dimension's
    distribution per class on the diagonal. The first `max_dimensions`; `silent` ones (a VAE's
    dead dimensions) greyed and named."""
    all_dimensions = codes.shape[1]
    codes = codes[:, :max_dimensions]  # past 16 or so, the panels could not be read
    dimensions = codes.shape[1]
    # 99% of the codes and a margin: outliers squash nothing
    low, high = torch.quantile(codes, torch.tensor([0.005, 0.995]), dim=0)  # (d,) each
    ranges = torch.stack([low - 0.05 * (high - low), high + 0.05 * (high - low)], dim=1).tolist()
    colours = plt.get_cmap("tab10").colors
    # Past d = 8, d = 8's size: the PNG stays under 600 KB
    panel_inches = min(3.0, max(1.3, 6 / dimensions), 10.4 / dimensions)
    size = panel_inches * dimensions
    legend_inches = 2.2 if dimensions == 1 else 0  # d >= 2 puts the legend in the empty upper triangle
    figure = plt.figure(figsize=(size + legend_inches, size))
    grid = figure.add_gridspec(dimensions, dimensions)
    point_colours = torch.tensor(colours)[labels].numpy()  # (N, 3)
    ticks = 4 if dimensions <= 8 else 2
    for row in range(dimensions):
        for column in range(row + 1):  # the upper triangle would repeat the lower one, mirrored
            axis = figure.add_subplot(grid[row, column])
            if row in silent or column in silent:  # scaled to its own range, it would look alive
                axis.set_facecolor("#dddddd")
            if column == row:
                bins = torch.linspace(*ranges[column], 41).numpy()
                for index in range(len(class_names)):
                    axis.hist(codes[labels == index, column].numpy(), bins=bins, histtype="step", color=colours[index])
                axis.set_yticks([])
            else:
                axis.scatter(codes[:, column].numpy(), codes[:, row].numpy(), c=point_colours,
                             s=panel_inches**2 / 1.7, alpha=0.4, linewidths=0, rasterized=True)  # grow with the panel
                axis.set_ylim(ranges[row])
                axis.yaxis.set_major_locator(plt.MaxNLocator(ticks))
            axis.set_xlim(ranges[column])
            axis.xaxis.set_major_locator(plt.MaxNLocator(ticks))
            axis.tick_params(labelsize=6)
            # Labels on the outer edge only
            if row == dimensions - 1:
                axis.set_xlabel(f"z{column}" + (" (silent)" if column in silent else ""))
            else:
                axis.set_xticklabels([])
            if column == 0 and row > 0:
                axis.set_ylabel(f"z{row}" + (" (silent)" if row in silent else ""))
            elif column != row:
                axis.set_yticklabels([])
    markers = [plt.Line2D([], [], marker="o", linestyle="", color=colours[index], label=name)
               for index, name in enumerate(class_names)]
    figure.legend(handles=markers, loc="upper right", fontsize=10, frameon=False, title="class", title_fontsize=10)
    notes = [f"the first {dimensions} of the {all_dimensions} code dimensions"] if all_dimensions > dimensions else []
    if silent:
        notes.append("grey: silent dimensions (a KL near 0)")
    if notes:
        figure.text(0.5, 0.995, "\n".join(notes), ha="center", va="top", fontsize=10)  # the empty upper triangle
    figure.tight_layout(rect=(0, 0, size / (size + legend_inches), 1))
    return figure


@torch.no_grad()
def plot_latent_grid(model: torch.nn.Module, codes: torch.Tensor, labels: torch.Tensor, steps: int = 16,
                     class_names=CLASS_NAMES):
    """For a 2-number code: the code plane over the test codes' range, covered by decoded images (as in
    Kingma & Welling, 2014, figure 4), beside the test codes coloured by class on the same axes."""
    # 99% of the codes and a margin
    low, high = torch.quantile(codes, torch.tensor([0.005, 0.995]), dim=0)  # (2,) each
    low, high = low - 0.05 * (high - low), high + 0.05 * (high - low)
    # Each cell's centre, top row first
    cells = (torch.arange(steps) + 0.5) / steps
    z1, z0 = torch.meshgrid(high[1] - cells * (high[1] - low[1]), low[0] + cells * (high[0] - low[0]), indexing="ij")
    images = model.decode(torch.stack([z0, z1], dim=-1).view(-1, 2)).view(steps, steps, 28, 28)
    mosaic = images.permute(0, 2, 1, 3).reshape(steps * 28, steps * 28)  # rows of images -> one picture
    extent = (low[0].item(), high[0].item(), low[1].item(), high[1].item())
    figure, (decoded, scattered) = plt.subplots(1, 2, figsize=(13, 6.3))
    decoded.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1, extent=extent, aspect="auto")
    decoded.set_title(f"the code plane, decoded on a {steps} x {steps} grid", fontsize=10)
    points = scattered.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), c=labels.numpy(), cmap="tab10", vmin=-0.5,
                               vmax=9.5, s=3, alpha=0.5, linewidths=0, rasterized=True)  # class i: colour i
    scattered.set_title("the test images' codes, by class", fontsize=10)
    scattered.legend(points.legend_elements()[0], class_names, loc="center left", bbox_to_anchor=(1.01, 0.5),
                     fontsize=9, frameon=False)
    for axis in (decoded, scattered):
        axis.set(xlim=extent[:2], ylim=extent[2:], xlabel="z0", ylabel="z1")
    figure.tight_layout()
    return figure


def plot_loss_curves(history: dict, best_epoch: int | None = None, stopped_early: bool = False,
                     objective: str = "L1 loss", validation: str | None = None):
    """Training and validation loss per epoch (`fit`'s history), the best epoch and an early stop
    marked. `objective` and `validation` name the curves; a fork's other terms get a panel each."""
    epochs = range(1, len(history["train_loss"]) + 1)
    best_epoch = best_epoch or 1 + min(range(len(epochs)), key=history["val_loss"].__getitem__)
    other_terms = [name for name in history if name.startswith("train_") and name != "train_loss"]
    figure, axes = plt.subplots(1 + len(other_terms), 1, figsize=(7, 4.5 + 2 * len(other_terms)), sharex=True,
                                squeeze=False, gridspec_kw={"height_ratios": [4.5] + [2] * len(other_terms)})
    axis = axes[0, 0]
    marker = "o" if len(epochs) <= 20 else None  # a single epoch is a point, not an invisible line
    axis.plot(epochs, history["train_loss"], marker=marker, label=f"training: {objective}")
    axis.plot(epochs, history["val_loss"], marker=marker, label=f"validation: {validation or objective}")
    axis.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    axis.plot(best_epoch, history["val_loss"][best_epoch - 1], "o", color="black",
              label=f"best: epoch {best_epoch}, {history['val_loss'][best_epoch - 1]:.4f}")
    if stopped_early:
        axis.axvline(len(epochs), color="firebrick", linestyle=":", linewidth=1.5,
                     label=f"early stopping, epoch {len(epochs)}")
    axis.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # no epoch 1.5
    if len(epochs) < 5:  # too few for that locator
        axis.set_xlim(0.5, len(epochs) + 0.5)
        axis.set_xticks(list(epochs))
    # A log scale keeps late epochs readable, where losses stay above 0
    log_scale = min(history["train_loss"] + history["val_loss"]) > 0
    axis.set_yscale("log" if log_scale else "linear")
    axis.yaxis.set_major_formatter(plt.FormatStrFormatter("%.2f"))
    axis.yaxis.set_minor_formatter(plt.FormatStrFormatter("%.2f"))
    axis.set_ylabel("loss (log scale)" if log_scale else "loss")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    for index, (panel, name) in enumerate(zip(axes[1:, 0], other_terms)):
        panel.plot(epochs, history[name], color=f"C{index + 2}")
        panel.set_ylabel(f"training {name[len('train_'):]}")
        panel.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    figure.tight_layout()
    return figure


# ---- The figures of a run's report ----

def tile(images: torch.Tensor, columns: int, gap: int = TILE_GAP) -> torch.Tensor:
    """Images (N, 1, 28, 28), `columns` to a row, `gap` white pixels apart: one (H, W) picture,
    which draws much faster than an axes per image."""
    return torchvision.utils.make_grid(images, nrow=columns, padding=gap, pad_value=1)[0]


def tile_centres(count: int, gap: int = TILE_GAP) -> list[float]:
    """Where the middle of each of `count` images in a row (or column) of a tile lies, in pixels."""
    return [gap + (28 + gap) * index + 13.5 for index in range(count)]


@torch.no_grad()
def plot_latent_traversals(model: torch.nn.Module, codes: torch.Tensor):
    """Row i: a typical code with z_i moved from the 2nd to the 98th percentile of its values, decoded.
    The typical code is the test code nearest the median: the median itself decodes to a blur."""
    all_dimensions = codes.shape[1]
    dimensions = min(all_dimensions, MAX_DRAWN_DIMENSIONS)  # the rows drawn: past 16, the first 16
    median = codes.median(dim=0).values  # (d,)
    typical = codes[(codes - median).norm(dim=1).argmin()]  # (d,)
    fractions = torch.linspace(0.02, 0.98, TRAVERSAL_STEPS)
    values = torch.quantile(codes, fractions, dim=0).T  # (d, steps): where each dimension's codes lie
    moved = typical.repeat(dimensions, TRAVERSAL_STEPS, 1)  # (rows, steps, d)
    for dimension in range(dimensions):
        moved[dimension, :, dimension] = values[dimension]
    images = model.decode(moved.view(-1, all_dimensions))  # (rows * steps, 1, 28, 28), row by row

    gap = 10  # room for each value
    picture = tile(images, TRAVERSAL_STEPS, gap)
    width = 0.95 * TRAVERSAL_STEPS  # inches
    figure, axis = plt.subplots(figsize=(width + 0.8, width * picture.shape[0] / picture.shape[1] + 1.1))
    axis.imshow(picture.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")  # crisp pixels, a smaller PNG
    columns, rows = tile_centres(TRAVERSAL_STEPS, gap), tile_centres(dimensions, gap)
    axis.set_xticks(columns, [f"{fraction:.0%}" for fraction in fractions.tolist()])
    axis.set_yticks(rows, [f"z{dimension}" for dimension in range(dimensions)])
    axis.tick_params(length=0, labelsize=8)
    for row, dimension_values in zip(rows, values.tolist()):  # each image's value of the moved number, over it
        for column, value in zip(columns, dimension_values):
            axis.text(column, row - 14.5, f"{value:.1f}", fontsize=7, ha="center", va="bottom", color="tab:blue")
    for spine in axis.spines.values():
        spine.set_visible(False)
    axis.set_xlabel("percentile of the moved number among the test codes; its value in blue over each image",
                    fontsize=8)
    first = f" (the first {dimensions} of {all_dimensions})" if all_dimensions > dimensions else ""
    axis.set_title(f"one code dimension{first} moved at a time, the others held at a typical test image's code",
                   fontsize=9)
    figure.tight_layout()
    return figure


def plot_noise_levels(levels: list, errors: dict, training_std: float):
    """Test MAE against test noise std, one line per method (the model's first, and thickest); the training
    noise marked."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, (name, maes) in enumerate(errors.items()):
        axis.plot(levels, maes, marker="o", markersize=3, label=name, linewidth=2.5 if index == 0 else 1.2)
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


def sample_codes(mean: torch.Tensor, covariance: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` codes (count, d) from N(mean, covariance), repeatably with `generator`:
    mean + eps @ (V sqrt(Lambda))^T, which, unlike Cholesky, allows a dimension that never varies."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    spread = eigenvectors * eigenvalues.clamp(min=0).sqrt()  # (d, d): V sqrt(Lambda), column j scaled
    unit = torch.randn(count, len(mean), generator=generator)  # (count, d), eps ~ N(0, I)
    return mean + unit @ spread.T


def plot_samples(images: torch.Tensor, title: str):
    """A square grid of decoded samples (N, 1, 28, 28), N a square number, under `title`."""
    side = math.isqrt(len(images))
    figure, axis = plt.subplots(figsize=(6, 6.4))
    axis.imshow(tile(images, side).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.axis("off")
    axis.set_title(title, fontsize=9, wrap=True)
    figure.tight_layout()
    return figure


@torch.no_grad()
def interpolation_rows(model: torch.nn.Module, pca: PrincipalComponents, first: torch.Tensor, second: torch.Tensor,
                       steps: int = INTERPOLATION_STEPS) -> dict:
    """From image `first` to `second` (1, 28, 28 each) in `steps`: name -> images (steps, 1, 28, 28).
    A fade in pixels, and decode((1 - t) code(first) + t code(second)) for PCA and the model."""
    weights = torch.linspace(0, 1, steps).view(-1, 1)  # (steps, 1): t, from 0 to 1

    def line(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:  # (1, k) twice -> (steps, k)
        return (1 - weights) * start + weights * end

    pair = torch.stack([first, second])  # (2, 1, 28, 28)
    rows = {"pixel fade": line(*pair.flatten(1).split(1)).view(steps, 1, 28, 28)}
    for name, coder in ((f"PCA, {pca.size} numbers", pca), (f"{model.short_name}, {model.latent_dim} numbers", model)):
        rows[name] = coder.decode(line(*coder.encode(pair).split(1)))
    return rows


def plot_interpolations(pairs: dict):
    """`pairs`: title -> rows (interpolation_rows' output); a panel per pair, a row per method, a column per step."""
    figure, axes = plt.subplots(len(pairs), 1, figsize=(9.5, 3.2 * len(pairs)), squeeze=False)
    for axis, (title, rows) in zip(axes[:, 0], pairs.items()):
        steps = len(next(iter(rows.values())))
        axis.imshow(tile(torch.cat(list(rows.values())), steps).numpy(), cmap="gray", vmin=0, vmax=1,
                    interpolation="nearest")
        axis.set_yticks(tile_centres(len(rows)), list(rows))  # each row named at its middle
        axis.set_xticks(tile_centres(steps), [f"{t:.2g}" for t in torch.linspace(0, 1, steps).tolist()])
        axis.tick_params(length=0, labelsize=8)
        axis.set_title(title, fontsize=9)
        for spine in axis.spines.values():
            spine.set_visible(False)
    axes[-1, 0].set_xlabel("t: the share of the way from the first image to the second", fontsize=8)
    figure.tight_layout()
    return figure


@torch.no_grad()
def draw_run(run_dir: Path, data_dir) -> tuple[dict, dict, bytes | None]:
    """Every figure of the run in `run_dir` (file name -> matplotlib figure), its checkpoint, and
    its explorer page (None, with a line that says why, for a decoder the page cannot draw)."""
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    noise_std = checkpoint["config"]["noise_std"]
    run = run_data(model, checkpoint, data_dir)
    # The baselines, fitted as evaluate.py fits them
    pca = PrincipalComponents.fit(run.train_images).first(model.latent_dim)
    methods = denoisers(model, pca, choose_blur_sigma(run.val_noisy, run.val_clean))
    levels = sorted({*NOISE_LEVELS, noise_std})
    errors = errors_at_noise_levels(methods, run.test_clean, standard_test_noise(run.test_clean.shape), levels)
    mean, covariance, source = sampling_distribution(model, run.train_codes)
    sampled = sample_codes(mean, covariance, SAMPLE_ROWS**2, torch.Generator().manual_seed(SAMPLE_SEED))
    first = {name: (run.test_labels == index).nonzero()[0].item() for index, name in enumerate(CLASS_NAMES)}
    silent = model.silent_dimensions(run.test_clean) if hasattr(model, "silent_dimensions") else ()  # a VAE's
    figures = {
        "reconstructions.png": plot_reconstructions({
            "clean": run.test_clean,
            f"noisy (std {noise_std})": run.test_noisy,
            f"PCA, {pca.size} numbers": pca.decode(pca.encode(run.test_noisy)),
            f"{model.short_name}, {model.latent_dim} numbers": model.decode(run.test_codes),
        }, run.test_labels),
        "latent_pairs.png": plot_latent_pairs(run.test_codes, run.test_labels, max_dimensions=MAX_DRAWN_DIMENSIONS,
                                              silent=silent),
        "latent_traversals.png": plot_latent_traversals(model, run.test_codes),
        "samples.png": plot_samples(model.decode(sampled), f"{len(sampled)} random codes drawn from {source}, "
                                                           f"decoded by the {model.name} (seed {SAMPLE_SEED})"),
        "interpolations.png": plot_interpolations({
            f"{start} (test image #{first[start]}) to {end} (#{first[end]}), clean": interpolation_rows(
                model, pca, run.test_clean[first[start]], run.test_clean[first[end]])
            for start, end in INTERPOLATION_PAIRS
        }),
        "noise_levels.png": plot_noise_levels(levels, errors, noise_std),
        "loss_curves.png": plot_loss_curves(checkpoint["history"], checkpoint["best_epoch"],
                                            checkpoint["stop_kind"] == EARLY_STOPPING,
                                            checkpoint.get("objective", "L1 loss"), checkpoint.get("validation")),
    }
    if model.latent_dim == 2:
        figures["latent_grid.png"] = plot_latent_grid(model, run.test_codes, run.test_labels)
    try:
        page = explorer.page_bytes(explorer.page_data(model, checkpoint, run_dir, run), run_dir)
    except explorer.PageError as error:
        print(f"no explorer page: {error}")
        page = None
    return figures, checkpoint, page


@cli.script
def main(argv=None) -> None:
    parser = cli.parser("visualize.py", "Draw the figures of a trained run.")
    parser.add_argument("--run-dir", default=None,
                        help="the run to draw, where the figures go (default: the newest in runs/)")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--show", action="store_true", help="also open the figures in windows")
    parser.add_argument("--while-training", action="store_true",
                        help="draw a run still training, at its best weights so far")
    args = parser.parse_args(argv)
    if not args.show:
        matplotlib.use("Agg")  # draw off screen: works with no display at all

    run_dir = run_to_use(args.run_dir, "drawing", args.while_training)
    figures, checkpoint, page = draw_run(run_dir, args.data_dir)
    files = {name: figure_bytes(figure, checkpoint) for name, figure in figures.items()}
    if page is not None:
        files["explorer.html"] = page
    for name, content in files.items():
        write_atomically(run_dir / name, content)
        print(f"wrote {run_dir / name}" + (": open it in a browser" if name.endswith(".html") else ""))
    if args.show and next(iter(figures.values())).canvas.required_interactive_framework is None:
        print("--show: no window to show them in here (no display, or no GUI toolkit), so they are only written")
    elif args.show:
        plt.show()
    for figure in figures.values():
        plt.close(figure)  # a notebook or a test calling main() again would otherwise keep them all


def figure_bytes(figure, checkpoint: dict) -> bytes:
    """A PNG at DPI that records, in its metadata, the checkpoint it was drawn from."""
    buffer = io.BytesIO()
    drawn_from = describes(checkpoint)
    description = f"best epoch {drawn_from['best_epoch']}, checkpoint {drawn_from['checkpoint_stamp']}"
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Description": description})
    return buffer.getvalue()


if __name__ == "__main__":
    main()
