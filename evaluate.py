"""Measure a trained denoising autoencoder on the Fashion-MNIST test set.

    python evaluate.py                        # the run in runs/
    python evaluate.py --run-dir runs/seed3   # another run
    python evaluate.py --noise-std 0.3        # harder noise than the run trained on

The headline is the published metric: the mean absolute error between the model's output for the
noisy test image and the clean test image, over all 10,000 test images and all pixels. Beside it,
on the same noisy images, three ways to denoise without learning, so the model's gain is visible;
then the error per class, and how well the 8-D codes group images by class (k-nearest neighbours).

Prints a report and writes it to <run-dir>/metrics.json. Runs on the CPU, so every machine gives
the same numbers for the same checkpoint.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torchvision.transforms.functional as TF

from dae import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from data import (
    CLASS_NAMES, TEST_NOISE_SEED, DataError, add_noise, load_fashion_mnist, noisy_test_set, split_train_validation,
)

ROOT = Path(__file__).resolve().parent
PUBLISHED_TEST_MAE = 0.06857
BLUR_SIGMAS = tuple(round(0.1 * step, 1) for step in range(3, 21))  # 0.3 ... 2.0, tried on the validation set
NEIGHBOURS = 5  # k of the k-nearest-neighbour classifier on the codes
BLUR = "Gaussian blur of the clipped input"


def mean_absolute_error(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean of |prediction - target| over every image and every pixel."""
    return (prediction - target).abs().mean().item()


def peak_signal_to_noise_ratio(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE), in dB; pixels of a clean image span [0, 1], so the peak is 1."""
    squared_error_per_image = (prediction - target).pow(2).flatten(1).mean(dim=1)  # (N, 1, 28, 28) -> (N,)
    return (10 * torch.log10(1 / squared_error_per_image)).mean().item()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel_size = 2 * math.ceil(3 * sigma) + 1  # odd, and wide enough to hold +-3 sigma
    return TF.gaussian_blur(images, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])


def choose_blur_sigma(noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """The blur that best denoises the clipped `noisy` images; pass validation images, never test ones."""
    clipped = noisy.clamp(0, 1)
    return min(BLUR_SIGMAS, key=lambda sigma: mean_absolute_error(gaussian_blur(clipped, sigma), clean))


def mae_per_class(prediction: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Class name -> mean absolute error over its images, hardest first; classes with no images are left out."""
    error_per_image = (prediction - target).abs().flatten(1).mean(dim=1)  # (N, 1, 28, 28) -> (N,)
    per_class = {
        CLASS_NAMES[index]: error_per_image[labels == index].mean().item() for index in labels.unique().tolist()
    }
    return dict(sorted(per_class.items(), key=lambda item: item[1], reverse=True))


def knn_accuracy(
    train_codes: torch.Tensor, train_labels: torch.Tensor, test_codes: torch.Tensor, test_labels: torch.Tensor, k: int
) -> float:
    """Share of test codes whose k nearest training codes (Euclidean) vote for the right class."""
    predictions = []
    for chunk in test_codes.split(1000):  # (1000, 50000) distances at a time, not (10000, 50000) at once
        nearest = torch.cdist(chunk, train_codes).topk(k, largest=False).indices  # (1000, k)
        predictions.append(train_labels[nearest].mode(dim=1).values)  # ties go to the lowest class index
    return (torch.cat(predictions) == test_labels).float().mean().item()


