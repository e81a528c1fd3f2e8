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

From a notebook or another script, `train(parse_args([...]))` runs the same recipe and returns the
trained model with its history (README, "Use it from a notebook").
"""

import argparse
import math
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dae import DenoisingAutoencoder
from data import DATA_DIR, DataError, add_noise, check_images, load_training_split
from runs import (
    CHECKPOINT_FILE, STILL_RUNNING, RunError, new_run_dir, prepare_run_dir, remove_files_of_earlier_run,
    save_checkpoint, silence_closed_output,
)

NEW_RUN_DIR = "runs/<date>_<time>"  # --run-dir's default: a new directory, named as the run starts
# The flags that make up the published recipe; the others (seed, paths, device) do not change it.
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "noise_std", "latent_dim", "patience", "min_delta", "val_size")
OBJECTIVE = "L1 loss (mean absolute error)"  # what training_loss minimizes, as the loss figure labels it


# ---- The recipe: the objective, one epoch, the validation loss, and when to stop ----

def training_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training objective, as {"loss": what the optimizer minimizes, and any other term worth logging}.

    For this DAE it is one term: the L1 distance (mean absolute error) from the output for `noisy`
    to `clean`. A VAE adds its KL term here (docs/vae.patch), and train.py logs every term it returns.
    """
    return {"loss": F.l1_loss(model(noisy), clean)}


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    # Tutorials write plain Adam, which updates each parameter tensor with a few small kernels;
    # fused=True does all of them in one. On a GPU, where every kernel launch costs microseconds,
    # that is a visible share of a 30 ms epoch; the arithmetic is the same.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    batch_size: int,
    noise_std: float,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One pass over `images` (N, 1, 28, 28), already on the training device; returns each term's mean, by name.

    `generator` (on the images' device) draws the shuffle and the noise; without one, torch's global one does.
    """
    check_images(images)
    model.train()
    # Tutorials wrap the data in a DataLoader that turns images into tensors batch by batch; here the
    # whole set already is one tensor on the device, so a batch is an index slice of it.
    order = torch.randperm(len(images), device=images.device, generator=generator)
    sums = defaultdict(lambda: torch.zeros((), device=images.device))
    for start in range(0, len(images), batch_size):
        clean = images[order[start : start + batch_size]]  # (B, 1, 28, 28), a slice of the resident data
        # Fresh noise every batch, so the model never sees the same corruption twice.
        noisy = add_noise(clean, noise_std, generator=generator)
        terms = training_loss(model, noisy, clean)
        optimizer.zero_grad(set_to_none=True)  # set_to_none: the next backward writes gradients, not adds them
        terms["loss"].backward()
        optimizer.step()
        # Tutorials call loss.item() here; that makes the host wait for the device every batch. Summed on
        # the device instead, the host waits once per epoch.
        for name, value in terms.items():
            sums[name] += value.detach() * len(clean)
    return {name: total.item() / len(images) for name, total in sums.items()}


@torch.no_grad()
def validation_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean absolute error of the reconstructions of `noisy`, through the model's code (`encode`, then `decode`)."""
    check_images(noisy, "noisy")
    check_images(clean, "clean")
    model.eval()
    return F.l1_loss(model.decode(model.encode(noisy)), clean).item()


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


# ---- A run: the loop, the weights it keeps, and what it saves ----

@dataclass
class TrainedRun:
    """What `train` returns: the model with the kept weights (on the CPU, in eval mode), and how it got there."""

    model: DenoisingAutoencoder | None  # None only when no epoch finished
    history: dict  # per epoch: train_loss, val_loss, epoch_seconds, and train_<term> for any other term
    best_epoch: int
    best_val_loss: float
    stop_reason: str
    run_dir: Path


class TrainingError(Exception):
    """Training could not go on (a loss that is not finite, a save that failed); the message says what to do.
    Whatever was saved before stays whole."""


class Terminated(BaseException):
    """SIGTERM arrived (`timeout`, a job scheduler, a notebook kernel stop). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


def train(args: argparse.Namespace) -> TrainedRun:
    """Run the recipe that `args` describes (train.py's flags, `parse_args([...])`), saving as it goes.

    Saves the weights at each new lowest validation loss, and the whole history when it stops.
    Ctrl-C or SIGTERM stops it cleanly, like early stopping. Raises DataError or RunError before
    training, and TrainingError when training cannot go on; each says in one line what to do.
    """
    run_dir = new_run_dir() if args.run_dir == NEW_RUN_DIR else Path(args.run_dir)
    try:
        return train_into(run_dir, args)
    finally:
        if args.run_dir == NEW_RUN_DIR and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that saved nothing leaves no empty directory behind


def train_into(run_dir: Path, args: argparse.Namespace) -> TrainedRun:
    print(f"device {args.device}, torch {torch.__version__}")
    prepare_run_dir(run_dir)
    train_images, val_noisy, val_images = load_training_data(args)
    # The very device the data sits on: cuda:0, where --device said cuda. A generator must be made on
    # exactly the device of the tensors it draws for, or torch refuses it.
    device = train_images.device

    torch.manual_seed(args.seed)  # the initial weights, drawn on the CPU, so every device starts alike
    model = DenoisingAutoencoder(args.latent_dim).to(device)
    optimizer = make_optimizer(model, args.lr)
    early_stopping = EarlyStopping(args.patience, args.min_delta)
    noise_generator = torch.Generator(device).manual_seed(args.seed)  # the training noise, made on the device

    config = {name: str(value) if isinstance(value, torch.device) else value for name, value in vars(args).items()}
    config["run_dir"] = str(run_dir)
    changes = recipe_changes(args)  # what evaluate.py reads to decide if the published figure compares
    history = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
    best_epoch, best_val_loss, best_state = 0, math.inf, None

    def save(stop_reason: str) -> None:
        save_checkpoint(
            run_dir / CHECKPOINT_FILE, model, best_state, config=config, recipe_changes=changes,
            history=history, best_epoch=best_epoch, best_val_loss=best_val_loss, stop_reason=stop_reason,
            device=str(device), torch_version=str(torch.__version__), objective=OBJECTIVE,
        )

    if (run_dir / CHECKPOINT_FILE).exists():
        print(f"{run_dir} holds an earlier run: this run replaces it when it saves its first epoch")
    print(f"writing to {run_dir}")
    print("each epoch line: 'new best, saved' when the validation loss is the lowest so far (those weights are kept);")
    print(f"  'progress' when it beats early stopping's best by more than min delta {args.min_delta}: "
          f"otherwise patience counts up")
    stop_reason, failure = f"reached --epochs {args.epochs}", None
    run_start = time.perf_counter()
    try:
        for epoch in range(1, args.epochs + 1):
            epoch_start = time.perf_counter()
            train_terms = train_one_epoch(
                model, optimizer, train_images, args.batch_size, args.noise_std, generator=noise_generator
            )
            val_loss = validation_loss(model, val_noisy, val_images)
            record_epoch(history, train_terms, val_loss, time.perf_counter() - epoch_start)
            if not all(map(math.isfinite, [*train_terms.values(), val_loss])):
                print(f"epoch {epoch:3d}/{args.epochs}  train {train_terms['loss']:.4f}  val {val_loss:.4f}"
                      f"  not a finite number: training stops here")
                stop_reason, failure = f"diverged at epoch {epoch}", TrainingError(divergence(epoch, args, best_epoch))
                break

            # Keep the weights with the lowest validation loss, whatever early stopping counts as progress.
            saved = val_loss < best_val_loss
            if saved:
                first_save = best_state is None
                best_epoch, best_val_loss = epoch, val_loss
                best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
                try:
                    save(STILL_RUNNING)
                except RunError as error:
                    raise TrainingError(f"epoch {epoch}: {error}" + kept_so_far(run_dir, first_save)) from None
                if first_save:
                    remove_files_of_earlier_run(run_dir)  # only now that this run's own checkpoint is safe
            stop = early_stopping.should_stop(val_loss)
            progress = early_stopping.epochs_without_improvement == 0  # its count starts again only on progress
            print(epoch_line(epoch, args, train_terms, val_loss, saved, progress, early_stopping,
                             history["epoch_seconds"][-1]))
            if stop:
                stop_reason = f"early stopping: no improvement above {args.min_delta} for {args.patience} epochs"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    except Terminated:
        stop_reason = "terminated"
    except BrokenPipeError:  # `python train.py | head`: the reader left; stop like Ctrl-C, and quietly
        silence_closed_output()
        stop_reason = "output closed"

    epochs_run = len(history["val_loss"])
    print(f"stopped after {epochs_run} epochs ({stop_reason}) in {time.perf_counter() - run_start:.1f}s")
    if best_state is None:
        print("no epoch finished, so nothing was saved" if epochs_run == 0 else
              "no epoch gave a finite loss, so nothing was saved")
    else:
        try:
            save(stop_reason)  # once more, with the full history
        except RunError as error:
            raise TrainingError(f"saving the finished run: {error}" + kept_so_far(run_dir, False)) from None
        print(f"best epoch {best_epoch}, validation loss {best_val_loss:.5f}; saved to {run_dir / CHECKPOINT_FILE}")
    if failure:
        raise failure
    if best_state is None:
        return TrainedRun(None, history, best_epoch, best_val_loss, stop_reason, run_dir)
    model.load_state_dict(best_state)  # the kept weights, not the last epoch's
    return TrainedRun(model.cpu().eval(), history, best_epoch, best_val_loss, stop_reason, run_dir)


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


def record_epoch(history: dict, train_terms: dict, val_loss: float, seconds: float) -> None:
    history["train_loss"].append(train_terms["loss"])
    history["val_loss"].append(val_loss)
    history["epoch_seconds"].append(seconds)
    for name, value in train_terms.items():
        if name != "loss":
            history.setdefault(f"train_{name}", []).append(value)


def recipe_changes(args: argparse.Namespace) -> dict:
    """The recipe flags this run set away from the published values (train.py's defaults): flag -> value."""
    published = parse_args([])
    return {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) != getattr(published, name)}


def divergence(epoch: int, args: argparse.Namespace, best_epoch: int) -> str:
    """What a loss that is not finite (nan, inf) means, and the flags that fix it."""
    published = parse_args([])
    kept = f"the weights of epoch {best_epoch} stay saved" if best_epoch else "nothing was saved"
    return (f"epoch {epoch}: the loss is not a finite number, so training diverged ({kept}): "
            f"a learning rate or a noise far too large does this: lower --lr (this run {args.lr:g}, "
            f"the recipe {published.lr:g}) or --noise-std (this run {args.noise_std:g}, "
            f"the recipe {published.noise_std:g})")


def kept_so_far(run_dir: Path, nothing_saved_yet: bool) -> str:
    if nothing_saved_yet:
        return "; nothing of an earlier run there was touched" if (run_dir / CHECKPOINT_FILE).exists() else ""
    return f"; the checkpoint saved before it, {run_dir / CHECKPOINT_FILE}, is whole"


def raise_terminated(signal_number, frame):
    raise Terminated


# ---- The command line ----

def epoch_line(epoch: int, args, train_terms: dict, val_loss: float, saved: bool, progress: bool,
               early_stopping: EarlyStopping, seconds: float) -> str:
    """One log line that explains itself: did this epoch save new best weights, and did early stopping count it?"""
    if progress:
        patience_note = "progress"
    elif saved:
        patience_note = "gain under min delta"
    else:
        patience_note = "no progress"
    other_terms = ", ".join(f"{name} {value:.4f}" for name, value in train_terms.items() if name != "loss")
    other_terms = f" ({other_terms})" if other_terms else ""  # a fork's terms, a VAE's KL say
    return (f"epoch {epoch:3d}/{args.epochs}  train {train_terms['loss']:.4f}{other_terms}"
            f"  val {val_loss:.4f}"
            f"  {'new best, saved' if saved else '':15}"
            f"  patience {early_stopping.epochs_without_improvement:2d}/{args.patience} ({patience_note})"
            f"  {seconds:.2f}s")


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
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--run-dir", default=NEW_RUN_DIR,
                        help="where the run is written; an earlier run there is replaced")
    parser.add_argument("--device", type=pick_device, default="auto", help="auto, cpu, cuda or mps")
    return parser.parse_args(argv)


# The shell's usual 128 + signal number: SIGINT 2, SIGTERM 15, and SIGPIPE 13 for a reader that left.
EXIT_STATUS = {"interrupted": 130, "terminated": 143, "output closed": 141}


def main(argv=None) -> None:
    args = parse_args(argv)
    # SIGTERM stops like Ctrl-C: save, then exit. Signals arrive as exceptions, the one way Python
    # lets them stop the loop at a safe point (after the current batch), with the saving code in `except`.
    previous_handler = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        stop_reason = train(args).stop_reason
    except (DataError, RunError, TrainingError) as error:
        sys.exit(f"error: {error}")
    except RuntimeError as error:  # torch.OutOfMemoryError on a GPU, a plain RuntimeError on a Mac or the CPU
        if "out of memory" in str(error):
            memory, remedy = f"the {args.device} device's memory", "or train on the CPU with --device cpu"
        elif "can't allocate memory" in str(error):  # the CPU's allocator
            memory, remedy = "this machine's memory", "or close other programs"
        else:
            raise
        sys.exit(f"error: {memory} ran out with --batch-size {args.batch_size} and --latent-dim {args.latent_dim}: "
                 f"pass a smaller --batch-size (or --latent-dim), {remedy}")
    except (KeyboardInterrupt, Terminated) as stop:  # before the first epoch began (the loop handles its own)
        print("stopped before training started; nothing was written")
        stop_reason = "terminated" if isinstance(stop, Terminated) else "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if stop_reason in EXIT_STATUS:
        sys.exit(EXIT_STATUS[stop_reason])


if __name__ == "__main__":
    main()
