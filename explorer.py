"""The explorer: one HTML page that shows denoising whole: a test image, its noise, the code, the output.

    python explorer.py                        # the newest run: writes runs/<run>/explorer.html
    python explorer.py --measure runs/seed3/explorer.html   # its speed in headless Chromium

visualize.py writes the page too. It is explorer.html with the run's data put in; the browser runs
the encoder and the decoder layer by layer (PAGE_LAYERS). A decoder it cannot run gets no page.
"""

import base64
import functools
import html
import json
import statistics
from pathlib import Path

import cli  # first, so that Ctrl-C while torch loads is one line
import torch
from torch import nn

from checkpoints import load_checkpoint
from data import CLASS_NAMES, DATA_DIR, standard_test_noise, write_atomically
from evaluate import RunData, describes, run_data, run_to_use, sampling_distribution
from runs import CHECKPOINT_FILE

TEMPLATE = Path(__file__).resolve().parent / "explorer.html"
PICTURES_PER_CLASS = 30  # test images on the page, each a dot (5 past d = 64)
NOISE_STEP = 1 / 32  # evaluate.py's noise, kept to 1/32 of its std
SLIDERS = 16  # sliders at most
FULL_COVARIANCE = 64  # past it, samples number by number
MAX_BYTES = 3_000_000
# The layers the page runs, in the encoder and the decoder
PAGE_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Unflatten, nn.Flatten, nn.ReLU, nn.LeakyReLU,
               nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout)


class PageError(cli.UserError):
    """The page cannot run a part of this model; the message says which, and what still works."""


def as_base64(tensor: torch.Tensor, dtype=torch.float32) -> str:
    """A tensor's values, flat and little-endian, as base64: a page reads it into a typed array."""
    return base64.b64encode(tensor.detach().to(dtype).contiguous().numpy().tobytes()).decode()


def page_layers(model: nn.Module, part: str, inputs: torch.Tensor, outputs: torch.Tensor) -> list[dict]:
    """`model.encoder`'s or `model.decoder`'s leaf layers, in order, as the page runs them; PageError for
    one it cannot run, or if they do not turn `inputs` into `outputs` (the first ones, for a VAE's mean)."""
    module = getattr(model, part, None)
    if not isinstance(module, nn.Module):
        raise PageError(f"the model has no `{part}` module for the page to run")
    layers = [(name, layer) for name, layer in module.named_modules() if not list(layer.children())]
    described = [describe_layer(f"{part}.{name}", layer) for name, layer in layers]
    with torch.no_grad():
        try:
            chained = functools.reduce(lambda x, layer: layer(x), [layer for _, layer in layers], inputs)
            chained = chained.flatten(1)[:, : outputs[0].numel()]  # (N, 2d) -> (N, d): mu of (mu, log var)
        except RuntimeError:
            chained = None
    if chained is None or chained.shape != outputs.flatten(1).shape or not torch.allclose(
            chained, outputs.flatten(1), atol=1e-5):
        method = {"encoder": "encode", "decoder": "decode"}[part]
        raise PageError(f"model.{method} does more than run its {part}'s layers in order (a skip, a reshape "
                        f"or a second head outside them)")
    return described


def describe_layer(name: str, layer: nn.Module) -> dict:
    """One layer as the page reads it: its type, its settings and its weights."""
    kind = type(layer).__name__
    unsupported = None
    if not isinstance(layer, PAGE_LAYERS):
        unsupported = f"{name} is a {kind}"
    elif isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and (
            layer.groups != 1 or layer.dilation != (1, 1) or layer.padding_mode != "zeros"
            or isinstance(layer.padding, str)):
        unsupported = f"{name} is a {kind} with groups, dilation, padding by name or a padding mode"
    elif isinstance(layer, nn.Unflatten) and layer.dim not in (1, -1):
        unsupported = f"{name} unflattens dimension {layer.dim}, not the one after the batch"
    elif isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
        unsupported = f"{name} flattens dimensions {layer.start_dim} to {layer.end_dim}, not all but the batch"
    if unsupported:
        raise PageError(f"{unsupported}, which the page cannot run (it knows "
                        f"{', '.join(kind.__name__ for kind in PAGE_LAYERS)})")
    described = {"type": kind}
    if isinstance(layer, nn.LeakyReLU):
        described["slope"] = layer.negative_slope
    if isinstance(layer, nn.Unflatten):
        described["shape"] = list(layer.unflattened_size)
    if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        described["weight"] = as_base64(layer.weight)
        described["bias"] = None if layer.bias is None else as_base64(layer.bias)
    if isinstance(layer, nn.Linear):
        described.update({"in": layer.in_features, "out": layer.out_features})
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        described.update({"in": layer.in_channels, "out": layer.out_channels, "kernel": list(layer.kernel_size),
                          "stride": list(layer.stride), "padding": list(layer.padding)})
    if isinstance(layer, nn.ConvTranspose2d):
        described["output_padding"] = list(layer.output_padding)
    return described


