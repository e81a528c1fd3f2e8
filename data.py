"""Fashion-MNIST as tensors, the train/validation split, and the Gaussian noise.

Fashion-MNIST (Xiao et al., 2017) is 70,000 grey 28x28 pictures of clothing in 10 classes:
60,000 for training and 10,000 for testing. The images come back as one float tensor in [0, 1]
of shape (N, 1, 28, 28), so training can keep the whole set on its device and slice batches out
of it, with no per-image DataLoader.

Where the images come from, first match wins:
  1. the data directory (default data/), in torchvision's layout: data/FashionMNIST/raw/
  2. the copy installed by Debian's package `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist/
     (the four original IDX .gz files, unpacked once into the data directory)
  3. torchvision's download, on a machine with internet access
"""

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torchvision

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SYSTEM_COPY = Path("/usr/share/datasets/fashion-mnist")
# Every evaluation corrupts the test images with noise from this seed, so two checkpoints are
# always measured on the very same noisy images.
TEST_NOISE_SEED = 0
IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


class DataError(Exception):
    """The dataset cannot be found or read; the message says what to do."""


def load_fashion_mnist(data_dir, train: bool, system_copy=SYSTEM_COPY) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels): float images in [0, 1] of shape (N, 1, 28, 28) and int64 labels (N,)."""
    raw_dir = Path(data_dir) / "FashionMNIST" / "raw"  # torchvision's layout
    unpack_system_copy(Path(system_copy), raw_dir)
    files_present = all((raw_dir / name).is_file() for name in IDX_FILES)
    try:
        # download=True returns at once when the files are already there.
        dataset = torchvision.datasets.FashionMNIST(data_dir, train=train, download=True)
    except (RuntimeError, OSError, AssertionError, TypeError, ValueError):
        # torchvision turns a failed download into RuntimeError, and its IDX reader rejects a
        # truncated or corrupted file with any of these.
        if files_present:
            raise DataError(
                f"{find_damaged_file(raw_dir)} is damaged (truncated or corrupted): delete it and run again "
                f"to unpack or download a fresh copy"
            ) from None
        raise DataError(
            f"Fashion-MNIST is not in {raw_dir} and could not be downloaded: install it with "
            f"`apt-get install dataset-fashion-mnist`, or put the four files "
            f"({', '.join(name + '.gz' for name in IDX_FILES)}) in {raw_dir}"
        ) from None
    images, labels = dataset.data, dataset.targets  # (N, 28, 28) uint8, (N,) int64
    return images.unsqueeze(1).float() / 255, labels  # -> (N, 1, 28, 28) float in [0, 1]


def find_damaged_file(raw_dir: Path) -> Path:
    """The first of the four IDX files that torchvision's reader rejects (the folder itself if none is)."""
    for name in IDX_FILES:
        try:
            torchvision.datasets.mnist.read_sn3_pascalvincent_tensor(str(raw_dir / name), strict=True)
        except (RuntimeError, AssertionError, TypeError, ValueError, KeyError):
            return raw_dir / name
    return raw_dir


def unpack_system_copy(system_copy: Path, raw_dir: Path) -> None:
    """Unpack Debian's .gz files into torchvision's layout, once; does nothing if there is nothing to do."""
    missing = [name for name in IDX_FILES if not (raw_dir / name).exists()]
    if not missing or not all((system_copy / f"{name}.gz").is_file() for name in missing):
        return
    for name in missing:
        try:
            unpack_gzip(system_copy / f"{name}.gz", raw_dir / name)
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
            raise DataError(
                f"could not unpack {system_copy / name}.gz into {raw_dir} ({error}): pass a writable --data-dir, "
                f"or reinstall the package with `apt-get install --reinstall dataset-fashion-mnist`"
            ) from None


def unpack_gzip(source: Path, destination: Path) -> None:
    # Unpack beside the final name, then rename: an interrupted unpack never leaves half a file.
    destination.parent.mkdir(parents=True, exist_ok=True)
    file_descriptor, temporary_path = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".tmp")
    try:
        with gzip.open(source, "rb") as packed, os.fdopen(file_descriptor, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
        os.replace(temporary_path, destination)
    except BaseException:
        os.unlink(temporary_path)
        raise


def split_train_validation(
    images: torch.Tensor, labels: torch.Tensor, validation_size: int, generator: torch.Generator
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Shuffle with `generator` and cut off `validation_size` images: ((train x, y), (validation x, y))."""
    order = torch.randperm(len(images), generator=generator)
    validation, train = order[:validation_size], order[validation_size:]
    return (images[train], labels[train]), (images[validation], labels[validation])


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, std^2), drawn on x's device.

    Not clipped to [0, 1]: the published recipe adds plain Gaussian noise and says nothing of clipping.
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + std * noise


def noisy_test_set(data_dir, noise_std: float, seed: int = TEST_NOISE_SEED):
    """The test set with noise from a fixed seed: (clean, noisy, labels). The same call gives the same images."""
    clean, labels = load_fashion_mnist(data_dir, train=False)
    noisy = add_noise(clean, noise_std, torch.Generator().manual_seed(seed))
    return clean, noisy, labels
