"""Fashion-MNIST as tensors, the train/validation split, and the Gaussian noise: the recipe's data.

Fashion-MNIST (Xiao et al., 2017): 60,000 training and 10,000 test images of clothing, 28x28
grey, 10 classes. The images are one float tensor (N, 1, 28, 28) in [0, 1], so training slices
batches out of it on its device, with no DataLoader. Last, `fetch_data`: how the scripts find the
files offline. Copied alone, it needs only torch and torchvision.
"""

import gzip
import os
import uuid
from pathlib import Path

import torch
import torchvision
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

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


# ---- The files: found offline where they can be, written whole ----

DATA_DIR = Path(__file__).resolve().parent / "data"  # the scripts' default --data-dir
# Debian's package dataset-fashion-mnist, by torchvision's name: for that dataset alone
SYSTEM_COPIES = {"FashionMNIST": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(Exception):
    """The dataset's files are missing or not what the recipe expects; the message says what to do."""


def fetch_data(data_dir, system_copy=None) -> None:
    """Unpack the four IDX files into `data_dir`'s raw folder, from the first place that has them
    (that folder, `data_dir` itself, Debian's copy), else download them; then check what they hold."""
    data_dir, name = Path(data_dir), DATASET.__name__
    raw_dir = data_dir / name / "raw"  # torchvision's layout
    system_copy = SYSTEM_COPIES.get(name) if system_copy is None else Path(system_copy)
    if data_dir.is_file():
        raise DataError(f"--data-dir {data_dir} is a file, not a directory: pass the directory")
    for file in IDX_FILES:
        places = [raw_dir / f"{file}.gz", data_dir / file, data_dir / f"{file}.gz"]
        places += [system_copy / f"{file}.gz"] if system_copy else []
        source = next((path for path in places if path.is_file()), None)
        if source and not (raw_dir / file).exists():
            unpack(source, raw_dir / file, from_debian=source.parent == system_copy)
    if not all((raw_dir / file).exists() for file in IDX_FILES):
        download(data_dir, raw_dir)
    for prefix in ("train", "t10k"):
        check_pair(raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte")


def unpack(source: Path, destination: Path, from_debian: bool) -> None:
    """Debian's .gz files fail torchvision's checksums; unpacked, torchvision simply reads them."""
    try:
        with (gzip.open if source.suffix == ".gz" else open)(source, "rb") as reader:
            content = reader.read()
    except (OSError, EOFError) as error:  # not gzip, or cut short
        remedy = "apt-get install --reinstall dataset-fashion-mnist" if from_debian else "delete it, or put a good copy"
        raise DataError(f"could not unpack {source} ({error}): {remedy}") from None
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(destination, content)


def download(data_dir: Path, raw_dir: Path) -> None:
    try:
        DATASET(data_dir, download=True)
    except (RuntimeError, OSError) as error:
        reason = ([line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__])[-1]
        package = "apt-get install dataset-fashion-mnist, or " if DATASET.__name__ in SYSTEM_COPIES else ""
        raise DataError(f"{DATASET.__name__} is not in {raw_dir} and could not be downloaded ({reason}): {package}put "
                        f"the four files ({', '.join(f'{file}.gz' for file in IDX_FILES)}, packed or not) in "
                        f"{data_dir}") from None


def read_idx(path: Path) -> torch.Tensor:
    try:
        return read_sn3_pascalvincent_tensor(str(path), strict=True)
    except OSError:
        raise
    except Exception:  # how torchvision's reader refuses a file it cannot parse
        raise DataError(f"{path} is damaged (truncated or corrupted): delete it and run again") from None


def check_pair(image_file: Path, label_file: Path) -> None:
    """Refuse files that read well but are not what the recipe expects, naming the file."""
    images, labels = read_idx(image_file), read_idx(label_file)
    present, classes = set(labels.unique().tolist()), range(len(CLASS_NAMES))
    missing = ", ".join(f"{CLASS_NAMES[index]} ({index})" for index in classes if index not in present)
    for fine, path, what in [
        (images.dtype == torch.uint8, image_file, f"holds images as {str(images.dtype)[6:]}, not bytes (uint8)"),
        (images.ndim == 3 and images.shape[1:] == (28, 28), image_file,
         f"holds images of shape {tuple(images.shape[1:])}, not 28 x 28"),
        (labels.shape == images.shape[:1], label_file,
         f"holds {labels.numel():,} labels for the {len(images):,} images of {image_file.name}"),
        (present <= set(classes), label_file, f"holds labels outside 0-{len(classes) - 1}"),
        (not missing, label_file, f"holds no image of {missing}"),
    ]:
        if not fine:
            raise DataError(f"{path} {what}: move it elsewhere to keep it, and put the dataset's original file in "
                            f"its place")


def write_atomically(destination: Path, content: bytes) -> None:
    """`destination` is the old file or the whole new one, never half: written beside it, then renamed."""
    temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:  # x: a new file, never a link's target
            file.write(content)
            os.fsync(file.fileno())
        os.replace(temporary, destination)
    except BaseException as error:  # Ctrl-C too: no temporary file left behind
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # named by the file it was for
            raise OSError(error.errno, error.strerror, str(destination)) from None
        raise