def slider_ranges(codes: torch.Tensor) -> torch.Tensor:
    """(d, 2): per code number, the middle 99% of the training codes and a 5% margin each side."""
    low, high = torch.quantile(codes, torch.tensor([0.005, 0.995]), dim=0)  # (d,) each
    return torch.stack([low - 0.05 * (high - low), high + 0.05 * (high - low)], dim=1)


def chosen_pictures(labels: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """The test indices of the first few test images of each class, in the test set's order."""
    per_class = PICTURES_PER_CLASS if latent_dim <= FULL_COVARIANCE else 5
    return torch.cat([(labels == index).nonzero()[:per_class, 0] for index in range(len(CLASS_NAMES))]).sort().values


@torch.no_grad()
def page_data(model, checkpoint: dict, run_dir: Path, run: RunData) -> dict:
    """Everything the page shows, as plain values: the run, its encoder and decoder, and test images with
    evaluate.py's noise on them, each with its code at the run's noise std."""
    config = checkpoint["config"]
    codes = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(0)) * 2
    try:  # first: a decoder the page cannot run needs nothing else
        decoder = page_layers(model, "decoder", codes, model.decode(codes))
    except PageError as error:
        raise PageError(f"{error}: no explorer page; every figure and the report are made as usual") from None
    pictures = chosen_pictures(run.test_labels, model.latent_dim)  # (N,) test indices
    clean = run.test_clean[pictures]  # (N, 1, 28, 28)
    steps = (standard_test_noise(run.test_clean.shape)[pictures] / NOISE_STEP).round().clamp(-127, 127)  # int8
    noisy = clean + config["noise_std"] * NOISE_STEP * steps
    picture_codes = model.encode(noisy)  # (N, d)
    try:
        encoder, encoder_problem = page_layers(model, "encoder", noisy[:4], picture_codes[:4]), None
    except PageError as error:
        encoder, encoder_problem = None, str(error)
    mean, covariance, source = sampling_distribution(model, run.train_codes)
    if model.latent_dim <= FULL_COVARIANCE:
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        spread = eigenvectors * eigenvalues.clamp(min=0).sqrt()  # z = mean + spread @ eps, eps ~ N(0, I)
    else:
        spread = covariance.diagonal().clamp(min=0).sqrt()  # (d,): each number's own spread
        source += f" (past {FULL_COVARIANCE} numbers, each drawn on its own, correlations left out)"
    return {
        "run": run_dir.name, "stamp": checkpoint["stamp"], "model": model.name, "latent_dim": model.latent_dim,
        "noise_std": config["noise_std"], "best_epoch": checkpoint["best_epoch"],
        "test_mae": matching_test_mae(run_dir, checkpoint), "classes": list(CLASS_NAMES),
        "sliders": min(SLIDERS, model.latent_dim), "ranges": slider_ranges(run.train_codes).tolist(),
        "sampling": {"mean": as_base64(mean), "spread": as_base64(spread), "source": source},
        "decoder": decoder, "encoder": encoder, "encoder_problem": encoder_problem,
        "pictures": {"indices": pictures.tolist(), "labels": run.test_labels[pictures].tolist(),
                     "pixels": as_base64((clean * 255).round(), torch.uint8),
                     "noise": as_base64(steps, torch.int8), "noise_step": NOISE_STEP,
                     "codes": as_base64(picture_codes)},
    }


