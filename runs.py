"""Where a run lives on disk, and how training keeps it safe: the machinery a learner may skip.

A run is a directory, runs/<date>_<time>/ unless train.py's --run-dir names another. It holds:

    checkpoint.pt     the weights with the lowest validation loss, the configuration and the history;
                      train.py writes it at every new lowest validation loss, and once more at the end
    train.lock        locked by train.py while it trains; the operating system lets go of the lock
                      when the process ends, however it ends (Linux and macOS: flock)
    written.txt       the names of the files evaluate.py and visualize.py wrote for the run
    metrics*.json     evaluate.py's report
    *.png, *.html     visualize.py's figures and page

Every report and figure records the checkpoint it describes (its best epoch and its stamp). When
train.py saves new weights, it removes the files written.txt names, since they describe other
weights; it never removes a file that no record says this project wrote.

`RunSaver` is what train.py's `fit` tells of each epoch; it writes the checkpoint, turns Ctrl-C,
SIGTERM and SIGHUP into a clean stop, refuses a directory that is in use or holds something else,
and records how the run ended. It makes no decision of the recipe's: which weights to keep, and
when to stop, are the loop's. Every file is written beside its name and renamed over it
(files.py's `write_atomically`), so a crash, a kill or a full disk never leaves half a file.
`load_checkpoint` reads any file under a checkpoint's name without trusting it, and
`load_run_data` rebuilds what a run was trained and measured on, for evaluate.py, visualize.py and
explorer.py alike.
"""

import contextlib
import errno
import io
import math
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from dae import CHECKPOINT_FORMAT, CheckpointError, DenoisingAutoencoder, checkpoint_contents, model_from_checkpoint
from data import add_noise, load_fashion_mnist, noisy_test_set, training_split
from files import cause_and_remedy, fetch_data, write_atomically

try:
    import fcntl  # Linux and macOS; on Windows no lock is taken (README: docs/runs.md)
except ImportError:
    fcntl = None

ROOT = Path(__file__).resolve().parent
RUNS_DIR = ROOT / "runs"
NEW_RUN_DIR = "runs/<date>_<time>"  # --run-dir's default: a new directory, named as the run starts
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = "train.lock"
WRITTEN_FILE = "written.txt"
RUN_DIR_FLAG = "--run-dir"  # the flag of every script that names another run, as remedies say
# The most bytes read from a file under a checkpoint's name: this project's are under 3 MB (a code
# of 784 numbers), so anything far larger is not one of its checkpoints. Raise it for a larger fork.
MAX_CHECKPOINT_BYTES = 256 * 2**20
MIN_TRAINING_IMAGES = 10  # the fewest a split may leave: evaluate.py's neighbours and PCA need several
# Pixels lie in [0, 1]: at std 10 the noise is already 100 times the signal. A cap keeps every
# number of a report within its column.
MAX_NOISE_STD = 10.0

# How a run ended: the kind its checkpoint records ("stop_kind"), with words for reports ("stop_reason").
RUNNING = "running"  # until the run stops
ALL_EPOCHS, EARLY_STOPPING = "all epochs", "early stopping"  # the recipe's own two ends
DIVERGED, OUT_OF_MEMORY = "diverged", "out of memory"
INTERRUPTED, TERMINATED, HUNG_UP = "interrupted", "terminated", "hung up"
OUTPUT_CLOSED, OUTPUT_FAILED = "output closed", "output failed"
# The shell's usual 128 + signal number, for a run that a signal or a closed pipe stopped.
EXIT_STATUS = {HUNG_UP: 129, INTERRUPTED: 130, OUTPUT_CLOSED: 141, TERMINATED: 143}
SIGNAL_STOPS = {signal.SIGINT: INTERRUPTED, signal.SIGTERM: TERMINATED}
if hasattr(signal, "SIGHUP"):  # a closed terminal or ssh session
    SIGNAL_STOPS[signal.SIGHUP] = HUNG_UP


