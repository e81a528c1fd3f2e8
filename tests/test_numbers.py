"""The numbers a user reads, each computed again by plain torch, sharing no code with what it checks:
an epoch of the recipe step by step, each epoch's validation loss, and evaluate.py's baselines.

Small data, a few batches: every step of the loop (the shuffle, fresh noise, clearing gradients,
the backward pass, the optimizer's step, the epoch's mean) changes what these tests compare.
"""

import json

import pytest
import torch
import torchvision

import evaluate
import train
from checkpoints import load_checkpoint
from conftest import tiny_train_args
from dae import DenoisingAutoencoder


def small_problem(seed=0, count=96):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 28, 28, generator=generator) ** 3  # dark, like garments on black
    torch.manual_seed(seed)
    return images, DenoisingAutoencoder(4)


def an_epoch_by_hand(model, images, batch_size, noise_std, lr, seed):
    """The recipe's epoch written out: shuffle, then per batch fresh noise, L1, zero, backward, step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # plain Adam: train.py's fused one agrees to rounding
    order = torch.randperm(len(images), generator=generator)
    total = 0.0
    for start in range(0, len(images), batch_size):
        clean = images[order[start:start + batch_size]]
        noisy = clean + noise_std * torch.randn(clean.shape, generator=generator)
        loss = (model.decode(model.encode(noisy)) - clean).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(clean)
    return total / len(images)


def test_one_epoch_is_the_recipes_steps_in_order_and_its_loss_their_mean():
    images, model = small_problem()
    by_hand = DenoisingAutoencoder(4)
    by_hand.load_state_dict(model.state_dict())
    optimizer = train.make_optimizer(model, lr=1e-2)
    terms = train.train_one_epoch(model, optimizer, images, 40, 0.2, generator=torch.Generator().manual_seed(7))
    expected_loss = an_epoch_by_hand(by_hand, images, 40, 0.2, lr=1e-2, seed=7)  # batches of 40, 40 and 16
    assert terms["loss"] == pytest.approx(expected_loss, rel=1e-5), "the epoch's loss: the batches' mean, by size"
    for name, value in model.state_dict().items():  # shuffle, noise, zero_grad, backward, step, in this order
        assert torch.allclose(value, by_hand.state_dict()[name], atol=1e-5), f"the weights after the epoch: {name}"


def test_each_epochs_validation_loss_is_the_l1_of_that_epochs_model_on_the_noisy_validation_images():
    images, model = small_problem(seed=1)
    val_clean = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(2)) ** 3
    val_noisy = val_clean + 0.2 * torch.randn(val_clean.shape, generator=torch.Generator().manual_seed(3))
    by_epoch = []

    class Recorder:
        def epoch_ended(self, epoch, model, history, kept, stopping):
            with torch.no_grad():
                output = model.eval().decode(model.encode(val_noisy))
            by_epoch.append((output - val_clean).abs().mean().item())

    recipe = {**train.RECIPE, "epochs": 4, "batch_size": 32, "lr": 1e-2}
    history = train.fit(model, images, val_noisy, val_clean, recipe, run=Recorder(), quiet=True)
    assert history["val_loss"] == pytest.approx(by_epoch, rel=1e-6), "validation: noisy inputs, clean targets"
    assert len(history["train_loss"]) == 4 and history["train_loss"] != history["val_loss"]


def test_the_reported_blur_and_pca_are_what_torchvision_and_an_svd_give(tiny_run):
    """evaluate.py's baselines: the blur by torchvision's own kernel, PCA by an SVD of the run's training images."""
    evaluate.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
    reported = json.loads((tiny_run / "run" / "metrics.json").read_text())
    _, checkpoint = load_checkpoint(tiny_run / "run" / "checkpoint.pt")
    run = evaluate.run_data(DenoisingAutoencoder(8), checkpoint, tiny_run / "data")
    clean, noisy = run.test_clean, run.test_noisy
    sigma = reported["blur_sigma"]
    size = 2 * int(-(-3 * sigma // 1)) + 1
    blurred = torchvision.transforms.functional.gaussian_blur(noisy.clamp(0, 1), [size, size], [sigma, sigma])
    assert reported["methods"]["Gaussian blur of the clipped input"]["mae"] == pytest.approx(
        (blurred - clean).abs().mean().item(), rel=1e-4)
    pixels = run.train_images.flatten(1).double()
    mean = pixels.mean(dim=0)
    directions = torch.linalg.svd(pixels - mean, full_matrices=False).Vh[:8]  # (8, 784)
    projected = ((noisy.flatten(1).double() - mean) @ directions.T) @ directions + mean
    assert reported["methods"]["PCA with 8 components"]["mae"] == pytest.approx(
        (projected.clamp(0, 1).float() - clean.flatten(1)).abs().mean().item(), rel=1e-4)
    assert len(run.train_images) == 240 and len(run.val_clean) == 60  # the run's own split


def test_training_runs_the_loop_it_was_told_to(tiny_data_dir, tmp_path):
    """The saved history is fit's, epoch by epoch: one training and one validation loss each."""
    model, checkpoint = train.train(train.parse_args(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "3")))
    history = checkpoint["history"]
    assert len(history["train_loss"]) == len(history["val_loss"]) == 3
    assert checkpoint["best_epoch"] == 1 + min(range(3), key=history["val_loss"].__getitem__)
