"""The model's exact shape, and the checkpoint format: round trips, atomic writes, damaged files."""

import pytest
import torch
from torch import nn

import dae
from dae import CheckpointError, DenoisingAutoencoder, load_checkpoint, save_checkpoint


def layer_summary(sequential: nn.Sequential) -> list:
    return [(type(layer).__name__, getattr(layer, "in_features", None), getattr(layer, "out_features", None))
            for layer in sequential]


def test_layers_are_exactly_the_published_ones():
    model = DenoisingAutoencoder(latent_dim=8)
    assert layer_summary(model.encoder.layers) == [
        ("Flatten", None, None),
        ("Linear", 784, 128), ("LeakyReLU", None, None),
        ("Linear", 128, 64), ("LeakyReLU", None, None),
        ("Linear", 64, 8),
    ]
    assert layer_summary(model.decoder.layers) == [
        ("Linear", 8, 64), ("LeakyReLU", None, None),
        ("Linear", 64, 128), ("LeakyReLU", None, None),
        ("Linear", 128, 784), ("Sigmoid", None, None),
    ]


def test_parameter_count_matches_a_hand_count():
    # weights + biases: 784*128+128 + 128*64+64 + 64*8+8 (encoder), 8*64+64 + 64*128+128 + 128*784+784 (decoder)
    assert sum(p.numel() for p in DenoisingAutoencoder(8).parameters()) == 219_288


def test_shapes_through_encode_decode_and_forward():
    model = DenoisingAutoencoder(latent_dim=3)
    x = torch.rand(5, 1, 28, 28)
    assert model.encode(x).shape == (5, 3)
    assert model.decode(torch.randn(5, 3)).shape == (5, 1, 28, 28)
    y = model(x)
    assert y.shape == (5, 1, 28, 28)
    assert 0 <= y.min() and y.max() <= 1  # the sigmoid keeps pixels in [0, 1]
    assert torch.equal(y, model.decode(model.encode(x)))


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

    def save_half_then_die(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(dae.torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, DenoisingAutoencoder(8), DenoisingAutoencoder(8).state_dict())
    monkeypatch.undo()

    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.encoder.layers[1].weight, original.encoder.layers[1].weight)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind
