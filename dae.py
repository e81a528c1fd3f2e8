"""The denoising autoencoder: the full model definition and its checkpoint format, in one file.

A denoising autoencoder (Vincent et al., 2008, "Extracting and Composing Robust Features with
Denoising Autoencoders") learns to map a corrupted image back to the clean one through a narrow
bottleneck, so the bottleneck (here 8 numbers per image) has to keep what matters about the image
and drop the noise.

The layers are those of the recipe this project was given (README, "Sources": the brief calls it
published but names no publication, so none is cited for it):

    encoder: Flatten, 784 -> 128, LeakyReLU, 128 -> 64, LeakyReLU, 64 -> latent_dim
    decoder: latent_dim -> 64, LeakyReLU, 64 -> 128, LeakyReLU, 128 -> 784, Sigmoid

A checkpoint is self-describing (as in nanoGPT): it stores the model's constructor arguments beside
its weights, so `model_from_checkpoint` rebuilds the model without being told its shape, and the
list of its layers, so that code with other layers is told apart by name (runs.py checks it).

This file holds no data, no training and no files (runs.py writes checkpoints and reads them).
evaluate.py and visualize.py use the model only through `encode` (an image's code) and `decode`
(an image from a code), so a fork that changes what `forward` returns (a VAE's mean and variance)
keeps them working. It imports only torch: copy it alone into a notebook to get the model.
"""

import itertools

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28

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
            nn.Linear(64, latent_dim),  # (N, 64) -> (N, latent_dim); no activation: any real code
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
    """Noisy image (N, 1, 28, 28) -> code (N, latent_dim) -> clean image (N, 1, 28, 28)."""

    name, short_name = "denoising autoencoder", "DAE"  # how reports and figures call this model

    def __init__(self, latent_dim: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim)
        self.decoder = Decoder(latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each image, (N, 1, 28, 28) -> (N, latent_dim): what figures measure."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image each code stands for: (N, latent_dim) -> (N, 1, 28, 28), pixels in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """What training optimizes: the denoised image for each noisy one."""
        return self.decode(self.encode(x))

    def sampling_distribution(self, training_codes: torch.Tensor) -> tuple:
        """Where random codes come from: (mean (d,), covariance (d, d), words for a caption). A DAE
        has no prior: nothing in its training says where codes lie, so the Gaussian fitted to its
        training codes (N, d) is the best it allows. A VAE samples its prior instead."""
        mean = training_codes.mean(dim=0)  # (N, d) -> (d,)
        covariance = torch.cov(training_codes.T).reshape(len(mean), -1)  # (d, d), also for d = 1
        return mean, covariance, "a Gaussian fitted to the training codes (mean and covariance)"


class CheckpointError(Exception):
    """A checkpoint is missing or is not one this code can use: `what` it is, then what to do."""

    def __init__(self, what: str, remedy: str = "train one with `python train.py`"):
        super().__init__(f"{what}: {remedy}")
        self.what = what


def architecture(model: nn.Module) -> list[str]:
    """The model's layers, one line each, such as "decoder.layers.0: Linear(in_features=8, ...)"."""
    layers = [(name, layer) for name, layer in model.named_modules() if not any(layer.children())]
    return [f"{name}: {layer}" for name, layer in layers]


def checkpoint_contents(model: DenoisingAutoencoder, state_dict: dict, **run_info) -> dict:
    """What a checkpoint holds: the format tag, the model's arguments, layers and weights, the run.

    train.py adds its configuration, the per-epoch history and the best epoch as `run_info`; runs.py
    writes the dict to disk and reads it back.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "model_args": {"latent_dim": model.latent_dim},
        "architecture": architecture(model),
        "model_state": {name: tensor.detach().cpu() for name, tensor in state_dict.items()},
        **run_info,
    }


def model_from_checkpoint(checkpoint, source) -> DenoisingAutoencoder:
    """Rebuild the model a checkpoint dict describes, in eval mode; `source` names it in errors.

    The model is built first on the meta device (shapes, no memory), so that a checkpoint of other
    layers than this code's, or one that claims a huge model, is refused before any allocation.
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("format"), str):
        raise CheckpointError(f"{source} is not a checkpoint of this project")
    if checkpoint["format"] != CHECKPOINT_FORMAT:  # another model of this family, a fork's VAE say
        raise CheckpointError(f"{source} holds a '{checkpoint['format']}' model",
                              f"this code reads '{CHECKPOINT_FORMAT}': train one with its train.py")
    arguments, weights = checkpoint.get("model_args"), checkpoint.get("model_state")
    if not (isinstance(arguments, dict) and isinstance(weights, dict)):
        raise CheckpointError(f"{source} holds no model (no model_args or no model_state)")
    try:
        with torch.device("meta"):
            skeleton = DenoisingAutoencoder(**arguments)
    except (TypeError, ValueError, RuntimeError) as error:  # no arguments, or ones it cannot take
        reason = str(error).partition("\n")[0] or type(error).__name__  # some torches say more
        raise CheckpointError(f"{source} describes a model this code cannot build from "
                              f"model_args {arguments} ({reason})") from None
    difference = (first_difference(checkpoint.get("architecture"), architecture(skeleton))
                  or first_difference(shapes(weights), shapes(skeleton.state_dict())))
    if difference:
        raise CheckpointError(
            f"{source} holds a model of other layers than this code's ({difference})",
            "use it with the code that trained it, or train one with `python train.py`")
    model = DenoisingAutoencoder(**arguments)
    model.load_state_dict(weights)
    return model.eval()


def shapes(weights: dict) -> list[str]:
    """A state dict as lines such as "decoder.layers.0.weight: (64, 8)"."""
    return [f"{name}: {tuple(getattr(tensor, 'shape', ()))}" for name, tensor in weights.items()]


def first_difference(saved: list | None, this_code: list) -> str | None:
    """Where a checkpoint's list of layers (or weights) first differs from this code's, in words."""
    if saved is None:  # a checkpoint from before layers were recorded: its weights tell
        return None
    for theirs, ours in itertools.zip_longest(saved, this_code, fillvalue="nothing more"):
        if theirs != ours:
            return f"it has {theirs} where this code has {ours}"
    return None
