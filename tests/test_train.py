"""EarlyStopping, the training loop and train.py as a user runs it."""

import ast
import os
import signal
import stat
import subprocess
import sys

import matplotlib
import pytest
import torch

import cli
import evaluate
import runs
import train
import visualize
from conftest import REAL_DATA_DIR, ROOT, requires_real_data, tiny_train_args
from dae import DenoisingAutoencoder
from data import add_noise, load_fashion_mnist, load_training_split, split_train_validation
from runs import CHECKPOINT_FILE, load_checkpoint
from train import EarlyStopping


def stop_decisions(losses, patience, min_delta):
    stopping = EarlyStopping(patience, min_delta)
    return [stopping.should_stop(loss) for loss in losses]


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    assert stop_decisions([1.0, 0.5, 0.6, 0.7, 0.8], patience=3, min_delta=0) == [False, False, False, False, True]


def test_early_stopping_needs_more_than_min_delta():
    # 0.75 is exactly min_delta = 0.25 below the best (1.0), which is not *more* than min_delta.
    assert stop_decisions([1.0, 0.75, 0.75], patience=2, min_delta=0.25) == [False, False, True]
    # A drop of 0.5 > 0.25 counts.
    assert stop_decisions([1.0, 0.5, 0.0], patience=2, min_delta=0.25) == [False, False, False]


def test_early_stopping_resets_its_count_on_improvement():
    stopping = EarlyStopping(patience=3, min_delta=0.1)
    for loss in [1.0, 1.0, 1.0]:
        stopping.should_stop(loss)
    assert stopping.epochs_without_improvement == 2
    assert not stopping.should_stop(0.5)
    assert stopping.epochs_without_improvement == 0
    assert [stopping.should_stop(loss) for loss in [0.45, 0.45, 0.45]] == [False, False, True]


def test_early_stopping_measures_against_the_last_real_improvement():
    # 0.95, 0.90, 0.85 each beat the one before by only 0.05 < 0.1, but 0.85 beats the best (1.0) by 0.15.
    assert stop_decisions([1.0, 0.95, 0.90, 0.85, 0.84], patience=3, min_delta=0.1) == [False] * 5


def test_train_one_epoch_lowers_the_loss_on_a_tiny_problem():
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0
    model = DenoisingAutoencoder(latent_dim=2)
    optimizer = train.make_optimizer(model, lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    before = train.validation_loss(model, images, images)
    for _ in range(20):
        train.train_one_epoch(model, optimizer, images, 16, 0.2, generator=generator)
    assert train.validation_loss(model, images, images) < 0.5 * before


def test_tiny_run_lowers_the_loss_and_saves_the_best_weights(tiny_run):
    model, checkpoint = load_checkpoint(tiny_run / "run" / CHECKPOINT_FILE)
    history = checkpoint["history"]
    assert len(history["train_loss"]) == len(history["val_loss"]) == len(history["epoch_seconds"]) == 15
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]
    assert checkpoint["best_val_loss"] == min(history["val_loss"])
    assert history["val_loss"][checkpoint["best_epoch"] - 1] == checkpoint["best_val_loss"]
    assert checkpoint["stop_reason"] == "reached --epochs 15"

    # The saved weights reproduce the recorded best validation loss on the same validation images.
    config = checkpoint["config"]
    generator = torch.Generator().manual_seed(config["seed"])
    images, labels = load_fashion_mnist(tiny_run / "data", train=True)
    _, (val_images, _) = split_train_validation(images, labels, config["val_size"], generator=generator)
    val_noisy = add_noise(val_images, config["noise_std"], generator=generator)
    assert train.validation_loss(model, val_noisy, val_images) == pytest.approx(checkpoint["best_val_loss"], rel=1e-6)


def test_same_seed_on_cpu_gives_the_same_numbers(tiny_data_dir, tmp_path):
    def history(run, seed):
        train.main(tiny_train_args(tiny_data_dir, tmp_path / run, "--epochs", "3", "--seed", seed))
        return load_checkpoint(tmp_path / run / CHECKPOINT_FILE)[1]["history"]

    first = history("a", "5")
    assert first["val_loss"] == history("b", "5")["val_loss"]
    assert first["train_loss"] == history("b", "5")["train_loss"]
    assert first["val_loss"] != history("c", "6")["val_loss"]


