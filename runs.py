"""A run on disk, and how training keeps it safe (docs/runs.md): a directory of checkpoint.pt (the
kept weights, configuration and history), train.lock (locked while train.py trains) and the reports."""

import contextlib
import itertools
import os
from datetime import datetime
from pathlib import Path

import torch

from checkpoints import save_checkpoint
from cli import Stop, UserError, in_words

try:
    import fcntl  # Linux and macOS; Windows takes no lock
except ImportError:
    fcntl = None

RUNS_DIR = Path(__file__).resolve().parent / "runs"
NEW_RUN_DIR = "runs/<date>_<time>"  # --run-dir's default
CHECKPOINT_FILE, LOCK_FILE = "checkpoint.pt", "train.lock"
# How a run ended: its checkpoint's stop_kind (a signal's is cli.SIGNALS' word for it)
RUNNING, ALL_EPOCHS, EARLY_STOPPING, DIVERGED, FAILED = "running", "all epochs", "early stopping", "diverged", "failed"


class Run:
    """`with Run(...) as run: fit(..., run=run)` saves the run as `fit` tells it of each epoch;
    nothing is lost however the run ends."""

    def __init__(self, run_dir: str, config: dict, run_info: dict, divergence_remedy: str):
        self.run_dir = None if run_dir == NEW_RUN_DIR else Path(run_dir)
        self.config = {name: str(value) if isinstance(value, torch.device) else value for name, value in config.items()}
        self.run_info = {**run_info, "torch_version": str(torch.__version__), "started_at": datetime.now().isoformat()}
        self.divergence_remedy = divergence_remedy
        self.history, self.best_epoch, self.best_state, self.saved, self.lock = {}, 0, None, False, None
        self.stop_kind, self.stop_reason = ALL_EPOCHS, f"reached --epochs {config['epochs']}"

    def epoch_ended(self, epoch: int, model, history: dict, kept: bool, stopping: bool) -> None:
        self.model, self.history = model, {name: list(values) for name, values in history.items()}
        if kept:
            self.best_epoch = epoch
            self.best_state = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
            self.save(RUNNING, RUNNING)
        if stopping:
            self.stop_kind = EARLY_STOPPING
            self.stop_reason = f"early stopping: no improvement above {self.config['min_delta']} for " \
                               f"{self.config['patience']} epochs"

    def save(self, stop_kind: str, stop_reason: str) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_FILE, self.model, self.best_state, config=self.config,
                        history=self.history, best_epoch=self.best_epoch, stop_kind=stop_kind, stop_reason=stop_reason,
                        device=str(next(self.model.parameters()).device), **self.run_info)
        self.saved = True

    def __enter__(self) -> "Run":
        self.created = self.run_dir is None or not self.run_dir.exists()
        self.run_dir = self.run_dir or new_run_dir()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            pid, names = training_pid(self.run_dir), sorted({p.name for p in self.run_dir.iterdir()} - {LOCK_FILE})
            if pid or names:  # a run is never replaced, nor anything else overwritten
                raise UserError(f"{self.run_dir} is in use by a training that is still running (pid {pid}): wait "
                                f"for it to end, or pass another --run-dir" if pid else f"{self.run_dir} already "
                                f"holds files ({len(names)}, such as {names[0]}): pass a new or empty --run-dir")
            self.lock = open(self.run_dir / LOCK_FILE, "a+")
            if fcntl:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel lets go when the process ends
            self.lock.truncate(0)
            print(os.getpid(), file=self.lock, flush=True)
        except BaseException:
            self.lock = self.lock and self.lock.close()  # never empty another process's lock
            self.release()
            raise
        self.config["run_dir"] = str(self.run_dir)
        print(f"writing to {self.run_dir}")
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        epochs, signalled = len(self.history.get("val_loss", [])), isinstance(error, (KeyboardInterrupt, Stop))
        if isinstance(error, Exception) and epochs == 0:  # bad data, say: nothing began
            self.release()
            return False
        if signalled:
            self.stop_kind = self.stop_reason = str(error) or "interrupted"
        elif isinstance(error, FloatingPointError):
            self.stop_kind, self.stop_reason = DIVERGED, f"diverged at epoch {epochs}"
        elif error is not None:
            self.stop_kind, self.stop_reason = FAILED, f"failed at epoch {epochs}: {in_words(error)}"
        try:
            if self.best_state is not None:  # once more, with the whole history
                with contextlib.suppress(OSError, KeyboardInterrupt, Stop):  # the checkpoint saved before stays whole
                    self.save(self.stop_kind, self.stop_reason)
        finally:
            self.release()
        path = self.run_dir / CHECKPOINT_FILE
        kept = f"the checkpoint saved before it, {path}, is whole" if self.saved else "nothing was saved"
        with contextlib.suppress(OSError):  # the output may be what failed
            print(f"stopped after {epochs} epochs ({self.stop_reason}); " + (
                f"lowest validation loss {self.history['val_loss'][self.best_epoch - 1]:.5f} at epoch "
                f"{self.best_epoch}, saved to {path}" if self.saved else kept))
        if error is None or signalled:
            return False  # a signal goes on: the script ends with the shell's status for it
        cause = (f"the loss is not a finite number, so training diverged: {self.divergence_remedy}"
                 if isinstance(error, FloatingPointError) else in_words(error))
        raise UserError(f"stopped after epoch {epochs}: {cause}; {kept}") from None

    def release(self) -> None:
        """Let go of the lock, and leave no directory for a run that saved nothing."""
        if self.lock:
            self.lock.truncate(0)
            self.lock = self.lock.close()
        if self.created and not self.saved:
            with contextlib.suppress(OSError):  # never made, or not empty
                (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
                self.run_dir.rmdir()


def new_run_dir() -> Path:
    """A new directory in runs/ named by the time, so that the newest sorts last."""
    name = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in itertools.count(1):
        run_dir = RUNS_DIR / (name if attempt == 1 else f"{name}_{attempt}")  # two runs in one second
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir(parents=True)
            return run_dir


def training_pid(run_dir: Path) -> str | None:
    """The pid of the train.py that holds `run_dir`'s lock now, or None."""
    with contextlib.suppress(OSError), open(run_dir / LOCK_FILE) as lock:  # no lock file, or no locks here
        try:
            fcntl and fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or "unknown"
    return None

