"""The recipe (its objective, one epoch, EarlyStopping, the loop) against hand-worked cases, and train.py
as a user runs it: its flags, its run, the one file a student hands in, and README's notebook snippet."""

import ast
import builtins
import re

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import baselines
import evaluate
import explorer
import data
import runs
import train
import visualize
from conftest import REAL_DATA_DIR, ROOT, requires_real_data, tiny_train_args
from dae import DenoisingAutoencoder
from data import load_fashion_mnist, training_split
from checkpoints import load_checkpoint
from runs import CHECKPOINT_FILE
from train import RECIPE, EarlyStopping


def stop_decisions(losses, patience, min_delta):
    stopping = EarlyStopping(patience, min_delta)
    return [stopping.should_stop(loss) for loss in losses]


def test_the_published_recipe_numbers():
    """The brief's recipe, number by number: a change to any of them is a change of the published recipe."""
    assert RECIPE == {"epochs": 200, "batch_size": 4096, "lr": 1e-3, "noise_std": 0.2, "latent_dim": 8,
                      "patience": 25, "min_delta": 1e-3, "val_size": 10_000}
    defaults = vars(train.parse_args([]))
    assert {name: defaults[name] for name in RECIPE} == RECIPE and defaults["seed"] == 0


def test_the_objective_is_the_l1_distance_by_hand():
    class Fixed(torch.nn.Module):  # a "model" whose output for any input is a known 2-pixel image
        def forward(self, noisy):
            return torch.tensor([[[[0.25, 1.0]]]])

    clean = torch.tensor([[[[0.5, 0.5]]]])
    # |0.25 - 0.5| = 0.25 and |1.0 - 0.5| = 0.5: their mean is 0.375 (MSE would give 0.15625).
    assert train.training_loss(Fixed(), torch.zeros(1, 1, 1, 2), clean)["loss"].item() == pytest.approx(0.375)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    assert stop_decisions([1.0, 0.5, 0.6, 0.7, 0.8], patience=3, min_delta=0) == [False, False, False, False, True]
    assert stop_decisions([1.0, 0.5, 0.6, 0.7], patience=3, min_delta=0) == [False] * 4  # not one epoch early


def test_early_stopping_needs_more_than_min_delta():
    # 0.75 is exactly min_delta = 0.25 below the best (1.0), which is not *more* than min_delta.
    assert stop_decisions([1.0, 0.75, 0.75], patience=2, min_delta=0.25) == [False, False, True]
    # A drop of 0.5 > 0.25 counts.
    assert stop_decisions([1.0, 0.5, 0.0], patience=2, min_delta=0.25) == [False, False, False]


def test_early_stopping_resets_its_count_on_improvement():
    stopping = EarlyStopping(patience=3, min_delta=0.1)
    for loss in [1.0, 1.0, 1.0]:
        stopping.should_stop(loss)
    assert stopping.epochs_without_improvement == 2
    assert not stopping.should_stop(0.5)
    assert stopping.epochs_without_improvement == 0
    assert [stopping.should_stop(loss) for loss in [0.45, 0.45, 0.45]] == [False, False, True]


def test_early_stopping_measures_against_the_last_real_improvement():
    # 0.95, 0.90, 0.85 each beat the one before by only 0.05 < 0.1, but 0.85 beats the best (1.0) by 0.15.
    assert stop_decisions([1.0, 0.95, 0.90, 0.85, 0.84], patience=3, min_delta=0.1) == [False] * 5


