"""A run on disk: checkpoints written whole and read back without trust, the newest run found by its record."""

import os
import shutil
from datetime import datetime

import matplotlib
import pytest
import torch
from torch import nn

import dae
import evaluate
import explorer
import runs
import train
import visualize
from conftest import tiny_train_args
from dae import CheckpointError, DenoisingAutoencoder, checkpoint_contents
from runs import CHECKPOINT_FILE, load_checkpoint, newest_run, save_checkpoint


def saved_model(path, latent_dim=8, **run_info):
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim)
    save_checkpoint(path, model, model.state_dict(), **run_info)
    return model


def test_checkpoint_round_trip_rebuilds_an_equal_model(tiny_run):
    path = tiny_run / "run" / CHECKPOINT_FILE
    loaded, checkpoint = load_checkpoint(path)
    assert not loaded.training  # returned in eval mode
    saved = torch.load(path, weights_only=True)["model_state"]
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert len(checkpoint["history"]["val_loss"]) == 15 and checkpoint["best_epoch"] >= 1


def test_missing_checkpoint_says_to_train_first(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*run `python train.py` first"):
        load_checkpoint(tmp_path / "nowhere" / "checkpoint.pt")


def write_random_bytes(path):
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())


def write_truncated_checkpoint(path):
    saved_model(path)
    path.write_bytes(path.read_bytes()[:5000])


def write_code_running_pickle(path):
    torch.save({"format": dae.CHECKPOINT_FORMAT, "payload": print}, path)  # a function: refused by weights_only


@pytest.mark.parametrize("damage", [write_random_bytes, lambda path: path.write_bytes(b""), write_truncated_checkpoint,
                                    lambda path: torch.save(nn.Linear(3, 2).state_dict(), path),
                                    write_code_running_pickle])
