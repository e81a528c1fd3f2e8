"""A run on disk: checkpoints written whole and read back without trust, a run directory never
overwritten, the newest run found by its record, and a run that knows whether it is alive."""

import os
import shutil
import stat

import matplotlib
import pytest
import torch
from torch import nn

import data
import evaluate
import explorer
import checkpoints
import runs
import train
import visualize
from checkpoints import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from cli import UserError
from conftest import tiny_train_args
from dae import DenoisingAutoencoder
from runs import CHECKPOINT_FILE, LOCK_FILE


def files_and_contents(directory) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


RECORD = {"config": {"seed": 0, "val_size": 60, "noise_std": 0.2, "epochs": 1},
          "history": {"train_loss": [0.3], "val_loss": [0.2], "epoch_seconds": [0.1]}, "best_epoch": 1,
          "stop_kind": runs.ALL_EPOCHS, "stop_reason": "reached --epochs 1", "device": "cpu"}


def saved_run(path, model=None, **changes):
    """A finished run's checkpoint at `path`, with `changes` to what it records."""
    model = model or DenoisingAutoencoder(8)
    save_checkpoint(path, model, model.state_dict(), **{**RECORD, **changes})
    return model


def test_a_checkpoint_rebuilds_the_very_model_it_saved_in_eval_mode_on_the_cpu(tmp_path):
    torch.manual_seed(0)
    model = saved_run(tmp_path / CHECKPOINT_FILE, DenoisingAutoencoder(3))
    loaded, checkpoint = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert not loaded.training and loaded.latent_dim == 3 and checkpoint["best_epoch"] == 1
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value) and loaded.state_dict()[name].device.type == "cpu"


# ---- Anything a file under a checkpoint's name may claim ----

def forked(path):
    fork = DenoisingAutoencoder()
    fork.decoder.layers[0] = nn.Linear(8, 32)  # a fork's model: another first layer of the decoder
    saved_run(path, fork)


def not_finite(path):
    model = DenoisingAutoencoder(8)
    with torch.no_grad():
        model.decoder.layers[0].weight[0, 0] = float("nan")
    saved_run(path, model)


def huge_file(path):
    with open(path, "wb") as file:
        file.truncate(checkpoints.MAX_CHECKPOINT_BYTES + 1)  # sparse: no disk space is used


HOSTILE = {
    "random bytes": (lambda path: path.write_bytes(os.urandom(4096)), "holds a file this project did not write "
                                                                       "(damaged, or not a PyTorch checkpoint"),
    "an empty file": (lambda path: path.write_bytes(b""), "holds a file this project did not write"),
    "a cut-short checkpoint": (lambda path: (saved_run(path), path.write_bytes(path.read_bytes()[:5000])),
                               "holds a file this project did not write"),
    "a pickle that runs code": (lambda path: torch.save({"format": CHECKPOINT_FORMAT, "payload": print}, path),
                                "holds a file this project did not write"),
    "a bare state dict": (lambda path: torch.save(nn.Linear(3, 2).state_dict(), path),
                          f"holds a file this project did not write: this code reads '{CHECKPOINT_FORMAT}'"),
    "another project's format": (lambda path: saved_run(path, format="fashion-mnist-gan/1"),
                                 f"holds a 'fashion-mnist-gan/1' model: this code reads '{CHECKPOINT_FORMAT}'"),
    "a model with no run record": (lambda path: saved_run(path, config=None),
                                   "holds a model but no record of a run of train.py (no configuration)"),
    "a configuration with no seed": (lambda path: saved_run(path, config={"val_size": 60, "noise_std": 0.2}),
                                     "(no seed in its configuration)"),
    "a history of words": (lambda path: saved_run(path, history={"train_loss": ["a"], "val_loss": ["b"]}),
                           "(a history that is not numbers)"),
    "a best epoch it never ran": (lambda path: saved_run(path, best_epoch=7), "(no best epoch among its epochs)"),
    "a huge model": (lambda path: saved_run(path, model_args={"latent_dim": 10**12}),
                     "holds a model of other layers than this code's (it has encoder.layers.5: Linear(in_features=64,"
                     " out_features="),
    "a huge model, its layers unrecorded": (lambda path: saved_run(path, model_args={"latent_dim": 10**12},
                                                                   architecture=None),
                                            "(size mismatch for encoder.layers.5.weight"),
    "model arguments it cannot take": (lambda path: saved_run(path, model_args={"latent_dim": "eight"}),
                                       "holds a model of other layers than this code's ("),
    "a fork's layers": (forked, "(it has decoder.layers.0: Linear(in_features=8, out_features=32, bias=True) where "
                                "this code has decoder.layers.0: Linear(in_features=8, out_features=64, bias=True))"),
    "weights that are not finite": (not_finite, "holds weights that are not finite numbers: train the run again"),
    "a file larger than any checkpoint": (huge_file, "holds 256 MB, far more than any checkpoint of this project"),
    "a directory": (lambda path: path.mkdir(), "is not a file: move or rename it, or pass another --run-dir"),
}


