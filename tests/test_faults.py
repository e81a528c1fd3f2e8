"""Whatever goes wrong ends in one line that names the cause and the remedy, a non-zero status, and
nothing the user had destroyed: a loss that is not finite, a full disk, an output that fails, a
signal at any moment, a file system with no locks, data that is not what the recipe expects.

A real process where the behaviour is the process's own (tests/processes.py); in-process elsewhere.
"""

import errno
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pytest
import torch

import cli
import evaluate
import explorer
import runs
import train
import visualize
from checkpoints import load_checkpoint
from dae import DenoisingAutoencoder
from conftest import ROOT, TINY_TRAIN, idx_bytes, tiny_train_args
from runs import CHECKPOINT_FILE, LOCK_FILE

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def files_and_contents(directory) -> dict:
    return {path.name: path.read_bytes() if path.is_file() else "a directory" for path in sorted(directory.iterdir())}


def fail_writes_after(count: int, monkeypatch) -> None:
    """A disk that fills up: after `count` good writes, each write fails as a full disk does."""
    real_fsync, calls = os.fsync, []

    def fsync(file_descriptor):
        calls.append(file_descriptor)
        if len(calls) > count:
            raise NO_SPACE
        real_fsync(file_descriptor)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 1.3 MB (a tmpfs): room for one checkpoint of the 8-number model, not two."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1300k", "tmpfs", str(mount_point)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (it needs root); the simulated full disk checks the same")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True)


