"""When a run goes wrong: a loss that is not finite, a full disk, an output that fails, Ctrl-C at any
moment, data that reads but is not what the recipe expects, a run still training.

Each case ends in one line that names the cause and its remedy (a remedy names only the flags of
the script that prints it), a non-zero exit status, and nothing the user already had destroyed. A
real process where the behaviour is the process's own (tests/processes.py, or a fresh interpreter
for Ctrl-C while torch loads); in-process where that is the same thing.
"""

import errno
import io
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

import cli
import data
import evaluate
import explorer
import files
import runs
import train
import visualize
from conftest import ROOT, TINY_TRAIN, idx_bytes, tiny_train_args, write_tiny_dataset
from files import DataError, fetch_data
from runs import CHECKPOINT_FILE, load_checkpoint, save_checkpoint

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def files_and_contents(directory) -> dict:
    return {path.name: path.read_bytes() if path.is_file() else "a directory" for path in sorted(directory.iterdir())}


def fail_writes_after(count: int, monkeypatch) -> None:
    """Simulate a disk that fills up: after `count` good writes, each write fails as a full disk does."""
    real_fsync, calls = os.fsync, []

    def fsync(file_descriptor):
        calls.append(file_descriptor)
        if len(calls) > count:
            raise NO_SPACE
        real_fsync(file_descriptor)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of 1.3 MB (a tmpfs): room for one checkpoint of the 8-number model, not for two."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1300k", "tmpfs", str(mount_point)], capture_output=True
    ).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (it needs root); the simulated full disk checks the same")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True)


@pytest.fixture
def finished_run(tiny_run):
    """The tiny run, evaluated as a user keeps it: a checkpoint, metrics.json and a figure."""
    run_dir = tiny_run / "run"
    (run_dir / "metrics.json").write_text('{"test_mae": 0.05}\n')
    (run_dir / "loss_curves.png").write_bytes(b"\x89PNG a figure")
    return run_dir


# ---- A loss that is not finite ----

def test_a_run_that_diverges_at_once_stops_with_one_line_and_an_error_status(tiny_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # sys.exit with a message: printed to stderr, exit status 1
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "3", "--lr", "1e38"))
    assert exit_info.value.code == (
        "error: epoch 1: the loss is not a finite number, so training diverged (nothing was saved): a learning "
        "rate or a noise far too large does this: lower --lr (this run 1e+38, the recipe 0.001) or --noise-std "
        "(this run 0.2, the recipe 0.2)"
    )
    output = capsys.readouterr().out
    epoch_lines = [line for line in output.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 1 and re.search(r"\b(nan|inf)\b", epoch_lines[0])  # the first epoch that blew up
    assert "no epoch finished" not in output and "no epoch gave a finite loss" in output
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()


def test_weights_saved_before_a_divergence_stay_and_the_checkpoint_says_it_diverged(
        tiny_data_dir, tmp_path, monkeypatch):
    real_epoch, epochs = train.train_one_epoch, []

    def blows_up_at_epoch_3(*arguments, **keywords):
        epochs.append(real_epoch(*arguments, **keywords))
        return {**epochs[-1], "loss": float("inf")} if len(epochs) == 3 else epochs[-1]

    monkeypatch.setattr(train, "train_one_epoch", blows_up_at_epoch_3)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "10"))
    assert exit_info.value.code.startswith("error: epoch 3: the loss is not a finite number, so training diverged "
                                           "(the weights of epoch 2 stay saved)")
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert (checkpoint["stop_kind"], checkpoint["stop_reason"]) == (runs.DIVERGED, "diverged at epoch 3")
    assert checkpoint["best_epoch"] == 2 and len(checkpoint["history"]["val_loss"]) == 3  # the bad epoch too
    assert evaluate.evaluate(tmp_path / "run", tiny_data_dir, None)["run"]["state"] == "diverged at epoch 3"
    published_recipe = {**checkpoint, "recipe_changes": {}}
    why_not = evaluate.why_published_does_not_apply(published_recipe, 0.2, "diverged at epoch 3")
    assert "stopped (diverged at epoch 3) after 3 epochs" in why_not


