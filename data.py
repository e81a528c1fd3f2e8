"""Fashion-MNIST as tensors, the train/validation split, and the Gaussian noise.

Fashion-MNIST (Xiao et al., 2017) is 70,000 grey 28x28 pictures of clothing in 10 classes:
60,000 for training and 10,000 for testing. The images come back as one float tensor in [0, 1]
of shape (N, 1, 28, 28), so training can keep the whole set on its device and slice batches out
of it, with no per-image DataLoader.

Where the images come from, first match wins:
  1. the data directory (default data/), in torchvision's layout: data/FashionMNIST/raw/
  2. the four IDX files put by hand in the data directory itself, packed (.gz) or not
  3. the copy installed by Debian's package `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist/
  4. torchvision's download, on a machine with internet access
Files found in 2 or 3 are unpacked once into torchvision's layout, where 1 then finds them.

It imports only torch and torchvision: copy it alone into a notebook to get the data and the noise.
To adapt it to another dataset of the same format (MNIST, KMNIST), change DATASET and CLASS_NAMES:
the folder follows DATASET, and Debian's copy of Fashion-MNIST is never taken for another dataset.
"""

import errno
import gzip
import os
import tempfile
from pathlib import Path

import torch
import torchvision

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DATASET = torchvision.datasets.FashionMNIST  # torchvision's class: its folder name, its mirrors, its reader
DATA_DIR = Path(__file__).resolve().parent / "data"  # the scripts' default --data-dir: data/ beside them
# Where Debian's packages install a dataset's original files, by torchvision's name for the dataset.
# A copy is taken only for the dataset it holds: the IDX file names are the same for MNIST and its kin.
SYSTEM_COPIES = {"FashionMNIST": Path("/usr/share/datasets/fashion-mnist")}
# Every evaluation corrupts the test images with noise from this seed, so two checkpoints are
# always measured on the very same noisy images.
TEST_NOISE_SEED = 0
# The fewest training images a split may leave: evaluate.py's neighbours and PCA need several.
MIN_TRAINING_IMAGES = 10
IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


class DataError(Exception):
    """The dataset cannot be found or read; the message says what to do."""


def load_fashion_mnist(data_dir, train: bool, system_copy=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels): float images in [0, 1] of shape (N, 1, 28, 28) and int64 labels (N,).

    `system_copy` is where to look for the installed copy; by default, DATASET's entry in SYSTEM_COPIES.
    """
    raw_dir = Path(data_dir) / DATASET.__name__ / "raw"  # torchvision's layout, where DATASET reads from
    system_copy = SYSTEM_COPIES.get(DATASET.__name__) if system_copy is None else Path(system_copy)
    gather_idx_files(raw_dir, Path(data_dir), system_copy)
    if not all((raw_dir / name).is_file() for name in IDX_FILES):
        download(data_dir, raw_dir)
    try:
        dataset = DATASET(data_dir, train=train, download=False)
    except OSError as error:
        raise DataError(f"cannot read {error.filename or raw_dir}: {cause_and_remedy(error, '--data-dir')}") from None
    except (RuntimeError, AssertionError, TypeError, ValueError) as error:  # how torchvision's reader refuses a file
        damaged = find_damaged_file(raw_dir)
        if damaged is None:
            raise DataError(f"cannot read the files in {raw_dir} ({type(error).__name__}: {error}): "
                            f"delete the folder and run again to unpack or download a fresh copy") from None
        raise DataError(f"{damaged} is damaged (truncated or corrupted): delete it and run again "
                        f"to unpack or download a fresh copy") from None
    images, labels = dataset.data, dataset.targets  # (N, 28, 28) uint8, (N,) int64
    check_idx_pair(images, labels, raw_dir, train)
    return images.unsqueeze(1).float() / 255, labels  # -> (N, 1, 28, 28) float in [0, 1]


def split_train_validation(
    images: torch.Tensor, labels: torch.Tensor, validation_size: int, *, generator: torch.Generator | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Shuffle with `generator` and cut off `validation_size` images: ((train x, y), (validation x, y))."""
    if not 0 < validation_size <= len(images) - MIN_TRAINING_IMAGES:
        raise DataError(f"a validation set of {validation_size:,} images leaves too few of the "
                        f"{len(images):,} for training: choose a --val-size between 1 and "
                        f"{len(images) - MIN_TRAINING_IMAGES:,}")
    order = torch.randperm(len(images), generator=generator)
    validation, train = order[:validation_size], order[validation_size:]
    return (images[train], labels[train]), (images[validation], labels[validation])