@pytest.fixture
def ctrl_c_delivered():
    """Ctrl-C as a terminal delivers it, also where the tests run as a background job, which ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def epochs_that(monkeypatch, fail_at: int, failure) -> None:
    """train_one_epoch as it is, except that epoch `fail_at` calls `failure(terms)` instead of returning."""
    real_epoch, epochs = train.train_one_epoch, []

    def epoch(*arguments, **keywords):
        epochs.append(real_epoch(*arguments, **keywords))
        return failure(epochs[-1]) if len(epochs) == fail_at else epochs[-1]

    monkeypatch.setattr(train, "train_one_epoch", epoch)


# ---- A loss that is not finite ----

def test_a_run_that_diverges_at_once_stops_with_one_line_and_saves_nothing(tiny_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "3", "--lr", "1e38"))
    assert exit_info.value.code == (
        "error: stopped after epoch 1: the loss is not a finite number, so training diverged: a learning rate or a "
        "noise far too large does this: lower --lr (this run 1e+38, the recipe 0.001) or --noise-std (this run "
        "0.2, the recipe 0.2); nothing was saved")
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 1 and re.search(r"\b(nan|inf)\b", epoch_lines[0])
    assert not (tmp_path / "run").exists()


def test_weights_saved_before_a_divergence_stay_and_the_checkpoint_says_it_diverged(tiny_data_dir, tmp_path,
                                                                                    monkeypatch):
    epochs_that(monkeypatch, 3, lambda terms: {**terms, "loss": float("inf")})
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "10"))
    assert exit_info.value.code.startswith("error: stopped after epoch 3: the loss is not a finite number, so "
                                           "training diverged")
    assert exit_info.value.code.endswith(f"the checkpoint saved before it, {tmp_path / 'run' / CHECKPOINT_FILE}, is "
                                         f"whole")
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert (checkpoint["stop_kind"], checkpoint["stop_reason"]) == (runs.DIVERGED, "diverged at epoch 3")
    assert checkpoint["best_epoch"] == 2 and len(checkpoint["history"]["val_loss"]) == 3  # the bad epoch too
    metrics = evaluate.evaluate(tmp_path / "run", tiny_data_dir, None)
    assert metrics["run"]["state"] == "diverged at epoch 3"
    why_not = evaluate.why_published_does_not_apply({**checkpoint, "recipe_changes": {}}, 0.2, "diverged at epoch 3")
    assert "stopped (diverged at epoch 3) after 3 epochs" in why_not


# ---- A full disk, and every other cause of a failed write ----

def test_a_full_disk_at_a_save_is_one_line_and_the_previous_checkpoint_stays_whole(scripts, tiny_data_dir, small_disk):
    run_dir = small_disk / "run"
    result = scripts.start("train.py", *tiny_train_args(tiny_data_dir, run_dir, "--epochs", "6"), cwd=small_disk.parent)
    assert result.wait() == 1
    [line] = result.stderr().splitlines()
    failed_epoch = int(line.split(":")[1].split()[-1])  # "error: stopped after epoch N: ..."
    path = run_dir / CHECKPOINT_FILE
    assert line == (f"error: stopped after epoch {failed_epoch}: {path}: no space left on the disk: free some space, "
                    f"or write to another disk; the checkpoint saved before it, {path}, is whole")
    _, checkpoint = load_checkpoint(path)
    assert checkpoint["best_epoch"] < failed_epoch
    assert {path.name for path in run_dir.iterdir()} == {CHECKPOINT_FILE, LOCK_FILE}  # no temporary file


def test_a_save_that_fails_later_keeps_the_last_good_checkpoint(tiny_data_dir, tmp_path, monkeypatch):
    fail_writes_after(2, monkeypatch)  # epochs 1 and 2 save (the tiny run improves every early epoch), 3 cannot
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "5"))
    path = tmp_path / "run" / CHECKPOINT_FILE
    assert exit_info.value.code == (f"error: stopped after epoch 3: {path}: no space left on the disk: free some "
                                    f"space, or write to another disk; the checkpoint saved before it, {path}, is "
                                    f"whole")
    monkeypatch.undo()
    _, checkpoint = load_checkpoint(path)
    assert checkpoint["best_epoch"] == 2 and len(checkpoint["history"]["val_loss"]) == 2
    assert {path.name for path in (tmp_path / "run").iterdir()} == {CHECKPOINT_FILE, LOCK_FILE}


def test_a_report_or_figure_that_cannot_be_written_leaves_the_earlier_file_whole(tiny_run, monkeypatch):
    run_dir = tiny_run / "run"
    (run_dir / "metrics.json").write_text('{"test_mae": 0.05}\n')
    before = files_and_contents(run_dir)
    fail_writes_after(0, monkeypatch)
    for script in (evaluate, visualize):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")])
        assert re.fullmatch(rf"error: {run_dir}/\w+\.(json|png): no space left on the disk: free some space, or "
                            rf"write to another disk", exit_info.value.code)
    assert files_and_contents(run_dir) == before


@pytest.mark.parametrize("error_number, cause", [
    (errno.ENOSPC, "no space left on the disk: free some space"),
    (errno.EDQUOT, "your disk quota is used up: free some space"),
    (errno.EACCES, "permission denied: change its permissions"),
    (errno.EPERM, "permission denied: change its permissions"),
    (errno.EROFS, "the file system is read-only: write to a disk you can write to"),
    (errno.EISDIR, "a directory is in the way: move or rename it"),
    (errno.ENOTDIR, "a file is in the way where a directory should be"),
    (errno.ENOENT, "it does not exist (was it deleted?)"),
    (errno.ENOLCK, "this file system cannot lock files (a network disk?): use a directory on a local disk"),
    (errno.EIO, "Input/output error: check the disk, or use another directory"),
])
def test_each_cause_of_a_failed_write_gets_its_own_words_and_remedy(error_number, cause):
    error = OSError(error_number, os.strerror(error_number), "runs/x/checkpoint.pt")
    assert cli.in_words(error) == f"runs/x/checkpoint.pt: {cause}" + cli.in_words(error).partition(cause)[2]


def test_a_file_system_that_cannot_lock_is_one_line_and_leaves_nothing(tiny_data_dir, tmp_path, monkeypatch):
    def no_locks(file, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runs.fcntl, "flock", no_locks)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "1"))
    assert exit_info.value.code == ("error: this file system cannot lock files (a network disk?): use a directory on a "
                                    "local disk")
    assert not (tmp_path / "run").exists()


def test_a_failure_nobody_listed_is_still_one_line(tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "knn_accuracy", lambda *arguments: 1 / 0)  # a bug, say, in a fork
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
    assert exit_info.value.code == ("error: ZeroDivisionError: division by zero (unexpected: `python -X dev` shows "
                                    "where it happened)")



def test_a_model_whose_methods_want_more_than_the_scripts_give_is_one_line_naming_the_call(tiny_run, monkeypatch):
    """A class-conditional fork, say, whose decode takes the label too."""
    def decode(self, codes, labels):
        return self.decoder(codes)

    monkeypatch.setattr(DenoisingAutoencoder, "decode", decode)
    for script in (evaluate, visualize):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
        assert exit_info.value.code == (
            "error: TypeError: test_a_model_whose_methods_want_more_than_the_scripts_give_is_one_line_naming_the_call"
            ".<locals>.decode() missing 1 required positional argument: 'labels' (the model's methods take other "
            "arguments than the scripts give: docs/vae.md)"), script.__name__

# ---- Where the output goes, and signals at any moment ----

def test_output_to_a_closed_pipe_ends_quietly_and_to_a_full_device_in_one_line(scripts, tiny_run, tmp_path):
    """`python evaluate.py | head -3` with its reader gone; `python train.py > /dev/full`, buffered as Python
    buffers a file: the first full buffer fails, some epochs in."""
    flags = ["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")]
    closed = scripts.start("evaluate.py", *flags, cwd=tmp_path, stdout="closed pipe")
    endless = ("--epochs", "100000", "--patience", "100000", "--batch-size", "256")  # more lines than a buffer
    full = scripts.start("train.py", *tiny_train_args(tiny_run / "data", tmp_path / "new", *endless), cwd=tmp_path,
                         stdout="/dev/full", unbuffered=False)
    assert (closed.wait(), closed.stderr()) == (-signal.SIGPIPE, "")  # the shell shows 141, as for any Unix tool
    assert (tiny_run / "run" / "metrics.json").read_text().startswith('{\n  "test_mae"')  # written before printed
    assert full.wait() == 1
    _, checkpoint = load_checkpoint(tmp_path / "new" / CHECKPOINT_FILE)
    epochs = len(checkpoint["history"]["val_loss"])
    assert checkpoint["stop_kind"] == runs.FAILED and epochs > 0
    assert full.stderr() == (f"error: stopped after epoch {epochs}: cannot write the output (No space left on "
                             f"device): send it to another file or device; the checkpoint saved before it, "
                             f"{tmp_path / 'new' / CHECKPOINT_FILE}, is whole\n")


def test_each_signal_stops_a_training_cleanly_a_second_training_is_refused_and_kill_9_reads_as_stopped(
        scripts, tiny_data_dir, tmp_path):
    """Ctrl-C, SIGTERM (timeout, a scheduler, a notebook's stop), SIGHUP (a closed terminal), kill -9."""
    endless = ("--epochs", "100000", "--patience", "100000")
    run_dirs = {name: tmp_path / name for name in ("sigint", "sigterm", "sighup", "killed")}
    trainings = {name: scripts.start("train.py", *tiny_train_args(tiny_data_dir, run_dir, *endless), cwd=tmp_path)
                 for name, run_dir in run_dirs.items()}
    for training in trainings.values():
        training.wait_for_lines("epoch", 2)
    second = scripts.start("train.py", *tiny_train_args(tiny_data_dir, run_dirs["sighup"], "--epochs", "1"),
                           cwd=tmp_path)
    assert second.wait() == 1 and second.stderr() == (
        f"error: {run_dirs['sighup']} is in use by a training that is still running (pid {trainings['sighup'].pid}): "
        f"wait for it to end, or pass another --run-dir\n")
    for name, number in (("sigint", signal.SIGINT), ("sigterm", signal.SIGTERM), ("sighup", signal.SIGHUP),
                         ("killed", signal.SIGKILL)):
        trainings[name].send_signal(number)
    statuses = {name: training.wait() for name, training in trainings.items()}
    assert statuses == {"sigint": 130, "sigterm": 143, "sighup": 129, "killed": -signal.SIGKILL}
    for name, kind in (("sigint", "interrupted"), ("sigterm", "terminated"), ("sighup", "hung up")):
        output, path = trainings[name].stdout(), run_dirs[name] / CHECKPOINT_FILE
        assert trainings[name].stderr() == f"{kind}\n" and f"({kind}); " in output and str(path) in output
        checkpoint = load_checkpoint(path)[1]
        assert (checkpoint["stop_kind"], checkpoint["stop_reason"]) == (kind, kind)
        epoch_lines = [line for line in output.splitlines() if line.startswith("epoch")]
        # Every finished epoch, and no more; the signal may fall between an epoch's record and its line.
        assert 2 <= len(epoch_lines) <= len(checkpoint["history"]["val_loss"]) <= len(epoch_lines) + 1
        assert checkpoint["config"]["epochs"] == 100000  # the second training changed nothing
    killed = run_dirs["killed"]
    assert runs.training_pid(killed) is None  # the operating system let go of the lock
    assert evaluate.run_state(load_checkpoint(killed / CHECKPOINT_FILE)[1], killed) == (
        "stopped without recording why (killed, or the machine went down)")


class FailingOutput(io.StringIO):
    """A stdout whose writes fail from the third epoch line on, as a full disk fails them."""

    def write(self, text):
        self.epoch_lines = getattr(self, "epoch_lines", 0) + text.startswith("epoch ")
        if self.epoch_lines >= 3:
            raise NO_SPACE
        return super().write(text)


def test_training_whose_output_fails_stops_and_keeps_the_run(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", FailingOutput())
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "10"))
    path = tmp_path / "run" / CHECKPOINT_FILE
    assert exit_info.value.code == (f"error: stopped after epoch 3: cannot write the output (No space left on "
                                    f"device): send it to another file or device; the checkpoint saved before "
                                    f"it, {path}, is whole")
    _, checkpoint = load_checkpoint(path)
    assert checkpoint["stop_kind"] == runs.FAILED and len(checkpoint["history"]["val_loss"]) == 3


