"""When a run goes wrong: a loss that is not finite, a full disk, a killed run, a closed pipe, a failed download.

Each case ends in one line that names the cause and its remedy, a non-zero exit status, and nothing
the user already had destroyed. A real subprocess where the behaviour is the process's own (its
exit status, what it prints, what is on disk afterwards); in-process where that is the same thing.
"""

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torchvision

import cli
import data
import evaluate
import runs
import train
import visualize
from conftest import ROOT, tiny_train_args, write_tiny_dataset
from data import DataError, load_fashion_mnist
from runs import CHECKPOINT_FILE, load_checkpoint, save_checkpoint

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def run_script(script: str, *arguments: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *arguments], cwd=cwd, capture_output=True, text=True)


def files_and_contents(directory) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


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
def finished_run(tiny_run, tmp_path):
    """A copy of the tiny session run, evaluated: a checkpoint, metrics.json and a figure a user would keep."""
    run_dir = tmp_path / "finished"
    run_dir.mkdir()
    shutil.copy(tiny_run / "run" / CHECKPOINT_FILE, run_dir)
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
    assert len(epoch_lines) == 1 and "nan" in epoch_lines[0]  # it stopped at the first epoch that blew up
    assert "no epoch finished" not in output and "no epoch gave a finite loss" in output
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()


def test_weights_saved_before_a_divergence_stay_and_the_checkpoint_says_it_diverged(
        tiny_data_dir, tmp_path, monkeypatch):
    real_epoch, epochs = train.train_one_epoch, []

    def blows_up_at_epoch_3(*arguments, **keywords):
        epochs.append(real_epoch(*arguments, **keywords))
        return {"loss": float("inf")} if len(epochs) == 3 else epochs[-1]

    monkeypatch.setattr(train, "train_one_epoch", blows_up_at_epoch_3)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "10"))
    assert exit_info.value.code.startswith("error: epoch 3: the loss is not a finite number, so training diverged "
                                           "(the weights of epoch 2 stay saved)")
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["stop_reason"] == "diverged at epoch 3" and checkpoint["best_epoch"] == 2
    assert len(checkpoint["history"]["val_loss"]) == 3  # the epoch that blew up is in the history too
    assert evaluate.evaluate(tmp_path / "run", tiny_data_dir, None)["run"]["state"] == "diverged at epoch 3"
    published_recipe = {**checkpoint, "recipe_changes": {}}
    why_not = evaluate.why_published_does_not_apply(published_recipe, 0.2, "diverged at epoch 3")
    assert "stopped (diverged at epoch 3) after 3 epochs" in why_not


# ---- A full disk ----

def test_a_full_disk_at_a_save_is_one_line_and_the_previous_checkpoint_stays_whole(tiny_data_dir, small_disk):
    run_dir = small_disk / "run"
    result = run_script("train.py", *tiny_train_args(tiny_data_dir, run_dir, "--epochs", "6"), cwd=small_disk)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    failed_epoch = int(line.split(":")[1].split()[1])  # "error: epoch N: cannot write ..."
    assert line == (f"error: epoch {failed_epoch}: cannot write {run_dir / CHECKPOINT_FILE}: no space left on the "
                    f"disk: free some space, or pass a --run-dir on another disk; the checkpoint saved before it, "
                    f"{run_dir / CHECKPOINT_FILE}, is whole")
    _, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert checkpoint["stop_reason"] == "running" and checkpoint["best_epoch"] < failed_epoch
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
    stamp = load_checkpoint(finished_run / CHECKPOINT_FILE)[1]["stamp"]
    with pytest.raises(runs.RunError, match=r"cannot write .*: no space left on the disk"):
        runs.write_reports(finished_run, stamp, {"loss_curves.png": b"a new figure"})  # as visualize.py does
    assert files_and_contents(finished_run) == before


def test_unpacking_the_data_onto_a_full_disk_names_the_remedy_that_helps(tmp_path, monkeypatch):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    fail_writes_after(0, monkeypatch)
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path / "data", train=True, system_copy=system_copy)
    assert str(error.value).endswith("no space left on the disk: free some space, or pass a --data-dir on another "
                                     "disk")
    assert "reinstall" not in str(error.value)
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").iterdir())  # no half file, no temporary file


# ---- Runs that never finished ----

def killed_copy(finished_run, runs_dir, name):
    """A run killed outright (kill -9, the out-of-memory killer): its checkpoint still says "running"."""
    model, checkpoint = load_checkpoint(finished_run / CHECKPOINT_FILE)
    run_info = {key: value for key, value in checkpoint.items() if key not in ("format", "model_args", "model_state")}
    (runs_dir / name).mkdir(parents=True)
    run_info["stop_reason"] = "running"
    save_checkpoint(runs_dir / name / CHECKPOINT_FILE, model, model.state_dict(), **run_info)
    return runs_dir / name


