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

`RunSaver` is what train.py's loop calls to save as it goes; it also turns Ctrl-C, SIGTERM and
SIGHUP into a clean stop, refuses a directory that is in use or holds something else, and stops
on a loss that is not a finite number. Every file is written beside its name and renamed over it
(data.py's `write_atomically`), so a crash, a kill or a full disk never leaves half a file.
"""

import contextlib
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

from dae import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    DenoisingAutoencoder,
    checkpoint_contents,
    model_from_checkpoint,
)
from data import cause_and_remedy, write_atomically

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
STILL_RUNNING = "running"  # the stop reason a checkpoint carries until its run stops
# The shell's usual 128 + signal number, for a run that a signal or a closed pipe stopped.
EXIT_STATUS = {"hung up": 129, "interrupted": 130, "output closed": 141, "terminated": 143}
STOP_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP"):  # a closed terminal or ssh session
    STOP_REASONS[signal.SIGHUP] = "hung up"


class RunError(Exception):
    """A run's directory or files cannot be made, found, read or written; the message says what to do."""


class TrainingError(RunError):
    """Training could not go on; whatever was saved before stays whole."""


class Diverged(TrainingError):
    """The loss is not a finite number."""


class StopSignal(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` on the way swallows it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrainedRun:
    """What train.py's `train` returns: the model with the kept weights (on the CPU, in eval mode)."""

    model: DenoisingAutoencoder | None  # None only when no epoch finished
    history: dict  # per epoch: train_loss, val_loss, epoch_seconds, train_<term> for other terms
    best_epoch: int
    best_val_loss: float
    stop_reason: str
    run_dir: Path


class RunSaver:
    """Saves a training run as it goes, so that nothing is lost however it ends.

        with RunSaver(args.run_dir, config, ...) as run:
            for epoch ...:
                run.record_epoch(epoch, train_terms, val_loss, seconds)  # stops on nan or inf
                run.keep_if_lowest(model, epoch, val_loss)               # the weights worth keeping
        return run.trained()

    Entering it checks and locks the run directory. Ctrl-C, SIGTERM, SIGHUP or a closed output
    inside the `with` end the loop at once; leaving it saves the whole history.
    """

    def __init__(self, run_dir: str, config: dict, recipe_changes: dict, objective: str,
                 divergence_remedy: str):
        self.named_dir = run_dir != NEW_RUN_DIR
        self.run_dir = Path(run_dir) if self.named_dir else None
        self.config = {name: str(value) if isinstance(value, torch.device) else value
                       for name, value in config.items()}
        self.run_info = {"recipe_changes": recipe_changes, "objective": objective,
                         "torch_version": str(torch.__version__)}
        self.divergence_remedy = divergence_remedy
        self.history = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
        self.best_epoch, self.best_val_loss, self.best_state = 0, math.inf, None
        self.stop_reason = f"reached --epochs {config['epochs']}"
        self.lock, self.handlers, self.deferring, self.pending = None, {}, False, None
        self.created_dir = self.created_lock = self.replacing = False
        self.model, self.saved = None, False

    # ---- what the loop calls ----

    def record_epoch(self, epoch: int, train_terms: dict, val_loss: float, seconds: float):
        self.history["train_loss"].append(train_terms["loss"])
        self.history["val_loss"].append(val_loss)
        self.history["epoch_seconds"].append(seconds)
        for name, value in train_terms.items():
            if name != "loss":
                self.history.setdefault(f"train_{name}", []).append(value)
        if not all(map(math.isfinite, [*train_terms.values(), val_loss])):
            print(f"epoch {epoch:3d}/{self.config['epochs']}  train {train_terms['loss']:.4f}"
                  f"  val {val_loss:.4f}  not a finite number: training stops here")
            kept = (f"the weights of epoch {self.best_epoch} stay saved" if self.best_epoch
                    else "nothing was saved")
            self.stop_reason = f"diverged at epoch {epoch}"
            raise Diverged(f"epoch {epoch}: the loss is not a finite number, so training diverged "
                           f"({kept}): {self.divergence_remedy}")

    def keep_if_lowest(self, model: DenoisingAutoencoder, epoch: int, val_loss: float) -> bool:
        """Save the weights if `val_loss` is the lowest yet; say whether it was."""
        if not val_loss < self.best_val_loss:
            return False
        first_save = self.best_state is None
        self.model, self.best_epoch, self.best_val_loss = model, epoch, val_loss
        self.best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        try:
            # The new checkpoint and the removal of reports that describe other weights happen
            # together: a signal in between waits until both are done.
            with self.signals_deferred():
                self.save(STILL_RUNNING)
                self.saved = True
                removed = remove_written_files(self.run_dir)
        except RunError as error:
            raise TrainingError(f"epoch {epoch}: {error}{self.kept_so_far(first_save)}") from None
        if first_save and self.replacing:
            print(f"replaced the earlier run in {self.run_dir} ({len(removed)} of its reports and "
                  f"figures removed){unlisted_files_note(self.run_dir)}")
        return True

    def trained(self) -> TrainedRun:
        """The run as `train` returns it; the model holds the kept weights, not the last epoch's."""
        model = None
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            model = self.model.cpu().eval()
        return TrainedRun(model, self.history, self.best_epoch, self.best_val_loss, self.stop_reason,
                          self.run_dir)

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
        if isinstance(error, StopSignal):
            self.stop_reason = error.reason
        elif isinstance(error, KeyboardInterrupt):
            self.stop_reason = "interrupted"
        elif isinstance(error, BrokenPipeError):  # `python train.py | head`: stop like Ctrl-C
            silence_closed_output()
            self.stop_reason = "output closed"
        elif isinstance(error, Diverged):
            failure = error
        elif isinstance(error, RuntimeError) and out_of_memory(error, self.config):
            self.stop_reason = "out of memory"
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
        print(f"stopped after {epochs} epochs ({self.stop_reason}) in {seconds:.1f}s")
        if self.best_state is None:
            print("stopped before training started; nothing was written" if epochs == 0
                  else "no epoch gave a finite loss, so nothing was saved")
            return
        try:
            self.save(self.stop_reason)  # once more, with the full history
            remove_written_files(self.run_dir)
        except RunError as error:
            raise TrainingError(f"saving the finished run: {error}{self.kept_so_far(False)}") from None
        print(f"lowest validation loss {self.best_val_loss:.5f} at epoch {self.best_epoch}, "
              f"its weights saved to {self.run_dir / CHECKPOINT_FILE}")

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

    def save(self, stop_reason: str) -> None:
        save_checkpoint(
            self.run_dir / CHECKPOINT_FILE, self.model, self.best_state, config=self.config,
            history=self.history, best_epoch=self.best_epoch, best_val_loss=self.best_val_loss,
            stop_reason=stop_reason, device=str(next(self.model.parameters()).device),
            stamp=uuid.uuid4().hex[:12], saved_at=datetime.now().isoformat(timespec="seconds"),
            **self.run_info,
        )

    def kept_so_far(self, nothing_saved_yet: bool) -> str:
        if nothing_saved_yet:
            return "; nothing of an earlier run there was touched" if self.replacing else ""
        return f"; the checkpoint saved before it, {self.run_dir / CHECKPOINT_FILE}, is whole"

    def catch_signals(self) -> None:
        """Turn Ctrl-C, SIGTERM and SIGHUP into exceptions that stop the loop after the current batch.

        Only signals left at their default: `nohup` ignores SIGHUP, and a background job SIGINT.
        Python lets only the main thread set handlers; elsewhere, signals keep theirs.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for number in STOP_REASONS:
            if signal.getsignal(number) in (signal.SIG_DFL, signal.default_int_handler):
                self.handlers[number] = signal.signal(number, self.on_signal)

    def on_signal(self, number, frame) -> None:
        if self.deferring:
            self.pending = number
        elif number == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise StopSignal(STOP_REASONS[number])

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


def exit_status(stop_reason: str) -> int:
    """0, or the shell's status for a run stopped by a signal or a closed pipe."""
    return EXIT_STATUS.get(stop_reason, 0)


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
        kind = checkpoint_format(run_dir / CHECKPOINT_FILE)
        if kind != CHECKPOINT_FORMAT:
            what = f"a '{kind}' model" if kind else "a file this project did not write"
            raise RunError(f"{run_dir / CHECKPOINT_FILE} holds {what}, so {run_dir} is not a run to "
                           f"replace: pass another --run-dir (nothing was written)")
        return True
    if names:
        raise RunError(f"{run_dir} holds files but no run of this project ({len(names)}, such as "
                       f"{sorted(names)[0]}): pass a new or empty --run-dir (nothing was written)")
    return False


def checkpoint_format(path: Path) -> str | None:
    """The format tag of a checkpoint file, or None if it is not one this project's code wrote."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file raises many types (EOFError, UnpicklingError ...)
        return None
    return checkpoint.get("format") if isinstance(checkpoint, dict) else None


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
    if checkpoint.get("stop_reason") != STILL_RUNNING:
        return checkpoint.get("stop_reason", "stop reason not recorded")
    pid = training_pid(run_dir)
    if pid is not None:
        return f"still training (pid {pid})"
    return "stopped without recording why (killed, or the machine went down)"


# ---- Checkpoints, reports and figures on disk ----

def save_checkpoint(path, model: DenoisingAutoencoder, state_dict: dict, **run_info) -> None:
    """Write a self-describing checkpoint (dae.py's format): the previous one stays whole if this fails."""
    buffer = io.BytesIO()
    # Serialized in memory first (under 1 MB), so that a full disk fails in a plain file write,
    # with an OSError that names the cause.
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
    except Exception as error:  # a damaged file raises many types (EOFError, UnpicklingError ...)
        raise CheckpointError(f"{path} is damaged or is not a PyTorch checkpoint "
                              f"({type(error).__name__}): train again with `python train.py`") from None
    return model_from_checkpoint(checkpoint, path), checkpoint


def describes(checkpoint: dict) -> dict:
    """What a report or figure records of the checkpoint it was made from."""
    return {"best_epoch": checkpoint.get("best_epoch"), "checkpoint_stamp": checkpoint.get("stamp")}


def write_reports(run_dir: Path, stamp: str | None, files: dict[str, bytes]) -> None:
    """Write reports or figures (name -> bytes), made from the checkpoint stamped `stamp`, into its
    run, and list them in written.txt. If the run saves other weights meanwhile, nothing stays."""
    path = run_dir / CHECKPOINT_FILE
    stale = (f"the run in {run_dir} saved new weights while this was working on it: "
             f"run it again for the new ones (nothing was written)")
    if current_stamp(path) != stamp:
        raise RunError(stale)
    listed = written_files(run_dir)
    write_file(run_dir / WRITTEN_FILE, "".join(f"{name}\n" for name in {**listed, **files}).encode())
    for name, content in files.items():
        write_file(run_dir / name, content)
    if current_stamp(path) != stamp:  # train.py saved new weights while these were written
        for name in files:
            (run_dir / name).unlink(missing_ok=True)
        raise RunError(stale)


def current_stamp(path: Path) -> str | None:
    try:
        return load_checkpoint(path)[1].get("stamp")
    except CheckpointError:
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
    """Write `content` to `path` whole or not at all (data.py's `write_atomically`); raises
    RunError, with the cause and the remedy, when the write fails."""
    try:
        write_atomically(path, content)
    except OSError as error:
        raise RunError(f"cannot write {path}: {cause_and_remedy(error, RUN_DIR_FLAG)}") from None


# ---- Finding a run ----

def newest_run(runs_dir: Path | None = None) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest run under `runs_dir` that is not training now, and the newer ones that are, with
    their pids. A run killed outright (kill -9, a power cut) is taken: its best weights are saved."""
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    # runs_dir/checkpoint.pt itself too: where this project put its one run before runs had directories.
    candidates = [*Path(runs_dir).glob(CHECKPOINT_FILE), *Path(runs_dir).glob(f"*/{CHECKPOINT_FILE}")]
    training = []
    for path in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        pid = training_pid(path.parent)
        if pid is None:
            return path.parent, training
        training.append((path.parent, pid))
    if training:
        newest, pid = training[0]
        raise RunError(f"no run in {runs_dir} has finished; {len(training)} still training, the newest "
                       f"{newest} (pid {pid}): wait for it, or pass --run-dir {newest} to use its "
                       f"best weights so far")
    raise RunError(f"no run in {runs_dir}: run `python train.py` first, or pass --run-dir")


def run_to_use(run_dir: str | None, doing: str) -> Path:
    """The run a script works on: --run-dir's, or the newest, said in a line that names it."""
    if run_dir is not None:
        return Path(run_dir)
    run_dir, training = newest_run()
    note = ""
    if training:
        newest, pid = training[0]
        note = (f"; passed over {len(training)} newer run(s) still training, the newest {newest} "
                f"(pid {pid}): pass --run-dir {newest} to use its best weights so far")
    print(f"{doing} the newest run, {run_dir} (pass --run-dir for another){note}")
    return run_dir


def silence_closed_output() -> None:
    """After a BrokenPipeError (`python evaluate.py | head -3`, the reader has gone): print nothing
    more, so that the flush at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())

