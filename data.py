"""Fashion-MNIST as tensors, the train/validation split, and the Gaussian noise: the recipe's data.

Fashion-MNIST (Xiao et al., 2017): 60,000 training and 10,000 test images of clothing, 28x28
grey, 10 classes. The images are one float tensor (N, 1, 28, 28) in [0, 1], so training slices
batches out of it on its device, with no DataLoader. It imports only torch and torchvision:
copied alone, torchvision downloads the files the first time.
"""

import torch
import torchvision

DATASET = torchvision.datasets.FashionMNIST  # torchvision's reader: its folder name, its mirrors
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Every evaluation's test noise: two models meet the same noisy images
TEST_NOISE_SEED = 0


def load_fashion_mnist(data_dir, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The 60,000 training images (or with train=False the 10,000 test images) and their labels:
    (N, 1, 28, 28) floats in [0, 1], (N,) int64. torchvision downloads the files if need be."""
    dataset = DATASET(data_dir, train=train, download=True)
    images, labels = dataset.data, dataset.targets  # (N, 28, 28) uint8, (N,) int64
    return images.unsqueeze(1).float() / 255, labels  # -> (N, 1, 28, 28), pixels in [0, 1]


def add_noise(x: torch.Tensor, std: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, std^2), drawn on x's device; `generator` (on that device) makes it repeatable. Not
    clipped to [0, 1]: the published recipe adds plain Gaussian noise and says nothing of clipping."""
    if not x.is_floating_point():
        raise TypeError(f"add_noise needs floating-point pixels in [0, 1], got {x.dtype}: "
                        f"convert uint8 images with x.float() / 255")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + std * noise


def training_split(images: torch.Tensor, labels: torch.Tensor, validation_size: int, noise_std: float, *,
                   generator: torch.Generator | None = None) -> tuple[tuple, tuple]:
    """Shuffle and hold out `validation_size` images with their noise, drawn once so that epochs
    compare: ((train images, labels), (validation images, noisy ones)), all from `generator`."""
    if not 0 < validation_size < len(images):
        raise ValueError(f"cannot hold out {validation_size:,} of {len(images):,} images for validation")
    order = torch.randperm(len(images), generator=generator)
    train, validation = order[validation_size:], order[:validation_size]
    val_clean = images[validation]
    return (images[train], labels[train]), (val_clean, add_noise(val_clean, noise_std, generator=generator))


def standard_test_noise(shape) -> torch.Tensor:
    """The noise every evaluation adds to the test images, at std 1: a noise level scales this same draw."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(TEST_NOISE_SEED))


def noisy_test_set(data_dir, noise_std: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 10,000 test images, (clean, noisy, labels), the noise from TEST_NOISE_SEED: the same each call."""
    clean, labels = load_fashion_mnist(data_dir, train=False)
    return clean, clean + noise_std * standard_test_noise(clean.shape), labels


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Refuse anything but float images (N, 1, 28, 28), in one line that says what to pass: an
    (N, 28, 28) batch would broadcast against the model's output into an (N, N, 28, 28) loss."""
    if not (isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4
            and tuple(images.shape[1:]) == (1, 28, 28)):
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"{name} must be float images of shape (N, 1, 28, 28) with pixels in [0, 1], got {got}: "
                         f"for Fashion-MNIST's raw (N, 28, 28) uint8 images pass x.unsqueeze(1).float() / 255")
