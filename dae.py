"""The denoising autoencoder: the model, importing only torch.

A denoising autoencoder (Vincent et al., 2008) maps a corrupted image back to the clean one through
a narrow bottleneck, here 8 numbers, so the code keeps what matters and drops the noise:

    encoder: Flatten, 784 -> 128, LeakyReLU, 128 -> 64, LeakyReLU, 64 -> latent_dim
    decoder: latent_dim -> 64, LeakyReLU, 64 -> 128, LeakyReLU, 128 -> 784, Sigmoid

Everything after training uses the model through `encode` and `decode` alone.
"""

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28


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