@torch.no_grad()
def evaluate(run_dir: Path, data_dir, noise_std: float | None) -> dict:
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    config = checkpoint["config"]
    noise_std = config["noise_std"] if noise_std is None else noise_std

    clean, noisy, labels = noisy_test_set(data_dir, noise_std)  # (10000, 1, 28, 28) each
    test_codes = model.encode(noisy)  # (10000, latent_dim)
    denoised = model.decode(test_codes)  # (10000, 1, 28, 28)

    # The same split and validation images as the run trained with, to choose the blur without the test set.
    generator = torch.Generator().manual_seed(config["seed"])
    (train_images, train_labels), (val_images, _) = split_train_validation(
        *load_fashion_mnist(data_dir, train=True), config["val_size"], generator
    )
    sigma = choose_blur_sigma(add_noise(val_images, noise_std, generator), val_images)
    blurred = gaussian_blur(noisy.clamp(0, 1), sigma)

    def score(prediction):
        return {"mae": mean_absolute_error(prediction, clean), "psnr_db": peak_signal_to_noise_ratio(prediction, clean)}

    # The codes of noisy images, as the model is used; the training images get noise from a seeded generator too.
    train_codes = model.encode(add_noise(train_images, noise_std, generator))
    methods = {
        "denoising autoencoder": score(denoised),
        "noisy input, as is": score(noisy),
        "noisy input clipped to [0, 1]": score(noisy.clamp(0, 1)),
        BLUR: score(blurred),
    }
    history = checkpoint["history"]
    return {
        "test_mae": methods["denoising autoencoder"]["mae"],
        "published_test_mae": PUBLISHED_TEST_MAE,
        "noise_std": noise_std,
        "test_noise_seed": TEST_NOISE_SEED,
        "test_images": len(clean),
        "blur_sigma": sigma,
        "methods": methods,
        "mae_per_class": mae_per_class(denoised, clean, labels),
        "knn": {
            "k": NEIGHBOURS,
            "train_codes": len(train_codes),
            "accuracy": knn_accuracy(train_codes, train_labels, test_codes, labels, NEIGHBOURS),
        },
        "run": {
            "checkpoint": str(run_dir / CHECKPOINT_FILE),
            "seed": config["seed"],
            "best_epoch": checkpoint["best_epoch"],
            "epochs_run": len(history["val_loss"]),
            "stop_reason": checkpoint["stop_reason"],
            "device": checkpoint["device"],
            "latent_dim": checkpoint["model_args"]["latent_dim"],
        },
    }


def print_report(metrics: dict) -> None:
    run = metrics["run"]
    print(f"run         {run['checkpoint']}: seed {run['seed']}, best epoch {run['best_epoch']} of "
          f"{run['epochs_run']} ({run['stop_reason']}), trained on {run['device']}")
    print(f"test set    {metrics['test_images']:,} images, noise std {metrics['noise_std']}, "
          f"noise seed {metrics['test_noise_seed']}")
    print(f"\ntest MAE    {metrics['test_mae']:.5f}   (published: {metrics['published_test_mae']})\n")
    print(f"{'method':<52}{'MAE':>9}{'PSNR':>10}")
    for method, scores in metrics["methods"].items():
        label = f"{method} (sigma {metrics['blur_sigma']})" if method == BLUR else method
        print(f"{label:<52}{scores['mae']:>9.5f}{scores['psnr_db']:>7.2f} dB")
    print("\nMAE per class, hardest first")
    for name, mae in metrics["mae_per_class"].items():
        print(f"  {name:<12}{mae:.5f}")
    knn = metrics["knn"]
    print(f"\nlatent space: {knn['k']}-nearest-neighbour accuracy of the {run['latent_dim']}-D test codes "
          f"against {knn['train_codes']:,} training codes: {knn['accuracy']:.1%}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Measure a trained run on the Fashion-MNIST test set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run-dir", default=str(ROOT / "runs"), help="the run to evaluate")
    parser.add_argument("--data-dir", default=str(ROOT / "data"), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--noise-std", type=float, default=None, help="test noise std (default: the run's own)")
    args = parser.parse_args(argv)
    if args.noise_std is not None and not args.noise_std >= 0:
        parser.error(f"argument --noise-std: must be at least 0, got {args.noise_std}")

    run_dir = Path(args.run_dir)
    try:
        metrics = evaluate(run_dir, args.data_dir, args.noise_std)
    except (CheckpointError, DataError) as error:
        sys.exit(f"error: {error}")
    print_report(metrics)
    metrics_path = run_dir / "metrics.json"
    try:
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    except OSError as error:
        sys.exit(f"error: cannot write {metrics_path} ({error.strerror}): make the run directory writable")
    print(f"\nwritten to {metrics_path}")


if __name__ == "__main__":
    main()
