"""Nothing of the user's is touched, a run knows whether it is alive, and every input edge is one line.

Real processes where the behaviour is the process's own (tests/processes.py): trainings stopped by
each signal, a second training on a directory in use, a kill -9. The rest in-process.
"""

import json
import os
import shutil
import signal

import pytest
import torch
from torch import nn

import evaluate
import files
import runs
import train
import visualize
from conftest import TINY_TEST, TINY_TRAIN, idx_bytes, tiny_train_args, write_tiny_dataset
from files import DataError, fetch_data
from runs import CHECKPOINT_FILE, LOCK_FILE, load_checkpoint

STOPPED_UNRECORDED = "stopped without recording why (killed, or the machine went down)"


def files_and_contents(directory) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


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
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # an older scheme's predictable names
        (run_dir / f"metrics.json.{pid}.tmp").symlink_to(target)
    (run_dir / "loss_curves.png").symlink_to(target)
    files.write_atomically(run_dir / "metrics.json", b"{}")
    files.write_atomically(run_dir / "loss_curves.png", b"a figure")
    assert target.read_text() == "the user's notes"
    assert (run_dir / "metrics.json").read_bytes() == b"{}" and not (run_dir / "metrics.json").is_symlink()
    assert (run_dir / "loss_curves.png").read_bytes() == b"a figure"
    assert not (run_dir / "loss_curves.png").is_symlink()


@pytest.fixture
def ctrl_c_delivered():
    """Ctrl-C as a terminal delivers it, also where the tests run as a background job, which ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_first_save_of_a_replacing_run_leaves_no_mixture(tiny_run, monkeypatch, ctrl_c_delivered):
    run_dir, data_dir = tiny_run / "run", tiny_run / "data"
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(data_dir)])
    real_save, saves = runs.save_checkpoint, []

    def ctrl_c_while_saving(*arguments, **keywords):
        saves.append(1)
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the checkpoint is being written
        real_save(*arguments, **keywords)

    monkeypatch.setattr(runs, "save_checkpoint", ctrl_c_while_saving)
    run = train.train(train.parse_args(tiny_train_args(data_dir, run_dir, "--epochs", "5", "--seed", "3")))
    assert run.stop_kind == runs.INTERRUPTED and len(run.history["val_loss"]) == 1
    # The new checkpoint, and none of the reports of the run it replaced.
    assert {path.name for path in run_dir.iterdir()} == {CHECKPOINT_FILE, LOCK_FILE}
    assert load_checkpoint(run_dir / CHECKPOINT_FILE)[1]["config"]["seed"] == 3


# ---- A run's life, in processes of its own ----

def test_each_signal_stops_a_training_cleanly_a_second_training_is_refused_and_kill_9_reads_as_stopped(
        scripts, tiny_data_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C, SIGTERM (timeout, a scheduler, a notebook's stop), SIGHUP (a closed terminal), kill -9."""
    endless = ("--epochs", "100000", "--patience", "100000")
    run_dirs = {name: tmp_path / "runs" / name for name in ("sigint", "sigterm", "sighup")}
    run_dirs["killed"] = tmp_path / "killed" / "run"  # a runs/ of its own: the newest there
    trainings = {name: scripts.start("train.py", *tiny_train_args(tiny_data_dir, run_dir, *endless), cwd=tmp_path)
                 for name, run_dir in run_dirs.items()}
    for training in trainings.values():
        training.wait_for_lines("epoch", 2)
    second = scripts.start("train.py", *tiny_train_args(tiny_data_dir, tmp_path / "runs" / "sighup", "--epochs", "1"),
                           cwd=tmp_path)
    assert second.wait() == 1 and second.stderr() == (
        f"error: {tmp_path / 'runs' / 'sighup'} is in use by a training that is still running "
        f"(pid {trainings['sighup'].pid}): wait for it to end, or pass another --run-dir\n")
    assert runs.training_pid(run_dirs["killed"]) == str(trainings["killed"].pid)  # alive, and named
    for name, number in (("sigint", signal.SIGINT), ("sigterm", signal.SIGTERM), ("sighup", signal.SIGHUP),
                         ("killed", signal.SIGKILL)):
        trainings[name].send_signal(number)
    statuses = {name: training.wait() for name, training in trainings.items()}
    assert statuses == {"sigint": 130, "sigterm": 143, "sighup": 129, "killed": -signal.SIGKILL}
    for name, kind in (("sigint", runs.INTERRUPTED), ("sigterm", runs.TERMINATED), ("sighup", runs.HUNG_UP)):
        output, run_dir = trainings[name].stdout(), run_dirs[name]
        assert trainings[name].stderr() == ""  # no traceback: the stop is told on stdout
        assert f"({kind})" in output and str(run_dir / CHECKPOINT_FILE) in output
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)[1]
        assert (checkpoint["stop_kind"], checkpoint["stop_reason"]) == (kind, kind)
        epoch_lines = [line for line in output.splitlines() if line.startswith("epoch")]
        # Every finished epoch, and no more; the signal may fall between an epoch's record and its line.
        assert len(epoch_lines) <= len(checkpoint["history"]["val_loss"]) <= len(epoch_lines) + 1
        assert len(epoch_lines) >= 2
        assert checkpoint["config"]["epochs"] == 100000  # the second training changed nothing

    killed = run_dirs["killed"]
    assert runs.training_pid(killed) is None  # the operating system let go of the lock
    assert load_checkpoint(killed / CHECKPOINT_FILE)[1]["stop_kind"] == runs.RUNNING
    monkeypatch.setattr(runs, "RUNS_DIR", killed.parent)
    assert runs.run_to_use(None, "evaluating") == killed  # the newest run there, with no --run-dir: its weights
    assert runs.run_state(load_checkpoint(killed / CHECKPOINT_FILE)[1], killed) == STOPPED_UNRECORDED