def test_early_stopping_ends_a_run(tiny_data_dir, tmp_path, capsys):
    train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "50", "--patience", "2",
                               "--min-delta", "10"))
    # Epoch 1 improves on no loss at all; no later drop is above 10, so epochs 2 and 3 use up the patience.
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert len(checkpoint["history"]["val_loss"]) == 3
    assert checkpoint["stop_reason"].startswith("early stopping")
    assert "stopped after 3 epochs (early stopping" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, complaint", [
    ("--epochs", "0", "must be at least 1"),
    ("--batch-size", "-4", "must be at least 1"),
    ("--patience", "0", "must be at least 1"),
    ("--latent-dim", "0", "must be at least 1"),
    ("--latent-dim", "785", "must be at most 784: a code larger than the image is no bottleneck"),
    ("--lr", "0", "must be a finite number above 0"),
    ("--lr", "inf", "must be a finite number above 0"),
    ("--noise-std", "-0.1", "must be a finite number of at least 0"),
    ("--noise-std", "nan", "must be a finite number of at least 0"),
    ("--noise-std", "11", "must be at most 10 (pixels lie in [0, 1])"),
    ("--min-delta", "-1", "must be a finite number of at least 0"),
    ("--seed", str(2**64), "must be from 0 to 2**64 - 1"),
    ("--seed", "-1", "must be from 0 to 2**64 - 1"),
    ("--device", "tpu", "unknown device 'tpu'"),
    ("--epochs", "ten", "invalid positive_int value"),
])
def test_bad_flags_are_refused_in_one_line_with_status_2(flag, value, complaint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert complaint in error and "Traceback" not in error
    assert error.splitlines()[-1].startswith("train.py: error: argument") or "__main__" in error


def test_a_bad_flag_in_a_notebook_raises_an_error_it_shows_and_the_session_goes_on():
    with pytest.raises(cli.FlagError, match="argument --epochs: must be at least 1, got 0"):
        train.parse_args(["--epochs", "0"])  # not SystemExit, which would end a plain Python REPL


def test_the_largest_seed_is_taken():
    assert train.parse_args(["--seed", str(2**64 - 1)]).seed == 2**64 - 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_cuda_device_says_so():
    with pytest.raises(cli.FlagError, match="this machine has no cuda device"):
        train.parse_args(["--device", "cuda"])


def test_an_unwritable_run_directory_is_reported_before_training(tiny_data_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, blocker / "run", "--epochs", "1"))
    assert f"cannot write the run directory {blocker / 'run'}" in str(exit_info.value.code)
    assert "epoch" not in capsys.readouterr().out


def test_a_new_run_replaces_the_old_one_without_mixing(tiny_data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # A 2-number code, for which visualize.py also draws latent_grid.png: every file the scripts can write.
    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "2", "--latent-dim", "2"))
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)])
    visualize.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)])
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir), "--noise-std", "0.5"])
    (run_dir / "notes.txt").write_text("the user's own notes")
    # written.txt names exactly what the other scripts wrote.
    written = {p.name for p in run_dir.iterdir()} - {CHECKPOINT_FILE, runs.LOCK_FILE, runs.WRITTEN_FILE}
    assert set(runs.written_files(run_dir)) == written - {"notes.txt"}
    assert {"metrics.json", "metrics-noise0.5.json", "latent_grid.png", "loss_curves.png"} <= written
    capsys.readouterr()

    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1"))
    output = capsys.readouterr().out
    assert f"replaced the earlier run in {run_dir} ({len(written) - 1} of its reports and figures removed)" in output
    assert {p.name for p in run_dir.iterdir()} == {CHECKPOINT_FILE, runs.LOCK_FILE, "notes.txt"}
    assert (run_dir / "notes.txt").read_text() == "the user's own notes"
    assert len(load_checkpoint(run_dir / CHECKPOINT_FILE)[1]["history"]["val_loss"]) == 1