# ---- A full disk ----

def test_a_full_disk_at_a_save_is_one_line_and_the_previous_checkpoint_stays_whole(scripts, tiny_data_dir, small_disk):
    run_dir = small_disk / "run"
    result = scripts.start("train.py", *tiny_train_args(tiny_data_dir, run_dir, "--epochs", "6"), cwd=small_disk.parent)
    assert result.wait() == 1
    [line] = result.stderr().splitlines()
    failed_epoch = int(line.split(":")[1].split()[1])  # "error: epoch N: cannot write ..."
    assert line == (f"error: epoch {failed_epoch}: cannot write {run_dir / CHECKPOINT_FILE}: no space left on the "
                    f"disk: free some space, or pass a --run-dir on another disk; the checkpoint saved before it, "
                    f"{run_dir / CHECKPOINT_FILE}, is whole")
    _, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert checkpoint["stop_kind"] == runs.RUNNING and checkpoint["best_epoch"] < failed_epoch
    # No temporary file left behind; the lock is let go, so the run reads as one that stopped.
    assert {path.name for path in run_dir.iterdir()} == {CHECKPOINT_FILE, runs.LOCK_FILE}
    assert runs.run_state(checkpoint, run_dir) == "stopped without recording why (killed, or the machine went down)"


def test_a_run_that_cannot_save_replaces_nothing_on_a_real_full_disk(tiny_data_dir, finished_run, small_disk):
    run_dir = small_disk / "finished"
    shutil.copytree(finished_run, run_dir)  # the old checkpoint leaves no room for the new one beside it
    before = files_and_contents(run_dir)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "2"))
    assert "error: epoch 1: cannot write" in exit_info.value.code and "no space left" in exit_info.value.code
    assert exit_info.value.code.endswith("; nothing of an earlier run there was touched")
    assert files_and_contents(run_dir) == before


def test_a_run_that_cannot_save_replaces_nothing_on_a_simulated_full_disk(tiny_data_dir, finished_run, monkeypatch):
    before = files_and_contents(finished_run)
    fail_writes_after(0, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, finished_run, "--epochs", "2"))
    assert exit_info.value.code.endswith("no space left on the disk: free some space, or pass a --run-dir on another "
                                         "disk; nothing of an earlier run there was touched")
    assert files_and_contents(finished_run) == before


def test_a_save_that_fails_later_keeps_the_last_good_checkpoint(tiny_data_dir, tmp_path, monkeypatch):
    fail_writes_after(2, monkeypatch)  # epochs 1 and 2 save (the tiny run improves every early epoch), 3 cannot
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "5"))
    checkpoint_path = tmp_path / "run" / CHECKPOINT_FILE
    assert exit_info.value.code.startswith(f"error: epoch 3: cannot write {checkpoint_path}: no space")
    monkeypatch.undo()
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["best_epoch"] == 2 and len(checkpoint["history"]["val_loss"]) == 2
    assert {path.name for path in (tmp_path / "run").iterdir()} == {CHECKPOINT_FILE, runs.LOCK_FILE}


