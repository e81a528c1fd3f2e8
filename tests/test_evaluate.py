"""The metrics against values worked out by hand, and evaluate.py as a user runs it."""

import json
import math

import pytest
import torch

import baselines
import evaluate
import runs
import train
from baselines import mean_absolute_error, peak_signal_to_noise_ratio
from checkpoints import load_checkpoint, save_checkpoint
from conftest import tiny_train_args
from dae import DenoisingAutoencoder
from data import add_noise, load_fashion_mnist, training_split
from evaluate import knn_accuracy, mae_per_class


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


def test_a_knn_tie_goes_to_the_lowest_class_by_hand():
    train_codes, train_labels = torch.tensor([[0.0], [1.0], [5.0]]), torch.tensor([7, 3, 3])
    # k=2 from 0.4: the nearest are 0.0 (class 7) and 1.0 (class 3), one vote each: the lower class, 3, wins.
    assert knn_accuracy(train_codes, train_labels, torch.tensor([[0.4]]), torch.tensor([3]), k=2) == 1.0
    assert knn_accuracy(train_codes, train_labels, torch.tensor([[0.4]]), torch.tensor([7]), k=2) == 0.0


def test_blur_sigma_is_chosen_by_the_error_it_gives():
    clean = torch.zeros(4, 1, 28, 28)
    clean[:, :, 8:20, 8:20] = 1.0
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    sigma = baselines.choose_blur_sigma(noisy, clean)
    clipped = noisy.clamp(0, 1)
    errors = {s: mean_absolute_error(baselines.gaussian_blur(clipped, s), clean) for s in baselines.BLUR_SIGMAS}
    assert errors[sigma] == min(errors.values())


def test_evaluate_end_to_end_writes_the_report(tiny_run, capsys):
    run_dir = tiny_run / "run"
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")])
    output = capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())

    assert f"test MAE    {metrics['test_mae']:.5f}" in output
    assert metrics["test_images"] == 100 and metrics["noise_std"] == 0.2
    methods = metrics["methods"]
    assert list(methods) == [DenoisingAutoencoder.name, "noisy input, as is", "noisy input clipped to [0, 1]",
                             "Gaussian blur of the clipped input", "PCA with 8 components"]
    assert methods[DenoisingAutoencoder.name]["mae"] == metrics["test_mae"]
    # Doing nothing costs E|N(0, 0.2^2)| = 0.2 sqrt(2/pi) = 0.1596 per pixel, give or take sampling.
    assert methods["noisy input, as is"]["mae"] == pytest.approx(0.2 * math.sqrt(2 / math.pi), rel=0.02)
    assert methods["noisy input clipped to [0, 1]"]["mae"] < methods["noisy input, as is"]["mae"]
    assert metrics["blur_sigma"] in baselines.BLUR_SIGMAS
    assert len(metrics["mae_per_class"]) == 10
    assert list(metrics["mae_per_class"].values()) == sorted(metrics["mae_per_class"].values(), reverse=True)
    assert metrics["knn"]["k"] == evaluate.NEIGHBOURS and metrics["knn"]["train_codes"] == 240
    assert 0 <= metrics["knn"]["accuracy"] <= 1 and 0 <= metrics["knn"]["pca_accuracy"] <= 1
    assert metrics["run"]["epochs_run"] == 15 and metrics["run"]["seed"] == 0 and metrics["run"]["device"] == "cpu"


def test_the_same_checkpoint_gives_identical_numbers(tiny_run):
    first = evaluate.evaluate(tiny_run / "run", tiny_run / "data", None)
    assert evaluate.evaluate(tiny_run / "run", tiny_run / "data", None) == first


def test_noise_std_can_be_overridden(tiny_run):
    metrics = evaluate.evaluate(tiny_run / "run", tiny_run / "data", 0.4)
    assert metrics["noise_std"] == 0.4
    assert metrics["methods"]["noisy input, as is"]["mae"] == pytest.approx(0.4 * math.sqrt(2 / math.pi), rel=0.02)


def test_a_missing_run_says_to_train_first_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:  # sys.exit with a message: printed to stderr, exit status 1
        evaluate.main(["--run-dir", str(tmp_path / "nothing")])
    checkpoint = tmp_path / "nothing" / "checkpoint.pt"
    assert exit_info.value.code == (f"error: no checkpoint at {checkpoint}: run `python train.py` first, "
                                    f"or pass --run-dir")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e30"])
def test_a_noise_std_the_report_cannot_use_is_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--noise-std", value])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --noise-std: must be" in error and "Traceback" not in error


@pytest.mark.parametrize("noise_std", [float("nan"), -0.1, 1e30])
def test_a_noise_std_from_a_notebook_is_checked_as_the_flag_is(noise_std, tiny_run):
    with pytest.raises(ValueError, match="noise_std must be from 0 to 10"):
        evaluate.evaluate(tiny_run / "run", tiny_run / "data", noise_std)