def load_training_split(data_dir, validation_size: int, noise_std: float, *, generator: torch.Generator):
    """A run's own data: ((train images, train labels), (clean validation images, noisy validation images)).

    The split and the validation noise both come from `generator`, in that order, so a run's seed
    rebuilds the very same validation images in train.py, evaluate.py and visualize.py. The
    validation noise is drawn once: validation losses of different epochs are then comparable.
    """
    images, labels = load_fashion_mnist(data_dir, train=True)
    (train_images, train_labels), (val_images, _) = split_train_validation(
        images, labels, validation_size, generator=generator
    )
    return (train_images, train_labels), (val_images, add_noise(val_images, noise_std, generator=generator))


def add_noise(x: torch.Tensor, std: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, std^2), drawn on x's device; `generator` (on that device) makes it repeatable.

    Not clipped to [0, 1]: the published recipe adds plain Gaussian noise and says nothing of clipping.
    """
    if not x.is_floating_point():
        raise TypeError(f"add_noise needs floating-point pixels in [0, 1], got {x.dtype}: "
                        f"convert uint8 images with x.float() / 255")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + std * noise


def noisy_test_set(data_dir, noise_std: float):
    """The test set with noise from a fixed seed: (clean, noisy, labels). The same call gives the same images."""
    clean, labels = load_fashion_mnist(data_dir, train=False)
    return clean, clean + noise_std * standard_test_noise(clean.shape), labels


def standard_test_noise(shape) -> torch.Tensor:
    """The noise every evaluation adds to the test images, at std 1: a noise level scales this same draw."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(TEST_NOISE_SEED))


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Refuse anything but float images of shape (N, 1, 28, 28), in one line that says what to pass.

    A (N, 28, 28) batch would otherwise broadcast against the model's (N, 1, 28, 28) output into an
    (N, N, 28, 28) loss that means nothing, and uint8 pixels fail deep inside torch.
    """
    if not (isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4
            and tuple(images.shape[1:]) == (1, 28, 28)):
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"{name} must be float images of shape (N, 1, 28, 28) with pixels in [0, 1], got {got}: "
                         f"for Fashion-MNIST's raw (N, 28, 28) uint8 images pass x.unsqueeze(1).float() / 255")


def download(data_dir, raw_dir: Path) -> None:
    """torchvision's download of the files still missing; a failure says that it failed, and why."""
    try:
        DATASET(data_dir, download=True)
    except (RuntimeError, OSError) as error:
        # torchvision reports every mirror it tried, one failure each; the last one says why.
        reason = [line for line in str(error).splitlines() if line.strip()][-1:] or [type(error).__name__]
        # Debian's package holds Fashion-MNIST alone: another dataset's remedy never names it.
        package = ("install it with `apt-get install dataset-fashion-mnist`, or "
                   if DATASET.__name__ in SYSTEM_COPIES else "")
        raise DataError(
            f"{DATASET.__name__} is not in {raw_dir} and could not be downloaded ({reason[0].strip()}): {package}"
            f"put the four files ({', '.join(name + '.gz' for name in IDX_FILES)}, packed or not) in {data_dir}"
        ) from None