def test_train_one_epoch_lowers_the_error_on_a_tiny_problem():
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0
    model = DenoisingAutoencoder(latent_dim=2)
    optimizer = train.make_optimizer(model, lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    before = baselines.model_mae(model, images, images)
    for _ in range(20):
        train.train_one_epoch(model, optimizer, images, 16, 0.2, generator=generator)
    assert baselines.model_mae(model, images, images) < 0.5 * before


def test_the_noise_is_fresh_for_every_batch_and_every_epoch_at_the_recipes_scale(monkeypatch):
    seen = []  # (clean, noisy) of every batch the objective is given
    real_loss = train.training_loss

    def recording(model, noisy, clean, *rest, **keywords):  # a fork's objective may take more
        seen.append((clean.clone(), noisy.clone()))
        return real_loss(model, noisy, clean, *rest, **keywords)

    monkeypatch.setattr(train, "training_loss", recording)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 28, 28) / 10  # image i: every pixel i / 10
    model = DenoisingAutoencoder(2)
    optimizer = train.make_optimizer(model, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # two epochs of two batches of 2
        train.train_one_epoch(model, optimizer, images, 2, 0.2, generator=generator)
    noise = {}  # (epoch, image) -> its noise
    for batch, (clean, noisy) in enumerate(seen):
        for image, image_noise in zip((clean[:, 0, 0, 0] * 10).round().long().tolist(), noisy - clean):
            noise[batch // 2, image] = image_noise
    assert len(noise) == 8  # every image once an epoch
    assert not torch.allclose(noise[0, 0], noise[0, 1])  # not one draw for the epoch, reused batch to batch
    assert all(not torch.allclose(noise[0, image], noise[1, image]) for image in range(4))  # nor epoch to epoch
    assert 0.15 < torch.stack(list(noise.values())).std().item() < 0.25  # std 0.2, over 6,272 numbers


class Recorder:
    """What `fit` tells its optional `run` of each epoch, with the weights of that epoch."""

    def __init__(self):
        self.weights, self.kept = [], []

    def epoch_ended(self, epoch, model, history, kept, stopping):
        self.weights.append({name: value.clone() for name, value in model.state_dict().items()})
        self.kept.append(kept)


SCRIPTED_VAL_LOSSES = [0.5, 0.3, 0.31, 0.2, 0.25, 0.2]  # the lowest at epoch 4; epoch 6 ties it: not lower


def scripted_validation(monkeypatch) -> list:
    """Give each epoch's validation the loss of SCRIPTED_VAL_LOSSES, and record the weights it was given."""
    losses, weights = iter(SCRIPTED_VAL_LOSSES), []

    def validation(model, noisy, clean):
        weights.append({name: value.clone() for name, value in model.state_dict().items()})
        return next(losses)

    monkeypatch.setattr(train, "validation_loss", validation)
    return weights


def test_fit_keeps_and_returns_the_weights_of_the_lowest_validation_loss_not_the_last(tiny_data_dir, monkeypatch):
    images, labels = load_fashion_mnist(tiny_data_dir, train=True)
    (train_images, _), (val_clean, val_noisy) = training_split(images, labels, 60, 0.2)
    weights, recorder = scripted_validation(monkeypatch), Recorder()
    model = DenoisingAutoencoder(8)
    history = train.fit(model, train_images, val_noisy, val_clean, {**RECIPE, "epochs": 6, "batch_size": 32},
                        run=recorder)
    assert history["val_loss"] == SCRIPTED_VAL_LOSSES
    assert len(history["train_loss"]) == len(history["epoch_seconds"]) == 6
    assert recorder.kept == [True, True, False, True, False, False]  # a tie is not lower
    for name, value in model.state_dict().items():  # epoch 4's weights, not the last epoch's
        assert torch.equal(value, weights[3][name]), name
        assert torch.equal(recorder.weights[3][name], weights[3][name]), name
    assert any(not torch.equal(value, weights[5][name]) for name, value in model.state_dict().items())


def test_fit_refuses_a_loss_that_is_not_a_finite_number(tiny_data_dir, monkeypatch):
    images, labels = load_fashion_mnist(tiny_data_dir, train=True)
    (train_images, _), (val_clean, val_noisy) = training_split(images, labels, 60, 0.2)
    monkeypatch.setattr(train, "validation_loss", lambda model, noisy, clean: float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 1: the loss is not a finite number"):
        train.fit(DenoisingAutoencoder(8), train_images, val_noisy, val_clean, {**RECIPE, "batch_size": 32})


def test_train_saves_and_returns_the_weights_of_the_lowest_validation_loss(tiny_data_dir, tmp_path, monkeypatch):
    weights = scripted_validation(monkeypatch)
    model, checkpoint = train.train(train.parse_args(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "6")))
    saved, on_disk = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint["best_epoch"] == on_disk["best_epoch"] == 4 and checkpoint["history"]["val_loss"][3] == 0.2
    assert not model.training and next(model.parameters()).device.type == "cpu"
    for name, value in weights[3].items():  # the checkpoint, and the model train returns, hold epoch 4's
        assert torch.equal(saved.state_dict()[name], value) and torch.equal(model.state_dict()[name], value)


def test_the_tiny_run_learns_and_records_its_lowest_epoch(tiny_run):
    model, checkpoint = load_checkpoint(tiny_run / "run" / CHECKPOINT_FILE)
    history = checkpoint["history"]
    assert len(history["train_loss"]) == len(history["val_loss"]) == len(history["epoch_seconds"]) == 15
    assert history["val_loss"][-1] < history["val_loss"][0]
    images, _ = load_fashion_mnist(tiny_run / "data", train=True)
    torch.manual_seed(0)  # the model's error: half an untrained one's, at most
    assert baselines.model_mae(model, images, images) < 0.5 * baselines.model_mae(DenoisingAutoencoder(8), images,
                                                                                  images)
    assert history["val_loss"][checkpoint["best_epoch"] - 1] == min(history["val_loss"])
    assert (checkpoint["stop_kind"], checkpoint["stop_reason"]) == (runs.ALL_EPOCHS, "reached --epochs 15")


def test_same_seed_on_cpu_gives_the_same_numbers(tiny_data_dir, tmp_path):
    def history(run, seed):
        train.main(tiny_train_args(tiny_data_dir, tmp_path / run, "--epochs", "3", "--seed", seed))
        return load_checkpoint(tmp_path / run / CHECKPOINT_FILE)[1]["history"]

    first, second = history("a", "5"), history("b", "5")
    assert (first["val_loss"], first["train_loss"]) == (second["val_loss"], second["train_loss"])
    assert first["val_loss"] != history("c", "6")["val_loss"]


def test_early_stopping_ends_a_run(tiny_data_dir, tmp_path, capsys):
    train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "50", "--patience", "2",
                               "--min-delta", "10"))
    # Epoch 1 improves on no loss at all; no later drop is above 10, so epochs 2 and 3 use up the patience.
    _, checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert len(checkpoint["history"]["val_loss"]) == 3
    assert checkpoint["stop_kind"] == runs.EARLY_STOPPING
    assert checkpoint["stop_reason"] == "early stopping: no improvement above 10.0 for 2 epochs"
    assert "stopped after 3 epochs (early stopping" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, complaint", [
    ("--epochs", "0", "must be at least 1, got 0"),
    ("--batch-size", "-4", "must be at least 1, got -4"),
    ("--patience", "0", "must be at least 1, got 0"),
    ("--latent-dim", "0", "must be from 1 to 784, got 0"),
    ("--latent-dim", "785", "must be from 1 to 784, got 785"),
    ("--lr", "0", "must be above 0, got 0"),
    ("--lr", "inf", "must be above 0, got inf"),
    ("--lr", "nan", "must be above 0, got nan"),
    ("--noise-std", "-0.1", "must be from 0 to 10.0, got -0.1"),
    ("--noise-std", "nan", "must be from 0 to 10.0, got nan"),
    ("--noise-std", "11", "must be from 0 to 10.0, got 11"),
    ("--min-delta", "-1", "must be at least 0, got -1"),
    ("--min-delta", "inf", "must be at least 0, got inf"),
    ("--seed", str(2**64), f"must be from 0 to {2**64 - 1}, got {2**64}"),
    ("--seed", "-1", f"must be from 0 to {2**64 - 1}, got -1"),
    ("--device", "tpu", "unknown device 'tpu': choose auto, cpu, cuda or mps"),
    ("--epochs", "ten", "invalid int value: 'ten'"),
])
def test_bad_flags_are_refused_in_one_line_with_status_2(flag, value, complaint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.splitlines()[0].startswith("usage: train.py [-h]")  # argparse's usage, then the one line
    assert error.splitlines()[-1] == f"train.py: error: argument {flag}: {complaint}"


def test_a_bad_flag_in_a_notebook_is_argparses_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:  # a notebook shows it, and the session goes on
        train.parse_args(["--epochs", "0"])
    assert exit_info.value.code == 2 and "argument --epochs: must be at least 1, got 0" in capsys.readouterr().err


def test_the_largest_seed_is_taken():
    assert train.parse_args(["--seed", str(2**64 - 1)]).seed == 2**64 - 1


def test_device_auto_is_the_accelerator_if_there_is_one_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert train.parse_args(["--device", "auto"]).device == torch.device("cpu")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("cuda"))
    assert train.parse_args([]).device == torch.device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_cuda_device_says_so(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--device", "cuda"])
    assert "argument --device: this machine has no cuda device: use --device auto or cpu" in capsys.readouterr().err


def test_an_unwritable_run_directory_is_reported_before_training(tiny_data_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_train_args(tiny_data_dir, blocker / "run", "--epochs", "1"))
    assert exit_info.value.code == f"error: {blocker / 'run'}: a file is in the way where a directory should be: " \
                                   f"move or rename it"
    assert "epoch" not in capsys.readouterr().out


def test_abbreviated_flags_are_errors_not_other_flags(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--epoch", "5"])  # with prefix matching, argparse would take it for --epochs
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_each_epoch_line_names_the_kept_weights_and_early_stopping_apart(tiny_data_dir, tmp_path, capsys):
    # A min delta of 0.01 makes small gains keep new weights without counting as an improvement.
    train.main(tiny_train_args(tiny_data_dir, tmp_path / "run", "--epochs", "12", "--min-delta", "0.01"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    val_loss = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)[1]["history"]["val_loss"]
    stopping = EarlyStopping(patience=25, min_delta=0.01)
    for epoch, (line, loss) in enumerate(zip(lines, val_loss, strict=True), start=1):
        lowest = loss < min(val_loss[: epoch - 1], default=float("inf"))  # a tie is not lower
        stopping.should_stop(loss)
        assert ("lowest, kept" in line) == lowest, line
        waiting = stopping.epochs_without_improvement
        assert (" improved " in line) == (waiting == 0), line
        assert waiting == 0 or f"no improvement {waiting:2d}/25" in line, line
    assert any("lowest, kept" in line and "no improvement" in line for line in lines)  # the two apart
    assert not any("best" in line for line in lines)  # one word would stand for two things


def test_train_one_epoch_refuses_images_of_the_wrong_shape_or_type():
    model = DenoisingAutoencoder()
    optimizer = train.make_optimizer(model, lr=1e-3)
    for wrong in (torch.rand(8, 28, 28), (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)):
        with pytest.raises(ValueError, match=r"must be float images of shape \(N, 1, 28, 28\)"):
            train.train_one_epoch(model, optimizer, wrong, 4, 0.2)


def test_every_script_works_with_a_code_of_one_number_and_a_decoder_the_page_cannot_run(
        tiny_data_dir, tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")  # what matplotlib picks where there is no display
    run_dir = tmp_path / "run"
    train.main(tiny_train_args(tiny_data_dir, run_dir, "--epochs", "2", "--latent-dim", "1"))
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir)])
    monkeypatch.setattr(explorer, "PAGE_LAYERS", (nn.Linear, nn.Sigmoid, nn.Flatten))  # as if LeakyReLU were unknown
    # --show where matplotlib found no display (as here, drawing with Agg): it says so, and writes.
    visualize.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_data_dir), "--show"])
    output = capsys.readouterr().out
    assert "--show: no window to show them in here" in output
    assert "1-D test codes" in output and "PCA with 1 components" in output
    for name in ("latent_pairs.png", "samples.png", "interpolations.png", "loss_curves.png"):
        assert f"wrote {run_dir / name}" in output
    assert "latent_grid.png" not in output  # drawn for a 2-number code only
    # No page for a decoder it cannot run, one line that says why, and every figure still written.
    assert re.search(r"no explorer page: decoder\.[\w.]+ is a \w+, which the page cannot run", output)
    assert output.count("wrote") == 7 and not (run_dir / "explorer.html").exists()


