"""Nothing of the user's is touched, a run knows whether it is alive, and every input edge is one line.

Real processes where the behaviour is the process's own: two trainings on one directory, a real
SIGHUP, a real kill -9. The rest in-process.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

import data
import evaluate
import runs
import train
import visualize
from conftest import ROOT, TINY_TEST, TINY_TRAIN, idx_bytes, tiny_train_args, write_tiny_dataset
from data import DataError, load_fashion_mnist
from runs import CHECKPOINT_FILE, LOCK_FILE, load_checkpoint

STOPPED_UNRECORDED = "stopped without recording why (killed, or the machine went down)"


def files_and_contents(directory) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def start_training(tmp_path, data_dir, run_dir):
    """A real train.py process that trains until it is stopped, and its epoch lines as they come."""
    command = [sys.executable, "-u", str(ROOT / "train.py"),
               *tiny_train_args(data_dir, run_dir, "--epochs", "100000", "--patience", "100000")]
    # A shell starts background jobs with SIGINT ignored; give the child the default, as a terminal does.
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_epochs(process, count: int) -> list[str]:
    lines = []
    for line in process.stdout:
        if line.startswith("epoch"):
            lines.append(line)
            if len(lines) == count:
                return lines
    raise AssertionError(f"train.py ended before {count} epochs: {process.stderr.read()}")


# ---- Nothing of the user's is touched ----

def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tiny_data_dir, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "loss_curves.png").write_bytes(b"\x89PNG the user's own figure")
    (folder / "metrics.json").write_text('{"mine": true}')
    before = files_and_contents(folder)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, folder, "--epochs", "1"))
    assert exit_info.value.code == (f"error: {folder} holds files but no run of this project (2, such as "
                                    f"loss_curves.png): pass a new or empty --run-dir (nothing was written)")
    assert files_and_contents(folder) == before


@pytest.mark.parametrize("foreign, what", [
    (lambda path: torch.save(nn.Linear(3, 2).state_dict(), path), "a file this project did not write"),
    (lambda path: path.write_bytes(b"not a checkpoint at all"), "a file this project did not write"),
    (lambda path: torch.save({"format": "fashion-mnist-gan/1"}, path), "a 'fashion-mnist-gan/1' model"),
])
def test_a_checkpoint_that_is_not_this_codes_is_refused_by_its_format(foreign, what, tiny_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    foreign(run_dir / CHECKPOINT_FILE)
    before = files_and_contents(run_dir)
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1"))
    assert exit_info.value.code == (f"error: {run_dir / CHECKPOINT_FILE} holds {what}, so {run_dir} is not a run "
                                    f"to replace: pass another --run-dir (nothing was written)")
    assert files_and_contents(run_dir) == before


def test_writes_never_follow_a_link_planted_where_the_file_or_its_temporary_goes(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("the user's notes")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the old scheme's predictable names
        (run_dir / f"metrics.json.{pid}.tmp").symlink_to(target)
    (run_dir / "loss_curves.png").symlink_to(target)
    data.write_atomically(run_dir / "metrics.json", b"{}")
    data.write_atomically(run_dir / "loss_curves.png", b"a figure")
    assert target.read_text() == "the user's notes"
    assert (run_dir / "metrics.json").read_bytes() == b"{}" and not (run_dir / "metrics.json").is_symlink()
    assert (run_dir / "loss_curves.png").read_bytes() == b"a figure"
    assert not (run_dir / "loss_curves.png").is_symlink()


def test_ctrl_c_during_the_first_save_of_a_replacing_run_leaves_no_mixture(tiny_run, tiny_data_dir, tmp_path,
                                                                          monkeypatch):
    run_dir = tmp_path / "run"
    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1"))
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)])
    real_save, saves = runs.save_checkpoint, []

    def ctrl_c_while_saving(*arguments, **keywords):
        saves.append(1)
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the checkpoint is being written
        real_save(*arguments, **keywords)

    monkeypatch.setattr(runs, "save_checkpoint", ctrl_c_while_saving)
    run = train.train(train.parse_args(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "5", "--seed", "3")))
    assert run.stop_reason == "interrupted" and len(run.history["val_loss"]) == 1
    # The new checkpoint, and none of the reports of the run it replaced.
    assert {path.name for path in run_dir.iterdir()} == {CHECKPOINT_FILE, LOCK_FILE}
    assert load_checkpoint(run_dir / CHECKPOINT_FILE)[1]["config"]["seed"] == 3


# ---- A run's life ----

def test_a_second_training_into_a_directory_in_use_is_refused_and_sighup_stops_the_first(tiny_data_dir, tmp_path):
    """Two real processes on one directory; then a closed terminal or ssh session: SIGHUP."""
    run_dir = tmp_path / "run"
    first = start_training(tmp_path, tiny_data_dir, run_dir)
    try:
        epoch_lines = wait_for_epochs(first, 2)
        second = subprocess.run([sys.executable, str(ROOT / "train.py"),
                                 *tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1")],
                                cwd=tmp_path, capture_output=True, text=True)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr == (f"error: {run_dir} is in use by a training that is still running "
                                 f"(pid {first.pid}): wait for it to end, or pass another --run-dir\n")
        assert load_checkpoint(run_dir / CHECKPOINT_FILE)[1]["config"]["epochs"] == 100000
    finally:
        first.send_signal(signal.SIGHUP)
        output, errors = first.communicate(timeout=60)
    epoch_lines += [line for line in output.splitlines() if line.startswith("epoch")]
    assert first.returncode == 129 and "Traceback" not in errors and "(hung up)" in output
    _, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert checkpoint["stop_reason"] == "hung up" and len(checkpoint["history"]["val_loss"]) == len(epoch_lines)


def test_a_run_killed_outright_reads_as_stopped_and_its_weights_are_used(tiny_data_dir, tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "killed"
    process = start_training(tmp_path, tiny_data_dir, run_dir)
    wait_for_epochs(process, 3)
    assert runs.training_pid(run_dir) == str(process.pid)  # alive, and named
    process.kill()  # SIGKILL: no handler runs, nothing is recorded
    process.communicate(timeout=60)
    assert runs.training_pid(run_dir) is None  # the operating system let go of the lock
    assert load_checkpoint(run_dir / CHECKPOINT_FILE)[1]["stop_reason"] == "running"
    evaluate.main(["--data-dir", str(tiny_data_dir)])  # the newest run, with no --run-dir
    output = capsys.readouterr().out
    assert f"evaluating the newest run, {run_dir}" in output and f"({STOPPED_UNRECORDED})" in output


def test_reports_record_the_checkpoint_they_describe_and_a_stale_one_is_never_written(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run_dir)
    data_dir = ["--data-dir", str(tiny_run / "data")]
    evaluate.main(["--run-dir", str(run_dir), *data_dir])
    _, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    recorded = json.loads((run_dir / "metrics.json").read_text())["run"]
    assert (recorded["best_epoch"], recorded["checkpoint_stamp"]) == (checkpoint["best_epoch"], checkpoint["stamp"])
    figure = visualize.plot_noise_levels([0.0, 0.2], {"a method": [0.1, 0.2]}, training_std=0.2)
    png = visualize.figure_bytes(figure, checkpoint)
    assert f"checkpoint {checkpoint['stamp']}".encode() in png  # in the PNG's text metadata

    # The run saved new weights while a report of the old ones was being made: it is not written.
    with pytest.raises(runs.RunError, match="saved new weights while this was working on it: run it again"):
        runs.write_reports(run_dir, "an-older-stamp", {"metrics-noise0.7.json": b"{}"})
    assert not (run_dir / "metrics-noise0.7.json").exists()
    # And a new save removes every report of the weights before it.
    saver = runs.RunSaver(str(run_dir), {"epochs": 1}, {}, "L1", "")
    saver.run_dir, saver.model = run_dir, load_checkpoint(run_dir / CHECKPOINT_FILE)[0]
    saver.keep_if_lowest(saver.model, 1, 0.01)
    assert {path.name for path in run_dir.iterdir()} == {CHECKPOINT_FILE, LOCK_FILE}


def test_a_kernel_stop_inside_train_in_a_notebook_records_terminated(tiny_data_dir, tmp_path, monkeypatch):
    real_epoch, epochs = train.train_one_epoch, []

    def kernel_stops_at_epoch_2(*arguments, **keywords):
        epochs.append(1)
        if len(epochs) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what Jupyter's "stop" sends
        return real_epoch(*arguments, **keywords)

    monkeypatch.setattr(train, "train_one_epoch", kernel_stops_at_epoch_2)
    previous = signal.getsignal(signal.SIGTERM)
    run = train.train(train.parse_args(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "9")))
    assert run.stop_reason == "terminated" and len(run.history["val_loss"]) == 1
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)[1]["stop_reason"] == "terminated"
    assert signal.getsignal(signal.SIGTERM) == previous  # the kernel's own handling is back


# ---- Inputs at the edges ----

@pytest.mark.parametrize("damage, complaint", [
    ("short labels", "train-labels-idx1-ubyte holds 299 labels for the 300 images of train-images-idx3-ubyte"),
    ("wrong size", "train-images-idx3-ubyte holds images of shape (27, 27), not 28 x 28"),
    ("label 10", "train-labels-idx1-ubyte holds labels outside 0-9"),
])
def test_idx_files_that_disagree_are_named_before_anything_starts(damage, complaint, tmp_path):
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    write_tiny_dataset(raw_dir)
    generator = torch.Generator().manual_seed(0)
    if damage == "short labels":
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.zeros(TINY_TRAIN - 1)))
    elif damage == "wrong size":
        images = torch.randint(0, 256, (TINY_TRAIN, 27, 27), generator=generator)
        (raw_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    else:
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.full((TINY_TRAIN,), 10)))
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path / "data", train=True)
    assert str(error.value).startswith(str(raw_dir / complaint.split()[0])) and complaint in str(error.value)
    assert "\n" not in str(error.value)
    assert load_fashion_mnist(tmp_path / "data", train=False)[0].shape == (TINY_TEST, 1, 28, 28)


def test_at_noise_0_the_report_is_honest_and_an_infinite_psnr_is_strict_json(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run_dir)
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data"), "--noise-std", "0"])
    output = capsys.readouterr().out
    assert "at noise std 0 the input is the clean image itself, so nothing beats it" in output
    assert "has not learned to denoise" not in output
    assert "noisy input, as is" in output and "    inf dB" in output

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    metrics = json.loads((run_dir / "metrics-noise0.json").read_text(), parse_constant=refuse)
    assert metrics["methods"]["noisy input, as is"]["psnr_db"] is None


def test_a_code_too_large_to_draw_pair_by_pair_draws_its_first_ones_and_says_so(monkeypatch):
    assert visualize.MAX_DRAWN_DIMENSIONS == 16  # what README says; 4 below, to draw fast
    monkeypatch.setattr(visualize, "MAX_DRAWN_DIMENSIONS", 4)
    codes, labels = torch.randn(300, 40), torch.arange(300) % 10
    figure = visualize.plot_latent_pairs(codes, labels)
    assert len(figure.axes) == 4 * 5 // 2
    assert any("the first 4 of the 40 code dimensions" in text.get_text() for text in figure.texts)
    traversals = visualize.plot_latent_traversals(LinearDecoder(40), codes)
    assert len(traversals.axes) == 4 * visualize.TRAVERSAL_STEPS
    assert any("(the first 4 of 40)" in text.get_text() for text in traversals.texts)  # the suptitle


class LinearDecoder(nn.Module):
    """Just enough of a model for the traversals: `decode` from codes of any size."""

    def __init__(self, latent_dim):
        super().__init__()
        self.layer = nn.Linear(latent_dim, 784)

    def decode(self, codes):
        return torch.sigmoid(self.layer(codes)).view(-1, 1, 28, 28)


def test_a_one_epoch_loss_figure_shows_a_point_and_whole_epochs():
    figure = visualize.plot_loss_curves({"train_loss": [0.3], "val_loss": [0.2]}, 1, "reached --epochs 1")
    axis = figure.axes[0]
    assert all(line.get_marker() == "o" for line in axis.get_lines()[:2])
    ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
    assert ticks == [1.0]