def test_ctrl_c_inside_train_in_a_notebook_is_recorded_and_reaches_the_notebook(tiny_data_dir, tmp_path,
                                                                                   monkeypatch, ctrl_c_delivered):
    real_save = runs.save_checkpoint

    def ctrl_c_while_saving(*arguments, **keywords):  # arrives as the first checkpoint is written
        monkeypatch.setattr(runs, "save_checkpoint", real_save)
        os.kill(os.getpid(), signal.SIGINT)
        real_save(*arguments, **keywords)

    monkeypatch.setattr(runs, "save_checkpoint", ctrl_c_while_saving)
    with pytest.raises(KeyboardInterrupt):  # the notebook shows it, as it shows any interrupted cell
        train.train(train.parse_args(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "9")))
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)[1]  # whole
    assert checkpoint["stop_kind"] == "interrupted" and checkpoint["best_epoch"] == 1
    assert len(checkpoint["history"]["val_loss"]) == 1


def test_a_script_restores_the_signal_handlers_it_found(tiny_run):
    found = {**{number: signal.SIG_DFL for number in cli.SIGNALS}, signal.SIGPIPE: signal.SIG_IGN}  # Python's own
    previous = {number: signal.signal(number, handler) for number, handler in found.items()}
    try:
        evaluate.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
        assert {number: signal.getsignal(number) for number in found} == found
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def test_ctrl_c_in_a_script_ends_it_with_status_130_and_no_traceback(capsys):
    @cli.script
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        interrupted()
    assert exit_info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see torch loading")