def test_a_report_or_figure_that_cannot_be_written_leaves_the_earlier_file_whole(finished_run, tiny_run, monkeypatch):
    before = files_and_contents(finished_run)
    fail_writes_after(0, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--run-dir", str(finished_run), "--data-dir", str(tiny_run / "data")])
    # written.txt, the record of what is written, goes first, so that no report is ever unrecorded.
    assert exit_info.value.code == (f"error: cannot write {finished_run / runs.WRITTEN_FILE}: no space left on the "
                                    f"disk: free some space, or pass a --run-dir on another disk")
    weights = runs.describes(load_checkpoint(finished_run / CHECKPOINT_FILE)[1])
    with pytest.raises(runs.RunError, match=r"cannot write .*: no space left on the disk"):
        runs.write_reports(finished_run, weights, {"loss_curves.png": b"a new figure"})  # as visualize.py does
    assert files_and_contents(finished_run) == before


def test_unpacking_the_data_onto_a_full_disk_names_the_remedy_that_helps(tmp_path, monkeypatch):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    fail_writes_after(0, monkeypatch)
    with pytest.raises(DataError) as error:
        fetch_data(tmp_path / "data", system_copy=system_copy)
    assert str(error.value).endswith("no space left on the disk: free some space, or pass a --data-dir on another "
                                     "disk")
    assert "reinstall" not in str(error.value)
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").iterdir())  # no half file, no temporary file


@pytest.mark.parametrize("error_number, cause", [
    (errno.ENOSPC, "no space left on the disk: free some space"),
    (errno.EDQUOT, "your disk quota is used up: free some of your space"),
    (errno.EACCES, "permission denied: change its permissions"),
    (errno.EPERM, "permission denied: change its permissions"),
    (errno.EROFS, "the file system is read-only: pass a --run-dir on a disk you can write to"),
    (errno.EISDIR, "a directory is in the way: move or rename the directory"),
    (errno.ENOTDIR, "a file is in the way where a directory should be"),
    (errno.ENOENT, "its directory does not exist (was it deleted?)"),
    (errno.EIO, "Input/output error: check the disk, or pass another --run-dir"),
])
def test_each_cause_of_a_failed_write_gets_its_own_words_and_remedy(error_number, cause, tmp_path):
    error = OSError(error_number, os.strerror(error_number), str(tmp_path))
    assert files.cause_and_remedy(error, "--run-dir").startswith(cause)


# ---- Runs that never finished, and a run still training ----

def killed_copy(finished_run, runs_dir, name):
    """A run killed outright (kill -9, the out-of-memory killer): its checkpoint still says "running"."""
    model, checkpoint = load_checkpoint(finished_run / CHECKPOINT_FILE)
    run_info = {key: value for key, value in checkpoint.items()
                if key not in ("format", "model_args", "architecture", "model_state")}
    (runs_dir / name).mkdir(parents=True)
    run_info.update(stop_kind=runs.RUNNING, stop_reason=runs.RUNNING)
    save_checkpoint(runs_dir / name / CHECKPOINT_FILE, model, model.state_dict(), **run_info)
    return runs_dir / name


def test_a_run_that_died_is_told_from_one_that_trains_and_its_weights_are_used(
        finished_run, tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    dead = killed_copy(finished_run, tmp_path / "runs", "2026-01-01_11-00-00")
    data_dir = ["--data-dir", str(tiny_run / "data")]
    evaluate.main(data_dir)  # the newest run died: its saved weights are taken without --run-dir
    output = capsys.readouterr().out
    assert f"evaluating the newest run, {dead} (the only run there; pass --run-dir for another)\n" in output
    assert "(stopped without recording why (killed, or the machine went down))" in output

    alive = killed_copy(finished_run, tmp_path / "runs", "2026-01-01_12-00-00")  # saved later, and training
    lock = runs.lock_run_dir(alive)  # this process holds its lock, as train.py would
    try:
        evaluate.main(data_dir)
        assert (f"; passed over 1 newer run(s) still training, the newest {alive} (pid {os.getpid()}): pass "
                f"--run-dir {alive} to use its best weights so far") in capsys.readouterr().out
        evaluate.main(["--run-dir", str(alive), *data_dir])
        assert f"(still training (pid {os.getpid()}))" in capsys.readouterr().out
        shutil.rmtree(dead)
        for script in (evaluate, visualize):
            with pytest.raises(SystemExit) as exit_info:
                script.main(data_dir)
            assert exit_info.value.code == (
                f"error: no run in {tmp_path / 'runs'} has finished; 1 still training, the newest {alive} "
                f"(pid {os.getpid()}): wait for it, or pass --run-dir {alive} to use its best weights so far")
    finally:
        os.close(lock)


def test_a_run_that_saves_while_it_is_measured_says_it_is_training_and_a_flag_keeps_the_report(
        tiny_run, monkeypatch):
    run_dir, data_dir = tiny_run / "run", tiny_run / "data"
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    real_load, stamps = evaluate.load_run_data, iter(["newer", "newest"])

    def training_saves_meanwhile(*arguments, **keywords):
        record = {key: value for key, value in checkpoint.items()
                  if key not in ("format", "model_args", "architecture", "model_state")}
        save_checkpoint(run_dir / CHECKPOINT_FILE, model, model.state_dict(), **{**record, "stamp": next(stamps)})
        return real_load(*arguments, **keywords)

    monkeypatch.setattr(evaluate, "load_run_data", training_saves_meanwhile)
    lock = runs.lock_run_dir(run_dir)  # this process is the training, as far as the lock tells
    try:
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(data_dir)])
        assert exit_info.value.code == (
            f"error: the run in {run_dir} is still training (pid {os.getpid()}) and saved new weights while this "
            f"was working on it: wait for it to end, or pass --while-training to keep what this makes of the "
            f"weights of epoch {checkpoint['best_epoch']} (nothing was written)")
        assert not (run_dir / "metrics.json").exists()
        evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(data_dir), "--while-training"])
        assert '"checkpoint_stamp": "newer"' in (run_dir / "metrics.json").read_text()  # the weights it measured
    finally:
        os.close(lock)


