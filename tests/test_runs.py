"""A run on disk: checkpoint files written whole and read back, the newest run found, failures in one line."""

import os

import pytest
import torch
from torch import nn

import dae
import runs
from dae import CheckpointError, DenoisingAutoencoder
from runs import load_checkpoint, newest_run, save_checkpoint


def saved_model(path, latent_dim=8, **run_info):
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim)
    save_checkpoint(path, model, model.state_dict(), **run_info)
    return model


def test_checkpoint_round_trip_rebuilds_an_equal_model(tmp_path):
    original = saved_model(tmp_path / "c.pt", history={"val_loss": [0.5, 0.25]}, best_epoch=2)
    loaded, checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert not loaded.training  # returned in eval mode
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert checkpoint["history"] == {"val_loss": [0.5, 0.25]} and checkpoint["best_epoch"] == 2


def test_checkpoint_of_another_latent_size_is_rebuilt_at_that_size(tmp_path):
    saved_model(tmp_path / "c.pt", latent_dim=3)
    loaded, _ = load_checkpoint(tmp_path / "c.pt")
    assert loaded.latent_dim == 3
    assert loaded.encode(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_missing_checkpoint_says_to_train_first(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*run `python train.py` first"):
        load_checkpoint(tmp_path / "nowhere" / "checkpoint.pt")


def write_random_bytes(path):
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())


def write_empty_file(path):
    path.write_bytes(b"")


def write_truncated_checkpoint(path):
    saved_model(path)
    path.write_bytes(path.read_bytes()[:5000])


def write_foreign_state_dict(path):
    torch.save(nn.Linear(3, 2).state_dict(), path)


def write_code_running_pickle(path):
    torch.save({"format": dae.CHECKPOINT_FORMAT, "payload": print}, path)  # a function: refused by weights_only


@pytest.mark.parametrize("damage", [write_random_bytes, write_empty_file, write_truncated_checkpoint,
                                    write_foreign_state_dict, write_code_running_pickle])
def test_a_file_that_is_not_our_checkpoint_gives_one_clear_error_naming_it(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    damage(path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "python train.py" in message and "\n" not in message


def test_an_interrupted_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    original = saved_model(path)

    def interrupt(file_descriptor):  # Ctrl-C with the new bytes written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, DenoisingAutoencoder(8), DenoisingAutoencoder(8).state_dict())
    monkeypatch.undo()

    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.encoder.layers[1].weight, original.encoder.layers[1].weight)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_a_run_still_training_is_passed_over_and_one_that_died_is_not(tmp_path):
    model = DenoisingAutoencoder()
    runs_written = [("2026-01-01_10-00-00", "reached --epochs 200", 1_000), ("2026-01-01_11-00-00", "running", 2_000)]
    for name, stop_reason, written_at in runs_written:
        (tmp_path / name).mkdir()
        save_checkpoint(tmp_path / name / "checkpoint.pt", model, model.state_dict(), stop_reason=stop_reason)
        os.utime(tmp_path / name / "checkpoint.pt", (written_at, written_at))  # the running one is the newer
    newer = tmp_path / "2026-01-01_11-00-00"
    assert newest_run(tmp_path) == (newer, [])  # no process holds it: it died, and its weights are used
    lock = runs.lock_run_dir(newer)
    try:
        assert newest_run(tmp_path) == (tmp_path / "2026-01-01_10-00-00", [(newer, str(os.getpid()))])
    finally:
        os.close(lock)
    assert runs.training_pid(newer) is None  # the lock goes with the file descriptor
