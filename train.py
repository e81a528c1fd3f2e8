"""Train the denoising autoencoder on Fashion-MNIST with the published recipe.

    python train.py                                  # the recipe, on this machine's accelerator if it has one
    python train.py --seed 3 --run-dir runs/seed3    # another seed, kept beside the first run
    python train.py --device cpu --epochs 20         # a short run on the CPU

Recipe: L1 loss, Adam (lr 1e-3), batches of 4096, at most 200 epochs, early stopping with patience 25
and min delta 1e-3, Gaussian noise of std 0.2, fresh for every batch.

Writes <run-dir>/checkpoint.pt (default runs/): the weights with the lowest validation loss, the
configuration and the per-epoch history. Then run `python evaluate.py` and `python visualize.py`.
Ctrl-C stops cleanly and keeps the best checkpoint so far.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dae import CHECKPOINT_FILE, DenoisingAutoencoder, save_checkpoint
from data import DataError, add_noise, load_fashion_mnist, split_train_validation

ROOT = Path(__file__).resolve().parent

# Written by evaluate.py and visualize.py. A new run removes them when it first saves, so a run
# directory never mixes the figures of one run with the checkpoint of another.
FILES_FROM_EARLIER_RUN = ("metrics.json", "reconstructions.png", "latent_pairs.png", "loss_curves.png")


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


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    batch_size: int,
    noise_std: float,
    generator: torch.Generator,
) -> float:
    """One pass over `images` (N, 1, 28, 28), already on the training device; returns the mean L1 loss."""
    model.train()
    order = torch.randperm(len(images), device=images.device, generator=generator)
    loss_sum = torch.zeros((), device=images.device)
    for start in range(0, len(images), batch_size):
        clean = images[order[start : start + batch_size]]  # (B, 1, 28, 28), a slice of the resident data
        # Fresh noise every batch, so the model never sees the same corruption twice.
        noisy = add_noise(clean, noise_std, generator)
        loss = F.l1_loss(model(noisy), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Summed on the device: calling .item() here would make the host wait for every batch.
        loss_sum += loss.detach() * len(clean)
    return loss_sum.item() / len(images)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> float:
    model.eval()
    return F.l1_loss(model(noisy), clean).item()


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
    parser.add_argument("--run-dir", default=str(ROOT / "runs"), help="where the checkpoint is written")
    parser.add_argument("--device", type=pick_device, default="auto", help="auto, cpu, cuda or mps")
    return parser.parse_args(argv)


def prepare_run_dir(run_dir: Path) -> None:
    """Make sure the run can be saved before any time is spent training, and say if it replaces one."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as error:
        sys.exit(f"error: cannot write the run directory {run_dir} ({error.strerror}): pass a writable --run-dir")
    if (run_dir / CHECKPOINT_FILE).exists():
        print(f"{run_dir} holds an earlier run; this run replaces it (pass --run-dir to keep both)")


def remove_earlier_run(run_dir: Path) -> None:
    for name in FILES_FROM_EARLIER_RUN:
        (run_dir / name).unlink(missing_ok=True)


def load_training_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training images, noisy validation images, clean validation images), all on the training device."""
    # One seeded generator for the split and the validation noise, both drawn on the CPU so they
    # are the same on every device. The validation noise is drawn once: validation losses of
    # different epochs are then comparable.
    cpu_generator = torch.Generator().manual_seed(args.seed)
    images, labels = load_fashion_mnist(args.data_dir, train=True)
    if args.val_size >= len(images):
        sys.exit(f"error: --val-size {args.val_size} leaves no training images of {len(images)}: choose a smaller one")
    (train_images, _), (val_images, _) = split_train_validation(images, labels, args.val_size, cpu_generator)
    val_noisy = add_noise(val_images, args.noise_std, cpu_generator)
    print(f"{len(train_images):,} training and {len(val_images):,} validation images")
    # The whole data set lives on the device for the run: batches are slices, not copies from the host.
    return train_images.to(args.device), val_noisy.to(args.device), val_images.to(args.device)


def train(args: argparse.Namespace) -> str:
    """Run the recipe and save the best weights to the run directory; returns why training stopped."""
    device, run_dir = args.device, Path(args.run_dir)
    print(f"device {device}, torch {torch.__version__}")
    prepare_run_dir(run_dir)
    train_images, val_noisy, val_images = load_training_data(args)

    torch.manual_seed(args.seed)  # the initial weights, drawn on the CPU, so every device starts alike
    model = DenoisingAutoencoder(args.latent_dim).to(device)
    optimizer = make_optimizer(model, args.lr)
    early_stopping = EarlyStopping(args.patience, args.min_delta)
    noise_generator = torch.Generator(device).manual_seed(args.seed)  # the training noise, made on the device

    config = {name: str(value) if isinstance(value, torch.device) else value for name, value in vars(args).items()}
    history = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
    best_epoch, best_val_loss, best_state = 0, math.inf, None

    def save(stop_reason: str) -> None:
        save_checkpoint(
            run_dir / CHECKPOINT_FILE, model, best_state, config=config, history=history,
            best_epoch=best_epoch, best_val_loss=best_val_loss, stop_reason=stop_reason,
            device=str(device), torch_version=str(torch.__version__),
        )

    stop_reason = f"reached --epochs {args.epochs}"
    run_start = time.perf_counter()
    try:
        for epoch in range(1, args.epochs + 1):
            epoch_start = time.perf_counter()
            train_loss = train_one_epoch(
                model, optimizer, train_images, args.batch_size, args.noise_std, noise_generator
            )
            val_loss = validation_loss(model, val_noisy, val_images)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            history["epoch_seconds"].append(time.perf_counter() - epoch_start)

            # Keep the weights with the lowest validation loss, whatever early stopping counts as progress.
            if val_loss < best_val_loss:
                if best_state is None:
                    remove_earlier_run(run_dir)
                best_epoch, best_val_loss = epoch, val_loss
                best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
                save("running")
            stop = early_stopping.should_stop(val_loss)
            print(
                f"epoch {epoch:3d}/{args.epochs}  train {train_loss:.4f}  val {val_loss:.4f}  best {best_val_loss:.4f}"
                f"  patience {early_stopping.epochs_without_improvement:2d}/{args.patience}"
                f"  {history['epoch_seconds'][-1]:.2f}s"
            )
            if stop:
                stop_reason = f"early stopping: no improvement above {args.min_delta} for {args.patience} epochs"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"

    epochs_run = len(history["val_loss"])
    print(f"stopped after {epochs_run} epochs ({stop_reason}) in {time.perf_counter() - run_start:.1f}s")
    if best_state is None:
        print("no epoch finished, so nothing was saved")
        return stop_reason
    save(stop_reason)  # once more, with the full history
    print(f"best epoch {best_epoch}, validation loss {best_val_loss:.5f}; saved to {run_dir / CHECKPOINT_FILE}")
    return stop_reason


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        stop_reason = train(args)
    except DataError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # before the first epoch began (the loop handles its own): nothing was written
        print("interrupted before training started; nothing was written")
        sys.exit(130)
    if stop_reason == "interrupted":
        sys.exit(130)  # the usual exit status after Ctrl-C


if __name__ == "__main__":
    main()
