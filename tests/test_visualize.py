"""The figures: written, valid, and drawing what they promise."""

import subprocess
import sys

import matplotlib
import matplotlib.pyplot
import pytest
import torch
from matplotlib.collections import PathCollection

import visualize
from conftest import ROOT
from dae import DenoisingAutoencoder

matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    matplotlib.pyplot.close("all")


def scatter_panels(figure) -> int:
    return sum(any(isinstance(child, PathCollection) for child in axis.get_children()) for axis in figure.axes)


def grid_place(axis) -> tuple[int, int]:
    spec = axis.get_subplotspec()
    return spec.rowspan.start, spec.colspan.start


@pytest.mark.parametrize("latent_dim", [8, 3, 2, 1])
def test_latent_corner_plot_has_each_pair_below_the_diagonal_and_distributions_on_it(latent_dim):
    codes = torch.randn(300, latent_dim, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_pairs(codes, torch.arange(300) % 10)
    scatter = [axis for axis in figure.axes if any(isinstance(c, PathCollection) for c in axis.get_children())]
    diagonal = [axis for axis in figure.axes if axis not in scatter]
    assert len(scatter) == latent_dim * (latent_dim - 1) // 2
    assert len(diagonal) == latent_dim and all(row == column for row, column in map(grid_place, diagonal))
    assert all(len(axis.patches) == 10 for axis in diagonal)  # one distribution per class
    for axis in scatter:
        row, column = grid_place(axis)
        assert column < row  # the panel for (z_i, z_j), i < j, sits at row j, column i
        # It draws z_column across and z_row up, in the same ranges as its column's and its row's diagonal.
        points = axis.collections[0].get_offsets()
        assert torch.allclose(torch.tensor(points.data[:, 0]).float(), codes[:, column])
        assert torch.allclose(torch.tensor(points.data[:, 1]).float(), codes[:, row])
        assert axis.get_xlim() == diagonal[column].get_xlim() and axis.get_ylim() == diagonal[row].get_xlim()
    assert [text.get_text() for text in figure.legends[0].get_texts()] == list(visualize.CLASS_NAMES)


@pytest.mark.parametrize("latent_dim", [8, 2])
def test_the_legend_is_whole_and_inside_the_figure(latent_dim):
    codes = torch.randn(300, latent_dim, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_pairs(codes, torch.arange(300) % 10)
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent()
    assert legend.x0 >= 0 and legend.y0 >= 0 and legend.x1 <= figure.bbox.width and legend.y1 <= figure.bbox.height
    for axis in figure.axes:  # and it covers no panel
        assert not legend.overlaps(axis.get_window_extent())


def test_traversals_have_one_row_per_dimension_and_change_along_it():
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim=3)
    codes = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_traversals(model, codes)
    rows = {}
    for axis in figure.axes:
        row, column = grid_place(axis)
        rows.setdefault(row, []).append(torch.tensor(axis.get_images()[0].get_array().data))
    assert sorted(rows) == [0, 1, 2] and all(len(images) == visualize.TRAVERSAL_STEPS for images in rows.values())
    for images in rows.values():
        assert not torch.equal(images[0], images[-1])


def test_noise_level_curves_mark_the_training_noise():
    errors = {"denoising autoencoder": [0.06, 0.07, 0.08], "noisy input, as is": [0.0, 0.08, 0.16]}
    figure = visualize.plot_noise_levels([0.0, 0.1, 0.2], errors, training_std=0.1)
    axis = figure.axes[0]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == list(errors)
    assert [list(line.get_xdata()) for line in axis.lines if line.get_linestyle() == "--"] == [[0.1, 0.1]]


def test_reconstructions_show_one_image_per_class_in_a_row_per_method():
    images = torch.rand(30, 1, 28, 28)
    rows = {"clean": images, "noisy": images, "PCA": images, "DAE": images}
    figure = visualize.plot_reconstructions(rows, torch.arange(30) % 10)
    assert len(figure.axes) == 40
    assert [axis.get_title() for axis in figure.axes[:10]] == list(visualize.CLASS_NAMES)
    assert [figure.axes[10 * row].get_ylabel() for row in range(4)] == list(rows)
    assert all(axis.get_images()[0].get_clim() == (0, 1) for axis in figure.axes)


def test_loss_curves_mark_the_best_epoch_and_the_early_stop():
    history = {"train_loss": [0.5, 0.3, 0.2, 0.25], "val_loss": [0.4, 0.3, 0.1, 0.2]}
    figure = visualize.plot_loss_curves(history, best_epoch=3, stop_reason="early stopping: ...")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["training loss", "validation loss", "best: epoch 3, 0.1000", "early stopping, epoch 4"]
    no_stop = visualize.plot_loss_curves(history, best_epoch=3, stop_reason="reached --epochs 4")
    assert len(no_stop.axes[0].get_legend().get_texts()) == 3


def test_short_runs_have_whole_epochs_on_the_loss_axis():
    history = {"train_loss": [0.5, 0.3, 0.2], "val_loss": [0.4, 0.3, 0.25]}
    figure = visualize.plot_loss_curves(history, best_epoch=3, stop_reason="reached --epochs 3")
    ticks = figure.axes[0].get_xticks()
    assert all(tick == int(tick) for tick in ticks)


def test_visualize_writes_every_png_with_no_display(tiny_run, tmp_path):
    """As a user would run it: from another directory, with no display."""
    run_dir = tiny_run / "run"
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": ""}  # no DISPLAY
    result = subprocess.run(
        [sys.executable, str(ROOT / "visualize.py"), "--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")],
        cwd=tmp_path, capture_output=True, text=True, env=environment,
    )
    assert result.returncode == 0, result.stderr
    for name in ("reconstructions.png", "latent_pairs.png", "latent_traversals.png", "noise_levels.png",
                 "loss_curves.png"):
        assert f"wrote {run_dir / name}" in result.stdout
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE)
        assert matplotlib.image.imread(run_dir / name).ndim == 3  # decodes as an image


def test_a_missing_run_gives_the_same_advice_as_evaluate(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--run-dir", str(tmp_path)])
    expected = f"error: no checkpoint at {tmp_path / 'checkpoint.pt'}: run `python train.py` first, or pass --run-dir"
    assert exit_info.value.code == expected
