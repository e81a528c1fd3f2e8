"""Train the denoising autoencoder on Fashion-MNIST with the published recipe.

    python train.py                                         # the recipe, into runs/<date>_<time>/
    python train.py --device cpu --epochs 20 --batch-size 256   # a short run (README)
    python train.py --seed 3 --run-dir runs/seed3           # a directory you name

Then `python evaluate.py` and `python visualize.py` take the newest run. Top to bottom: the recipe,
its pieces and the loop `fit` (a notebook calls it alone); then `train`, which saves the run as it
goes, and the command line.
"""

import argparse
import math
import time
from collections import defaultdict

import cli  # first, so that Ctrl-C while torch loads is one line
import torch
import torch.nn.functional as F
from checkpoints import load_checkpoint
from dae import IMAGE_PIXELS, DenoisingAutoencoder
from data import DATA_DIR, add_noise, check_images, fetch_data, load_fashion_mnist, training_split
from runs import CHECKPOINT_FILE, NEW_RUN_DIR, Run

# The published recipe: the one place it is written
RECIPE = {
    "epochs": 200,  # at most; early stopping may end the run sooner
    "batch_size": 4096,
    "lr": 1e-3,  # Adam's learning rate
    "noise_std": 0.2,  # Gaussian noise, mean 0
    "latent_dim": 8,
    "patience": 25,  # early stopping: epochs without an improvement of more than min_delta
    "min_delta": 1e-3,
    "val_size": 10_000,  # of the 60,000 training images, held out for validation
}
OBJECTIVE = "L1 loss (mean absolute error)"  # training_loss's
VALIDATION = OBJECTIVE  # validation_loss's


# ---- The recipe ----

def training_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> dict:
    """The objective, as {"loss": what the optimizer minimizes, other terms worth logging}: here
    the L1 distance from the output for `noisy` to `clean`. A VAE adds its KL term here."""
    return {"loss": F.l1_loss(model(noisy), clean)}


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    # fused: one kernel a step; plain Adam agrees to rounding
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    batch_size: int, noise_std: float, *,
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """One pass over `images` (N, 1, 28, 28), already on the device; returns each term's mean.
    `generator` (on the images' device) draws the shuffle and the noise; else torch's does."""
    check_images(images)
    model.train()
    # The whole set is one tensor on the device: a batch is a slice
    order = torch.randperm(len(images), device=images.device, generator=generator)
    sums = defaultdict(lambda: torch.zeros((), device=images.device))
    for start in range(0, len(images), batch_size):
        clean = images[order[start : start + batch_size]]  # (B, 1, 28, 28)
        # Fresh noise every batch, so the model never sees the same corruption twice.
        noisy = add_noise(clean, noise_std, generator=generator)
        terms = training_loss(model, noisy, clean)
        optimizer.zero_grad(set_to_none=True)  # backward then writes gradients, not adds to them
        terms["loss"].backward()
        optimizer.step()
        # Summed on the device: no .item(), no wait each batch
        for name, value in terms.items():
            sums[name] += value.detach() * len(clean)
    return {name: total.item() / len(images) for name, total in sums.items()}


@torch.no_grad()
def validation_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean absolute error of the reconstructions of `noisy`, through `encode` and `decode`."""
    check_images(noisy, "noisy")
    check_images(clean, "clean")
    model.eval()
    return F.l1_loss(model.decode(model.encode(noisy)), clean).item()


class EarlyStopping:
    """Says when to stop: after `patience` epochs in a row whose loss is not `min_delta` below the
    loss of the last improvement. Which weights to keep is the loop's decision."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.reference_loss, self.epochs_without_improvement = math.inf, 0

    def should_stop(self, loss: float) -> bool:
        if loss < self.reference_loss - self.min_delta:
            self.reference_loss = loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience


# ---- The loop ----

