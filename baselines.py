"""What the model is measured against, and the error measures every denoiser is judged by.

  clipping   noisy pixels clipped to [0, 1], where every clean pixel lies
  blur       a Gaussian blur of the clipped image, its width chosen on validation images
  PCA        the best linear code of k numbers (Baldi & Hornik, 1989): what the DAE does
             better than PCA with k = latent_dim is what its non-linearity buys
"""

import math

import torch
import torch.nn.functional as F

BLUR_SIGMAS = tuple(round(0.1 * step, 1) for step in range(3, 21))  # 0.3 ... 2.0
NOISE_LEVELS = tuple(round(0.05 * step, 2) for step in range(11))  # 0, 0.05, ... 0.5
# The baselines' names in reports and figures
NOISY = "noisy input, as is"
CLIPPED = "noisy input clipped to [0, 1]"
BLUR = "Gaussian blur of the clipped input"


def mean_absolute_error(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean of |prediction - target| over every image and every pixel: the published metric."""
    return (prediction - target).abs().mean().item()


@torch.no_grad()
def model_mae(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """The published metric: the model's output for `noisy` against `clean`, in mean absolute error."""
    model.eval()
    return mean_absolute_error(model.decode(model.encode(noisy)), clean)


def peak_signal_to_noise_ratio(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE), in dB; pixels of a clean image span [0, 1], so the peak is 1."""
    squared_error_per_image = (prediction - target).pow(2).flatten(1).mean(dim=1)  # (N, 1, 28, 28) -> (N,)
    return (10 * torch.log10(1 / squared_error_per_image)).mean().item()


def clip(noisy: torch.Tensor) -> torch.Tensor:
    return noisy.clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur images (N, 1, H, W) with a Gaussian of std `sigma` pixels, reflecting at the edges.

    A Gaussian is separable: blurred = B_H @ image @ B_W^T, two small matrix products, 15 times
    faster here than torchvision's 2-D kernel.
    """
    height, width = images.shape[-2:]
    return blur_matrix(height, sigma) @ images @ blur_matrix(width, sigma).T


def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size): row i holds the weight of each input pixel in blurred pixel i, edges reflected."""
    radius = math.ceil(3 * sigma)  # wide enough to hold +-3 sigma
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # a flat image stays flat
    impulses = F.pad(torch.eye(size).unsqueeze(1), (radius, radius), mode="reflect")  # (size, 1, size + 2 radius)
    responses = F.conv1d(impulses, kernel.view(1, 1, -1)).squeeze(1)  # (size, size)
    return responses.T


def choose_blur_sigma(noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """The blur that best denoises the clipped `noisy` images; pass validation images, never test ones."""
    clipped = clip(noisy)
    return min(BLUR_SIGMAS, key=lambda sigma: mean_absolute_error(gaussian_blur(clipped, sigma), clean))


class PrincipalComponents:
    """Principal component analysis of images, as an encoder and a decoder: (N, 1, 28, 28) <-> (N, k)."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor):
        self.mean = mean  # (784,), the mean image
        self.components = components  # (k, 784): orthonormal rows, the direction of largest variance first

    @classmethod
    def fit(cls, images: torch.Tensor) -> "PrincipalComponents":
        """All 784 components of `images` (N, 1, 28, 28); keep the first k with `.first(k)`."""
        pixels = images.flatten(1).double()  # (N, 784), float64 for the sums
        mean, covariance = pixels.mean(dim=0), torch.cov(pixels.T)  # (784,), (784, 784)
        # eigh sorts by ascending variance: flip, largest first
        _, eigenvectors = torch.linalg.eigh(covariance)
        return cls(mean.float(), eigenvectors.flip(dims=[1]).T.float().contiguous())

    def first(self, count: int) -> "PrincipalComponents":
        """The same analysis keeping only the `count` directions of largest variance."""
        return PrincipalComponents(self.mean, self.components[:count])

    @property
    def size(self) -> int:
        return len(self.components)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1) - self.mean) @ self.components.T  # (N, 784) -> (N, k)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        pixels = codes @ self.components + self.mean  # (N, k) -> (N, 784)
        return clip(pixels).view(-1, 1, 28, 28)  # as the model's sigmoid does


def components_to_match(analysis: PrincipalComponents, noisy: torch.Tensor, clean: torch.Tensor,
                        target_mae: float) -> int | None:
    """The fewest principal components whose reconstruction of `noisy` reaches `target_mae`; None if none does.

    The error falls, then rises as components keep more noise: bisection before its lowest point.
    """
    coefficients = analysis.encode(noisy)  # (N, 784), every component at once

    def error(count: int) -> float:
        return mean_absolute_error(analysis.first(count).decode(coefficients[:, :count]), clean)

    counts = [2**power for power in range(int(math.log2(analysis.size)) + 1)] + [analysis.size]
    best_count = min(counts, key=error)
    if error(best_count) > target_mae:
        return None
    low, high = 0, best_count  # error(low) > target (no components at all is the mean image) >= error(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if error(middle) <= target_mae else (middle, high)
    return high


def denoisers(model: torch.nn.Module, pca: PrincipalComponents, blur_sigma: float) -> dict:
    """Every method compared, by name, the model first: each maps noisy images (N, 1, 28, 28) to denoised ones."""
    return {
        model.name: lambda noisy: model.decode(model.encode(noisy)),
        NOISY: lambda noisy: noisy,
        CLIPPED: clip,
        BLUR: lambda noisy: gaussian_blur(clip(noisy), blur_sigma),
        f"PCA with {pca.size} components": lambda noisy: pca.decode(pca.encode(noisy)),
    }


@torch.no_grad()
def errors_at_noise_levels(methods: dict, clean: torch.Tensor, unit_noise: torch.Tensor, levels) -> dict:
    """Each method's MAE on `clean + std * unit_noise` for each std: {method: [MAE per level]}.

    One unit noise for every level; each method stays as fitted at the run's own noise.
    """
    errors = {name: [] for name in methods}
    for std in levels:
        noisy = clean + std * unit_noise
        for name, denoise in methods.items():
            errors[name].append(mean_absolute_error(denoise(noisy), clean))
    return errors