@requires_real_data
def test_an_epoch_on_real_fashion_mnist(tmp_path, capsys):
    train.main(["--epochs", "1", "--data-dir", str(REAL_DATA_DIR), "--run-dir", str(tmp_path / "run"),
                "--device", "cpu"])
    output = capsys.readouterr().out
    assert "50,000 training and 10,000 validation images" in output
    model, _ = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    images, _ = load_fashion_mnist(REAL_DATA_DIR, train=False)
    assert baselines.model_mae(model, images, images) < 0.4  # from about 0.5 for an untrained sigmoid output


# ---- docs/coursework.md: the one file a student hands in, and the notebook snippet ----

README = (ROOT / "docs" / "coursework.md").read_text()
PROJECT_MODULES = {path.stem for path in ROOT.glob("*.py")}


def readme_block(after: str) -> str:
    """The first ```python block of README after the line `after`."""
    return re.search(r"```python\n(.*?)```", README[README.index(after):], re.DOTALL).group(1)


def coursework_pieces() -> dict[str, list[str]]:
    """README's table of what to paste: file -> the names of its definitions, in order."""
    section = README[README.index("## Hand in one file"):]
    rows = re.findall(r"^\| `(\w+\.py)` \| (.+) \|$", section[: section.index("\n## ")], re.MULTILINE)
    return {file: re.findall(r"`(\w+)`", names) for file, names in rows}


