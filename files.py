"""Files on disk: the dataset's, checkpoints, and how every file is written whole.

`fetch_data` puts the four IDX files where torchvision reads them, from the first place that has
them: the data directory, files put by hand there (packed or not), Debian's package
`dataset-fashion-mnist`, or torchvision's download; then it checks what they hold. A checkpoint is
read without trust: anything else under its name is one line.
"""

import gzip
import inspect
import io
import itertools
import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

import data
from cli import UserError
from dae import DenoisingAutoencoder

DATA_DIR = Path(__file__).resolve().parent / "data"  # the scripts' default --data-dir
# Debian's copy, by torchvision's name: for that dataset alone
SYSTEM_COPIES = {"FashionMNIST": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
REPLACE = "move it elsewhere to keep it, and put the dataset's original file in its place"
CHECKPOINT_FORMAT = "fashion-mnist-dae/1"  # tells this model's checkpoints from any other file
MAX_CHECKPOINT_BYTES = 256 * 2**20  # this project's are under 3 MB


def fetch_data(data_dir, system_copy=None) -> None:
    """Make sure the four IDX files are in `data_dir`'s raw folder and hold what data.py expects."""
    data_dir, name = Path(data_dir), data.DATASET.__name__
    raw_dir = data_dir / name / "raw"  # torchvision's layout
    system_copy = SYSTEM_COPIES.get(name) if system_copy is None else Path(system_copy)
    if data_dir.is_file():
        raise UserError(f"--data-dir {data_dir} is a file, not a directory: pass the directory")
    for file in IDX_FILES:
        places = [raw_dir / f"{file}.gz", data_dir / file, data_dir / f"{file}.gz"]
        places += [system_copy / f"{file}.gz"] if system_copy else []
        source = next((path for path in places if path.is_file()), None)
        if not (raw_dir / file).exists() and source is not None:
            unpack(source, raw_dir / file, system_copy)
    if not all((raw_dir / file).exists() for file in IDX_FILES):
        download(data_dir, raw_dir)
    for prefix in ("train", "t10k"):
        check_pair(raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte")


def unpack(source: Path, destination: Path, system_copy) -> None:
    """Debian's .gz files fail torchvision's checksums; unpacked, torchvision simply reads them."""
    try:
        with (gzip.open if source.suffix == ".gz" else open)(source, "rb") as reader:
            content = reader.read()
    except (OSError, EOFError) as error:  # not gzip, or cut short
        remedy = ("reinstall it: apt-get install --reinstall dataset-fashion-mnist" if source.parent == system_copy
                  else "delete it or put a good copy in its place")
        raise UserError(f"could not unpack {source} ({error}): {remedy}") from None
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(destination, content)


def download(data_dir: Path, raw_dir: Path) -> None:
    try:
        data.DATASET(data_dir, download=True)
    except (RuntimeError, OSError) as error:
        reason = ([line for line in str(error).splitlines() if line.strip()] or [type(error).__name__])[-1]
        package = "apt-get install dataset-fashion-mnist, or " if data.DATASET.__name__ in SYSTEM_COPIES else ""
        raise UserError(f"{data.DATASET.__name__} is not in {raw_dir} and could not be downloaded ({reason.strip()}):"
                        f" {package}put the four files ({', '.join(f'{file}.gz' for file in IDX_FILES)}, packed or"
                        f" not) in {data_dir}") from None


def read_idx(path: Path) -> torch.Tensor:
    try:
        return read_sn3_pascalvincent_tensor(str(path), strict=True)
    except OSError:
        raise
    except Exception:  # how torchvision's reader refuses a file it cannot parse
        raise UserError(f"{path} is damaged (truncated or corrupted): delete it and run again") from None


def check_pair(image_file: Path, label_file: Path) -> None:
    """Refuse files that read well but are not what the recipe expects, naming the file."""
    images, labels = read_idx(image_file), read_idx(label_file)
    classes = range(len(data.CLASS_NAMES))
    present = set(labels.unique().tolist())
    missing = [f"{data.CLASS_NAMES[index]} ({index})" for index in classes if index not in present]
    for fine, path, what in [
        (images.dtype == torch.uint8, image_file, f"holds images as {str(images.dtype)[6:]}, not bytes (uint8)"),
        (images.ndim == 3 and images.shape[1:] == (28, 28), image_file,
         f"holds images of shape {tuple(images.shape[1:])}, not 28 x 28"),
        (labels.shape == images.shape[:1], label_file,
         f"holds {labels.numel():,} labels for the {len(images):,} images of {image_file.name}"),
        (present <= set(classes), label_file, f"holds labels outside 0-{len(classes) - 1}"),
        (not missing, label_file, f"holds no image of {', '.join(missing)}"),
    ]:
        if not fine:
            raise UserError(f"{path} {what}: {REPLACE}")


def write_atomically(destination: Path, content: bytes) -> None:
    """`destination` is the old file or the whole new one, never half: written beside it, then renamed."""
    descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    try:
        with open(descriptor, "wb") as file:
            if hasattr(os, "fchmod"):  # mkstemp's 0600, made the mode open() would give
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(file.fileno(), 0o666 & ~umask)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, destination)
    except BaseException as error:  # Ctrl-C too: no temporary file left behind
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):  # named by the file it was for, not the temporary one
            raise OSError(error.errno, error.strerror, str(destination)) from None
        raise


