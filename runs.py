"""Where a run lives on disk: its directory, the files in it, and how they are written and found.

A run is a directory, runs/<date>_<time>/ unless train.py's --run-dir names another. It holds:

    checkpoint.pt           the weights with the lowest validation loss, the configuration and the history
                            (train.py writes it at every new best epoch, and once more when training stops)
    metrics*.json           evaluate.py's report
    *.png                   visualize.py's figures

evaluate.py and visualize.py take the newest run that finished (or was stopped) unless told otherwise.

This is the plumbing the scripts share, and nothing here is about the model or its training: every
file is written beside its final name and then renamed over it (data.py's `write_atomically`), so a
crash, a kill or a full disk never leaves half a file; an error the user can fix is raised as
RunError (or dae.py's CheckpointError) with one line that names the cause and the remedy; and
`quiet_exits` ends a script on Ctrl-C or a closed pipe as command-line tools end, without a traceback.
"""

import contextlib
import io
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from dae import CheckpointError, DenoisingAutoencoder, checkpoint_contents, model_from_checkpoint
from data import cause_and_remedy, write_atomically

ROOT = Path(__file__).resolve().parent
RUNS_DIR = ROOT / "runs"
CHECKPOINT_FILE = "checkpoint.pt"
# What evaluate.py and visualize.py write into a run. A run that replaces another removes them once its
# own first checkpoint is safe, so a directory never mixes one run's figures with another's checkpoint.
FILES_FROM_EVALUATE_AND_VISUALIZE = (
    "metrics.json", "metrics-noise*.json",
    "reconstructions.png", "latent_pairs.png", "latent_traversals.png", "noise_levels.png", "loss_curves.png",
    "samples.png", "interpolations.png", "latent_grid.png",
)
RUN_DIR_FLAG = "--run-dir"  # the flag of every script that names another run, as remedies say
STILL_RUNNING = "running"  # the stop reason a checkpoint carries until its run stops; a killed run keeps it


class RunError(Exception):
    """A run's directory or files cannot be made, found, read or written; the message says what to do."""


def new_run_dir(runs_dir: Path | None = None) -> Path:
    """A directory of this run's own in `runs_dir` (default runs/), named by its start time: the newest sorts last."""
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    name = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1, 100):
        run_dir = runs_dir / (name if attempt == 1 else f"{name}_{attempt}")  # two runs started in one second
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as error:
            raise RunError(
                f"cannot create a run directory in {runs_dir}: {cause_and_remedy(error, RUN_DIR_FLAG)}"
            ) from None
    raise RunError(f"cannot find a free run directory name in {runs_dir}: pass --run-dir")


def prepare_run_dir(run_dir: Path) -> None:
    """Make sure the run can be saved before any time is spent training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as error:
        raise RunError(f"cannot write the run directory {run_dir}: {cause_and_remedy(error, RUN_DIR_FLAG)}") from None


def remove_files_of_earlier_run(run_dir: Path) -> None:
    for pattern in FILES_FROM_EVALUATE_AND_VISUALIZE:
        for path in run_dir.glob(pattern):
            path.unlink(missing_ok=True)


def save_checkpoint(path, model: DenoisingAutoencoder, state_dict: dict, **run_info) -> None:
    """Write a self-describing checkpoint (dae.py's format) safely: the previous one stays whole if this fails."""
    buffer = io.BytesIO()
    # Serialized in memory first (a checkpoint is under 1 MB), so that a full disk fails in a plain
    # file write with a plain OSError, not deep inside torch.save with an error that names no cause.
    torch.save(checkpoint_contents(model, state_dict, **run_info), buffer)
    write_file(Path(path), buffer.getvalue())


def load_checkpoint(path) -> tuple[DenoisingAutoencoder, dict]:
    """Rebuild the model a checkpoint file describes; returns (model in eval mode, the checkpoint dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run `python train.py` first, or pass --run-dir")
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {cause_and_remedy(error, RUN_DIR_FLAG)}") from None
    try:
        # weights_only=True: a checkpoint holds tensors and plain values, and can never run code.
        checkpoint = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises many types (EOFError, RuntimeError, UnpicklingError ...)
        raise CheckpointError(
            f"{path} is damaged or is not a PyTorch checkpoint ({type(error).__name__}): "
            f"train again with `python train.py`"
        ) from None
    return model_from_checkpoint(checkpoint, path), checkpoint


def run_state(checkpoint: dict) -> str:
    """How a run ended, in words for a report: its stop reason, or that it never recorded one."""
    if checkpoint.get("stop_reason") == STILL_RUNNING:
        return "did not finish: still training, or killed before it could record a stop"
    return checkpoint.get("stop_reason", "stop reason not recorded")


def newest_run(runs_dir: Path | None = None) -> tuple[Path, list[Path]]:
    """The run under `runs_dir` that finished (or was stopped) last, and the unfinished runs newer than it.

    A run still training, or killed outright (`kill -9`, the out-of-memory killer, a power cut),
    keeps the stop reason "running" and is passed over; the caller names those it passed over.
    """
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    # runs_dir/checkpoint.pt itself too: where this project put its one run before runs had directories.
    candidates = [*Path(runs_dir).glob(CHECKPOINT_FILE), *Path(runs_dir).glob(f"*/{CHECKPOINT_FILE}")]
    unfinished = []
    for path in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        try:
            _, checkpoint = load_checkpoint(path)
        except CheckpointError:
            continue
        if checkpoint.get("stop_reason") != STILL_RUNNING:
            return path.parent, unfinished
        unfinished.append(path.parent)
    if unfinished:
        raise RunError(f"no finished run in {runs_dir}, only {len(unfinished)} that did not finish (still "
                       f"training, or killed), the newest {unfinished[0]}: its best weights so far are saved, "
                       f"so pass --run-dir {unfinished[0]} to use them")
    raise RunError(f"no finished run in {runs_dir}: run `python train.py` first, or pass --run-dir")


def passed_over(unfinished: list[Path]) -> str:
    """The note for runs newer than the one taken that never finished: which, and how to take one anyway."""
    if not unfinished:
        return ""
    return (f"; passed over {len(unfinished)} newer run(s) that did not finish (still training, or killed), "
            f"the newest {unfinished[0]}: pass --run-dir {unfinished[0]} to use its best weights so far")


def write_file(path: Path, content: bytes) -> None:
    """Write `content` to `path` atomically (data.py's `write_atomically`: the old file or the whole new one,
    never half of either); raises RunError, with the cause and the remedy, when the write fails."""
    try:
        write_atomically(path, content)
    except OSError as error:
        raise RunError(f"cannot write {path}: {cause_and_remedy(error, RUN_DIR_FLAG)}") from None


def silence_closed_output() -> None:
    """After a BrokenPipeError (`python evaluate.py | head -3`, the reader has gone): print nothing more.

    Whatever is still to print goes nowhere, so the flush at exit raises no second BrokenPipeError.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def quiet_exits():
    """End a script as command-line tools end, with no traceback: Ctrl-C with status 130, and a reader
    that left (`| head`) with 141, the shell's 128 + SIGPIPE's 13. Files are written atomically, so
    neither leaves half a file."""
    try:
        try:
            yield
        finally:
            sys.stdout.flush()  # piped output waits in a buffer: a reader that left shows up here
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        silence_closed_output()
        sys.exit(141)
