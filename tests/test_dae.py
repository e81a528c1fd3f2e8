"""The model's exact shape, and what a checkpoint holds (tests/test_runs.py reads and writes the files).

The tests named `..._published_...` pin the published recipe's layers: a fork that changes the
architecture changes them on purpose (docs/vae.md lists them); every other test here holds for any model.
"""

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


def test_the_published_recipe_layers_exactly():
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


def test_the_published_recipe_parameter_count_by_hand():
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
    ({"format": "fashion-mnist-gan/1"},
     f"holds a 'fashion-mnist-gan/1' model: this code reads '{dae.CHECKPOINT_FORMAT}'"),
    ({"format": dae.CHECKPOINT_FORMAT}, "holds no model (no model_args or no model_state)"),
    ({"format": dae.CHECKPOINT_FORMAT, "model_args": {"latent_dim": "eight"}, "model_state": {}},
     "describes a model this code cannot build from model_args {'latent_dim': 'eight'} ("),
    ({"format": dae.CHECKPOINT_FORMAT, "model_args": {"latent_dim": 8}, "model_state": {}},
     "holds a model of other layers than this code's (it has nothing more where this code has "
     f"{dae.shapes(DenoisingAutoencoder(8).state_dict())[0]})"),  # encoder.layers.1.weight: (128, 784)
])
def test_a_checkpoint_of_another_kind_is_refused_by_name(contents, complaint):
    with pytest.raises(CheckpointError) as error:
        model_from_checkpoint(contents, "runs/x/checkpoint.pt")
    assert str(error.value).startswith("runs/x/checkpoint.pt ") and complaint in str(error.value)
    assert "train.py" in str(error.value) and "\n" not in str(error.value)


def test_a_checkpoint_names_the_layer_where_its_model_and_this_code_differ():
    fork = DenoisingAutoencoder()
    fork.decoder.layers[0] = nn.Linear(fork.latent_dim, 32)  # a fork's model: another first layer of the decoder
    contents = checkpoint_contents(fork, fork.state_dict())
    ours = dae.architecture(DenoisingAutoencoder())
    where = [line.split(":")[0] for line in ours].index("decoder.layers.0")
    assert contents["architecture"][where] == "decoder.layers.0: Linear(in_features=8, out_features=32, bias=True)"
    with pytest.raises(CheckpointError) as error:
        model_from_checkpoint(contents, "c.pt")
    assert str(error.value) == (
        f"c.pt holds a model of other layers than this code's (it has decoder.layers.0: Linear(in_features=8, "
        f"out_features=32, bias=True) where this code has {ours[where]}): use it with the code that trained it, or "
        f"train one with `python train.py`")


def test_a_checkpoint_that_claims_a_huge_model_is_refused_before_anything_is_allocated():
    small = DenoisingAutoencoder(8)
    contents = {**checkpoint_contents(small, small.state_dict()), "model_args": {"latent_dim": 10**12}}
    del contents["architecture"]  # only the weights can tell: and they are far smaller than it claims
    with pytest.raises(CheckpointError, match=r"\(it has (\S+): \(\d+, \d+\) where this code has \1: \(\d{13,}, \d+\)"):
        model_from_checkpoint(contents, "c.pt")  # 256 TB of weights, were it built for real


@pytest.mark.parametrize("name", ["dae.py", "data.py", "baselines.py"])
def test_the_files_readme_says_can_be_copied_alone_import_no_other_file_of_the_project(name):
    """README tells a student that these files work copied alone into a notebook or coursework."""
    project = {path.stem for path in ROOT.glob("*.py")}
    tree = ast.parse((ROOT / name).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & project, f"{name} imports {imported & project}: it can no longer be copied alone"
