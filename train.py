"""Train the denoising autoencoder on Fashion-MNIST with the published recipe.

    python train.py                                  # the recipe, on this machine's accelerator if it has one
    python train.py --device cpu --epochs 20         # a short run on the CPU, in a directory of its own
    python train.py --seed 3 --run-dir runs/seed3    # a directory you name (a run already there is replaced)

Recipe: L1 loss, Adam (lr 1e-3), batches of 4096, at most 200 epochs, early stopping with patience 25
and min delta 1e-3, Gaussian noise of std 0.2, fresh for every batch.

Each run writes a new directory, runs/<date>_<time>/ (the newest sorts last), unless --run-dir names
one. In it, checkpoint.pt holds the weights with the lowest validation loss, the configuration and
the per-epoch history. Then run `python evaluate.py` and `python visualize.py`, which take the
newest run. Ctrl-C, or a SIGTERM from `timeout` or a job scheduler, stops cleanly and keeps the best
weights and the history up to the last finished epoch.
"""

import argparse
import math
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from dae import CHECKPOINT_FILE, DenoisingAutoencoder, save_checkpoint
from data import DataError, add_noise, check_images, load_training_split

ROOT = Path(__file__).resolve().parent
RUNS_DIR = ROOT / "runs"
NEW_RUN_DIR = str(RUNS_DIR / "<date>_<time>")  # --run-dir's default: a new directory, named as the run starts

# Written by evaluate.py and visualize.py. A new run removes them when it first saves, so a run
# directory never mixes the figures of one run with the checkpoint of another.
FILES_FROM_EARLIER_RUN = (
    "metrics.json", "metrics-noise*.json",
    "reconstructions.png", "latent_pairs.png", "latent_traversals.png", "noise_levels.png", "loss_curves.png",
)
# The flags that make up the published recipe; the others (seed, paths, device) do not change it.
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "noise_std", "latent_dim", "patience", "min_delta", "val_size")


class EarlyStopping:
    """Says when to stop: after `patience` epochs in a row that did not beat the best loss by more than `min_delta`.

    It decides only when to stop; which weights to keep is the training loop's business.
    """

    def __init__(self, patience: int, min_delta: float):
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = math.inf
        self.epochs_without_improvement = 0

    def should_stop(self, loss: float) -> bool:
        if loss < self.best_loss - self.min_delta:
            self.best_loss = loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    # fused=True updates all parameters in one kernel instead of a few per tensor: on a GPU, where
    # every kernel launch costs microseconds, that is a visible share of a 30 ms epoch.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def training_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The training objective: the L1 distance (mean absolute error) from the output for `noisy` to `clean`."""
    return F.l1_loss(model(noisy), clean)


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    batch_size: int,
    noise_std: float,
    *,
    generator: torch.Generator | None = None,
) -> float:
    """One pass over `images` (N, 1, 28, 28), already on the training device; returns the mean training loss.

    `generator` (on the images' device) draws the shuffle and the noise; without one, torch's global one does.
    """
    check_images(images)
    model.train()
    order = torch.randperm(len(images), device=images.device, generator=generator)
    loss_sum = torch.zeros((), device=images.device)
    for start in range(0, len(images), batch_size):
        clean = images[order[start : start + batch_size]]  # (B, 1, 28, 28), a slice of the resident data
        # Fresh noise every batch, so the model never sees the same corruption twice.
        noisy = add_noise(clean, noise_std, generator=generator)
        loss = training_loss(model, noisy, clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Summed on the device: calling .item() here would make the host wait for every batch.
        loss_sum += loss.detach() * len(clean)
    return loss_sum.item() / len(images)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean absolute error of the reconstructions of `noisy`, through the model's code (`encode`, then `decode`)."""
    check_images(noisy, "noisy")
    check_images(clean, "clean")
    model.eval()
    return F.l1_loss(model.decode(model.encode(noisy)), clean).item()


def pick_device(name: str) -> torch.device:
    """argparse type for --device: 'auto' is this machine's accelerator (CUDA, Apple MPS ...) or else the CPU."""
    if name == "auto":
        return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    present = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name not in present:
        raise argparse.ArgumentTypeError(f"unknown device '{name}': choose auto, cpu, cuda or mps")
    if not present[name]:
        raise argparse.ArgumentTypeError(f"this machine has no {name} device: use --device auto or --device cpu")
    return torch.device(name)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the denoising autoencoder on Fashion-MNIST.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # a mistyped flag is an error, never a shorter one's prefix (--epoch for --epochs)
    )
    parser.add_argument("--epochs", type=positive_int, default=200, help="most epochs to train")
    parser.add_argument("--batch-size", type=positive_int, default=4096, help="images per optimizer step")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--noise-std", type=non_negative_float, default=0.2, help="std of the Gaussian noise")
    parser.add_argument("--latent-dim", type=positive_int, default=8, help="numbers in the code between the halves")
    parser.add_argument("--patience", type=positive_int, default=25, help="epochs without improvement before stopping")
    parser.add_argument("--min-delta", type=non_negative_float, default=1e-3,
                        help="smallest drop in validation loss that counts as improvement")
    parser.add_argument("--val-size", type=positive_int, default=10_000, help="training images held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the initial weights and the noise")
    parser.add_argument("--data-dir", default=str(ROOT / "data"), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--run-dir", default=NEW_RUN_DIR,
                        help="where the run is written; an earlier run there is replaced")
    parser.add_argument("--device", type=pick_device, default="auto", help="auto, cpu, cuda or mps")
    return parser.parse_args(argv)