STATE = "reached --epochs 200"


def recipe_checkpoint(**changes) -> dict:
    """What a finished run of the published recipe records, with `changes` on top."""
    checkpoint = {"format": evaluate.PUBLISHED_MODEL, "recipe_changes": {}, "stop_kind": runs.ALL_EPOCHS,
                  "config": {"noise_std": 0.2}, "history": {"val_loss": [0.1] * 200}}
    return {**checkpoint, **changes}


def test_the_published_figure_applies_only_to_the_recipe_at_its_noise():
    assert evaluate.why_published_does_not_apply(recipe_checkpoint(), 0.2, STATE) is None
    assert "--epochs 5" in evaluate.why_published_does_not_apply(
        recipe_checkpoint(recipe_changes={"epochs": 5}), 0.2, STATE)
    assert "test noise std 0.5" in evaluate.why_published_does_not_apply(recipe_checkpoint(), 0.5, STATE)
    stopped = recipe_checkpoint(stop_kind="interrupted", history={"val_loss": [0.3] * 7})
    assert evaluate.why_published_does_not_apply(recipe_checkpoint(stop_kind=runs.EARLY_STOPPING), 0.2, STATE) is None
    assert "stopped (interrupted) after 7 epochs" in evaluate.why_published_does_not_apply(stopped, 0.2, "interrupted")
    unrecorded = {"format": evaluate.PUBLISHED_MODEL, "stop_kind": runs.ALL_EPOCHS}
    assert "does not record" in evaluate.why_published_does_not_apply(unrecorded, 0.2, STATE)
    fork = recipe_checkpoint(format="fashion-mnist-vae/1")
    assert "for the published DAE" in evaluate.why_published_does_not_apply(fork, 0.2, STATE)


def test_a_short_run_is_not_set_beside_the_published_figure(tiny_run, capsys):
    evaluate.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
    headline = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test MAE")][0]
    assert "(published:" not in headline
    assert "does not compare: the run changed the recipe: --epochs 15, --batch-size 32, --val-size 60" in headline


def test_a_model_worse_than_the_noisy_input_says_so(tiny_data_dir, tmp_path, capsys):
    train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "1", "--lr", "1e-9"))
    evaluate.main(["--run-dir", str(tmp_path / "run"), "--data-dir", str(tiny_data_dir)])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_mae"] > metrics["methods"]["noisy input, as is"]["mae"]  # an untrained model: about 0.5
    assert "worse than the untouched noisy input" in capsys.readouterr().out


def test_another_noise_level_is_written_beside_the_runs_own_metrics(tiny_run):
    run_dir, data_dir = tiny_run / "run", tiny_run / "data"
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(data_dir)])
    own = (run_dir / "metrics.json").read_text()
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(data_dir), "--noise-std", "0.5"])
    assert (run_dir / "metrics.json").read_text() == own
    assert json.loads((run_dir / "metrics-noise0.5.json").read_text())["noise_std"] == 0.5


def test_the_noise_table_holds_the_training_noise_and_grows_with_the_noise(tiny_run):
    metrics = evaluate.evaluate(tiny_run / "run", tiny_run / "data", None)
    levels, errors = metrics["noise_levels"]["noise_std"], metrics["noise_levels"]["mae"]
    assert 0.2 in levels and levels[0] == 0 and levels[-1] >= 0.5
    noisy = errors["noisy input, as is"]
    assert noisy == sorted(noisy) and noisy[0] == 0
    # Unclipped noise costs E|N(0, std^2)| = std sqrt(2/pi) per pixel, give or take sampling.
    for std, mae in zip(levels[1:], noisy[1:]):
        assert mae == pytest.approx(std * math.sqrt(2 / math.pi), rel=0.02)
    # At the training noise the table agrees with the headline, to the last bit.
    assert errors[DenoisingAutoencoder.name][levels.index(0.2)] == metrics["test_mae"]


def test_without_run_dir_the_newest_finished_run_is_taken(tiny_data_dir, tmp_path, monkeypatch, capsys):
    """Two default runs leave two directories, and evaluate.py takes the newer."""
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    extra = ["--data-dir", str(tiny_data_dir), "--val-size", "60", "--batch-size", "32", "--device", "cpu"]
    train.main([*extra, "--epochs", "2"])
    train.main([*extra, "--epochs", "3"])
    first, second = sorted((tmp_path / "runs").iterdir())
    assert first.name < second.name  # named by their start time: the newer sorts last
    assert (first / "checkpoint.pt").is_file() and (second / "checkpoint.pt").is_file()
    capsys.readouterr()
    evaluate.main(["--data-dir", str(tiny_data_dir)])
    output = capsys.readouterr().out
    assert f"evaluating the newest run, {second} (of 2 runs, the last saved by their records: " in output
    assert json.loads((second / "metrics.json").read_text())["run"]["epochs_run"] == 3
    assert not (first / "metrics.json").exists()


