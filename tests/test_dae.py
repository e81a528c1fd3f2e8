"""The model's exact shape (tests/test_runs.py saves and loads it).

The tests named `..._published_...` pin the published recipe's layers: a fork that changes the
architecture changes them on purpose (docs/vae.md lists them); every other test here holds for any model.
"""

import ast

import pytest
import torch
from torch import nn

from conftest import ROOT
from dae import DenoisingAutoencoder


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


@pytest.mark.parametrize("name", ["dae.py", "data.py", "baselines.py"])
def test_the_files_readme_says_can_be_copied_alone_import_no_other_file_of_the_project(name):
    """README tells a student that these files work copied alone into a notebook or coursework."""
    project = {path.stem for path in ROOT.glob("*.py")}
    tree = ast.parse((ROOT / name).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & project, f"{name} imports {imported & project}: it can no longer be copied alone"