def recipe_changes(args: argparse.Namespace) -> dict:
    """The recipe flags this run set away from the published values (train.py's defaults): flag -> value."""
    published = parse_args([])
    return {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) != getattr(published, name)}


def new_run_dir(runs_dir: Path) -> Path:
    """A directory of this run's own, named by its start time so that the newest sorts last."""
    name = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1, 100):
        run_dir = runs_dir / (name if attempt == 1 else f"{name}_{attempt}")  # two runs started in one second
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as error:
            sys.exit(f"error: cannot create a directory in {runs_dir} ({error.strerror}): pass a writable --run-dir")
    sys.exit(f"error: cannot find a free run directory name in {runs_dir}: pass --run-dir")


def prepare_run_dir(run_dir: Path) -> None:
    """Make sure the run can be saved before any time is spent training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as error:
        sys.exit(f"error: cannot write the run directory {run_dir} ({error.strerror}): pass a writable --run-dir")


def remove_earlier_run(run_dir: Path) -> None:
    for pattern in FILES_FROM_EARLIER_RUN:
        for path in run_dir.glob(pattern):
            path.unlink(missing_ok=True)


def load_training_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training images, noisy validation images, clean validation images), all on the training device."""
    # One seeded generator for the split and the validation noise, both drawn on the CPU so they
    # are the same on every device.
    (train_images, _), (val_images, val_noisy) = load_training_split(
        args.data_dir, args.val_size, args.noise_std, generator=torch.Generator().manual_seed(args.seed)
    )
    print(f"{len(train_images):,} training and {len(val_images):,} validation images")
    # The whole data set lives on the device for the run: batches are slices, not copies from the host.
    return train_images.to(args.device), val_noisy.to(args.device), val_images.to(args.device)


class Terminated(BaseException):
    """SIGTERM arrived (`timeout`, a job scheduler, a notebook kernel stop). Like KeyboardInterrupt, a
    BaseException, so that no `except Exception` on the way swallows it."""


def raise_terminated(signal_number, frame):
    raise Terminated


def epoch_line(epoch: int, args, train_loss: float, val_loss: float, saved: bool, progress: bool,
               early_stopping: EarlyStopping, seconds: float) -> str:
    """One log line that explains itself: did this epoch save new best weights, and did early stopping count it?"""
    if progress:
        patience_note = "progress"
    elif saved:
        patience_note = "gain under min delta"
    else:
        patience_note = "no progress"
    return (f"epoch {epoch:3d}/{args.epochs}  train {train_loss:.4f}  val {val_loss:.4f}"
            f"  {'new best, saved' if saved else '':15}"
            f"  patience {early_stopping.epochs_without_improvement:2d}/{args.patience} ({patience_note})"
            f"  {seconds:.2f}s")