def definitions(file: str, names: list[str]) -> list[str]:
    """The source of each named top-level definition of `file`, as a student copies it."""
    source = (ROOT / file).read_text()
    found = {}
    for node in ast.parse(source).body:
        name = node.targets[0].id if isinstance(node, ast.Assign) else getattr(node, "name", None)
        if name in names:
            first = min([node.lineno, *(decorator.lineno for decorator in getattr(node, "decorator_list", []))])
            found[name] = "\n".join(source.splitlines()[first - 1 : node.end_lineno])
    assert set(found) == set(names), f"README names {set(names) - set(found)}, which {file} does not define"
    return [found[name] for name in names]


def test_the_coursework_file_is_self_contained_and_trains_at_d_2(tiny_data_dir, tmp_path, monkeypatch, capsys):
    """README's one-file route: its imports, exactly its pieces, its own lines; nothing of the project importable."""
    pieces = [piece for file, names in coursework_pieces().items() for piece in definitions(file, names)]
    assert len(pieces) >= 20
    imports, pasted = readme_block("## Hand in one file"), "\n\n".join(pieces)
    own_lines = readme_block("Your own lines")
    handed_in = "\n\n".join([imports.rstrip(), pasted, own_lines])
    stated = re.search(r"The pieces come to (\d+) lines, the whole file with the lines below to\s+(\d+)", README)
    assert (pasted.count("\n") + 1, handed_in.count("\n") + 1) == tuple(map(int, stated.groups())) <= (450, 450)
    for old, new in (('"data"', repr(str(tiny_data_dir))), ("(2, 8)", "(2,)")):
        assert old in handed_in
        handed_in = handed_in.replace(old, new)
    handed_in = handed_in.replace("torch.manual_seed(0)", "RECIPE.update(epochs=3, batch_size=32, val_size=60)  # the "
                                  "test's change\ntorch.manual_seed(0)", 1)

    def no_project_import(name, *arguments, **keywords):
        if name.split(".")[0] in PROJECT_MODULES:
            raise ImportError(f"the handed-in file imports {name}, which the grader does not have")
        return builtins.__import__(name, *arguments, **keywords)

    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg")
    exec(compile(handed_in, str(tmp_path / "coursework.py"), "exec"),
         {"__name__": "__main__", "__builtins__": {**vars(builtins), "__import__": no_project_import}})
    output = capsys.readouterr().out
    assert re.search(r"^d = 2: test MAE 0\.\d{5}$", output, re.MULTILINE), output
    assert (tmp_path / "latent_grid.png").read_bytes().startswith(b"\x89PNG")


def test_readmes_notebook_snippet_runs(trained_tiny_run, tmp_path, monkeypatch, capsys):
    snippet = readme_block("## Use the repository from a notebook")
    tiny = '"--batch-size", "32", "--val-size", "60", "--device", "cpu"'  # what the tiny stand-in needs
    for old, new in (('"/path/to/the/clone"', repr(str(ROOT))), ('"--batch-size", "256"', tiny)):
        assert old in snippet
        snippet = snippet.replace(old, new)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")  # where its run goes
    monkeypatch.setattr(data, "DATA_DIR", trained_tiny_run / "data")  # the default --data-dir, and the snippet's
    monkeypatch.setattr(train, "DATA_DIR", trained_tiny_run / "data")
    matplotlib.use("Agg")
    exec(compile(snippet, "notebook-cell", "exec"), {"__name__": "__main__"})
    output = capsys.readouterr().out
    assert re.search(r"test MAE 0\.\d{5}; best epoch \d+", output), output
    assert (tmp_path / "recon.png").is_file() and (tmp_path / "codes.png").is_file()


def test_the_test_mae_function_is_the_published_metric_by_hand():
    class Halves(torch.nn.Module):  # encodes nothing; decodes every code to an image of 0.5
        def encode(self, images):
            return torch.zeros(len(images), 1)

        def decode(self, codes):
            return torch.full((len(codes), 1, 2, 2), 0.5)

    clean = torch.tensor([[[[0.0, 1.0], [0.5, 0.75]]]])
    # |0.5 - 0|, |0.5 - 1|, 0, |0.5 - 0.75|: mean (0.5 + 0.5 + 0 + 0.25) / 4 = 0.3125
    assert baselines.model_mae(Halves(), torch.rand(1, 1, 2, 2), clean) == pytest.approx(0.3125)
    assert F.l1_loss(torch.full((1, 1, 2, 2), 0.5), clean).item() == pytest.approx(0.3125)