def test_abbreviated_flags_are_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--noise", "0.5"])  # argparse would otherwise read it as --noise-std
    assert exit_info.value.code == 2 and "unrecognized arguments: --noise" in capsys.readouterr().err


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: the noise the run was trained with)" in help_text and "(default: None)" not in help_text


def test_at_another_test_noise_every_method_stays_as_fitted_at_the_runs_own_noise(tiny_run):
    """The noise table says "every method as fitted at noise std 0.2": the blur is not chosen again at 0.5."""
    own, harder = (evaluate.evaluate(tiny_run / "run", tiny_run / "data", std) for std in (None, 0.5))
    assert harder["blur_sigma"] == own["blur_sigma"]
    images, labels = load_fashion_mnist(tiny_run / "data", train=True)
    _, (val_clean, _) = training_split(images, labels, 60, 0.2, generator=torch.Generator().manual_seed(0))
    refitted = baselines.choose_blur_sigma(add_noise(val_clean, 0.5, generator=torch.Generator().manual_seed(0)),
                                           val_clean)
    assert refitted != own["blur_sigma"]  # so the test can tell the two apart
    assert harder["noise_levels"] == own["noise_levels"]  # the same fitted methods, measured at the same levels


# ---- The numbers a user reads, computed again by plain torch from the saved model and the IDX files ----

def idx_images(path) -> torch.Tensor:
    """An IDX file of bytes, read by hand: 4 bytes of magic, a size per dimension, then the bytes."""
    raw = path.read_bytes()
    dimensions = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dimensions)]
    return torch.frombuffer(bytearray(raw[4 + 4 * dimensions:]), dtype=torch.uint8).view(shape)


def test_the_reported_test_mae_is_the_models_output_for_the_noisy_test_images_against_the_clean(tiny_run):
    # The tiny run's model draws one image whatever its input: weights 4 times the initial ones do not.
    checkpoint = load_checkpoint(tiny_run / "run" / "checkpoint.pt")[1]
    torch.manual_seed(0)
    model = DenoisingAutoencoder(8)
    with torch.no_grad():
        for weights in model.parameters():
            weights.mul_(4)
    record = {key: value for key, value in checkpoint.items() if key not in ("model_state", "stamp", "saved_at")}
    save_checkpoint(tiny_run / "run" / "checkpoint.pt", model, model.state_dict(), **record)
    evaluate.main(["--run-dir", str(tiny_run / "run"), "--data-dir", str(tiny_run / "data")])
    reported = json.loads((tiny_run / "run" / "metrics.json").read_text())
    clean = idx_images(tiny_run / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").float() / 255
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))  # TEST_NOISE_SEED
    with torch.no_grad():  # the model saved above, on the noisy test images
        x = model.eval().decode(model.encode(noisy.unsqueeze(1))).reshape(-1, 784)
    assert reported["test_mae"] == pytest.approx((x - clean.reshape(-1, 784)).abs().mean().item(), rel=1e-5)
    assert reported["methods"]["noisy input, as is"]["mae"] == pytest.approx((noisy - clean).abs().mean().item())
    assert reported["methods"]["noisy input clipped to [0, 1]"]["mae"] == pytest.approx(
        (noisy.clamp(0, 1) - clean).abs().mean().item())
    # The kNN: the run's training images (its own split, their noise drawn next from its seed) against the test codes.
    images = idx_images(tiny_run / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").float() / 255
    labels = torch.frombuffer(bytearray((tiny_run / "data" / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte")
                                        .read_bytes()[8:]), dtype=torch.uint8).long()
    generator = torch.Generator().manual_seed(checkpoint["config"]["seed"])
    order = torch.randperm(len(images), generator=generator)
    val_size = checkpoint["config"]["val_size"]
    torch.randn((val_size, 1, 28, 28), generator=generator)  # the validation noise, drawn first
    train = images[order[val_size:]].unsqueeze(1)
    train_noisy = train + 0.2 * torch.randn(train.shape, generator=generator)
    with torch.no_grad():
        train_codes, test_codes = model.encode(train_noisy), model.encode(noisy.unsqueeze(1))
    nearest = torch.cdist(test_codes, train_codes).argsort(dim=1)[:, :5]  # (N, 5)
    votes = labels[order[val_size:]][nearest]
    predicted = torch.stack([torch.bincount(row, minlength=10).argmax() for row in votes])  # ties: the lowest class
    test_labels = torch.frombuffer(bytearray((tiny_run / "data" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte")
                                             .read_bytes()[8:]), dtype=torch.uint8).long()
    assert reported["knn"]["accuracy"] == pytest.approx((predicted == test_labels).float().mean().item())
    run = evaluate.run_data(model, checkpoint, tiny_run / "data")
    assert torch.allclose(run.train_codes, train_codes, atol=1e-6), "the kNN's training codes: noisy training images"
