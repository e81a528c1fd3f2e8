"""Train the denoising autoencoder on Fashion-MNIST with the published recipe.

    python train.py                                         # the recipe, into runs/<date>_<time>/
    python train.py --device cpu --epochs 20 --batch-size 256   # a short run (README)
    python train.py --seed 3 --run-dir runs/seed3           # a directory you name

Then `python evaluate.py` and `python visualize.py` take the newest run. In a notebook,
`train(parse_args([...]))` returns the trained model and its history. Top to bottom: the recipe,
its pieces, the loop, the command line. Saving, signals and locks are runs.py's; flags cli.py's.
"""

import math
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

import cli
from dae import DenoisingAutoencoder
from data import DATA_DIR, add_noise, check_images, load_training_split
from runs import NEW_RUN_DIR, RunSaver, TrainedRun, exit_status

# The published recipe: the one place it is written. The flags' defaults come from here, and a
# run records which of them it changed, so evaluate.py knows whether 0.06857 compares.
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
OBJECTIVE = "L1 loss (mean absolute error)"  # what training_loss minimizes; the loss figure's label


# ---- The recipe: the objective, one epoch, the validation loss, and when to stop ----

def training_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> dict:
    """The objective, as {"loss": what the optimizer minimizes, other terms worth logging}.

    For this DAE, one term: the L1 distance (mean absolute error) from the output for `noisy` to
    `clean`. A VAE adds its KL term here (docs/vae.patch); the epoch line logs every term.
    """
    return {"loss": F.l1_loss(model(noisy), clean)}


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    # Tutorials write plain Adam, a few small kernels per parameter tensor; fused=True does them all
    # in one, which matters on a GPU. Same formula, not the same digits: the fused kernel rounds in
    # another order, so a loop copied with plain Adam agrees to rounding, not bit for bit.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    batch_size: int, noise_std: float, *,
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """One pass over `images` (N, 1, 28, 28), already on the device; returns each term's mean.

    `generator` (on the images' device) draws the shuffle and the noise; without one, torch's does.
    """
    check_images(images)
    model.train()
    # Tutorials use a DataLoader that makes tensors batch by batch; here the whole set already is
    # one tensor on the device, so a batch is an index slice of it.
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
        # Tutorials call loss.item() here, which makes the host wait for the device every batch.
        # Summed on the device, the host waits once per epoch.
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
    """Says when to stop: after `patience` epochs in a row with no improvement, where an improvement
    is a loss more than `min_delta` below the reference, the loss of the last improvement.

    It decides only when to stop. Which weights to keep (those of the lowest loss) is the loop's.
    """

    def __init__(self, patience: int, min_delta: float):
        self.patience = patience
        self.min_delta = min_delta
        self.reference_loss = math.inf
        self.epochs_without_improvement = 0

    def should_stop(self, loss: float) -> bool:
        if loss < self.reference_loss - self.min_delta:
            self.reference_loss = loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience


# ---- The loop ----

def train(args) -> TrainedRun:
    """Run the recipe that `args` describes (`parse_args([...])`), saving as it goes."""
    print(f"device {args.device}, torch {torch.__version__}")
    with RunSaver(args.run_dir, vars(args), recipe_changes(args), OBJECTIVE,
                  divergence_remedy(args)) as run:
        # --seed fixes all that is random, in three generators: the split and the validation
        # noise (on the CPU), the initial weights (torch's own, on the CPU, so every device starts
        # alike), and the training shuffle and noise (made on the device, as it must be).
        split_generator = torch.Generator().manual_seed(args.seed)
        train_images, val_noisy, val_images = load_training_data(args, split_generator)
        torch.manual_seed(args.seed)
        model = DenoisingAutoencoder(args.latent_dim).to(train_images.device)
        noise_generator = torch.Generator(train_images.device).manual_seed(args.seed)
        optimizer = make_optimizer(model, args.lr)
        early_stopping = EarlyStopping(args.patience, args.min_delta)
        print(EPOCH_LINE_KEY.format(min_delta=args.min_delta))

        for epoch in range(1, args.epochs + 1):
            # The epoch: every training image once, with fresh noise.
            start = time.perf_counter()
            train_terms = train_one_epoch(model, optimizer, train_images, args.batch_size,
                                          args.noise_std, generator=noise_generator)
            # Validation: the same noisy validation images every epoch, so the losses compare.
            val_loss = validation_loss(model, val_noisy, val_images)
            seconds = time.perf_counter() - start
            run.record_epoch(epoch, train_terms, val_loss, seconds)  # stops on a nan or an inf

            # Keep the weights of the lowest validation loss so far (runs.py saves them to disk).
            kept = run.keep_if_lowest(model, epoch, val_loss)

            # Should we stop? Early stopping counts the epochs without an improvement.
            stop = early_stopping.should_stop(val_loss)
            print(epoch_line(epoch, args, train_terms, val_loss, kept, early_stopping, seconds))
            if stop:
                run.stop_reason = (f"early stopping: no improvement above {args.min_delta} "
                                   f"for {args.patience} epochs")
                break
    return run.trained()


def load_training_data(args, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(training images, noisy validation images, clean validation images), on the device."""
    (train_images, _), (val_images, val_noisy) = load_training_split(
        args.data_dir, args.val_size, args.noise_std, generator=generator)
    print(f"{len(train_images):,} training and {len(val_images):,} validation images")
    # The whole data set lives on the device: a batch is a slice, not a copy from the host.
    return train_images.to(args.device), val_noisy.to(args.device), val_images.to(args.device)


EPOCH_LINE_KEY = ("each epoch: 'lowest, kept' when the validation loss is the lowest yet (weights"
                  " saved);\n  'no improvement n/patience': epochs since it last fell more than"
                  " min delta {min_delta} below early stopping's reference")


def epoch_line(epoch, args, train_terms: dict, val_loss: float, kept: bool,
               early_stopping: EarlyStopping, seconds: float) -> str:
    """One log line: did the epoch keep its weights, and did early stopping see an improvement?"""
    others = [f"{name} {value:.4f}" for name, value in train_terms.items() if name != "loss"]
    others = f" ({', '.join(others)})" if others else ""  # a fork's other terms, such as a VAE's KL
    waiting = early_stopping.epochs_without_improvement
    stopping = "improved" if waiting == 0 else f"no improvement {waiting:2d}/{args.patience}"
    return (f"epoch {epoch:3d}/{args.epochs}  train {train_terms['loss']:.4f}{others}"
            f"  val {val_loss:.4f}  {'lowest, kept' if kept else '':12}  {stopping:19}"
            f"  {seconds:.2f}s")


def recipe_changes(args) -> dict:
    """The recipe's values this run set otherwise: flag -> value."""
    return {name: getattr(args, name) for name in RECIPE if getattr(args, name) != RECIPE[name]}


def divergence_remedy(args) -> str:
    return (f"a learning rate or a noise far too large does this: lower --lr (this run "
            f"{args.lr:g}, the recipe {RECIPE['lr']:g}) or --noise-std (this run "
            f"{args.noise_std:g}, the recipe {RECIPE['noise_std']:g})")


# ---- The command line ----

def parse_args(argv=None):
    """train.py's flags; a bad one raises cli.FlagError, which a notebook shows as it is."""
    parser = cli.ArgumentParser("Train the denoising autoencoder on Fashion-MNIST.")
    flag = parser.add_argument
    flag("--epochs", type=cli.positive_int, default=RECIPE["epochs"], help="most epochs to train")
    flag("--batch-size", type=cli.positive_int, default=RECIPE["batch_size"],
         help="images per optimizer step")
    flag("--lr", type=cli.positive_float, default=RECIPE["lr"], help="Adam learning rate")
    flag("--noise-std", type=cli.noise_std, default=RECIPE["noise_std"],
         help="std of the Gaussian noise")
    flag("--latent-dim", type=cli.latent_dim, default=RECIPE["latent_dim"],
         help="numbers in the code between the halves")
    flag("--patience", type=cli.positive_int, default=RECIPE["patience"],
         help="epochs without improvement before stopping")
    flag("--min-delta", type=cli.non_negative_float, default=RECIPE["min_delta"],
         help="smallest drop in validation loss that counts as improvement")
    flag("--val-size", type=cli.positive_int, default=RECIPE["val_size"],
         help="training images held out for validation")
    flag("--seed", type=cli.seed, default=0, help="seeds the split, the weights and the noise")
    flag("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    flag("--run-dir", default=NEW_RUN_DIR, help="where the run goes; a run there is replaced")
    flag("--device", type=cli.device, default="auto", help="auto, cpu, cuda or mps")
    return parser.parse_args(argv)


@cli.script
def main(argv=None) -> None:
    status = exit_status(train(parse_args(argv)).stop_reason)
    if status:  # a run that Ctrl-C, SIGTERM, SIGHUP or a closed pipe stopped
        raise SystemExit(status)


if __name__ == "__main__":
    main()