def test_a_run_that_died_is_told_from_one_that_trains_and_its_weights_are_used(
        finished_run, tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    dead = killed_copy(finished_run, tmp_path / "runs", "2026-01-01_11-00-00")
    os.utime(dead / CHECKPOINT_FILE, (1_000, 1_000))
    data_dir = ["--data-dir", str(tiny_run / "data")]
    evaluate.main(data_dir)  # the newest run died: its saved weights are taken without --run-dir
    output = capsys.readouterr().out
    assert f"evaluating the newest run, {dead} (pass --run-dir for another)\n" in output
    assert "(stopped without recording why (killed, or the machine went down))" in output

    alive = killed_copy(finished_run, tmp_path / "runs", "2026-01-01_12-00-00")  # the newer, and training
    lock = runs.lock_run_dir(alive)  # this process holds its lock, as train.py would
    try:
        evaluate.main(data_dir)
        assert (f"evaluating the newest run, {dead} (pass --run-dir for another); passed over 1 newer run(s) "
                f"still training, the newest {alive} (pid {os.getpid()}): pass --run-dir {alive} to use its "
                f"best weights so far") in capsys.readouterr().out
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


# ---- Files in the way, closed pipes, Ctrl-C ----

def test_a_directory_in_the_way_of_a_file_is_named(finished_run, tiny_run):
    (finished_run / "metrics.json").unlink()
    (finished_run / "metrics.json").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--run-dir", str(finished_run), "--data-dir", str(tiny_run / "data")])
    assert exit_info.value.code == (f"error: cannot write {finished_run / 'metrics.json'}: a directory is in the way: "
                                    f"move or rename the directory {finished_run / 'metrics.json'}")
    assert not list(finished_run.glob("*.tmp"))


@pytest.mark.parametrize("error_number, remedy", [
    (errno.ENOSPC, "no space left on the disk: free some space"),
    (errno.EACCES, "permission denied: change its permissions"),
    (errno.EROFS, "permission denied: change its permissions"),
    (errno.EISDIR, "a directory is in the way: move or rename the directory"),
    (errno.ENOTDIR, "a file is in the way where a directory should be"),
    (errno.ENOENT, "its directory does not exist (was it deleted?)"),
    (errno.EIO, "Input/output error: check the disk, or pass another --run-dir"),
])
def test_each_cause_of_a_failed_write_gets_its_own_remedy(error_number, remedy, tmp_path):
    error = OSError(error_number, os.strerror(error_number), str(tmp_path))
    assert data.cause_and_remedy(error, "--run-dir").startswith(remedy)


def test_output_cut_short_by_a_closed_pipe_ends_quietly(finished_run, tiny_run):
    """`python evaluate.py | head -3`, with a reader that has already gone: no traceback, status 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    # Unbuffered, the first print meets the closed pipe, before anything else is done: the hardest case.
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--run-dir", str(finished_run),
                             "--data-dir", str(tiny_run / "data")], stdout=write_end, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")
    assert (finished_run / "metrics.json").read_text().startswith('{\n  "test_mae"')  # the report was still written


def test_training_whose_reader_left_stops_and_keeps_the_run(tiny_data_dir, tmp_path, monkeypatch):
    real_line, lines = train.epoch_line, []

    def reader_leaves_at_epoch_3(*arguments):
        lines.append(real_line(*arguments))
        if len(lines) == 3:
            raise BrokenPipeError
        return lines[-1]

    monkeypatch.setattr(train, "epoch_line", reader_leaves_at_epoch_3)
    monkeypatch.setattr(runs, "silence_closed_output", lambda: None)  # it would close pytest's own stdout
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "10"))
    assert exit_info.value.code == 141
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["stop_reason"] == "output closed" and len(checkpoint["history"]["val_loss"]) == 3


def test_ctrl_c_in_a_script_ends_it_with_status_130_and_no_traceback(capsys):
    @cli.script
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        interrupted()
    assert exit_info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


# ---- Where the data comes from ----

def test_a_failed_download_says_why_and_another_dataset_never_gets_fashion_mnist(tmp_path, monkeypatch):
    """A student adapting the loader to MNIST, offline: Debian's Fashion-MNIST must not be fed as MNIST."""
    debian_copy = tmp_path / "usr-share"
    write_tiny_dataset(debian_copy, compress=True)
    monkeypatch.setitem(data.SYSTEM_COPIES, "FashionMNIST", debian_copy)
    monkeypatch.setattr(data, "DATASET", torchvision.datasets.MNIST)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed local port
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path / "data", train=True)
    message = str(error.value)
    assert message.startswith(f"MNIST is not in {tmp_path / 'data' / 'MNIST' / 'raw'} and could not be downloaded (")
    assert "Connection refused" in message and "damaged" not in message and "\n" not in message
    assert "dataset-fashion-mnist" not in message  # Debian's package holds Fashion-MNIST, not MNIST
    assert not [path for path in (tmp_path / "data").rglob("*") if path.is_file()]


def test_files_that_read_well_are_never_called_damaged(tiny_data_dir):
    assert data.find_damaged_file(tiny_data_dir / "FashionMNIST" / "raw") is None


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
    assert checkpoint["stop_reason"] == "out of memory" and len(checkpoint["history"]["val_loss"]) == 2
