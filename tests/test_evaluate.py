"""The metrics against values worked out by hand, and evaluate.py as a user runs it."""

import json
import math
import subprocess
import sys

import pytest
import torch

import evaluate
from conftest import ROOT
from evaluate import knn_accuracy, mae_per_class, mean_absolute_error, peak_signal_to_noise_ratio


def test_mean_absolute_error_by_hand():
    prediction = torch.tensor([[0.0, 0.5], [1.0, 1.0]])
    target = torch.tensor([[0.5, 0.5], [0.0, 0.75]])
    # |errors| = 0.5, 0, 1, 0.25 -> mean 1.75 / 4
    assert mean_absolute_error(prediction, target) == pytest.approx(0.4375)


def test_psnr_by_hand():
    target = torch.zeros(2, 1, 2, 2)
    prediction = target.clone()
    prediction[0] += 0.1  # image 0: MSE 0.01 -> 20 dB
    prediction[1, 0, 0, 0] = 0.2  # image 1: MSE 0.04 / 4 = 0.01 -> 20 dB
    assert peak_signal_to_noise_ratio(prediction, target) == pytest.approx(20.0, abs=1e-4)
    prediction[1] = 0.01  # image 1: MSE 1e-4 -> 40 dB; the mean over images is 30 dB
    assert peak_signal_to_noise_ratio(prediction, target) == pytest.approx(30.0, abs=1e-4)


def test_mae_per_class_by_hand_hardest_first():
    target = torch.zeros(3, 1, 1, 2)
    prediction = torch.tensor([[[[0.2, 0.2]]], [[[0.4, 0.0]]], [[[1.0, 0.0]]]])
    per_class = mae_per_class(prediction, target, torch.tensor([0, 0, 9]))
    assert list(per_class) == ["Ankle boot", "T-shirt/top"]  # 0.5, then (0.2 + 0.2) / 2; no other class present
    assert per_class["Ankle boot"] == pytest.approx(0.5)
    assert per_class["T-shirt/top"] == pytest.approx(0.2)


def test_knn_accuracy_by_hand():
    train_codes = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    train_labels = torch.tensor([0, 0, 1, 1, 1, 0])
    test_codes = torch.tensor([[0.05], [10.05], [5.0]])
    # k=3: the first is nearest to 0, 0, 1 -> 0; the second to 1, 1, 0 -> 1.
    assert knn_accuracy(train_codes, train_labels, test_codes[:2], torch.tensor([0, 1]), k=3) == 1.0
    assert knn_accuracy(train_codes, train_labels, test_codes[:2], torch.tensor([1, 1]), k=3) == 0.5
    # k=1: 5.0 is nearest to 0.2 (distance 4.8 < 4.9), labelled 1
    assert knn_accuracy(train_codes, train_labels, test_codes[2:], torch.tensor([1]), k=1) == 1.0


def test_blur_sigma_is_chosen_by_the_error_it_gives():
    clean = torch.zeros(4, 1, 28, 28)
    clean[:, :, 8:20, 8:20] = 1.0
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    sigma = evaluate.choose_blur_sigma(noisy, clean)
    clipped = noisy.clamp(0, 1)
    errors = {s: mean_absolute_error(evaluate.gaussian_blur(clipped, s), clean) for s in evaluate.BLUR_SIGMAS}
    assert errors[sigma] == min(errors.values())


def test_evaluate_end_to_end_writes_the_report(tiny_run, capsys):
    run_dir = tiny_run / "run"
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")])
    output = capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())

    assert f"test MAE    {metrics['test_mae']:.5f}" in output
    assert metrics["test_images"] == 100 and metrics["noise_std"] == 0.2
    methods = metrics["methods"]
    assert list(methods) == ["denoising autoencoder", "noisy input, as is", "noisy input clipped to [0, 1]",
                             "Gaussian blur of the clipped input"]
    assert methods["denoising autoencoder"]["mae"] == metrics["test_mae"]
    # Doing nothing costs E|N(0, 0.2^2)| = 0.2 sqrt(2/pi) = 0.1596 per pixel, give or take sampling.
    assert methods["noisy input, as is"]["mae"] == pytest.approx(0.2 * math.sqrt(2 / math.pi), rel=0.02)
    assert methods["noisy input clipped to [0, 1]"]["mae"] < methods["noisy input, as is"]["mae"]
    assert metrics["blur_sigma"] in evaluate.BLUR_SIGMAS
    assert len(metrics["mae_per_class"]) == 10
    assert list(metrics["mae_per_class"].values()) == sorted(metrics["mae_per_class"].values(), reverse=True)
    assert metrics["knn"]["k"] == evaluate.NEIGHBOURS and metrics["knn"]["train_codes"] == 240
    assert 0 <= metrics["knn"]["accuracy"] <= 1
    assert metrics["run"]["epochs_run"] == 15 and metrics["run"]["seed"] == 0 and metrics["run"]["device"] == "cpu"


def test_the_same_checkpoint_gives_identical_numbers(tiny_run):
    first = evaluate.evaluate(tiny_run / "run", tiny_run / "data", None)
    assert evaluate.evaluate(tiny_run / "run", tiny_run / "data", None) == first


def test_noise_std_can_be_overridden(tiny_run):
    metrics = evaluate.evaluate(tiny_run / "run", tiny_run / "data", 0.4)
    assert metrics["noise_std"] == 0.4
    assert metrics["methods"]["noisy input, as is"]["mae"] == pytest.approx(0.4 * math.sqrt(2 / math.pi), rel=0.02)


def test_a_missing_run_says_to_train_first_without_a_traceback(tmp_path):
    """Run as a user would, from another directory."""
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--run-dir", str(tmp_path / "nothing")],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    checkpoint = tmp_path / "nothing" / "checkpoint.pt"
    assert result.stderr.strip().splitlines() == [
        f"error: no checkpoint at {checkpoint}: run `python train.py` first, or pass --run-dir"
    ]


def test_a_negative_noise_std_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--noise-std", "-1"])
    assert exit_info.value.code == 2 and "must be at least 0" in capsys.readouterr().err