def test_ctrl_c_while_torch_loads_is_one_line_and_the_shells_status(tmp_path):
    """A fresh interpreter: the only test that needs one. SIGINT once torch's library is mapped, mid-import."""
    process = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), "--run-dir", str(tmp_path)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text() and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)
    assert (process.returncode, output, errors) == (-signal.SIGINT, "", "interrupted\n")  # the shell shows 130


def test_running_out_of_memory_in_training_is_one_line_and_keeps_what_was_saved(tiny_data_dir, tmp_path,
                                                                                monkeypatch):
    def out_of_memory(terms):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    epochs_that(monkeypatch, 3, out_of_memory)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "5"))
    assert exit_info.value.code.startswith("error: stopped after epoch 2: this machine's memory ran out: pass a "
                                           "smaller --batch-size")
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["stop_kind"] == runs.FAILED and len(checkpoint["history"]["val_loss"]) == 2
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert cli.in_words(gpu).startswith("the GPU's memory ran out") and "--device cpu" in cli.in_words(gpu)


def test_show_with_a_notebooks_backend_and_no_window_says_so_and_writes(tiny_run, capsys, monkeypatch):
    pytest.importorskip("matplotlib_inline", reason="no matplotlib-inline here (Jupyter's backend)")
    checkpoint = load_checkpoint(tiny_run / "run" / CHECKPOINT_FILE)[1]
    one_figure = ({"loss_curves.png": visualize.plot_loss_curves(checkpoint["history"])}, checkpoint, None)
    monkeypatch.setattr(visualize, "draw_run", lambda run_dir, data_dir: one_figure)  # main's --show is the point
    matplotlib.use("module://matplotlib_inline.backend_inline")  # what Jupyter leaves in MPLBACKEND
    try:
        visualize.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data"), "--show"])
    finally:
        matplotlib.use("Agg")
    output = capsys.readouterr().out
    assert "--show: no window to show them in here" in output and "Figure(" not in output
    assert output.count("wrote") == 1 and (tiny_run / "run" / "loss_curves.png").is_file()