def gather_idx_files(raw_dir: Path, data_dir: Path, system_copy: Path | None) -> None:
    """Bring each IDX file missing from `raw_dir` in from the first place that holds it, packed or not.

    Looks in `raw_dir` itself (for a `.gz`), then `data_dir`, then `system_copy` (None: there is
    none for this dataset). Debian's .gz files are packed anew, so their checksums differ from
    those torchvision expects, and torchvision would refuse them and try to download; unpacked
    here, they are simply found.
    """
    for name in IDX_FILES:
        if (raw_dir / name).exists():
            continue
        candidates = [raw_dir / f"{name}.gz", data_dir / name, data_dir / f"{name}.gz"]
        if system_copy is not None:
            candidates.append(system_copy / f"{name}.gz")
        source = next((path for path in candidates if path.is_file()), None)
        if source is None:
            continue  # torchvision's download fetches what is still missing
        try:
            content = read_unpacked(source)
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError, a truncated .gz an EOFError
            remedy = ("reinstall it with `apt-get install --reinstall dataset-fashion-mnist`"
                      if source.parent == system_copy else "delete it or replace it with a good copy")
            raise DataError(f"could not unpack {source} ({error}): {remedy}") from None
        try:
            raw_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(raw_dir / name, content)
        except OSError as error:
            raise DataError(
                f"could not unpack {source} into {raw_dir}: {cause_and_remedy(error, '--data-dir')}"
            ) from None


def read_unpacked(source: Path) -> bytes:
    """The bytes of `source`, unpacked on the way if its name ends in .gz (at most 47 MB, the training images)."""
    with (gzip.open if source.suffix == ".gz" else open)(source, "rb") as reader:
        return reader.read()


def write_atomically(destination: Path, content: bytes) -> None:
    """Write `content` so that `destination` is either the old file or the whole new one, never half of either.

    The bytes go to a new temporary file beside it, reach the disk (fsync), and are renamed over
    it: os.replace is atomic, and replaces a link at `destination` rather than writing through it.
    mkstemp creates the temporary file exclusively, under a random name, never through a link
    planted in its place. runs.py writes checkpoints, reports and figures this way too.
    """
    descriptor, temporary_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.",
                                                  suffix=".tmp")
    temporary_path = Path(temporary_name)
    try:
        with open(descriptor, "wb") as file:
            if hasattr(os, "fchmod"):  # mkstemp gives 0600; a file of the usual permissions, as open() makes
                os.fchmod(file.fileno(), 0o666 & ~current_umask())
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, destination)
    except BaseException:  # also Ctrl-C: never leave the temporary file behind
        try:
            temporary_path.unlink(missing_ok=True)
        except OSError:
            pass  # its directory is gone or unwritable: there is nothing to clean up, and the error says why
        raise


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the mask means setting it: put it straight back
    os.umask(mask)
    return mask


def check_idx_pair(images: torch.Tensor, labels: torch.Tensor, raw_dir: Path, train: bool) -> None:
    """Refuse IDX files that each read well but do not belong together, naming the file."""
    prefix = "train" if train else "t10k"
    image_file, label_file = raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte"
    remedy = "replace it with the original file, or delete it and run again to fetch it"
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DataError(f"{image_file} holds images of shape {tuple(images.shape[1:])}, not 28 x 28: {remedy}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_file} holds {labels.numel():,} labels for the {len(images):,} images of "
                        f"{image_file.name}: {remedy}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASS_NAMES):
        raise DataError(f"{label_file} holds labels outside 0-{len(CLASS_NAMES) - 1}: {remedy}")


def cause_and_remedy(error: OSError, flag: str) -> str:
    """An OSError in words, with what fixes it: each cause its own remedy, never one that cannot help.

    `flag` is the command-line flag that names another place (--data-dir here; --run-dir in runs.py).
    """
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk: free some space, or pass a {flag} on another disk"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied: change its permissions, or pass a {flag} you can read and write"
    if error.errno == errno.EISDIR:  # os.replace names the destination second
        return f"a directory is in the way: move or rename the directory {error.filename2 or error.filename}"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir where a file has the name
        return (f"a file is in the way where a directory should be ({error.filename}): move or rename it, "
                f"or pass another {flag}")
    if error.errno == errno.ENOENT:
        return f"its directory does not exist (was it deleted?): create it, or pass another {flag}"
    return f"{error.strerror or error}: check the disk, or pass another {flag}"


def find_damaged_file(raw_dir: Path) -> Path | None:
    """The first of the four IDX files that torchvision's reader rejects, or None if it reads them all."""
    for name in IDX_FILES:
        try:
            torchvision.datasets.mnist.read_sn3_pascalvincent_tensor(str(raw_dir / name), strict=True)
        except (RuntimeError, AssertionError, TypeError, ValueError, KeyError):
            return raw_dir / name
    return None