def test_ctrl_c_keeps_the_best_checkpoint_and_the_history(tiny_data_dir, tmp_path):
    returncode, output, errors, epoch_lines = run_train_process(tmp_path, tiny_data_dir, signal.SIGINT)
    assert returncode == 130
    assert "Traceback" not in errors
    assert "(interrupted)" in output and str(tmp_path / "run" / CHECKPOINT_FILE) in output
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["stop_reason"] == "interrupted"
    assert len(checkpoint["history"]["val_loss"]) == len(epoch_lines) >= 3
    # The interrupted run is a run like any other.
    assert evaluate.evaluate(tmp_path / "run", tiny_data_dir, None)["run"]["state"] == "interrupted"


def run_train_process(tmp_path, data_dir, stop_signal, after_epochs=3):
    """A real train.py process, started from another directory, sent `stop_signal` after a few epochs."""
    command = [sys.executable, "-u", str(ROOT / "train.py"),
               *tiny_train_args(data_dir, tmp_path / "run", "--epochs", "100000", "--patience", "100000")]
    # A shell starts background jobs with SIGINT ignored, and Python then never turns it into Ctrl-C;
    # the child gets SIGINT's default back, as a process started from a terminal has it.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    epoch_lines = []
    for line in process.stdout:
        if line.startswith("epoch"):
            epoch_lines.append(line)
            if len(epoch_lines) == after_epochs:
                process.send_signal(stop_signal)
                break
    output, errors = process.communicate(timeout=60)
    epoch_lines += [line for line in output.splitlines() if line.startswith("epoch")]
    return process.returncode, output, errors, epoch_lines


def test_sigterm_keeps_the_full_history_like_ctrl_c(tiny_data_dir, tmp_path):
    """`timeout`, a job scheduler or a notebook kernel stop sends SIGTERM: nothing may be lost."""
    returncode, output, errors, epoch_lines = run_train_process(tmp_path, tiny_data_dir, signal.SIGTERM)
    assert returncode == 143  # 128 + SIGTERM's 15, as the shell reports a process that SIGTERM stopped
    assert "Traceback" not in errors and "(terminated)" in output
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["stop_reason"] == "terminated"
    assert len(checkpoint["history"]["val_loss"]) == len(checkpoint["history"]["train_loss"]) == len(epoch_lines) >= 3


def test_checkpoints_get_ordinary_file_permissions(tiny_data_dir, tmp_path):
    old_umask = os.umask(0o022)
    try:
        train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "1"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "run" / CHECKPOINT_FILE).stat().st_mode) == 0o644


def test_abbreviated_flags_are_errors_not_other_flags():
    with pytest.raises(cli.FlagError, match="unrecognized arguments: --epoch"):
        train.parse_args(["--epoch", "5"])  # with prefix matching, argparse would take it for --epochs


def test_a_run_that_fails_to_start_replaces_nothing(tiny_data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "2"))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1", "--val-size", "100000"))
    assert "choose a --val-size between 1 and 290" in str(exit_info.value.code)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert "replaced" not in capsys.readouterr().out


def test_a_default_run_that_fails_to_start_leaves_no_directory(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    with pytest.raises(SystemExit):
        train.main(["--data-dir", str(tiny_data_dir), "--val-size", "100000", "--device", "cpu"])
    assert not list((tmp_path / "runs").iterdir())


def test_each_epoch_line_names_the_kept_weights_and_early_stopping_apart(tiny_data_dir, tmp_path, capsys):
    # A min delta of 0.01 makes small gains keep new weights without counting as an improvement.
    train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "12", "--min-delta", "0.01"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    val_loss = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)[1]["history"]["val_loss"]
    stopping = EarlyStopping(patience=25, min_delta=0.01)
    for epoch, (line, loss) in enumerate(zip(lines, val_loss, strict=True), start=1):
        lowest = loss < min(val_loss[: epoch - 1], default=float("inf"))  # a tie is not lower
        stopping.should_stop(loss)
        assert ("lowest, kept" in line) == lowest, line
        waiting = stopping.epochs_without_improvement
        assert (" improved " in line) == (waiting == 0), line
        assert waiting == 0 or f"no improvement {waiting:2d}/25" in line, line
    assert any("lowest, kept" in line and "no improvement" in line for line in lines)  # the two apart
    assert not any("best" in line for line in lines)  # one word would stand for two things