# ---- Where the output goes, and Ctrl-C at any moment ----

def test_output_to_a_closed_pipe_ends_quietly_and_to_a_full_device_in_one_line(scripts, finished_run, tiny_run,
                                                                                tmp_path):
    """`python evaluate.py | head -3` with a reader already gone; `python train.py > /dev/full`, its output
    buffered as Python buffers it for a file: the first full buffer fails, some epochs in."""
    flags = ["--run-dir", str(finished_run), "--data-dir", str(tiny_run / "data")]
    closed = scripts.start("evaluate.py", *flags, cwd=tmp_path, stdout="closed pipe")
    endless = ("--epochs", "100000", "--patience", "100000", "--batch-size", "256")  # more lines than a buffer
    full = scripts.start("train.py", *tiny_train_args(tiny_run / "data", tmp_path / "new", *endless), cwd=tmp_path,
                         stdout="/dev/full", unbuffered=False)
    assert (closed.wait(), closed.stderr()) == (141, "")
    assert (finished_run / "metrics.json").read_text().startswith('{\n  "test_mae"')  # the report was still written
    assert full.wait() == 1
    _, checkpoint = load_checkpoint(tmp_path / "new" / CHECKPOINT_FILE)
    epochs = len(checkpoint["history"]["val_loss"])
    assert checkpoint["stop_kind"] == runs.OUTPUT_FAILED and epochs > 0
    assert full.stderr() == (f"error: cannot write the output (No space left on device): training stopped after "
                             f"epoch {epochs}; the checkpoint saved before it, {tmp_path / 'new' / CHECKPOINT_FILE}, "
                             f"is whole; send the output to another file or device\n")


class FailingOutput(io.StringIO):
    """A stdout whose writes fail, from the third epoch line on, as a full disk or a closed pipe fails them."""

    def __init__(self, error: OSError):
        super().__init__()
        self.error, self.epoch_lines = error, 0

    def write(self, text):
        self.epoch_lines += text.startswith("epoch ")
        if self.epoch_lines >= 3:
            raise self.error
        return super().write(text)


@pytest.mark.parametrize("error, status, kind", [(BrokenPipeError(errno.EPIPE, "Broken pipe"), 141, runs.OUTPUT_CLOSED),
                                                 (NO_SPACE, 1, runs.OUTPUT_FAILED)])
def test_training_whose_output_fails_stops_and_keeps_the_run(error, status, kind, tiny_data_dir, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(sys, "stdout", FailingOutput(error))
    for module in (runs, cli):  # it would close pytest's own stdout
        monkeypatch.setattr(module, "silence_output", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "10"))
    run_dir = tmp_path / "run"
    assert exit_info.value.code == status if status == 141 else exit_info.value.code == (
        f"error: cannot write the output (No space left on device): training stopped after epoch 3; the checkpoint "
        f"saved before it, {run_dir / CHECKPOINT_FILE}, is whole; send the output to another file or device")
    _, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert checkpoint["stop_kind"] == kind and len(checkpoint["history"]["val_loss"]) == 3


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