def now() -> str:
    return datetime.now().isoformat(timespec="microseconds")


# ---- Checkpoints ----

def save_checkpoint(path: Path, model, state_dict: dict, **record) -> None:
    """A self-describing checkpoint (the model's arguments and layers beside its weights), written whole."""
    arguments = {name: getattr(model, name) for name in inspect.signature(type(model)).parameters}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model_args": arguments, "architecture": layers(model),
                "model_state": {name: value.detach().cpu() for name, value in state_dict.items()},
                "stamp": uuid.uuid4().hex[:12], "saved_at": now(), **record}, buffer)
    write_atomically(Path(path), buffer.getvalue())


def layers(model) -> list[str]:
    """One line per layer, such as "decoder.layers.0: Linear(in_features=8, ...)"."""
    return [f"{name}: {layer}" for name, layer in model.named_modules() if not any(layer.children())]


def load_checkpoint(path) -> tuple[DenoisingAutoencoder, dict]:
    """The model a checkpoint holds (on the CPU, in eval mode) and the checkpoint; any other file is one line."""
    path, train_one = Path(path), "train one with `python train.py`"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: run `python train.py` first, or pass --run-dir")
    if not path.is_file():
        raise UserError(f"{path} is not a file: move or rename it, or pass another --run-dir")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{path} holds {path.stat().st_size / 2**20:,.0f} MB, far more than any checkpoint of this "
                        f"project (MAX_CHECKPOINT_BYTES in runs.py): pass another --run-dir")
    content = path.read_bytes()
    try:
        checkpoint = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)  # runs no code
    except Exception as error:  # a damaged file raises many kinds
        raise UserError(f"{path} holds a file this project did not write (damaged, or not a PyTorch checkpoint: "
                        f"{type(error).__name__}): {train_one}") from None
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if found != CHECKPOINT_FORMAT:
        what = f"a '{found}' model" if isinstance(found, str) else "a file this project did not write"
        raise UserError(f"{path} holds {what}: this code reads '{CHECKPOINT_FORMAT}': {train_one}")
    missing = unrecorded(checkpoint)
    if missing:
        raise UserError(f"{path} holds a model but no record of a run of train.py ({missing}): {train_one}")
    return rebuilt_model(checkpoint, path), checkpoint


def unrecorded(checkpoint: dict) -> str | None:
    """What a checkpoint lacks of the record that evaluate.py and visualize.py read, in words; or None."""
    config, history, best_epoch = (checkpoint.get(name) for name in ("config", "history", "best_epoch"))
    def numbers(values) -> bool:
        return isinstance(values, list) and all(isinstance(value, (int, float)) for value in values)

    if not isinstance(config, dict):
        return "no configuration"
    missing = [name for name in ("seed", "val_size", "noise_std") if not numbers([config.get(name)])]
    if missing:
        return f"no {missing[0]} in its configuration"
    if not (isinstance(history, dict) and {"train_loss", "val_loss"} <= set(history) and all(map(numbers,
                                                                                                history.values()))):
        return "a history that is not numbers"
    if not (isinstance(best_epoch, int) and 1 <= best_epoch <= len(history["val_loss"])):
        return "no best epoch among its epochs"
    if not all(isinstance(checkpoint.get(name), str) for name in ("stop_kind", "stop_reason", "stamp", "saved_at")):
        return "no stop reason, stamp or time"
    return None


def rebuilt_model(checkpoint: dict, path: Path) -> DenoisingAutoencoder:
    """Built on the meta device, so that a model of other layers, or a huge one, allocates nothing."""
    try:
        with torch.device("meta"):
            model = DenoisingAutoencoder(**checkpoint["model_args"])
        saved, ours = checkpoint.get("architecture"), layers(model)
        if saved is not None and saved != ours:
            theirs, mine = next((a, b) for a, b in itertools.zip_longest(saved, ours, fillvalue="nothing") if a != b)
            raise ValueError(f"it has {theirs} where this code has {mine}")
        model.load_state_dict(checkpoint["model_state"], assign=True)  # every name and shape must match
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        raise UserError(f"{path} holds a model of other layers than this code's ({lines[len(lines) > 1]}): use it "
                        f"with the code "
                        f"that trained it, or train one with `python train.py`") from None
    if not all(value.isfinite().all() for value in model.state_dict().values()):
        raise UserError(f"{path} holds weights that are not finite numbers: train the run again with a lower --lr")
    return model.eval()


def describes(checkpoint: dict) -> dict:
    """What a report or figure records of the weights it was made from."""
    return {"best_epoch": checkpoint["best_epoch"], "checkpoint_stamp": checkpoint["stamp"]}
