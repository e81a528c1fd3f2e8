"""The explorer: one HTML page where a learner moves the code's numbers and watches the garment change.

    python explorer.py                        # the newest run: writes runs/<run>/explorer.html
    python explorer.py --run-dir runs/seed3   # another run

visualize.py writes the page too. Open it in any browser, from disk and offline. In a notebook,
`IPython.display.HTML(explorer.in_a_frame("runs/<run>/explorer.html"))` shows it below the cell.

The page is explorer.html beside this file, with the run's data put in: the decoder's weights,
the codes of some test images with their pictures, and the range and sampling distribution of the
training codes. In the browser the decoder is the same three layers as dae.py's `Decoder`, written
as plain arithmetic: the model is three small matrix products. Off the reader's path, like bench.py.
"""

import base64
import html
import json
from pathlib import Path

import torch

import cli
from data import CLASS_NAMES, DATA_DIR, add_noise, load_training_split, noisy_test_set
from runs import CHECKPOINT_FILE, RunError, describes, load_checkpoint, run_to_use, write_reports

TEMPLATE = Path(__file__).resolve().parent / "explorer.html"
PICTURES_PER_CLASS = 20  # test images a learner can start from, with their pictures (5 past d = 64)
PLOTTED_CODES = 2000  # test codes in the code plane's scatter
SLIDERS = 16  # the most code numbers with a slider each; past that, the rest keep their values
MAX_BYTES = 1_500_000


def as_base64(tensor: torch.Tensor, dtype=torch.float32) -> str:
    """A tensor's values, flat and little-endian, as base64: a page reads it into a typed array."""
    return base64.b64encode(tensor.detach().to(dtype).contiguous().numpy().tobytes()).decode()


def decoder_layers(model) -> list[dict]:
    """The decoder's three Linear layers, in order: {"in", "out", "weight" (out x in), "bias"}."""
    linears = [layer for layer in model.decoder.layers if isinstance(layer, torch.nn.Linear)]
    return [{"in": layer.in_features, "out": layer.out_features, "weight": as_base64(layer.weight),
             "bias": as_base64(layer.bias)} for layer in linears]


FULL_COVARIANCE = 64  # past this many numbers, samples are drawn number by number (a smaller page)


def slider_ranges(codes: torch.Tensor) -> torch.Tensor:
    """(d, 2): per code number, the middle 99% of the training codes and a 5% margin each side."""
    low, high = torch.quantile(codes, torch.tensor([0.005, 0.995]), dim=0)  # (d,) each
    return torch.stack([low - 0.05 * (high - low), high + 0.05 * (high - low)], dim=1)


