"""Files on disk: where the dataset's files come from, and how any file is written whole: plumbing.

data.py reads Fashion-MNIST through torchvision, which expects four IDX files in
<data dir>/FashionMNIST/raw/ and otherwise downloads them. `fetch_data` puts them there before
any script reads them, and checks them; the first match wins:
  1. the data directory (default data/), in torchvision's layout: data/FashionMNIST/raw/
  2. the four IDX files put by hand in the data directory itself, packed (.gz) or not
  3. the copy installed by Debian's package `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist/
  4. torchvision's download, on a machine with internet access
Files found in 2 or 3 are unpacked once into torchvision's layout, where 1 then finds them.
Debian's copy is taken for Fashion-MNIST only, never fed to a model under another dataset's name.

Every file this project writes (unpacked data, checkpoints, reports, figures) goes through
`write_atomically`, and every failure to read or write one is put in words by `cause_and_remedy`.
"""

import errno
import gzip
import os
import tempfile
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

import data

DATA_DIR = Path(__file__).resolve().parent / "data"  # the scripts' default --data-dir: data/ beside them
# Where Debian's packages install a dataset's original files, by torchvision's name for the dataset.
# A copy is taken only for the dataset it holds: the IDX file names are the same for MNIST and its kin.
SYSTEM_COPIES = {"FashionMNIST": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
IMAGE_SIZE = (28, 28)
# The remedy for a file that reads well but is not what the recipe expects: it may be the user's own.
KEEP_AND_REPLACE = "move it elsewhere to keep it, and put the dataset's original file in its place"


class DataError(Exception):
    """The dataset cannot be found, read or used; the message says what to do."""


def fetch_data(data_dir, system_copy=None) -> None:
    """Make sure data.DATASET's four IDX files are in `data_dir`'s raw folder and hold what data.py
    expects, or raise DataError in one line. `system_copy`: where to look for an installed copy
    (default: data.DATASET's entry in SYSTEM_COPIES)."""
    data_dir = Path(data_dir)
    raw_dir = data_dir / data.DATASET.__name__ / "raw"  # torchvision's layout, where DATASET reads from
    system_copy = SYSTEM_COPIES.get(data.DATASET.__name__) if system_copy is None else Path(system_copy)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is a file, not a directory: pass the directory that holds "
                        f"the data, or a new one")
    gather_idx_files(raw_dir, data_dir, system_copy)
    if not all((raw_dir / name).is_file() for name in IDX_FILES):
        download(data_dir, raw_dir)
    for train in (True, False):
        check_idx_pair(raw_dir, "train" if train else "t10k")


def download(data_dir: Path, raw_dir: Path) -> None:
    """torchvision's download of the files still missing; a failure says that it failed, and why."""
    try:
        data.DATASET(data_dir, download=True)
    except (RuntimeError, OSError) as error:
        # torchvision reports every mirror it tried, one failure each; the last one says why.
        reason = [line for line in str(error).splitlines() if line.strip()][-1:] or [type(error).__name__]
        # Debian's package holds Fashion-MNIST alone: another dataset's remedy never names it.
        package = ("install it with `apt-get install dataset-fashion-mnist`, or "
                   if data.DATASET.__name__ in SYSTEM_COPIES else "")
        raise DataError(
            f"{data.DATASET.__name__} is not in {raw_dir} and could not be downloaded ({reason[0].strip()}): {package}"
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
        if (raw_dir / name).is_dir():
            raise DataError(f"{raw_dir / name} is a directory, where {data.DATASET.__name__}'s file of that name "
                            f"should be: move or rename the directory")
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


def read_idx(path: Path, kind: str) -> torch.Tensor:
    """One IDX file as torchvision reads it, or a DataError that names the file and the cause.

    `kind` is "images" or "labels". Fashion-MNIST stores both as bytes (uint8); a file that reads
    well but holds another type is not damaged, and its remedy keeps it.
    """
    try:
        values = read_sn3_pascalvincent_tensor(str(path), strict=True)
    except OSError as error:
        raise DataError(f"cannot read {path}: {cause_and_remedy(error, '--data-dir')}") from None
    except (RuntimeError, AssertionError, TypeError, ValueError, KeyError, IndexError):  # how its reader refuses
        raise DataError(f"{path} is damaged (truncated or corrupted): delete it and run again "
                        f"to unpack or download a fresh copy") from None
    if values.dtype != torch.uint8:
        raise DataError(f"{path} holds {kind} as {str(values.dtype).removeprefix('torch.')}, where "
                        f"{data.DATASET.__name__}'s files hold bytes (uint8, 0 to 255): convert them to bytes, "
                        f"or {KEEP_AND_REPLACE}")
    return values


def check_idx_pair(raw_dir: Path, prefix: str) -> None:
    """Refuse IDX files that each read well but are not what the recipe expects, naming the file."""
    image_file, label_file = raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte"
    images, labels = read_idx(image_file, "images"), read_idx(label_file, "labels")
    remedy = KEEP_AND_REPLACE
    if images.ndim != 3 or tuple(images.shape[1:]) != IMAGE_SIZE:
        raise DataError(f"{image_file} holds images of shape {tuple(images.shape[1:])}, not 28 x 28: {remedy}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_file} holds {labels.numel():,} labels for the {len(images):,} images of "
                        f"{image_file.name}: {remedy}")
    if len(labels) and not labels.max() < len(data.CLASS_NAMES):  # bytes: never below 0
        raise DataError(f"{label_file} holds labels outside 0-{len(data.CLASS_NAMES) - 1}: {remedy}")
    missing = sorted(set(range(len(data.CLASS_NAMES))) - set(labels.unique().tolist()))
    if missing:  # the report and every figure show each class
        names = ", ".join(f"{data.CLASS_NAMES[index]} ({index})" for index in missing)
        raise DataError(f"{label_file} holds no image of {len(missing)} of the {len(data.CLASS_NAMES)} classes "
                        f"({names}), and the reports and figures show each: {remedy}")


def write_atomically(destination: Path, content: bytes) -> None:
    """Write `content` so that `destination` is either the old file or the whole new one, never half of either.

    The bytes go to a new temporary file beside it, reach the disk (fsync), and are renamed over
    it: os.replace is atomic, and replaces a link at `destination` rather than writing through it.
    mkstemp creates the temporary file exclusively, under a random name, never through a link
    planted in its place.
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


def cause_and_remedy(error: OSError, flag: str) -> str:
    """An OSError in words, the cause the system gave, with what fixes it: never a remedy that cannot help.

    `flag` is the command-line flag of the script at hand that names another place (--data-dir,
    --run-dir).
    """
    if error.errno == errno.ENOSPC:
        return f"no space left on the disk: free some space, or pass a {flag} on another disk"
    if error.errno == errno.EDQUOT:
        return f"your disk quota is used up: free some of your space, or pass a {flag} on another disk"
    if error.errno == errno.EROFS:
        return f"the file system is read-only: pass a {flag} on a disk you can write to"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: change its permissions, or pass a {flag} you can read and write"
    if error.errno == errno.EISDIR:  # os.replace names the destination second
        return f"a directory is in the way: move or rename the directory {error.filename2 or error.filename}"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir where a file has the name
        return (f"a file is in the way where a directory should be ({error.filename}): move or rename it, "
                f"or pass another {flag}")
    if error.errno == errno.ENOENT:
        return f"its directory does not exist (was it deleted?): create it, or pass another {flag}"
    return f"{error.strerror or error}: check the disk, or pass another {flag}"
