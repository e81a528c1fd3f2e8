"""Checkpoints: a run's weights and record, saved whole, read back without trust: anything else is one line."""

import inspect
import io
import itertools
import uuid
from datetime import datetime
from pathlib import Path

import torch

from cli import UserError
from dae import DenoisingAutoencoder
from data import write_atomically

CHECKPOINT_FORMAT = "fashion-mnist-dae/1"  # tells this model's checkpoints from any other file
MAX_CHECKPOINT_BYTES = 256 * 2**20  # this project's are under 3 MB


def save_checkpoint(path: Path, model, state_dict: dict, **record) -> None:
    """A self-describing checkpoint (the model's arguments and layers beside its weights), written whole."""
    arguments = {name: getattr(model, name) for name in inspect.signature(type(model)).parameters}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model_args": arguments, "architecture": layers(model),
                "model_state": {name: value.detach().cpu() for name, value in state_dict.items()},
                "stamp": uuid.uuid4().hex[:12], "saved_at": datetime.now().isoformat(), **record}, buffer)
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
                        f"project (MAX_CHECKPOINT_BYTES in checkpoints.py): pass another --run-dir")
    try:
        checkpoint = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)  # runs no code
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
    if not isinstance(config, dict):
        return "no configuration"
    missing = [name for name in ("seed", "val_size", "noise_std") if not isinstance(config.get(name), (int, float))]
    if missing:
        return f"no {missing[0]} in its configuration"
    if not (isinstance(history, dict) and {"train_loss", "val_loss"} <= set(history) and all(
            isinstance(values, list) and all(isinstance(value, (int, float)) for value in values)
            for values in history.values())):
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
                        f"with the code that trained it, or train one with `python train.py`") from None
    if not all(value.isfinite().all() for value in model.state_dict().values()):
        raise UserError(f"{path} holds weights that are not finite numbers: train the run again with a lower --lr")
    return model.eval()