class RunError(Exception):
    """A run's directory or files cannot be made, found, read or written; the message says what to do."""


class TrainingError(RunError):
    """Training could not go on; whatever was saved before stays whole."""


class StopSignal(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` on the way swallows it."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class OutputError(Exception):
    """The output (stdout) cannot be written: its reader left (a closed pipe), or its device is full."""

    def __init__(self, error: OSError):
        super().__init__(error.strerror or str(error))
        self.closed = error.errno == errno.EPIPE


@dataclass
class TrainedRun:
    """What train.py's `train` returns: the model as its checkpoint holds it (CPU, eval mode)."""

    model: DenoisingAutoencoder | None  # None only when nothing was saved
    history: dict  # per epoch: train_loss, val_loss, epoch_seconds, train_<term> for other terms
    best_epoch: int
    best_val_loss: float
    stop_kind: str
    stop_reason: str
    run_dir: Path


class RunSaver:
    """Saves a training run as it goes, so that nothing is lost however it ends.

        with RunSaver(args.run_dir, config, run_info, divergence_remedy) as run:
            fit(..., run=run)  # calls run.epoch_ended(...) after each epoch
        return run.trained()

    Entering it checks and locks the run directory. Inside the `with`, Ctrl-C, SIGTERM, SIGHUP or
    a closed output stop the loop at once: the handler raises wherever the loop is (a torch
    operation under way finishes first), and the epoch under way is not recorded; a checkpoint
    being written is finished first. Leaving it records how the run ended and saves the whole history.
    """

    def __init__(self, run_dir: str, config: dict, run_info: dict, divergence_remedy: str):
        self.named_dir = run_dir != NEW_RUN_DIR
        self.run_dir = Path(run_dir) if self.named_dir else None
        self.config = {name: str(value) if isinstance(value, torch.device) else value
                       for name, value in config.items()}
        self.run_info = {**run_info, "torch_version": str(torch.__version__),
                         "started_at": datetime.now().isoformat(timespec="microseconds")}
        self.divergence_remedy = divergence_remedy
        self.history = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
        self.best_epoch, self.best_val_loss, self.best_state = 0, math.inf, None
        self.stop_kind, self.stop_reason = ALL_EPOCHS, f"reached --epochs {config['epochs']}"
        self.lock, self.handlers, self.deferring, self.pending = None, {}, False, None
        self.created_dir = self.created_lock = self.replacing = False
        self.model, self.saved, self.quiet = None, False, False

    def epoch_ended(self, epoch: int, model, history: dict, kept: bool, stopping: bool) -> None:
        """What `fit` tells of each epoch: its history so far, whether it kept these weights (saved
        here), and whether early stopping ends the run."""
        self.model, self.history = model, {name: list(values) for name, values in history.items()}
        if kept:
            self.save_kept(model, epoch, history["val_loss"][-1])
        if stopping:
            self.stop_kind = EARLY_STOPPING
            self.stop_reason = (f"early stopping: no improvement above {self.config['min_delta']} "
                                f"for {self.config['patience']} epochs")

    def save_kept(self, model, epoch: int, val_loss: float) -> None:
        first_save = self.best_state is None
        self.best_epoch, self.best_val_loss = epoch, val_loss
        self.best_state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
        try:
            # The new checkpoint and the removal of reports that describe other weights happen
            # together: a signal in between waits until both are done.
            with self.signals_deferred():
                self.save(RUNNING, RUNNING)
                self.saved = True
                removed = remove_written_files(self.run_dir)
        except RunError as error:
            raise TrainingError(f"epoch {epoch}: {error}{self.kept_so_far(first_save)}") from None
        if first_save and self.replacing:
            print(f"replaced the earlier run in {self.run_dir} ({len(removed)} of its reports and "
                  f"figures removed){unlisted_files_note(self.run_dir)}")

    def trained(self) -> TrainedRun:
        """The run as `train` returns it, its model read back from the checkpoint it saved."""
        model = load_checkpoint(self.run_dir / CHECKPOINT_FILE)[0] if self.saved else None
        return TrainedRun(model, self.history, self.best_epoch, self.best_val_loss, self.stop_kind,
                          self.stop_reason, self.run_dir)

    # ---- entering and leaving ----

    def __enter__(self) -> "RunSaver":
        if self.named_dir:
            self.created_dir = not self.run_dir.exists()
            self.replacing = check_replaceable(self.run_dir)
        else:
            self.run_dir, self.created_dir, self.replacing = new_run_dir(), True, False
        try:
            self.created_lock = not (self.run_dir / LOCK_FILE).exists()
            self.lock = lock_run_dir(self.run_dir)
        except BaseException:
            self.release()
            raise
        self.config["run_dir"] = str(self.run_dir)
        self.catch_signals()
        print(f"writing to {self.run_dir}")
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        failure = None
        epochs = len(self.history["val_loss"])
        if isinstance(error, StopSignal):
            self.stop_kind = self.stop_reason = error.kind
        elif isinstance(error, KeyboardInterrupt):
            self.stop_kind = self.stop_reason = INTERRUPTED
        elif isinstance(error, OutputError):  # `python train.py | head`, or a full disk under stdout
            silence_output()
            self.quiet = True  # the last save goes on; its lines have nowhere to go
            self.stop_kind = self.stop_reason = OUTPUT_CLOSED if error.closed else OUTPUT_FAILED
            if not error.closed:
                failure = TrainingError(f"cannot write the output ({error}): training stopped after epoch "
                                        f"{epochs}{self.kept_so_far(self.best_state is None)}; send the output "
                                        f"to another file or device")
        elif isinstance(error, FloatingPointError):  # fit refused a loss that is not a finite number
            self.stop_kind, self.stop_reason = DIVERGED, f"diverged at epoch {epochs}"
            kept = (f"the weights of epoch {self.best_epoch} stay saved" if self.best_epoch
                    else "nothing was saved")
            failure = TrainingError(f"epoch {epochs}: the loss is not a finite number, so training diverged "
                                    f"({kept}): {self.divergence_remedy}")
        elif isinstance(error, RuntimeError) and out_of_memory(error, self.config):
            self.stop_kind = self.stop_reason = OUT_OF_MEMORY
            failure = TrainingError(out_of_memory(error, self.config))
        elif error is not None:  # a save that failed, bad data, a bug: nothing more to save
            self.release()
            return False
        self.deferring = True  # already stopping: a second Ctrl-C must not cut the last save short
        try:
            self.finish()
        finally:
            self.release()
        if failure is not None:
            raise failure from None
        return True

    def finish(self) -> None:
        epochs = len(self.history["val_loss"])
        seconds = sum(self.history["epoch_seconds"])
        self.say(f"stopped after {epochs} epochs ({self.stop_reason}) in {seconds:.1f}s")
        if self.best_state is None:
            self.say("stopped before training started; nothing was written" if epochs == 0
                     else "no epoch gave a finite loss, so nothing was saved")
            return
        try:
            self.save(self.stop_kind, self.stop_reason)  # once more, with the full history
            remove_written_files(self.run_dir)
        except RunError as error:
            raise TrainingError(f"saving the finished run: {error}{self.kept_so_far(False)}") from None
        self.say(f"lowest validation loss {self.best_val_loss:.5f} at epoch {self.best_epoch}, "
                 f"its weights saved to {self.run_dir / CHECKPOINT_FILE}")

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line)

    def release(self) -> None:
        """Restore the signal handlers, let go of the lock, and leave no trace of a run that saved nothing."""
        for number, handler in self.handlers.items():
            signal.signal(number, handler)
        self.handlers = {}
        if self.lock is not None:
            os.ftruncate(self.lock, 0)  # no process holds it now
            os.close(self.lock)  # closing the file lets go of the lock
            self.lock = None
        if not self.saved and self.run_dir is not None:
            if self.created_lock:
                (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
            if self.created_dir and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()

    # ---- the pieces ----

    def save(self, stop_kind: str, stop_reason: str) -> None:
        save_checkpoint(
            self.run_dir / CHECKPOINT_FILE, self.model, self.best_state, config=self.config,
            history=self.history, best_epoch=self.best_epoch, best_val_loss=self.best_val_loss,
            stop_kind=stop_kind, stop_reason=stop_reason, device=str(next(self.model.parameters()).device),
            stamp=uuid.uuid4().hex[:12], saved_at=datetime.now().isoformat(timespec="microseconds"),
            **self.run_info,
        )

    def kept_so_far(self, nothing_saved_yet: bool) -> str:
        if nothing_saved_yet:
            return "; nothing of an earlier run there was touched" if self.replacing else ""
        return f"; the checkpoint saved before it, {self.run_dir / CHECKPOINT_FILE}, is whole"

    def catch_signals(self) -> None:
        """Turn Ctrl-C, SIGTERM and SIGHUP into exceptions raised at once, wherever the loop is.

        Only signals left at their default: `nohup` ignores SIGHUP, and a background job SIGINT.
        Python lets only the main thread set handlers; elsewhere, signals keep theirs.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for number in SIGNAL_STOPS:
            if signal.getsignal(number) in (signal.SIG_DFL, signal.default_int_handler):
                self.handlers[number] = signal.signal(number, self.on_signal)

    def on_signal(self, number, frame) -> None:
        if self.deferring:
            self.pending = number
        elif number == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise StopSignal(SIGNAL_STOPS[number])

    @contextlib.contextmanager
    def signals_deferred(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
            if self.pending is not None:
                number, self.pending = self.pending, None
                self.on_signal(number, None)


def exit_status(stop_kind: str) -> int:
    """0, or the shell's status for a run stopped by a signal or a closed pipe."""
    return EXIT_STATUS.get(stop_kind, 0)


def out_of_memory(error: RuntimeError, config: dict) -> str | None:
    """The line for a RuntimeError that says memory ran out, or None for any other."""
    if "out of memory" in str(error):  # torch.OutOfMemoryError on a GPU, RuntimeError on a Mac
        memory = f"the {config['device']} device's memory"
        remedy = "or train on the CPU with --device cpu"
    elif "can't allocate memory" in str(error):  # the CPU's allocator
        memory, remedy = "this machine's memory", "or close other programs"
    else:
        return None
    return (f"{memory} ran out with --batch-size {config['batch_size']} and --latent-dim "
            f"{config['latent_dim']}: pass a smaller --batch-size (or --latent-dim), {remedy}")


# ---- The run directory: made, checked, locked ----

def new_run_dir(runs_dir: Path | None = None) -> Path:
    """A new directory in `runs_dir` (default runs/) named by the time: the newest sorts last."""
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    name = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1, 100):
        run_dir = runs_dir / (name if attempt == 1 else f"{name}_{attempt}")  # two in one second
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as error:
            raise RunError(f"cannot create a run directory in {runs_dir}: "
                           f"{cause_and_remedy(error, RUN_DIR_FLAG)}") from None
    raise RunError(f"cannot find a free run directory name in {runs_dir}: pass --run-dir")


def check_replaceable(run_dir: Path) -> bool:
    """Make `run_dir` if it is new; refuse one that holds anything but a run of this code.
    Returns whether it holds an earlier run (which the new run replaces when it first saves)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        names = {path.name for path in run_dir.iterdir()} - {LOCK_FILE, WRITTEN_FILE}
    except OSError as error:
        raise RunError(f"cannot write the run directory {run_dir}: "
                       f"{cause_and_remedy(error, RUN_DIR_FLAG)}") from None
    if CHECKPOINT_FILE in names:
        try:
            load_checkpoint(run_dir / CHECKPOINT_FILE)
        except CheckpointError as error:  # another project's file, a fork's model: the user's, kept
            raise RunError(f"{error.what}, so {run_dir} is not a run to replace: pass another --run-dir "
                           f"(nothing was written)") from None
        return True
    if names:
        raise RunError(f"{run_dir} holds files but no run of this project ({len(names)}, such as "
                       f"{sorted(names)[0]}): pass a new or empty --run-dir (nothing was written)")
    return False


def lock_run_dir(run_dir: Path) -> int | None:
    """Lock `run_dir` for this process, writing its pid into train.lock; refuse it if another holds it."""
    try:
        lock = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        raise RunError(f"cannot write the run directory {run_dir}: "
                       f"{cause_and_remedy(error, RUN_DIR_FLAG)}") from None
    if fcntl is None:
        return lock
    for attempt in range(5):  # evaluate.py's look at the lock (training_pid) holds it for an instant
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        pid = os.read(lock, 32).decode(errors="replace").strip() or "unknown"
        os.close(lock)
        raise RunError(f"{run_dir} is in use by a training that is still running (pid {pid}): "
                       f"wait for it to end, or pass another --run-dir")
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    return lock


def training_pid(run_dir: Path) -> str | None:
    """The pid of the train.py that holds `run_dir`'s lock now, or None when no process does."""
    if fcntl is None:
        return None
    try:
        lock = os.open(run_dir / LOCK_FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None  # no lock file: no training ever held this directory
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.read(lock, 32).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(lock)  # also lets go of the shared lock, if this took it


def run_state(checkpoint: dict, run_dir: Path) -> str:
    """How a run ended, in words for a report; for one that did not record it, whether it is alive."""
    if checkpoint.get("stop_kind") != RUNNING:
        return checkpoint["stop_reason"]
    pid = training_pid(run_dir)
    if pid is not None:
        return f"still training (pid {pid})"
    return "stopped without recording why (killed, or the machine went down)"


# ---- Checkpoints, reports and figures on disk ----

def save_checkpoint(path, model: DenoisingAutoencoder, state_dict: dict, **run_info) -> None:
    """Write a self-describing checkpoint (dae.py's format): the previous one stays whole if this fails."""
    buffer = io.BytesIO()
    # Serialized in memory first (under 3 MB), so that a full disk fails in a plain file write,
    # with an OSError that names the cause.
    torch.save(checkpoint_contents(model, state_dict, **run_info), buffer)
    write_file(Path(path), buffer.getvalue())


def read_checkpoint(path) -> dict:
    """The run a checkpoint file records, checked before anything trusts it; the model is not built.

    Any file may lie under the name: another project's, a bare model, damaged bytes, a huge file,
    a directory. Each is refused in one line (a CheckpointError), before more than
    MAX_CHECKPOINT_BYTES are read; a file that cannot be read at all is a RunError.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_file() and size <= MAX_CHECKPOINT_BYTES:
            with open(path, "rb") as file:
                content = file.read()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}", "run `python train.py` first, or pass --run-dir") from None
    except OSError as error:
        raise RunError(f"cannot read {path}: {cause_and_remedy(error, RUN_DIR_FLAG)}") from None
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file", "move or rename it, or pass another --run-dir")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path} holds {size / 2**20:,.0f} MB, far more than any checkpoint of this "
                              f"project (MAX_CHECKPOINT_BYTES in runs.py)", "pass another --run-dir")
    try:
        # weights_only=True: a checkpoint holds tensors and plain values, and can never run code.
        checkpoint = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises many types (EOFError, UnpicklingError ...)
        raise CheckpointError(f"{path} holds a file this project did not write (damaged, or not a "
                              f"PyTorch checkpoint: {type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("format"), str):
        raise CheckpointError(f"{path} holds a file this project did not write")
    if checkpoint["format"] != CHECKPOINT_FORMAT:  # another model of this family, a fork's VAE say
        raise CheckpointError(f"{path} holds a '{checkpoint['format']}' model",
                              f"this code reads '{CHECKPOINT_FORMAT}': train one with its train.py")
    missing = unrecorded(checkpoint)
    if missing:
        raise CheckpointError(f"{path} holds a model but no record of a run of train.py ({missing})")
    checkpoint.setdefault("stop_kind", legacy_stop_kind(checkpoint["stop_reason"]))
    return checkpoint


def legacy_stop_kind(stop_reason: str) -> str | None:
    """The kind of a stop that a checkpoint from before kinds were recorded gives only in words."""
    for kind, words in ((ALL_EPOCHS, "reached --epochs"), (EARLY_STOPPING, "early stopping"), (DIVERGED, "diverged")):
        if stop_reason.startswith(words):
            return kind
    return stop_reason if stop_reason in (RUNNING, *EXIT_STATUS, OUT_OF_MEMORY) else None


def unrecorded(checkpoint: dict) -> str | None:
    """What a checkpoint lacks of the run record that evaluate.py and visualize.py read, in words; or None."""
    config, history = checkpoint.get("config"), checkpoint.get("history")
    if not isinstance(config, dict):
        return "no configuration"
    kinds = {"seed": int, "val_size": int, "noise_std": (int, float), "epochs": int}
    wrong = [name for name, kind in kinds.items() if not isinstance(config.get(name), kind)]
    if wrong:
        return f"no {wrong[0]} in its configuration"
    if not (0 <= config["noise_std"] <= MAX_NOISE_STD and 0 <= config["seed"] < 2**64 and config["val_size"] > 0):
        return "a configuration out of range"
    if not (isinstance(history, dict) and all(isinstance(values, list) for values in history.values())):
        return "no history"
    lengths = {len(values) for values in history.values()}
    if not ({"train_loss", "val_loss"} <= set(history) and len(lengths) == 1 and 0 not in lengths):
        return "a history without every epoch's losses"
    if not all(isinstance(value, (int, float)) for values in history.values() for value in values):
        return "a history that is not numbers"
    best_epoch = checkpoint.get("best_epoch")
    if not (isinstance(best_epoch, int) and 1 <= best_epoch <= len(history["val_loss"])):
        return "no best epoch among its epochs"
    if not all(isinstance(checkpoint.get(name), str) for name in ("stop_reason", "stamp", "device")):
        return "no stop reason, stamp or device"
    return None


def load_checkpoint(path) -> tuple[DenoisingAutoencoder, dict]:
    """Rebuild the model a checkpoint file describes; returns (model in eval mode, the checkpoint dict)."""
    checkpoint = read_checkpoint(path)
    return model_from_checkpoint(checkpoint, path), checkpoint


def describes(checkpoint: dict) -> dict:
    """What a report or figure records of the checkpoint it was made from."""
    return {"best_epoch": checkpoint.get("best_epoch"), "checkpoint_stamp": checkpoint.get("stamp")}


def write_reports(run_dir: Path, weights: dict, files: dict[str, bytes], while_training: bool = False) -> None:
    """Write reports or figures (name -> bytes), made from the weights `describes` names, into their
    run, and list them in written.txt. If the run saves other weights meanwhile, nothing stays,
    unless `while_training` (the files then say which weights they describe)."""
    path, stamp = run_dir / CHECKPOINT_FILE, weights["checkpoint_stamp"]
    if not while_training and current_stamp(path) != stamp:
        raise stale_report(run_dir, weights)
    listed = written_files(run_dir)
    write_file(run_dir / WRITTEN_FILE, "".join(f"{name}\n" for name in {**listed, **files}).encode())
    for name, content in files.items():
        write_file(run_dir / name, content)
    if not while_training and current_stamp(path) != stamp:  # train.py saved new weights meanwhile
        for name in files:
            (run_dir / name).unlink(missing_ok=True)
        raise stale_report(run_dir, weights)


def stale_report(run_dir: Path, weights: dict) -> RunError:
    """The error for a report of weights that its run replaced while the report was made."""
    pid = training_pid(run_dir)
    if pid is None:
        return RunError(f"the run in {run_dir} saved new weights while this was working on it: "
                        f"run it again for the new ones (nothing was written)")
    return RunError(f"the run in {run_dir} is still training (pid {pid}) and saved new weights while this "
                    f"was working on it: wait for it to end, or pass --while-training to keep what this "
                    f"makes of the weights of epoch {weights['best_epoch']} (nothing was written)")


def current_stamp(path: Path) -> str | None:
    try:
        return read_checkpoint(path).get("stamp")
    except (CheckpointError, RunError):
        return None


def written_files(run_dir: Path) -> dict[str, None]:
    """The names written.txt lists (in order, as dict keys); only plain names inside the run."""
    try:
        lines = (run_dir / WRITTEN_FILE).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    return {name: None for name in lines
            if name and name == Path(name).name and name not in (CHECKPOINT_FILE, LOCK_FILE, "..")}


def remove_written_files(run_dir: Path) -> list[str]:
    """Remove what evaluate.py and visualize.py wrote for the run, as written.txt lists it."""
    removed = []
    try:
        for name in written_files(run_dir):
            path = run_dir / name
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed.append(name)
        (run_dir / WRITTEN_FILE).unlink(missing_ok=True)
    except OSError as error:
        raise RunError(f"cannot remove the reports of other weights in {run_dir}: "
                       f"{cause_and_remedy(error, RUN_DIR_FLAG)}") from None
    return removed


def unlisted_files_note(run_dir: Path) -> str:
    """A note on files beside the new run that no record names (an older version's reports, or yours)."""
    others = sorted({path.name for path in run_dir.iterdir()} - {CHECKPOINT_FILE, LOCK_FILE})
    if not others:
        return ""
    return (f"; left {len(others)} file(s) that no record says it wrote, such as {others[0]}: "
            f"they do not describe this run")


def write_file(path: Path, content: bytes) -> None:
    """Write `content` to `path` whole or not at all (files.py's `write_atomically`); raises
    RunError, with the cause and the remedy, when the write fails."""
    try:
        write_atomically(path, content)
    except OSError as error:
        raise RunError(f"cannot write {path}: {cause_and_remedy(error, RUN_DIR_FLAG)}") from None


# ---- Finding a run ----

def newest_run(runs_dir: Path | None = None) -> tuple[Path, datetime, int, list[tuple[Path, str]]]:
    """The run under `runs_dir` that its own record says was saved last and that is not training
    now; when it saved; how many runs were compared; and the newer ones still training, with pids.

    File times are not asked: a copy, a `touch` or a restored backup changes them. A run killed
    outright (kill -9, a power cut) is taken: its best weights are saved.
    """
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    # runs_dir/checkpoint.pt itself too: where this project put its one run before runs had directories.
    candidates = [*Path(runs_dir).glob(CHECKPOINT_FILE), *Path(runs_dir).glob(f"*/{CHECKPOINT_FILE}")]
    recorded = []
    for path in candidates:
        try:
            recorded.append((saved_time(read_checkpoint(path)), path))
        except (CheckpointError, RunError):  # not a run of this code, or not readable: not a candidate
            continue
    training = []
    for saved, path in sorted(recorded, reverse=True):
        pid = training_pid(path.parent)
        if pid is None:
            return path.parent, saved, len(recorded), training
        training.append((path.parent, pid))
    if training:
        newest, pid = training[0]
        raise RunError(f"no run in {runs_dir} has finished; {len(training)} still training, the newest "
                       f"{newest} (pid {pid}): wait for it, or pass --run-dir {newest} to use its "
                       f"best weights so far")
    raise RunError(f"no run in {runs_dir}: run `python train.py` first, or pass --run-dir")


def saved_time(checkpoint: dict) -> datetime:
    """When a run last saved, by its record; a run that does not record it ranks below every other."""
    try:
        return datetime.fromisoformat(checkpoint.get("saved_at"))
    except (TypeError, ValueError):
        return datetime.min


def run_to_use(run_dir: str | None, doing: str) -> Path:
    """The run a script works on: --run-dir's, or the newest, said in a line that names it and why."""
    if run_dir is not None:
        return Path(run_dir)
    run_dir, saved, compared, training = newest_run()
    if compared == 1:
        why = "the only run there"
    elif saved > datetime.min:
        why = f"of {compared} runs, the last saved by their records: {saved:%Y-%m-%d %H:%M:%S}"
    else:
        why = f"none of the {compared} runs records when it saved"
    note = ""
    if training:
        newest, pid = training[0]
        note = (f"; passed over {len(training)} newer run(s) still training, the newest {newest} "
                f"(pid {pid}): pass --run-dir {newest} to use its best weights so far")
    print(f"{doing} the newest run, {run_dir} ({why}; pass --run-dir for another){note}")
    return run_dir


# ---- The data a run was trained and measured on ----

@dataclass
class RunData:
    """What a run was trained and is measured on, rebuilt from its seed, with the model's codes."""

    test_clean: torch.Tensor  # (10000, 1, 28, 28)
    test_noisy: torch.Tensor  # the same, with the test noise (TEST_NOISE_SEED) at the asked std
    test_labels: torch.Tensor  # (10000,)
    train_images: torch.Tensor  # the run's training split, clean: (N, 1, 28, 28)
    train_labels: torch.Tensor
    train_noisy: torch.Tensor  # the training images with noise from the run's seed: the same each call
    val_clean: torch.Tensor  # the run's validation split, and its noisy images
    val_noisy: torch.Tensor
    train_codes: torch.Tensor  # model.encode of the training images with the run's noise: (N, d)
    test_codes: torch.Tensor  # model.encode(test_noisy): (10000, d)


def load_split(data_dir, val_size: int, noise_std: float, generator: torch.Generator, remedy: str) -> tuple:
    """The training split of a run, as data.py's `training_split` makes it from `generator`:
    ((train images, train labels), (clean validation images, noisy validation images)).
    `remedy` ends the line that refuses a `val_size` leaving fewer than MIN_TRAINING_IMAGES to train
    on; "{most:,}" in it is the most it may be."""
    fetch_data(data_dir)
    images, labels = load_fashion_mnist(data_dir, train=True)
    most = len(images) - MIN_TRAINING_IMAGES  # evaluate.py's neighbours and PCA need a few to train on
    if not 0 < val_size <= most:
        raise RunError(f"a validation set of {val_size:,} images leaves too few of the {len(images):,} in "
                       f"{data_dir} for training: {remedy.format(most=most)}")
    return training_split(images, labels, val_size, noise_std, generator=generator)


@torch.no_grad()
def load_run_data(model, checkpoint: dict, data_dir, noise_std: float | None = None) -> RunData:
    """The data of the run `checkpoint` records, with the test noise at `noise_std` (None: the run's).

    The split and the validation noise come from a generator seeded with the run's seed, as
    train.py drew them; the training images' noise for the codes comes next from the same generator
    (train.py's own changed every batch), so every script sees the very same images every time.
    """
    config = checkpoint["config"]
    generator = torch.Generator().manual_seed(config["seed"])
    (train_images, train_labels), (val_clean, val_noisy) = load_split(
        data_dir, config["val_size"], config["noise_std"], generator, "pass the --data-dir the run was trained on")
    test_clean, test_noisy, test_labels = noisy_test_set(data_dir, config["noise_std"] if noise_std is None
                                                         else noise_std)
    # Codes of noisy images, as the model is used; the training images' noise is seeded too.
    train_noisy = add_noise(train_images, config["noise_std"], generator=generator)
    return RunData(test_clean, test_noisy, test_labels, train_images, train_labels, train_noisy, val_clean,
                   val_noisy, model.encode(train_noisy), model.encode(test_noisy))


def silence_output() -> None:
    """After the output failed (a reader that left, a full device): print nothing more, so that the
    flush at exit raises no second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