def chosen_pictures(labels: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """The indices of the first few test images of each class, class by class."""
    per_class = PICTURES_PER_CLASS if latent_dim <= FULL_COVARIANCE else 5
    return torch.cat([(labels == index).nonzero()[:per_class, 0] for index in range(len(CLASS_NAMES))])


@torch.no_grad()
def page_data(model, checkpoint: dict, run_dir: Path, data_dir) -> dict:
    """Everything the page shows, with the test set and the training codes made here, as
    evaluate.py makes them (visualize.py, which has them already, calls page_data_from)."""
    config = checkpoint["config"]
    clean, noisy, labels = noisy_test_set(data_dir, config["noise_std"])
    generator = torch.Generator().manual_seed(config["seed"])  # as evaluate.py draws the training codes
    (train_images, _), _ = load_training_split(data_dir, config["val_size"], config["noise_std"],
                                               generator=generator)
    training_codes = model.encode(add_noise(train_images, config["noise_std"], generator=generator))
    return page_data_from(model, checkpoint, run_dir, clean, labels, model.encode(noisy), training_codes)


@torch.no_grad()
def page_data_from(model, checkpoint: dict, run_dir: Path, clean: torch.Tensor, labels: torch.Tensor,
                   codes: torch.Tensor, training_codes: torch.Tensor) -> dict:
    """Everything the page shows, as plain values: the run, the decoder, codes and pictures.
    `codes` are the test images' (the noisy ones, as the model is used); `clean` their pictures."""
    config = checkpoint["config"]
    mean, covariance, source = model.sampling_distribution(training_codes)
    if model.latent_dim <= FULL_COVARIANCE:
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        spread = eigenvectors * eigenvalues.clamp(min=0).sqrt()  # z = mean + spread @ eps, eps ~ N(0, I)
    else:
        spread = covariance.diagonal().clamp(min=0).sqrt()  # (d,): each number's own spread
        source += f" (past {FULL_COVARIANCE} numbers, each drawn on its own, correlations left out)"
    pictures = chosen_pictures(labels, model.latent_dim)
    plotted = torch.arange(min(PLOTTED_CODES, len(codes)))
    return {
        "run": str(run_dir), "model": model.name, "latent_dim": model.latent_dim,
        "noise_std": config["noise_std"], "best_epoch": checkpoint["best_epoch"],
        "test_mae": matching_test_mae(run_dir, checkpoint), "classes": list(CLASS_NAMES),
        "sliders": min(SLIDERS, model.latent_dim), "ranges": slider_ranges(training_codes).tolist(),
        "sampling": {"mean": as_base64(mean), "spread": as_base64(spread), "source": source},
        "decoder": decoder_layers(model),
        "pictures": {"labels": labels[pictures].tolist(), "codes": as_base64(codes[pictures]),
                     "pixels": as_base64((clean[pictures] * 255).round(), torch.uint8)},
        "plane": {"labels": labels[plotted].tolist(),
                  "codes": as_base64(codes[plotted, :SLIDERS])},
    }


def matching_test_mae(run_dir: Path, checkpoint: dict) -> float | None:
    """The test MAE of evaluate.py's metrics.json, if it describes this very checkpoint."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    described = {key: metrics.get("run", {}).get(key) for key in ("best_epoch", "checkpoint_stamp")}
    return metrics.get("test_mae") if described == describes(checkpoint) else None


def page_html(data: dict) -> str:
    """The template with the run's data put in, as one self-contained page."""
    # "</" never appears inside the script, so the data cannot end it early.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return TEMPLATE.read_text().replace("/*RUN DATA*/null", payload)


def build_page(run_dir: Path, data_dir) -> tuple[bytes, dict]:
    """The page of the run in `run_dir`, as bytes, and the checkpoint it was made from."""
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    return page_bytes(page_data(model, checkpoint, run_dir, data_dir), run_dir), checkpoint


def page_bytes(data: dict, run_dir: Path) -> bytes:
    page = page_html(data).encode()
    if len(page) > MAX_BYTES:  # not reached up to --latent-dim 784: a guard, should that change
        raise RunError(f"the explorer page of {run_dir} would be {len(page):,} bytes, over "
                       f"{MAX_BYTES:,}: draw it with fewer PICTURES_PER_CLASS in explorer.py")
    return page


def in_a_frame(page_path, height: int = 1020) -> str:
    """HTML that shows a page in a frame of its own, as a notebook displays it: the page keeps its
    own ids, styles and address, apart from the notebook's."""
    page = html.escape(Path(page_path).read_text(), quote=True)
    return f'<iframe srcdoc="{page}" style="width: 100%; height: {height}px; border: 0"></iframe>'


@cli.script
def main(argv=None) -> None:
    parser = cli.ArgumentParser("Write a run's explorer page, explorer.html.")
    parser.add_argument("--run-dir", default=None, help="the run (default: the newest in runs/)")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    args = parser.parse_args(argv)
    run_dir = run_to_use(args.run_dir, "writing the explorer of")
    page, checkpoint = build_page(run_dir, args.data_dir)
    write_reports(run_dir, checkpoint.get("stamp"), {"explorer.html": page})
    print(f"wrote {run_dir / 'explorer.html'}: open it in a browser")


if __name__ == "__main__":
    main()
