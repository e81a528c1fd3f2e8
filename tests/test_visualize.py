"""The figures: written, valid, and drawing what they promise."""

import subprocess
import sys

import matplotlib
import pytest
import torch
from matplotlib.collections import PathCollection

import visualize
from conftest import ROOT

matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def scatter_panels(figure) -> int:
    return sum(any(isinstance(child, PathCollection) for child in axis.get_children()) for axis in figure.axes)


@pytest.mark.parametrize("latent_dim, panels", [(8, 28), (3, 3), (2, 1)])
def test_latent_figure_has_one_panel_per_pair_of_dimensions(latent_dim, panels):
    codes = torch.randn(200, latent_dim, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_pairs(codes, torch.arange(200) % 10)
    assert scatter_panels(figure) == panels == len(figure.axes)
    labels = {(axis.get_xlabel(), axis.get_ylabel()) for axis in figure.axes}
    assert ("z0", "z1") in labels and (f"z{latent_dim - 2}", f"z{latent_dim - 1}") in labels
    assert [text.get_text() for text in figure.legends[0].get_texts()] == list(visualize.CLASS_NAMES)


def test_a_one_dimensional_latent_space_has_no_pairs():
    assert visualize.plot_latent_pairs(torch.randn(10, 1), torch.arange(10)) is None


def test_reconstructions_show_one_image_per_class_in_three_rows():
    images = torch.rand(30, 1, 28, 28)
    figure = visualize.plot_reconstructions(images, images, images, torch.arange(30) % 10)
    assert len(figure.axes) == 30
    assert [axis.get_title() for axis in figure.axes[:10]] == list(visualize.CLASS_NAMES)
    assert all(axis.get_images()[0].get_clim() == (0, 1) for axis in figure.axes)


def test_loss_curves_mark_the_best_epoch_and_the_early_stop():
    history = {"train_loss": [0.5, 0.3, 0.2, 0.25], "val_loss": [0.4, 0.3, 0.1, 0.2]}
    figure = visualize.plot_loss_curves(history, best_epoch=3, stop_reason="early stopping: ...")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["training loss", "validation loss", "best: epoch 3, 0.1000", "early stopping, epoch 4"]
    no_stop = visualize.plot_loss_curves(history, best_epoch=3, stop_reason="reached --epochs 4")
    assert len(no_stop.axes[0].get_legend().get_texts()) == 3


def test_visualize_writes_three_pngs_with_no_display(tiny_run, tmp_path):
    """As a user would run it: from another directory, with no display."""
    run_dir = tiny_run / "run"
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": ""}  # no DISPLAY
    result = subprocess.run(
        [sys.executable, str(ROOT / "visualize.py"), "--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")],
        cwd=tmp_path, capture_output=True, text=True, env=environment,
    )
    assert result.returncode == 0, result.stderr
    for name in ("reconstructions.png", "latent_pairs.png", "loss_curves.png"):
        assert f"wrote {run_dir / name}" in result.stdout
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE)
        assert matplotlib.image.imread(run_dir / name).ndim == 3  # decodes as an image


def test_a_missing_run_gives_the_same_advice_as_evaluate(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--run-dir", str(tmp_path)])
    expected = f"error: no checkpoint at {tmp_path / 'checkpoint.pt'}: run `python train.py` first, or pass --run-dir"
    assert exit_info.value.code == expected