def test_train_one_epoch_refuses_images_of_the_wrong_shape_or_type():
    model = DenoisingAutoencoder()
    optimizer = train.make_optimizer(model, lr=1e-3)
    for wrong in (torch.rand(8, 28, 28), (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)):
        with pytest.raises(ValueError, match=r"must be float images of shape \(N, 1, 28, 28\)"):
            train.train_one_epoch(model, optimizer, wrong, 4, 0.2)


@pytest.mark.parametrize("latent_dim", ["3", "1"])
def test_every_script_works_with_another_latent_size(tiny_data_dir, tmp_path, capsys, latent_dim):
    matplotlib.use("Agg")  # what matplotlib picks where there is no display
    run_dir = tmp_path / "run"
    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "2", "--latent-dim", latent_dim))
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)])
    # --show where matplotlib found no display (as here, drawing with Agg): it says so, and writes.
    visualize.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir), "--show"])
    output = capsys.readouterr().out
    assert "--show: no display here" in output
    assert f"{latent_dim}-D test codes" in output and f"PCA with {latent_dim} components" in output
    for name in ("latent_pairs.png", "samples.png", "interpolations.png"):
        assert f"wrote {run_dir / name}" in output
    assert "latent_grid.png" not in output  # drawn for a 2-number code only


@requires_real_data
def test_two_epochs_on_real_fashion_mnist(tmp_path, capsys):
    train.main(["--epochs", "2", "--data-dir", str(REAL_DATA_DIR), "--run-dir", str(tmp_path / "run"),
                "--device", "cpu"])
    output = capsys.readouterr().out
    assert "50,000 training and 10,000 validation images" in output
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    val_loss = checkpoint["history"]["val_loss"]
    assert val_loss[1] < val_loss[0] < 0.4  # from about 0.5 for an untrained sigmoid output


# What a student copies into a notebook for the recipe (README, "Take the recipe into coursework"):
# these definitions of train.py, under the imports below, with dae.py and data.py beside them.
RECIPE_PIECES = ("RECIPE", "training_loss", "make_optimizer", "train_one_epoch", "validation_loss", "EarlyStopping")
NOTEBOOK_IMPORTS = """\
import math
from collections import defaultdict

import torch
import torch.nn.functional as F

from dae import DenoisingAutoencoder
from data import add_noise, check_images
"""


def recipe_cell() -> str:
    """The recipe's definitions, cut out of train.py's source as a student would copy them."""
    source = (ROOT / "train.py").read_text()
    cell = [NOTEBOOK_IMPORTS]
    for node in ast.parse(source).body:
        name = node.targets[0].id if isinstance(node, ast.Assign) else getattr(node, "name", None)
        if name in RECIPE_PIECES:
            first = min([node.lineno, *(decorator.lineno for decorator in getattr(node, "decorator_list", []))])
            cell.append("\n".join(source.splitlines()[first - 1 : node.end_lineno]))
    return "\n\n".join(cell)


def test_the_recipe_works_copied_into_a_notebook_without_the_plumbing(tiny_data_dir):
    namespace = {}
    exec(compile(recipe_cell(), "notebook-cell", "exec"), namespace)  # nothing of runs.py or cli.py
    assert set(RECIPE_PIECES) <= set(namespace)
    (images, _), (val_clean, val_noisy) = load_training_split(tiny_data_dir, 60, 0.2,
                                                               generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = namespace["DenoisingAutoencoder"](namespace["RECIPE"]["latent_dim"])
    optimizer = namespace["make_optimizer"](model, 1e-2)
    stopping = namespace["EarlyStopping"](patience=3, min_delta=0.0)
    losses = [namespace["validation_loss"](model, val_noisy, val_clean)]  # untrained
    for _ in range(4):
        namespace["train_one_epoch"](model, optimizer, images, 32, 0.2)
        losses.append(namespace["validation_loss"](model, val_noisy, val_clean))
        stopping.should_stop(losses[-1])
    assert losses[-1] < 0.5 * losses[0]