def test_reports_record_the_checkpoint_they_describe_and_a_stale_one_is_never_written(tiny_run):
    run_dir = tiny_run / "run"
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")])
    _, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    recorded = json.loads((run_dir / "metrics.json").read_text())["run"]
    assert (recorded["best_epoch"], recorded["checkpoint_stamp"]) == (checkpoint["best_epoch"], checkpoint["stamp"])
    figure = visualize.plot_noise_levels([0.0, 0.2], {"a method": [0.1, 0.2]}, training_std=0.2)
    png = visualize.figure_bytes(figure, checkpoint)
    assert f"checkpoint {checkpoint['stamp']}".encode() in png  # in the PNG's text metadata

    # The run saved new weights while a report of the old ones was being made: it is not written.
    with pytest.raises(runs.RunError, match="saved new weights while this was working on it: run it again"):
        runs.write_reports(run_dir, {"best_epoch": 3, "checkpoint_stamp": "older"}, {"metrics-noise0.7.json": b"{}"})
    assert not (run_dir / "metrics-noise0.7.json").exists()
    # And a new save removes every report of the weights before it.
    model = load_checkpoint(run_dir / CHECKPOINT_FILE)[0]
    saver = runs.RunSaver(str(run_dir), checkpoint["config"], {}, "")
    saver.run_dir = run_dir
    saver.epoch_ended(1, model, {"train_loss": [0.1], "val_loss": [0.01], "epoch_seconds": [1.0]}, kept=True,
                      stopping=False)
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
    assert run.stop_kind == runs.TERMINATED and len(run.history["val_loss"]) == 1
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)[1]["stop_kind"] == runs.TERMINATED
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
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.arange(TINY_TRAIN - 1) % 10))
    elif damage == "wrong size":
        images = torch.randint(0, 256, (TINY_TRAIN, 27, 27), generator=generator)
        (raw_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    else:
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.full((TINY_TRAIN,), 10)))
    with pytest.raises(DataError) as error:
        fetch_data(tmp_path / "data", system_copy=tmp_path / "none")
    assert str(error.value).startswith(str(raw_dir / complaint.split()[0])) and complaint in str(error.value)
    assert "\n" not in str(error.value)
    assert files.read_idx(raw_dir / "t10k-images-idx3-ubyte", "images").shape == (TINY_TEST, 28, 28)


def test_at_noise_0_the_report_is_honest_and_an_infinite_psnr_is_strict_json(tiny_run, capsys):
    run_dir = tiny_run / "run"
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data"), "--noise-std", "0"])
    output = capsys.readouterr().out
    assert "at noise std 0 the input is the clean image itself, so nothing beats it" in output
    assert "has not learned to denoise" not in output
    assert "noisy input, as is" in output and "    inf dB" in output

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    metrics = json.loads((run_dir / "metrics-noise0.json").read_text(), parse_constant=refuse)
    assert metrics["methods"]["noisy input, as is"]["psnr_db"] is None


def test_a_code_too_large_to_draw_number_by_number_draws_its_first_ones_and_says_so(monkeypatch):
    codes, labels = torch.randn(300, 40), torch.arange(300) % 10
    figure = visualize.plot_latent_pairs(codes, labels, max_dimensions=4)
    assert len(figure.axes) == 4 * 5 // 2
    assert any("the first 4 of the 40 code dimensions" in text.get_text() for text in figure.texts)
    monkeypatch.setattr(visualize, "MAX_DRAWN_DIMENSIONS", 4)  # 16 in the scripts; 4 here, to draw fast
    traversals = visualize.plot_latent_traversals(LinearDecoder(40), codes)
    assert [label.get_text() for label in traversals.axes[0].get_yticklabels()] == ["z0", "z1", "z2", "z3"]
    assert "(the first 4 of 40)" in traversals.axes[0].get_title()


class LinearDecoder(nn.Module):
    """Just enough of a model for the traversals: `decode` from codes of any size."""

    def __init__(self, latent_dim):
        super().__init__()
        self.layer = nn.Linear(latent_dim, 784)

    def decode(self, codes):
        return torch.sigmoid(self.layer(codes)).view(-1, 1, 28, 28)


def test_a_one_epoch_loss_figure_shows_a_point_and_whole_epochs():
    figure = visualize.plot_loss_curves({"train_loss": [0.3], "val_loss": [0.2]})
    axis = figure.axes[0]
    assert all(line.get_marker() == "o" for line in axis.get_lines()[:2])
    ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
    assert ticks == [1.0]


def test_a_finished_run_copied_elsewhere_is_still_a_run(tiny_run, tmp_path):
    """A run's files hold no absolute path it depends on: a copied run evaluates from where it is."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_run / "run", copy)
    assert evaluate.evaluate(copy, tiny_run / "data", None)["run"]["checkpoint"] == str(copy / CHECKPOINT_FILE)
