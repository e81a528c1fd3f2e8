"""The denoisers that learn nothing, and PCA, against cases whose answer is known."""

import math

import pytest
import torch
import torchvision

from baselines import PrincipalComponents, components_to_match, gaussian_blur, mean_absolute_error


def images_in_a_subspace(count: int, dimensions: int, seed: int = 0) -> torch.Tensor:
    """Images (count, 1, 28, 28) that are a mean image plus a mix of `dimensions` fixed directions, all in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.linalg.qr(torch.randn(784, dimensions, generator=generator)).Q.T  # (dimensions, 784) orthonormal
    spread = torch.linspace(2, 1, dimensions)  # a distinct variance per direction, so their order is defined
    weights = torch.randn(count, dimensions, generator=generator) * spread
    pixels = 0.5 + 0.05 * weights @ directions  # a pixel moves by well under 0.5: no clipping
    assert 0 < pixels.min() and pixels.max() < 1
    return pixels.view(count, 1, 28, 28)


@pytest.mark.parametrize("dimensions", [1, 3, 8])
def test_pca_reconstructs_a_k_dimensional_subspace_with_k_components_and_not_k_minus_1(dimensions):
    images = images_in_a_subspace(500, dimensions)
    analysis = PrincipalComponents.fit(images)
    exact = analysis.first(dimensions)
    assert torch.allclose(exact.decode(exact.encode(images)), images, atol=1e-5)
    short = analysis.first(dimensions - 1)
    assert mean_absolute_error(short.decode(short.encode(images)), images) > 1e-3


def test_pca_components_are_orthonormal_and_sorted_by_variance():
    images = images_in_a_subspace(500, 4)
    analysis = PrincipalComponents.fit(images).first(4)
    assert torch.allclose(analysis.components @ analysis.components.T, torch.eye(4), atol=1e-5)
    variances = analysis.encode(images).var(dim=0)
    assert variances.tolist() == sorted(variances.tolist(), reverse=True)


def test_pca_output_is_clipped_to_the_range_of_clean_pixels():
    analysis = PrincipalComponents.fit(images_in_a_subspace(100, 2)).first(2)
    far_codes = torch.tensor([[100.0, -100.0]])
    image = analysis.decode(far_codes)
    assert image.shape == (1, 1, 28, 28) and image.min() >= 0 and image.max() <= 1


def test_components_to_match_finds_the_fewest_that_reach_the_target():
    images = images_in_a_subspace(400, 6)
    analysis = PrincipalComponents.fit(images)
    errors = [mean_absolute_error(analysis.first(k).decode(analysis.first(k).encode(images)), images)
              for k in range(0, 8)]
    for needed in (1, 3, 5):
        target = (errors[needed] + errors[needed - 1]) / 2  # reached by `needed` components, not by one fewer
        assert components_to_match(analysis, images, images, target) == needed
    assert components_to_match(analysis, images, images, -1.0) is None  # no error is below zero


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.3, 2.0])
def test_blur_agrees_with_torchvisions_gaussian_blur(sigma):
    images = torch.rand(6, 1, 28, 20, generator=torch.Generator().manual_seed(0))  # not square, to catch a mix-up
    size = 2 * math.ceil(3 * sigma) + 1
    reference = torchvision.transforms.functional.gaussian_blur(images, [size, size], [sigma, sigma])
    assert torch.allclose(gaussian_blur(images, sigma), reference, atol=1e-6)


def test_blur_leaves_a_flat_image_flat():
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 28, 28), 0.3), 1.5), torch.full((1, 1, 28, 28), 0.3))