@pytest.mark.parametrize("claim", HOSTILE)
def test_whatever_lies_under_a_checkpoints_name_is_one_line_in_every_script(claim, tiny_data_dir, tmp_path, capsys):
    write, complaint = HOSTILE[claim]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write(run_dir / CHECKPOINT_FILE)
    with pytest.raises(UserError) as error:
        load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert str(error.value).startswith(f"{run_dir / CHECKPOINT_FILE} ") and complaint in str(error.value)
    matplotlib.use("Agg")
    for script in (evaluate, visualize, explorer):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)])
        assert exit_info.value.code == f"error: {error.value}", script.__name__
    with pytest.raises(SystemExit) as exit_info:  # train.py will not write over it
        train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1"))
    assert exit_info.value.code == f"error: {run_dir} already holds files (1, such as {CHECKPOINT_FILE}): pass a new " \
                                   f"or empty --run-dir"
    assert [path.name for path in run_dir.iterdir()] == [CHECKPOINT_FILE] and capsys.readouterr().err == ""


def test_a_missing_checkpoint_says_to_train_first(tmp_path):
    with pytest.raises(UserError, match=r"^no checkpoint at .*: run `python train.py` first, or pass --run-dir$"):
        load_checkpoint(tmp_path / "nowhere" / CHECKPOINT_FILE)


# ---- Written whole, never through a link, with the usual permissions ----

def test_an_interrupted_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    saved_run(tmp_path / CHECKPOINT_FILE)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    def interrupt(file_descriptor):  # Ctrl-C with the new bytes written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        saved_run(tmp_path / CHECKPOINT_FILE, best_epoch=1)
    assert files_and_contents(tmp_path) == {CHECKPOINT_FILE: before}  # no temporary file left behind


def test_writes_never_follow_a_link_and_get_ordinary_permissions(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("the user's notes")
    (tmp_path / "metrics.json").symlink_to(target)
    old_umask = os.umask(0o022)
    try:
        data.write_atomically(tmp_path / "metrics.json", b"{}")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "the user's notes" and not (tmp_path / "metrics.json").is_symlink()
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


# ---- A run directory is never overwritten ----

def test_a_folder_that_holds_anything_is_refused_and_left_as_it_was(tiny_data_dir, tmp_path, tiny_run):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "loss_curves.png").write_bytes(b"\x89PNG the user's own figure")
    (folder / "metrics.json").write_text('{"mine": true}')
    for directory in (folder, tiny_run / "run"):  # a folder of the user's, and a finished run
        before = files_and_contents(directory)
        with pytest.raises(SystemExit) as exit_info:
            train.main(tiny_train_args(tiny_data_dir, directory, "--epochs", "1"))
        assert exit_info.value.code.startswith(f"error: {directory} already holds files (")
        assert files_and_contents(directory) == before


