"""The figures: written, valid, and drawing what they promise."""

import matplotlib
import matplotlib.pyplot
import pytest
import torch
from matplotlib.collections import PathCollection

import evaluate
import visualize
from baselines import PrincipalComponents
from conftest import ROOT, tiny_train_args
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


@pytest.mark.parametrize("latent_dim", [4, 2, 1])
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


def test_silent_dimensions_are_greyed_and_named_in_the_corner_plot():
    """A VAE's dimensions with (almost) no KL: scaled to their own range, they would look alive."""
    codes = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_pairs(codes, torch.arange(300) % 10, silent=[2])
    for axis in figure.axes:
        row, column = grid_place(axis)
        grey = matplotlib.colors.to_hex(axis.get_facecolor()) == "#dddddd"
        assert grey == (2 in (row, column)), (row, column)
    labels = [axis.get_xlabel() for axis in figure.axes if axis.get_xlabel()]
    assert labels == ["z0", "z1", "z2 (silent)", "z3"]
    assert "grey: silent dimensions" in " ".join(text.get_text() for text in figure.texts)


@pytest.mark.parametrize("latent_dim", [8, 2])
def test_the_legend_is_whole_and_inside_the_figure(latent_dim):
    codes = torch.randn(300, latent_dim, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_pairs(codes, torch.arange(300) % 10)
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent()
    assert legend.x0 >= 0 and legend.y0 >= 0 and legend.x1 <= figure.bbox.width and legend.y1 <= figure.bbox.height
    for axis in figure.axes:  # and it covers no panel
        assert not legend.overlaps(axis.get_window_extent())


def cell(picture: torch.Tensor, row: int, column: int, gap: int) -> torch.Tensor:
    """The 28 x 28 image at (row, column) of a picture tiled with `gap` pixels around each image."""
    top, left = gap + row * (28 + gap), gap + column * (28 + gap)
    return picture[top : top + 28, left : left + 28]


@torch.no_grad()
def test_traversals_move_one_number_per_row_and_draw_what_the_decoder_draws():
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim=3).eval()  # as a checkpoint loads it (a BatchNorm fork's too)
    codes = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    figure = visualize.plot_latent_traversals(model, codes)
    axis = figure.axes[0]
    picture = torch.tensor(axis.get_images()[0].get_array().data)
    assert [label.get_text() for label in axis.get_yticklabels()] == ["z0", "z1", "z2"]
    assert picture.shape == (10 + 3 * 38, 10 + visualize.TRAVERSAL_STEPS * 38)  # 28-pixel images, 10 apart
    typical = codes[(codes - codes.median(dim=0).values).norm(dim=1).argmin()]
    for row in range(3):
        last = typical.clone()
        last[row] = torch.quantile(codes[:, row], 0.98)  # the last column: z_row at its 98th percentile
        expected = model.decode(last.unsqueeze(0))[0, 0]
        assert torch.allclose(cell(picture, row, visualize.TRAVERSAL_STEPS - 1, 10), expected, atol=1e-6)
        assert not torch.equal(cell(picture, row, 0, 10), cell(picture, row, visualize.TRAVERSAL_STEPS - 1, 10))


def test_noise_level_curves_mark_the_training_noise():
    errors = {"denoising autoencoder": [0.06, 0.07, 0.08], "noisy input, as is": [0.0, 0.08, 0.16]}
    figure = visualize.plot_noise_levels([0.0, 0.1, 0.2], errors, training_std=0.1)
    axis = figure.axes[0]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == list(errors)
    assert [list(line.get_xdata()) for line in axis.lines if line.get_linestyle() == "--"] == [[0.1, 0.1]]


