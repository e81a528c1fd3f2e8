"""The model's exact shape, and what a checkpoint holds (tests/test_runs.py reads and writes the files)."""

import ast

import pytest
import torch
from torch import nn

import dae
from conftest import ROOT
from dae import CheckpointError, DenoisingAutoencoder, checkpoint_contents, model_from_checkpoint


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


def test_checkpoint_contents_rebuild_an_equal_model_of_the_same_size():
    torch.manual_seed(0)
    original = DenoisingAutoencoder(latent_dim=3)
    contents = checkpoint_contents(original, original.state_dict(), best_epoch=2)
    assert contents["format"] == dae.CHECKPOINT_FORMAT and contents["best_epoch"] == 2
    rebuilt = model_from_checkpoint(contents, "c.pt")
    assert rebuilt.latent_dim == 3 and not rebuilt.training  # returned in eval mode
    for (name, a), (_, b) in zip(original.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("contents, complaint", [
    ({"weights": 1}, "is not a checkpoint of this project"),
    ({"format": "fashion-mnist-gan/1"}, "holds a 'fashion-mnist-gan/1' model, and this code reads"),
    ({"format": dae.CHECKPOINT_FORMAT, "model_args": {"latent_dim": 8}, "model_state": {}},
     "has a model description and weights that do not fit together"),
    ({"format": dae.CHECKPOINT_FORMAT}, "has a model description and weights that do not fit together"),
])
def test_a_checkpoint_of_another_kind_is_refused_by_name(contents, complaint):
    with pytest.raises(CheckpointError, match=complaint) as error:
        model_from_checkpoint(contents, "runs/x/checkpoint.pt")
    assert str(error.value).startswith("runs/x/checkpoint.pt ") and "python train.py" in str(error.value)


@pytest.mark.parametrize("name", ["dae.py", "data.py", "baselines.py"])
def test_the_files_readme_says_can_be_copied_alone_import_no_other_file_of_the_project(name):
    """README tells a student that these files work copied alone into a notebook or coursework."""
    project = {path.stem for path in ROOT.glob("*.py")}
    tree = ast.parse((ROOT / name).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & project, f"{name} imports {imported & project}: it can no longer be copied alone"
