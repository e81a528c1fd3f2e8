"""The denoising autoencoder: the full model definition and its checkpoint format, in one file.

A denoising autoencoder (Vincent et al., 2008, "Extracting and Composing Robust Features with
Denoising Autoencoders") learns to map a corrupted image back to the clean one through a narrow
bottleneck, so the bottleneck (here 8 numbers per image) has to keep what matters about the image
and drop the noise.

The layers follow the published recipe exactly:

    encoder: Flatten, 784 -> 128, LeakyReLU, 128 -> 64, LeakyReLU, 64 -> latent_dim
    decoder: latent_dim -> 64, LeakyReLU, 64 -> 128, LeakyReLU, 128 -> 784, Sigmoid

A checkpoint is self-describing (as in nanoGPT): it stores the model's constructor arguments beside
its weights, so `load_checkpoint` rebuilds the model without being told its shape.

This file holds no data and no training; train.py writes checkpoints, evaluate.py and visualize.py
read them, and use the model only through `encode` (an image's code) and `decode` (an image from a
code), so a fork that changes what `forward` returns (a VAE's mean and variance) keeps them working.
"""

import os
from pathlib import Path

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28
CHECKPOINT_FILE = "checkpoint.pt"

# Every checkpoint this project writes carries this tag, so a stranger's state dict is told apart.
CHECKPOINT_FORMAT = "fashion-mnist-dae/1"


class Encoder(nn.Module):
    def __init__(self, latent_dim: int = 8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),  # (N, 1, 28, 28) -> (N, 784)
            nn.Linear(IMAGE_PIXELS, 128),
            nn.LeakyReLU(),
            nn.Linear(128, 64),
            nn.LeakyReLU(),
            nn.Linear(64, latent_dim),  # (N, 64) -> (N, latent_dim); no activation: codes may be any real number
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    def __init__(self, latent_dim: int = 8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(latent_dim, 64),
            nn.LeakyReLU(),
            nn.Linear(64, 128),
            nn.LeakyReLU(),
            nn.Linear(128, IMAGE_PIXELS),
            nn.Sigmoid(),  # pixels of a clean image lie in [0, 1]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z).view(-1, *IMAGE_SHAPE)  # (N, 784) -> (N, 1, 28, 28)


class DenoisingAutoencoder(nn.Module):
    """Noisy image (N, 1, 28, 28) -> code (N, latent_dim) -> clean image (N, 1, 28, 28) in [0, 1]."""

    def __init__(self, latent_dim: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim)
        self.decoder = Decoder(latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each image (N, 1, 28, 28) -> (N, latent_dim): what the figures and the kNN measure."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image each code stands for: (N, latent_dim) -> (N, 1, 28, 28), pixels in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """What training optimizes: the denoised image for each noisy one."""
        return self.decode(self.encode(x))


class CheckpointError(Exception):
    """A checkpoint is missing or is not one this project wrote; the message says what to do."""


def save_checkpoint(path, model: DenoisingAutoencoder, state_dict: dict, **run_info) -> None:
    """Write a self-describing checkpoint: weights, constructor arguments and whatever the run adds.

    train.py passes its configuration, the per-epoch history and the best epoch as `run_info`. The
    file is written beside its final name and then renamed over it (`os.replace` is atomic), so a
    crash or a kill mid-write leaves the previous checkpoint whole, never a broken one.
    """
    path = Path(path)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_args": {"latent_dim": model.latent_dim},
        "model_state": {name: tensor.detach().cpu() for name, tensor in state_dict.items()},
        **run_info,
    }
    # The temporary name is this process's own; open() gives the file the usual permissions (umask),
    # so a run can be shared like any other file.
    temporary_path = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary_path, "wb") as file:
            torch.save(checkpoint, file)
        os.replace(temporary_path, path)
    except BaseException:  # also Ctrl-C: never leave the half-written temporary file behind
        temporary_path.unlink(missing_ok=True)
        raise


def load_checkpoint(path) -> tuple[DenoisingAutoencoder, dict]:
    """Rebuild the model a checkpoint describes; returns (model in eval mode, the checkpoint dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run `python train.py` first, or pass --run-dir")
    try:
        # weights_only=True: a checkpoint holds tensors and plain values, and can never run code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises many types (EOFError, RuntimeError, UnpicklingError ...)
        raise CheckpointError(
            f"{path} is damaged or is not a PyTorch checkpoint ({type(error).__name__}): "
            f"train again with `python train.py`"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("format"), str):
        raise CheckpointError(f"{path} is not a checkpoint of this project: train one with `python train.py`")
    if checkpoint["format"] != CHECKPOINT_FORMAT:  # another model of this family, a fork's VAE say
        raise CheckpointError(
            f"{path} holds a '{checkpoint['format']}' model, and this code reads '{CHECKPOINT_FORMAT}': "
            f"train one with this code's `python train.py`"
        )
    model = DenoisingAutoencoder(**checkpoint["model_args"])
    try:
        model.load_state_dict(checkpoint["model_state"])
    except RuntimeError:
        raise CheckpointError(
            f"{path} has weights that do not fit its own model description: train again with `python train.py`"
        ) from None
    return model.eval(), checkpoint


def newest_run(runs_dir: Path) -> Path:
    """The run under `runs_dir` that finished (or was stopped) last: what evaluate.py and visualize.py take by default.

    A run still in progress, or killed outright, has stop reason "running" and is passed over.
    """
    # runs_dir/checkpoint.pt itself too: where this project put its one run before runs had directories.
    candidates = [*Path(runs_dir).glob(CHECKPOINT_FILE), *Path(runs_dir).glob(f"*/{CHECKPOINT_FILE}")]
    checkpoints = sorted(candidates, key=lambda path: path.stat().st_mtime)
    for path in reversed(checkpoints):
        try:
            _, checkpoint = load_checkpoint(path)
        except CheckpointError:
            continue
        if checkpoint.get("stop_reason") != "running":
            return path.parent
    raise CheckpointError(f"no finished run in {runs_dir}: run `python train.py` first, or pass --run-dir")
