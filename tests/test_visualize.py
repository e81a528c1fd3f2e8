"""The figures: written, valid, and drawing what they promise."""

import subprocess
import sys

import matplotlib
import matplotlib.pyplot
import pytest
import torch
from matplotlib.collections import PathCollection

import visualize
from baselines import PrincipalComponents
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


def test_other_terms_of_a_forks_objective_get_panels_of_their_own():
    history = {"train_loss": [0.5, 0.3], "val_loss": [0.4, 0.3], "epoch_seconds": [1.0, 1.0],
               "train_reconstruction": [0.45, 0.28], "train_kl": [3.0, 8.0]}
    figure = visualize.plot_loss_curves(history, best_epoch=2, stop_reason="reached --epochs 2",
                                        objective="loss per pixel: L1, + KL / 784 in training")
    assert [axis.get_ylabel() for axis in figure.axes] == [
        "loss per pixel: L1, + KL / 784 in training", "training reconstruction", "training kl"]
    assert list(figure.axes[2].lines[0].get_ydata()) == [3.0, 8.0]  # in its own units, not on the loss's axis
    # A checkpoint that does not record its objective is from before it was recorded: the DAE's.
    assert visualize.plot_loss_curves(history, 2, "x").axes[0].get_ylabel() == "L1 loss (mean absolute error)"


def test_short_runs_have_whole_epochs_on_the_loss_axis():
    history = {"train_loss": [0.5, 0.3, 0.2], "val_loss": [0.4, 0.3, 0.25]}
    figure = visualize.plot_loss_curves(history, best_epoch=3, stop_reason="reached --epochs 3")
    ticks = figure.axes[0].get_xticks()
    assert all(tick == int(tick) for tick in ticks)


def test_the_dae_samples_from_the_gaussian_fitted_to_its_codes():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(4000, 3, generator=generator) @ torch.tensor([[2.0, 0, 0], [1.0, 0.5, 0], [0, -1.0, 0.3]]) + 5
    mean, covariance, source = DenoisingAutoencoder(3).sampling_distribution(codes)
    assert torch.allclose(mean, codes.mean(dim=0)) and torch.allclose(covariance, torch.cov(codes.T), atol=1e-4)
    assert "fitted to the training codes" in source


def test_samples_are_seeded_and_follow_the_gaussian_they_are_given():
    mean = torch.tensor([5.0, -1.0, 0.5])
    covariance = torch.tensor([[4.0, 2.0, 0.0], [2.0, 1.25, -0.5], [0.0, -0.5, 1.09]])

    def draw(seed, count=20_000):
        return visualize.sample_codes(mean, covariance, count, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0, 36), draw(0, 36)) and not torch.equal(draw(0, 36), draw(1, 36))
    many = draw(0)  # their sample mean and covariance come back to the given ones, within sampling error
    assert torch.allclose(many.mean(dim=0), mean, atol=0.05)
    assert torch.allclose(torch.cov(many.T), covariance, atol=0.1)


def test_samples_work_when_a_code_dimension_never_varies():
    mean, covariance = torch.tensor([0.0, 2.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # no Cholesky factor
    samples = visualize.sample_codes(mean, covariance, 50, torch.Generator().manual_seed(0))
    assert samples.shape == (50, 2) and torch.allclose(samples[:, 1], torch.full((50,), 2.0), atol=1e-4)


def test_an_interpolation_runs_between_each_methods_reconstructions_through_the_mid_point():
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim=3)
    images = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pca = PrincipalComponents.fit(images).first(3)
    first, second = images[0], images[1]
    rows = visualize.interpolation_rows(model, pca, first, second, steps=9)
    coded = f"{DenoisingAutoencoder.short_name}, 3 numbers"
    assert list(rows) == ["pixel fade", "PCA, 3 numbers", coded]
    assert all(images.shape == (9, 1, 28, 28) for images in rows.values())
    pair = torch.stack([first, second])
    with torch.no_grad():
        for name, coder in (("PCA, 3 numbers", pca), (coded, model)):
            codes = coder.encode(pair)
            assert torch.allclose(rows[name][[0, -1]], coder.decode(codes), atol=1e-6)  # each end: a reconstruction
            assert torch.allclose(rows[name][4], coder.decode(codes.mean(dim=0, keepdim=True))[0], atol=1e-6)
    assert torch.equal(rows["pixel fade"][0], first) and torch.allclose(rows["pixel fade"][4], (first + second) / 2)


def test_the_latent_grid_decodes_the_code_under_each_cell():
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim=2)
    codes = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 1.0])
    figure = visualize.plot_latent_grid(model, codes, torch.arange(300) % 10, steps=4)
    decoded = figure.axes[0].get_images()[0]
    x_low, x_high, y_low, y_high = decoded.get_extent()
    assert (x_low, x_high, y_low, y_high) == tuple(visualize.code_ranges(codes).flatten().tolist())
    # The top-left cell shows the image of the code at that cell's centre: low z0, high z1.
    centre = torch.tensor([[x_low + (x_high - x_low) / 8, y_high - (y_high - y_low) / 8]])
    with torch.no_grad():
        expected = model.decode(centre)[0, 0]
    assert torch.allclose(torch.tensor(decoded.get_array().data[:28, :28]), expected, atol=1e-6)
    assert figure.axes[1].get_xlim() == (x_low, x_high) and figure.axes[1].get_ylim() == (y_low, y_high)


def test_visualize_writes_every_png_with_no_display(tiny_run, tmp_path):
    """As a user would run it: from another directory, with no display."""
    run_dir = tiny_run / "run"
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": ""}  # no DISPLAY
    result = subprocess.run(
        [sys.executable, str(ROOT / "visualize.py"), "--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")],
        cwd=tmp_path, capture_output=True, text=True, env=environment,
    )
    assert result.returncode == 0, result.stderr
    for name in ("reconstructions.png", "latent_pairs.png", "latent_traversals.png", "samples.png",
                 "interpolations.png", "noise_levels.png", "loss_curves.png"):
        assert f"wrote {run_dir / name}" in result.stdout
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE)
        assert matplotlib.image.imread(run_dir / name).ndim == 3  # decodes as an image
    assert f"wrote {run_dir / 'explorer.html'}: open it in a browser" in result.stdout  # explorer.py's page
    assert result.stdout.count("wrote") == 8 and not (run_dir / "latent_grid.png").exists()  # the grid: 2-D codes only


def test_a_missing_run_gives_the_same_advice_as_evaluate(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--run-dir", str(tmp_path)])
    expected = f"error: no checkpoint at {tmp_path / 'checkpoint.pt'}: run `python train.py` first, or pass --run-dir"
    assert exit_info.value.code == expected