def test_reconstructions_show_each_classes_first_image_in_a_row_per_method():
    images = torch.rand(30, 1, 28, 28) * 1.4 - 0.2  # noisy pixels leave [0, 1]
    rows = {"clean": images, "noisy": images.flip(0), "PCA": images, "DAE": images.flip(0)}
    labels = torch.arange(30).flip(0) % 10  # the first image of class 0 is image 9, not image 0
    figure = visualize.plot_reconstructions(rows, labels)
    axis = figure.axes[0]
    picture = torch.tensor(axis.get_images()[0].get_array().data)
    firsts = [(labels == label).nonzero()[0].item() for label in range(10)]  # named by their index: #9 ...
    assert [label.get_text() for label in axis.get_xticklabels()] == [
        f"{name}\n#{first}" for name, first in zip(visualize.CLASS_NAMES, firsts)]
    assert [label.get_text() for label in axis.get_yticklabels()] == list(rows)
    assert axis.get_images()[0].get_clim() == (0, 1)
    for row, shown in enumerate(rows.values()):
        for label in range(10):
            first = (labels == label).nonzero()[0].item()
            assert torch.allclose(cell(picture, row, label, 2), shown[first, 0].clamp(0, 1)), (row, label)


def test_loss_curves_mark_the_best_epoch_and_the_early_stop():
    history = {"train_loss": [0.5, 0.3, 0.2, 0.25], "val_loss": [0.4, 0.3, 0.1, 0.2]}
    figure = visualize.plot_loss_curves(history, stopped_early=True)  # the best epoch found from the history
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["training: L1 loss", "validation: L1 loss", "best: epoch 3, 0.1000", "early stopping, epoch 4"]
    assert len(visualize.plot_loss_curves(history, best_epoch=3).axes[0].get_legend().get_texts()) == 3


def test_each_curve_says_what_it_measures_and_a_forks_other_terms_get_panels_of_their_own():
    history = {"train_loss": [0.5, 0.3], "val_loss": [0.4, 0.3], "epoch_seconds": [1.0, 1.0],
               "train_reconstruction": [0.45, 0.28], "train_kl": [3.0, 8.0]}
    figure = visualize.plot_loss_curves(history, objective="beta-weighted negative ELBO (beta 4), nats per pixel",
                                        validation="negative ELBO (beta 1), nats per pixel")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["training: beta-weighted negative ELBO (beta 4), nats per pixel",
                          "validation: negative ELBO (beta 1), nats per pixel"]
    assert [axis.get_ylabel() for axis in figure.axes] == ["loss (log scale)", "training reconstruction",
                                                           "training kl"]
    assert list(figure.axes[2].lines[0].get_ydata()) == [3.0, 8.0]  # in its own units, not on the loss's axis
    figure.canvas.draw()
    for axis in figure.axes:  # every label whole, inside the figure
        box = axis.yaxis.label.get_window_extent()
        assert box.x0 >= 0 and box.y0 >= 0 and box.y1 <= figure.bbox.height


def test_short_runs_have_whole_epochs_on_the_loss_axis():
    history = {"train_loss": [0.5, 0.3, 0.2], "val_loss": [0.4, 0.3, 0.25]}
    figure = visualize.plot_loss_curves(history)
    ticks = figure.axes[0].get_xticks()
    assert all(tick == int(tick) for tick in ticks)