def fit(model: torch.nn.Module, train_images: torch.Tensor, val_noisy: torch.Tensor,
        val_clean: torch.Tensor, recipe: dict = RECIPE, *, generator: torch.Generator | None = None,
        run=None, quiet: bool = False) -> dict:
    """Train `model` by `recipe`, leave it the weights of its lowest validation loss, and return the
    history: per epoch train_loss (and a fork's other terms), val_loss, epoch_seconds. `run`
    hears of each epoch (train.py saves it); `quiet` prints no epoch lines."""
    optimizer = make_optimizer(model, recipe["lr"])
    early_stopping = EarlyStopping(recipe["patience"], recipe["min_delta"])
    history, lowest, kept = defaultdict(list), math.inf, None
    for epoch in range(1, recipe["epochs"] + 1):
        # Train on every image once, then validate
        start = time.perf_counter()
        terms = train_one_epoch(model, optimizer, train_images, recipe["batch_size"],
                                recipe["noise_std"], generator=generator)
        record = {f"train_{name}": value for name, value in terms.items()}  # train_loss, a VAE's KL
        record.update(val_loss=validation_loss(model, val_noisy, val_clean),
                      epoch_seconds=time.perf_counter() - start)
        for name, value in record.items():
            history[name].append(value)
        finite = all(map(math.isfinite, record.values()))

        # Keep the weights of the lowest validation loss
        is_lowest = finite and record["val_loss"] < lowest
        if is_lowest:
            lowest = record["val_loss"]
            kept = {name: value.clone() for name, value in model.state_dict().items()}

        # Should we stop? Early stopping counts the epochs without an improvement.
        stop = early_stopping.should_stop(record["val_loss"])
        if run is not None:
            run.epoch_ended(epoch, model, history, kept=is_lowest, stopping=stop)
        if not quiet:
            print(epoch_line(epoch, recipe["epochs"], record, is_lowest, early_stopping))
        if not finite:  # a nan or an inf: every step after it would give one too
            raise FloatingPointError(f"epoch {epoch}: the loss is not a finite number")
        if stop:
            break
    model.load_state_dict(kept)
    return dict(history)


def epoch_line(epoch: int, epochs: int, record: dict, kept: bool, stopping: EarlyStopping) -> str:
    """One log line: did the epoch keep its weights, and did early stopping see an improvement?"""
    others = ", ".join(f"{name[6:]} {value:.4f}" for name, value in record.items()
                       if name.startswith("train_") and name != "train_loss")  # a VAE's KL, say
    waiting = stopping.epochs_without_improvement
    count = "improved" if waiting == 0 else f"no improvement {waiting:2d}/{stopping.patience}"
    return (f"epoch {epoch:3d}/{epochs}  train {record['train_loss']:.4f}"
            f"{f' ({others})' if others else ''}  val {record['val_loss']:.4f}"
            f"  {'lowest, kept' if kept else '':12}  {count:19}  {record['epoch_seconds']:.2f}s")


# ---- The plumbing: a run saved as it goes, and the command line ----

MAX_NOISE_STD = 10.0  # 100 times the signal
MIN_TRAINING_IMAGES = 10  # for evaluate.py's kNN and PCA