def matching_test_mae(run_dir: Path, checkpoint: dict) -> float | None:
    """The test MAE of evaluate.py's metrics.json, if it describes this very checkpoint."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("run"), dict):
        return None
    described = {key: metrics["run"].get(key) for key in ("best_epoch", "checkpoint_stamp")}
    test_mae = metrics.get("test_mae")
    return test_mae if described == describes(checkpoint) and isinstance(test_mae, float) else None


def page_html(data: dict) -> str:
    """The template with the run's data put in, as one self-contained page."""
    # "</" never appears inside the script, so the data cannot end it early.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return TEMPLATE.read_text().replace("/*RUN DATA*/null", payload)


def page_bytes(data: dict, run_dir: Path) -> bytes:
    page = page_html(data).encode()
    if len(page) > MAX_BYTES:  # not reached up to --latent-dim 784: a guard, should that change
        raise PageError(f"the explorer page of {run_dir} would be {len(page):,} bytes, over "
                        f"{MAX_BYTES:,}: draw it with fewer PICTURES_PER_CLASS in explorer.py")
    return page


def in_a_frame(page_path, height: int = 1020) -> str:
    """HTML that shows a page in a frame of its own, as a notebook displays it: the page keeps its
    own ids, styles and address, apart from the notebook's."""
    page = html.escape(Path(page_path).read_text(), quote=True)
    return f'<iframe srcdoc="{page}" style="width: 100%; height: {height}px; border: 0"></iframe>'


def measure_in_chromium(page: Path, moves: int = 200, browser=None) -> dict:
    """Milliseconds from a slider's input event to the frame painted after it, for `moves` arrow-key
    moves in headless Chromium. Needs playwright (a development tool) and Debian's `chromium`."""
    if browser is None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise cli.UserError("--measure needs playwright, a development tool: python -m pip install playwright "
                           "(and Chromium: apt-get install chromium)") from None
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            try:
                return measure_in_chromium(page, moves, browser)
            finally:
                browser.close()
    tab = browser.new_page()
    tab.goto(page.resolve().as_uri())
    tab.wait_for_function("document.documentElement.dataset.state === 'ready'")
    tab.evaluate(MEASURE_SCRIPT)
    tab.focus("#z0")
    for move in range(moves):
        tab.keyboard.press("ArrowRight" if move % 40 < 20 else "ArrowLeft")
        tab.wait_for_function(f"window.paintTimes.length > {move}")
    painted, handled = tab.evaluate("window.paintTimes"), tab.evaluate("window.handledTimes")
    tab.close()
    return {"moves": moves, "median": statistics.median(painted), "worst": max(painted),
            "handled_median": statistics.median(handled), "handled_worst": max(handled)}


# headless, offline, no GPU
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
MEASURE_SCRIPT = """
window.paintTimes = [];
window.handledTimes = [];
document.getElementById("sliders").addEventListener("input", event => {  // after the slider's own handler
  const start = event.timeStamp;
  window.handledTimes.push(performance.now() - start);
  requestAnimationFrame(() => setTimeout(() => window.paintTimes.push(performance.now() - start)));
});
"""


def chromium_path() -> str:
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise cli.UserError("--measure needs Chromium: apt-get install chromium")
    return path


@cli.script
def main(argv=None) -> None:
    parser = cli.parser("explorer.py", "Write a run's explorer page, explorer.html.")
    parser.add_argument("--run-dir", default=None, help="the run (default: the newest in runs/)")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--measure", metavar="PAGE", default=None,
                        help="time slider moves on this page in headless Chromium, instead of writing one")
    args = parser.parse_args(argv)
    if args.measure is not None:
        timing = measure_in_chromium(Path(args.measure))
        print(f"{timing['moves']} slider moves in headless Chromium, from the input event to the frame "
              f"painted after it: median {timing['median']:.1f} ms, worst {timing['worst']:.1f} ms; to the "
              f"end of the page's own work (decode, draw): median {timing['handled_median']:.1f} ms, worst "
              f"{timing['handled_worst']:.1f} ms")
        return
    run_dir = run_to_use(args.run_dir, "writing the explorer of")
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    page = page_bytes(page_data(model, checkpoint, run_dir, run_data(model, checkpoint, args.data_dir)), run_dir)
    write_atomically(run_dir / "explorer.html", page)
    print(f"wrote {run_dir / 'explorer.html'}: open it in a browser")


if __name__ == "__main__":
    main()