def test_a_file_that_is_not_our_checkpoint_gives_one_clear_error_naming_it(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    damage(path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == f"{path} holds a file this project did not write" + (
        f" (damaged, or not a PyTorch checkpoint: {str(error.value).split(': ')[1].split(')')[0]})"
        if "damaged" in str(error.value) else "") + ": train one with `python train.py`"


def test_an_interrupted_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    saved_model(path)
    before = path.read_bytes()

    def interrupt(file_descriptor):  # Ctrl-C with the new bytes written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, DenoisingAutoencoder(8), DenoisingAutoencoder(8).state_dict())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


# ---- Anything a file under a checkpoint's name may claim ----

def model_only(path):
    model = DenoisingAutoencoder(8)
    torch.save(checkpoint_contents(model, model.state_dict()), path)  # the model, but no run record


def run_with(**changes):
    """A finished run of this code, with `changes` to what its checkpoint claims."""
    def write(path):
        model = DenoisingAutoencoder(8)
        run = {"config": {"seed": 0, "val_size": 60, "noise_std": 0.2, "epochs": 1}, "history": {
            "train_loss": [0.3], "val_loss": [0.2], "epoch_seconds": [0.1]}, "best_epoch": 1, "best_val_loss": 0.2,
            "stop_kind": runs.ALL_EPOCHS, "stop_reason": "reached --epochs 1", "stamp": "s", "device": "cpu"}
        torch.save({**checkpoint_contents(model, model.state_dict(), **run), **changes}, path)
    return write


def huge_file(path):
    with open(path, "wb") as file:
        file.truncate(runs.MAX_CHECKPOINT_BYTES + 1)  # sparse: no disk space is used


HOSTILE = {
    "a model with no run record": (model_only, "holds a model but no record of a run of train.py (no configuration)"),
    "another project's format": (run_with(format="fashion-mnist-gan/1"), "holds a 'fashion-mnist-gan/1' model"),
    "a file larger than any checkpoint": (huge_file, "holds 256 MB, far more than any checkpoint of this project"),
    "a huge model": (run_with(model_args={"latent_dim": 10**12}), "holds a model of other layers than this code's"),
    "a history of words": (run_with(history={"train_loss": ["a"], "val_loss": ["b"]}), "a history that is not numbers"),
    "a configuration with no seed": (run_with(config={"val_size": 60, "noise_std": 0.2, "epochs": 1}),
                                     "no seed in its configuration"),
    "a best epoch it never ran": (run_with(best_epoch=7), "no best epoch among its epochs"),
    "a directory": (lambda path: path.mkdir(), "is not a file: move or rename it, or pass another --run-dir"),
}


@pytest.mark.parametrize("claim", HOSTILE)
def test_every_script_that_reads_a_checkpoint_survives_whatever_lies_there(claim, tiny_data_dir, tmp_path, capsys):
    write, complaint = HOSTILE[claim]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write(run_dir / CHECKPOINT_FILE)
    matplotlib.use("Agg")
    flags = ["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)]
    for script in (evaluate, visualize, explorer):
        with pytest.raises(SystemExit) as exit_info:
            script.main(flags)
        assert exit_info.value.code.startswith(f"error: {run_dir / CHECKPOINT_FILE} "), script.__name__
        assert complaint in exit_info.value.code and "\n" not in exit_info.value.code, exit_info.value.code
    with pytest.raises(SystemExit) as exit_info:  # train.py will not replace it
        train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1"))
    assert exit_info.value.code.endswith(f"so {run_dir} is not a run to replace: pass another --run-dir (nothing "
                                         f"was written)") or "is not a file" in exit_info.value.code
    assert sorted(path.name for path in run_dir.iterdir()) == [CHECKPOINT_FILE]
    assert "Traceback" not in capsys.readouterr().err


# ---- Which run is the newest ----

def test_the_newest_run_is_the_one_its_record_says_saved_last_not_the_newest_file(tiny_run, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    recent = tmp_path / "runs" / "2026-12-01_10-00-00"
    shutil.copytree(tiny_run / "run", recent)
    old = tmp_path / "runs" / "2020-01-01_00-00-00"  # a run from 2020, copied in today: the newest file
    model, checkpoint = load_checkpoint(recent / CHECKPOINT_FILE)
    old.mkdir()
    record = {name: value for name, value in checkpoint.items() if name not in ("format", "model_args",
                                                                                "architecture", "model_state")}
    save_checkpoint(old / CHECKPOINT_FILE, model, model.state_dict(), **{**record, "saved_at": "2020-01-01T00:00:00"})
    os.utime(recent / CHECKPOINT_FILE, (1_000, 1_000))
    assert newest_run()[0] == recent
    evaluate.main(["--data-dir", str(tiny_run / "data")])
    saved = datetime.fromisoformat(checkpoint["saved_at"])
    assert (f"evaluating the newest run, {recent} (of 2 runs, the last saved by their records: "
            f"{saved:%Y-%m-%d %H:%M:%S}; pass --run-dir for another)\n") in capsys.readouterr().out


def test_a_run_still_training_is_passed_over_and_one_that_died_is_not(tmp_path):
    model = DenoisingAutoencoder()
    record = run_record()
    runs_written = [("2026-01-01_10-00-00", runs.ALL_EPOCHS, "2026-01-01T10:30:00"),
                    ("2026-01-01_11-00-00", runs.RUNNING, "2026-01-01T11:30:00")]
    for name, kind, saved_at in runs_written:
        (tmp_path / name).mkdir()
        save_checkpoint(tmp_path / name / "checkpoint.pt", model, model.state_dict(),
                        **{**record, "stop_kind": kind, "saved_at": saved_at})
    newer = tmp_path / "2026-01-01_11-00-00"
    assert newest_run(tmp_path)[0] == newer  # no process holds it: it died, and its weights are used
    lock = runs.lock_run_dir(newer)
    try:
        assert newest_run(tmp_path)[::3] == (tmp_path / "2026-01-01_10-00-00", [(newer, str(os.getpid()))])
    finally:
        os.close(lock)
    assert runs.training_pid(newer) is None  # the lock goes with the file descriptor


def run_record() -> dict:
    return {"config": {"seed": 0, "val_size": 60, "noise_std": 0.2, "epochs": 1},
            "history": {"train_loss": [0.3], "val_loss": [0.2], "epoch_seconds": [0.1]}, "best_epoch": 1,
            "best_val_loss": 0.2, "stop_reason": "reached --epochs 1", "stamp": "s", "device": "cpu"}