def train(args) -> tuple:
    """Run the recipe that `args` describes (`parse_args([...])`), saving the run as it goes;
    returns the kept model (CPU, eval mode) and its checkpoint, or (None, None) if none saved."""
    print(f"device {args.device}, torch {torch.__version__}")
    recipe = {name: getattr(args, name) for name in RECIPE}
    changes = {name: value for name, value in recipe.items() if value != RECIPE[name]}
    remedy = (f"a learning rate or a noise far too large does this: lower --lr (this run "
              f"{args.lr:g}, the recipe {RECIPE['lr']:g}) or --noise-std (this run "
              f"{args.noise_std:g}, the recipe {RECIPE['noise_std']:g})")
    run_info = {"recipe_changes": changes, "objective": OBJECTIVE, "validation": VALIDATION}
    with Run(args.run_dir, vars(args), run_info, remedy) as run:
        # --seed fixes the split, the weights (on the CPU) and the noise
        (train_images, _), (val_images, val_noisy) = load_split(
            args.data_dir, args.val_size, args.noise_std, torch.Generator().manual_seed(args.seed),
            "choose a --val-size between 1 and {most:,}")
        print(f"{len(train_images):,} training and {len(val_images):,} validation images")
        # The whole data set lives on the device
        train_images, val_noisy, val_images = (images.to(args.device)
                                               for images in (train_images, val_noisy, val_images))
        torch.manual_seed(args.seed)
        model = DenoisingAutoencoder(args.latent_dim).to(args.device)
        noise_generator = torch.Generator(train_images.device).manual_seed(args.seed)
        print("each epoch: 'lowest, kept' when the validation loss is the lowest yet (saved);\n"
              f"  'no improvement n/{args.patience}': epochs since a fall of over {args.min_delta}")
        fit(model, train_images, val_noisy, val_images, recipe, generator=noise_generator, run=run)
    return load_checkpoint(run.run_dir / CHECKPOINT_FILE) if run.saved else (None, None)


def load_split(data_dir, val_size: int, noise_std: float, generator: torch.Generator,
               remedy: str) -> tuple:
    """data.py's `training_split` from `generator`; `remedy` ends a refused `val_size`'s line."""
    fetch_data(data_dir)
    images, labels = load_fashion_mnist(data_dir, train=True)
    most = len(images) - MIN_TRAINING_IMAGES
    if not 0 < val_size <= most:
        raise cli.UserError(f"a validation set of {val_size:,} images leaves too few of the "
                            f"{len(images):,} in {data_dir} for training: "
                            f"{remedy.format(most=most)}")
    return training_split(images, labels, val_size, noise_std, generator=generator)


def pick_device(name: str) -> torch.device:
    """'auto' is this machine's accelerator (CUDA, Apple MPS ...) or else the CPU."""
    if name == "auto":
        available = torch.accelerator.is_available()
        return torch.accelerator.current_accelerator() if available else torch.device("cpu")
    present = {"cpu": True, "cuda": torch.cuda.is_available(),
               "mps": torch.backends.mps.is_available()}
    if name not in present:
        raise argparse.ArgumentTypeError(f"unknown device '{name}': choose auto, cpu, cuda or mps")
    if not present[name]:
        raise argparse.ArgumentTypeError(f"this machine has no {name} device: use --device auto "
                                         f"or cpu")
    return torch.device(name)


def parse_args(argv=None):
    parser = cli.parser("train.py", "Train the denoising autoencoder on Fashion-MNIST.")
    flag, positive = parser.add_argument, cli.bounded(int, 1)
    flag("--epochs", type=positive, default=RECIPE["epochs"], help="most epochs to train")
    flag("--batch-size", type=positive, default=RECIPE["batch_size"], help="images a step")
    flag("--lr", type=cli.bounded(float, 0, above=True), default=RECIPE["lr"],
         help="Adam learning rate")
    flag("--noise-std", type=cli.bounded(float, 0, MAX_NOISE_STD), default=RECIPE["noise_std"],
         help="std of the noise")
    flag("--latent-dim", type=cli.bounded(int, 1, IMAGE_PIXELS), default=RECIPE["latent_dim"],
         help="numbers in the code")
    flag("--patience", type=positive, default=RECIPE["patience"], help="epochs to wait")
    flag("--min-delta", type=cli.bounded(float, 0), default=RECIPE["min_delta"],
         help="smallest drop in validation loss that counts as improvement")
    flag("--val-size", type=positive, default=RECIPE["val_size"], help="images to validate")
    flag("--seed", type=cli.bounded(int, 0, 2**64 - 1), default=0,
         help="seeds the split, the weights and the noise")
    flag("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    flag("--run-dir", default=NEW_RUN_DIR, help="a new or empty directory for the run")
    flag("--device", type=pick_device, default="auto", help="auto, cpu, cuda or mps")
    return parser.parse_args(argv)


@cli.script
def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