# ---- Data that reads well but is not what the recipe expects ----

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
    "images stored as int32": "train-images-idx3-ubyte holds images as int32, where FashionMNIST's files hold bytes "
                              "(uint8, 0 to 255): convert them to bytes, or move it elsewhere to keep it, and put the "
                              "dataset's original file in its place",
    "a class missing": "train-labels-idx1-ubyte holds no image of 1 of the 10 classes (Ankle boot (9)), and the "
                       "reports and figures show each: move it elsewhere to keep it, and put the dataset's original "
                       "file in its place",
    "a directory where a file should be": "t10k-labels-idx1-ubyte is a directory, where FashionMNIST's file of that "
                                          "name should be: move or rename the directory",
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


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(DataError, match=r"^--data-dir .*data is a file, not a directory: pass the directory"):
        fetch_data(tmp_path / "data")


def test_a_run_measured_on_other_data_names_the_flag_of_the_script_that_says_so(tiny_run, tmp_path):
    """evaluate.py has no --val-size: the run's own split does not fit this data, so the data is what to change."""
    other = tmp_path / "other"
    raw_dir = other / "FashionMNIST" / "raw"
    write_tiny_dataset(raw_dir)
    (raw_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(torch.zeros(50, 28, 28)))
    (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.arange(50) % 10))
    for script in (evaluate, visualize, explorer):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(other)])
        assert exit_info.value.code == (f"error: a validation set of 60 images leaves too few of the 50 in {other} "
                                        f"for training: pass the --data-dir the run was trained on")


# ---- Where the data comes from ----

def test_a_failed_download_says_why_and_another_dataset_never_gets_fashion_mnist(tmp_path, monkeypatch):
    """A student adapting the loader to MNIST, offline: Debian's Fashion-MNIST must not be fed as MNIST."""
    debian_copy = tmp_path / "usr-share"
    write_tiny_dataset(debian_copy, compress=True)
    monkeypatch.setitem(files.SYSTEM_COPIES, "FashionMNIST", debian_copy)
    monkeypatch.setattr(data, "DATASET", torchvision.datasets.MNIST)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed local port
    with pytest.raises(DataError) as error:
        fetch_data(tmp_path / "data")
    message = str(error.value)
    assert message.startswith(f"MNIST is not in {tmp_path / 'data' / 'MNIST' / 'raw'} and could not be downloaded (")
    assert "Connection refused" in message and "damaged" not in message and "\n" not in message
    assert "dataset-fashion-mnist" not in message  # Debian's package holds Fashion-MNIST, not MNIST
    assert not [path for path in (tmp_path / "data").rglob("*") if path.is_file()]


# ---- Out of memory ----

@pytest.mark.parametrize("device, error, words", [
    ("cuda", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total)"),
     "the cuda device's memory ran out with --batch-size 50000 and --latent-dim 8: pass a smaller --batch-size "
     "(or --latent-dim), or train on the CPU with --device cpu"),
    ("cpu", RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 256000000000 bytes"),
     "this machine's memory ran out with --batch-size 50000 and --latent-dim 8: pass a smaller --batch-size "
     "(or --latent-dim), or close other programs"),
])
def test_running_out_of_memory_names_the_batch_size(device, error, words):
    assert runs.out_of_memory(error, {"device": device, "batch_size": 50000, "latent_dim": 8}) == words
    assert runs.out_of_memory(RuntimeError("shape mismatch"), {}) is None


def test_running_out_of_memory_in_training_is_one_line_and_keeps_what_was_saved(
        tiny_data_dir, tmp_path, monkeypatch):
    real_epoch, epochs = train.train_one_epoch, []

    def runs_out_at_epoch_3(*arguments, **keywords):
        epochs.append(1)
        if len(epochs) == 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        return real_epoch(*arguments, **keywords)

    monkeypatch.setattr(train, "train_one_epoch", runs_out_at_epoch_3)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "5"))
    assert exit_info.value.code == ("error: this machine's memory ran out with --batch-size 32 and --latent-dim 8: "
                                    "pass a smaller --batch-size (or --latent-dim), or close other programs")
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["stop_kind"] == runs.OUT_OF_MEMORY and len(checkpoint["history"]["val_loss"]) == 2