def test_the_dae_samples_from_the_gaussian_fitted_to_its_codes():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(4000, 3, generator=generator) @ torch.tensor([[2.0, 0, 0], [1.0, 0.5, 0], [0, -1.0, 0.3]]) + 5
    mean, covariance, source = evaluate.sampling_distribution(DenoisingAutoencoder(3), codes)
    centred = codes - codes.sum(dim=0) / len(codes)  # by hand: the mean, and the unbiased covariance
    assert torch.allclose(mean, codes.sum(dim=0) / len(codes), atol=1e-5)
    assert torch.allclose(covariance, centred.T @ centred / (len(codes) - 1), atol=1e-4)
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
    model = DenoisingAutoencoder(latent_dim=3).eval()
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
    model = DenoisingAutoencoder(latent_dim=2).eval()
    codes = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 1.0])
    figure = visualize.plot_latent_grid(model, codes, torch.arange(300) % 10, steps=4)
    decoded = figure.axes[0].get_images()[0]
    x_low, x_high, y_low, y_high = decoded.get_extent()
    # 99% of the codes, and a margin of 5% of that each side. The 0.5th and 99.5th percentiles of 300
    # codes lie 1.495 and 297.505 places into their sorted order (0.005 and 0.995 of the way from 0 to 299).
    for dimension, (low, high) in enumerate([(x_low, x_high), (y_low, y_high)]):
        ordered = codes[:, dimension].sort().values.tolist()
        first = ordered[1] + 0.495 * (ordered[2] - ordered[1])
        last = ordered[297] + 0.505 * (ordered[298] - ordered[297])
        assert (low, high) == pytest.approx((first - 0.05 * (last - first), last + 0.05 * (last - first)), rel=1e-5)
    # The top-left cell shows the image of the code at that cell's centre: low z0, high z1.
    centre = torch.tensor([[x_low + (x_high - x_low) / 8, y_high - (y_high - y_low) / 8]])
    with torch.no_grad():
        expected = model.decode(centre)[0, 0]
    assert torch.allclose(torch.tensor(decoded.get_array().data[:28, :28]), expected, atol=1e-6)
    assert figure.axes[1].get_xlim() == (x_low, x_high) and figure.axes[1].get_ylim() == (y_low, y_high)


def test_visualize_writes_every_png_with_no_display(scripts, tiny_data_dir, tmp_path):
    """As a user would run it: a process of its own, from another directory, with no display."""
    import train

    run_dir = tmp_path / "run"  # a code of 1 number: every figure, drawn fast
    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "1", "--latent-dim", "1"))
    script = scripts.start("visualize.py", "--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir),
                           cwd=tmp_path)
    assert script.wait() == 0 and script.stderr() == ""  # no warning either
    output = script.stdout()
    for name in ("reconstructions.png", "latent_pairs.png", "latent_traversals.png", "samples.png",
                 "interpolations.png", "noise_levels.png", "loss_curves.png"):
        assert f"wrote {run_dir / name}" in output
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE)
        assert matplotlib.image.imread(run_dir / name).ndim == 3  # decodes as an image
    # explorer.py's page, or the one line of a fork's model it cannot run (test_explorer.py checks the published one's)
    page = f"wrote {run_dir / 'explorer.html'}: open it in a browser" in output
    assert page or "no explorer page: " in output
    assert output.count("wrote") == 7 + page and not (run_dir / "latent_grid.png").exists()  # the grid: 2-D only


def test_a_missing_run_gives_the_same_advice_as_evaluate(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--run-dir", str(tmp_path)])
    expected = f"error: no checkpoint at {tmp_path / 'checkpoint.pt'}: run `python train.py` first, or pass --run-dir"
    assert exit_info.value.code == expected


def test_the_figures_an_assignment_needs_run_pasted_alone():
    """README: plot_reconstructions, plot_latent_pairs, plot_latent_grid and plot_loss_curves each work pasted
    below its imports, with data.py's CLASS_NAMES (a piece of the one file) and nothing of visualize.py."""
    import ast
    import builtins

    from test_train import definitions, readme_block

    source = (ROOT / "visualize.py").read_text()
    names = ["plot_reconstructions", "plot_latent_pairs", "plot_latent_grid", "plot_loss_curves"]
    cell = "\n\n".join([readme_block("## Hand in one file"), *definitions("data.py", ["CLASS_NAMES"]),
                        *definitions("visualize.py", names)])
    assert {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)} >= set(names)
    namespace = {"__builtins__": builtins}
    exec(compile(cell, "notebook-cell", "exec"), namespace)  # no import of visualize.py, no constant of it
    images, labels = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
    torch.manual_seed(0)
    figures = [namespace["plot_reconstructions"]({"clean": images, "noisy": images}, labels),
               namespace["plot_latent_pairs"](torch.randn(30, 3), labels),
               namespace["plot_latent_grid"](DenoisingAutoencoder(2), torch.randn(30, 2), labels, steps=3),
               namespace["plot_loss_curves"]({"train_loss": [0.3, 0.2], "val_loss": [0.25, 0.22]})]
    for figure in figures:
        figure.canvas.draw()  # drawn whole, as savefig would