# ---- Data that reads but is not what the recipe expects ----

def unusual(kind: str, raw_dir: Path) -> None:
    if kind == "images stored as int32":
        images = torch.zeros(TINY_TRAIN, 28, 28, dtype=torch.int32)
        header = b"\x00\x00\x0c\x03" + b"".join(size.to_bytes(4, "big") for size in images.shape)
        (raw_dir / "train-images-idx3-ubyte").write_bytes(header + images.numpy().astype(">i4").tobytes())
    elif kind == "a class missing":
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.arange(TINY_TRAIN) % 9))
    elif kind == "a directory where a file should be":
        (raw_dir / "t10k-labels-idx1-ubyte").unlink()
        (raw_dir / "t10k-labels-idx1-ubyte").mkdir()


UNUSUAL = {
    "images stored as int32": "train-images-idx3-ubyte holds images as int32, not bytes (uint8): move it elsewhere "
                              "to keep it, and put the dataset's original file in its place",
    "a class missing": "train-labels-idx1-ubyte holds no image of Ankle boot (9): move it elsewhere to keep it, and "
                       "put the dataset's original file in its place",
    "a directory where a file should be": "t10k-labels-idx1-ubyte: a directory is in the way: move or rename it",
}


@pytest.mark.parametrize("kind", UNUSUAL)
def test_data_that_reads_but_is_not_what_the_recipe_expects_is_one_line_in_every_script(kind, tiny_run):
    raw_dir = tiny_run / "data" / "FashionMNIST" / "raw"
    unusual(kind, raw_dir)
    before = files_and_contents(raw_dir)
    flags = ["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")]
    for script, arguments in ((evaluate, flags), (visualize, flags), (explorer, flags),
                              (train, tiny_train_args(tiny_run / "data", tiny_run / "new"))):
        with pytest.raises(SystemExit) as exit_info:
            script.main(arguments)
        assert exit_info.value.code == f"error: {raw_dir}/{UNUSUAL[kind]}", script.__name__
    assert files_and_contents(raw_dir) == before  # nothing of the user's data is deleted or rewritten