def test_a_run_that_fails_to_start_leaves_no_directory(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    for run_dir in (["--run-dir", str(tmp_path / "named")], []):
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--data-dir", str(tiny_data_dir), "--val-size", "100000", "--device", "cpu", *run_dir])
        assert exit_info.value.code == (f"error: a validation set of 100,000 images leaves too few of the 300 in "
                                        f"{tiny_data_dir} for training: choose a --val-size between 1 and 290")
    assert not (tmp_path / "named").exists() and not list((tmp_path / "runs").iterdir())


# ---- Which run: the newest by its record, and whether it is alive ----

def test_the_newest_run_is_the_one_its_record_says_saved_last_not_the_newest_file(tiny_run, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    recent = tmp_path / "runs" / "2026-12-01_10-00-00"
    shutil.copytree(tiny_run / "run", recent)
    model, checkpoint = load_checkpoint(recent / CHECKPOINT_FILE)
    old = tmp_path / "runs" / "2030-01-01_00-00-00"  # its name sorts last, and its file is newer
    old.mkdir()
    saved_run(old / CHECKPOINT_FILE, model, saved_at="2020-01-01T00:00:00")
    os.utime(recent / CHECKPOINT_FILE, (1_000, 1_000))
    evaluate.main(["--data-dir", str(tiny_run / "data")])
    saved = checkpoint["saved_at"][:19].replace("T", " ")
    assert (f"evaluating the newest run, {recent} (of 2 runs, the last saved by their records: {saved}; pass "
            f"--run-dir for another)\n") in capsys.readouterr().out


def test_a_run_still_training_is_passed_over_or_refused_and_one_that_died_is_used(tiny_run, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    model, finished = load_checkpoint(tiny_run / "run" / CHECKPOINT_FILE)
    data = ["--data-dir", str(tiny_run / "data")]
    older, newer = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for run_dir, saved_at in ((older, "2026-01-01T10:30:00"), (newer, "2026-01-01T11:30:00")):
        run_dir.mkdir(parents=True)
        saved_run(run_dir / CHECKPOINT_FILE, model, stop_kind=runs.RUNNING, stop_reason=runs.RUNNING,
                  saved_at=saved_at, config=finished["config"])
    evaluate.main(data)  # no process holds the newer one: it died (kill -9), and its weights are used
    assert f"the newest run, {newer} (of 2 runs" in capsys.readouterr().out
    assert evaluate.run_state(load_checkpoint(newer / CHECKPOINT_FILE)[1], newer) == (
        "stopped without recording why (killed, or the machine went down)")
    with open(newer / LOCK_FILE, "w") as lock:  # now this process holds its lock, as train.py would
        runs.fcntl.flock(lock, runs.fcntl.LOCK_EX)
        print(os.getpid(), file=lock, flush=True)
        evaluate.main(data)
        assert (f"the newest run, {older} (of 2 runs, the last saved by their records: 2026-01-01 10:30:00; pass "
                f"--run-dir for another); passed over 1 newer run(s) still training, the newest {newer} (pid "
                f"{os.getpid()})") in capsys.readouterr().out
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["--run-dir", str(newer), *data])
        assert exit_info.value.code == (f"error: the run in {newer} is still training (pid {os.getpid()}): wait for it "
                                        f"to end, or pass --while-training to use its best weights so far (what is "
                                        f"written says which)")
        evaluate.main(["--run-dir", str(newer), "--while-training", *data])
        assert f"(still training (pid {os.getpid()}))" in capsys.readouterr().out
        shutil.rmtree(older)
        with pytest.raises(SystemExit) as exit_info:
            visualize.main(data)
        assert exit_info.value.code == (f"error: no run in {tmp_path / 'runs'} has finished; 1 still training, the "
                                        f"newest {newer} (pid {os.getpid()}): wait for it, or pass its --run-dir with "
                                        f"--while-training")
    assert runs.training_pid(newer) is None  # the lock goes with the file


def test_reports_and_figures_record_the_weights_they_describe(tiny_run):
    evaluate.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
    checkpoint = load_checkpoint(tiny_run / "run" / CHECKPOINT_FILE)[1]
    recorded = evaluate.json.loads((tiny_run / "run" / "metrics.json").read_text())["run"]
    assert (recorded["best_epoch"], recorded["checkpoint_stamp"]) == (checkpoint["best_epoch"], checkpoint["stamp"])
    figure = visualize.plot_noise_levels([0.0, 0.2], {"a method": [0.1, 0.2]}, training_std=0.2)
    assert f"checkpoint {checkpoint['stamp']}".encode() in visualize.figure_bytes(figure, checkpoint)


def test_a_finished_run_copied_elsewhere_is_still_a_run(tiny_run, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_run / "run", copy)
    assert evaluate.evaluate(copy, tiny_run / "data", None)["run"]["checkpoint"] == str(copy / CHECKPOINT_FILE)