def train(args: argparse.Namespace, run_dir: Path) -> str:
    """Run the recipe and save the best weights to `run_dir`; returns why training stopped."""
    device = args.device
    print(f"device {device}, torch {torch.__version__}")
    prepare_run_dir(run_dir)
    train_images, val_noisy, val_images = load_training_data(args)
    device = train_images.device  # the very device the data sits on: cuda:0, not cuda, for its generator

    torch.manual_seed(args.seed)  # the initial weights, drawn on the CPU, so every device starts alike
    model = DenoisingAutoencoder(args.latent_dim).to(device)
    optimizer = make_optimizer(model, args.lr)
    early_stopping = EarlyStopping(args.patience, args.min_delta)
    noise_generator = torch.Generator(device).manual_seed(args.seed)  # the training noise, made on the device

    config = {name: str(value) if isinstance(value, torch.device) else value for name, value in vars(args).items()}
    config["run_dir"] = str(run_dir)
    history = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
    best_epoch, best_val_loss, best_state = 0, math.inf, None

    def save(stop_reason: str) -> None:
        save_checkpoint(
            run_dir / CHECKPOINT_FILE, model, best_state, config=config, recipe_changes=recipe_changes(args),
            history=history, best_epoch=best_epoch, best_val_loss=best_val_loss, stop_reason=stop_reason,
            device=str(device), torch_version=str(torch.__version__),
        )

    if (run_dir / CHECKPOINT_FILE).exists():
        print(f"{run_dir} holds an earlier run: this run replaces it when it saves its first epoch")
    print(f"writing to {run_dir}")
    print("each epoch line: 'new best, saved' when the validation loss is the lowest so far (those weights are kept);")
    print(f"  'progress' when it beats early stopping's best by more than min delta {args.min_delta}: "
          f"otherwise patience counts up")
    stop_reason = f"reached --epochs {args.epochs}"
    run_start = time.perf_counter()
    try:
        for epoch in range(1, args.epochs + 1):
            epoch_start = time.perf_counter()
            train_loss = train_one_epoch(
                model, optimizer, train_images, args.batch_size, args.noise_std, generator=noise_generator
            )
            val_loss = validation_loss(model, val_noisy, val_images)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            history["epoch_seconds"].append(time.perf_counter() - epoch_start)

            # Keep the weights with the lowest validation loss, whatever early stopping counts as progress.
            saved = val_loss < best_val_loss
            if saved:
                if best_state is None:
                    remove_earlier_run(run_dir)
                best_epoch, best_val_loss = epoch, val_loss
                best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
                save("running")
            stop = early_stopping.should_stop(val_loss)
            progress = early_stopping.epochs_without_improvement == 0  # its count starts again only on progress
            print(epoch_line(epoch, args, train_loss, val_loss, saved, progress, early_stopping,
                             history["epoch_seconds"][-1]))
            if stop:
                stop_reason = f"early stopping: no improvement above {args.min_delta} for {args.patience} epochs"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    except Terminated:
        stop_reason = "terminated"

    epochs_run = len(history["val_loss"])
    print(f"stopped after {epochs_run} epochs ({stop_reason}) in {time.perf_counter() - run_start:.1f}s")
    if best_state is None:
        print("no epoch finished, so nothing was saved")
        return stop_reason
    save(stop_reason)  # once more, with the full history
    print(f"best epoch {best_epoch}, validation loss {best_val_loss:.5f}; saved to {run_dir / CHECKPOINT_FILE}")
    return stop_reason


EXIT_STATUS = {"interrupted": 130, "terminated": 143}  # the shell's usual 128 + signal number (SIGINT 2, SIGTERM 15)


def main(argv=None) -> None:
    args = parse_args(argv)
    run_dir = new_run_dir(RUNS_DIR) if args.run_dir == NEW_RUN_DIR else Path(args.run_dir)
    previous_handler = signal.signal(signal.SIGTERM, raise_terminated)  # SIGTERM stops like Ctrl-C: save, then exit
    try:
        stop_reason = train(args, run_dir)
    except DataError as error:
        sys.exit(f"error: {error}")
    except (KeyboardInterrupt, Terminated) as stop:  # before the first epoch began (the loop handles its own)
        print("stopped before training started; nothing was written")
        stop_reason = "terminated" if isinstance(stop, Terminated) else "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if args.run_dir == NEW_RUN_DIR and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that saved nothing leaves no empty directory behind
    if stop_reason in EXIT_STATUS:
        sys.exit(EXIT_STATUS[stop_reason])


if __name__ == "__main__":
    main()
