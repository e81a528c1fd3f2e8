"""Measure a trained run on the Fashion-MNIST test set.

    python evaluate.py                        # the newest run in runs/
    python evaluate.py --run-dir runs/seed3   # another run
    python evaluate.py --noise-std 0.3        # harder noise than the run trained on

The headline is the published metric: the mean absolute error between the output for each noisy
test image and the clean one. Beside it: baselines, other noise levels, the error per class, and
how well the codes group images by class. Written to <run-dir>/metrics.json.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cli  # first, so that Ctrl-C while torch loads is one line
import torch
from baselines import (
    BLUR, CLIPPED, NOISE_LEVELS, NOISY, PrincipalComponents, choose_blur_sigma, components_to_match,
    denoisers, errors_at_noise_levels, mean_absolute_error, peak_signal_to_noise_ratio,
)
from checkpoints import load_checkpoint
from data import (
    CLASS_NAMES, DATA_DIR, TEST_NOISE_SEED, add_noise, noisy_test_set, standard_test_noise,
    write_atomically,
)
import runs
from runs import ALL_EPOCHS, CHECKPOINT_FILE, EARLY_STOPPING
from train import MAX_NOISE_STD, load_split

PUBLISHED_TEST_MAE = 0.06857  # test noise std 0.2
PUBLISHED_MODEL = "fashion-mnist-dae/1"  # the model it is for
NEIGHBOURS = 5  # k of the kNN on the codes


@dataclass
class RunData:
    """What a run was trained and is measured on, rebuilt from its seed, with the model's codes."""

    test_clean: torch.Tensor  # (10000, 1, 28, 28)
    test_noisy: torch.Tensor  # with the test noise (TEST_NOISE_SEED) at the asked std
    test_labels: torch.Tensor
    train_images: torch.Tensor  # the run's training split, clean
    train_labels: torch.Tensor
    train_noisy: torch.Tensor  # with noise from the run's seed: the same each call
    val_clean: torch.Tensor
    val_noisy: torch.Tensor
    train_codes: torch.Tensor  # model.encode(train_noisy): (N, d)
    test_codes: torch.Tensor  # model.encode(test_noisy): (10000, d)


@torch.no_grad()
def run_data(model, checkpoint: dict, data_dir, noise_std: float | None = None) -> RunData:
    """The run's split and noise, rebuilt from its seed, and the test set at `noise_std` (None:
    the run's own), with the model's codes of the noisy images."""
    config = checkpoint["config"]
    generator = torch.Generator().manual_seed(config["seed"])
    (train_images, train_labels), (val_clean, val_noisy) = load_split(
        data_dir, config["val_size"], config["noise_std"], generator,
        "pass the --data-dir the run was trained on")
    test_std = config["noise_std"] if noise_std is None else noise_std
    test_clean, test_noisy, test_labels = noisy_test_set(data_dir, test_std)
    train_noisy = add_noise(train_images, config["noise_std"], generator=generator)  # seeded too
    return RunData(test_clean, test_noisy, test_labels, train_images, train_labels, train_noisy,
                   val_clean, val_noisy, model.encode(train_noisy), model.encode(test_noisy))


def sampling_distribution(model, training_codes: torch.Tensor) -> tuple:
    """Where random codes come from: (mean (d,), covariance (d, d), words for a caption). A model's
    prior if it has one (a VAE's); a DAE has none, so a Gaussian fitted to its training codes."""
    if hasattr(model, "prior"):
        return model.prior(training_codes.shape[1])
    mean = training_codes.mean(dim=0)  # (N, d) -> (d,)
    covariance = torch.cov(training_codes.T).reshape(len(mean), -1)  # (d, d), also for d = 1
    return mean, covariance, "a Gaussian fitted to the training codes (mean and covariance)"


def describes(checkpoint: dict) -> dict:
    """What a report or figure records of the weights it was made from."""
    return {"best_epoch": checkpoint["best_epoch"], "checkpoint_stamp": checkpoint["stamp"]}


def mae_per_class(prediction: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> dict:
    """Class name -> mean absolute error over its images, hardest first; absent classes left out."""
    error_per_image = (prediction - target).abs().flatten(1).mean(dim=1)  # (N, 1, 28, 28) -> (N,)
    per_class = {CLASS_NAMES[index]: error_per_image[labels == index].mean().item()
                 for index in labels.unique().tolist()}
    return dict(sorted(per_class.items(), key=lambda item: item[1], reverse=True))


def knn_accuracy(train_codes: torch.Tensor, train_labels: torch.Tensor, test_codes: torch.Tensor,
                 test_labels: torch.Tensor, k: int) -> float:
    """Share of test codes whose k nearest training codes (Euclidean) vote for the right class."""
    predictions = []
    for chunk in test_codes.split(1000):  # (1000, N) distances at a time
        nearest = torch.cdist(chunk, train_codes).topk(k, largest=False).indices  # (1000, k)
        predictions.append(train_labels[nearest].mode(dim=1).values)  # ties: the lowest class
    return (torch.cat(predictions) == test_labels).float().mean().item()


def why_published_does_not_apply(checkpoint: dict, noise_std: float, state: str) -> str | None:
    """None when this run and test are the published recipe's, so 0.06857 compares; else why not."""
    if "recipe_changes" not in checkpoint:
        return "this checkpoint does not record whether it followed the recipe"
    changes = checkpoint["recipe_changes"]
    if changes:
        return "the run changed the recipe: " + ", ".join(
            f"--{name.replace('_', '-')} {value}" for name, value in changes.items())
    if checkpoint["stop_kind"] not in (ALL_EPOCHS, EARLY_STOPPING):
        epochs = len(checkpoint["history"]["val_loss"])  # stopped by no rule of the recipe
        return f"training was stopped ({state}) after {epochs} epochs"
    if checkpoint["format"] != PUBLISHED_MODEL:  # a fork's model, such as a VAE
        return f"it is for the published DAE, and this is a '{checkpoint['format']}' model"
    if noise_std != checkpoint["config"]["noise_std"]:
        return (f"it was measured at test noise std {noise_std}, not the recipe's "
                f"{checkpoint['config']['noise_std']}")
    return None


def scores(prediction: torch.Tensor, clean: torch.Tensor) -> dict:
    return {"mae": mean_absolute_error(prediction, clean),
            "psnr_db": peak_signal_to_noise_ratio(prediction, clean)}


@torch.no_grad()
def evaluate(run_dir: Path, data_dir, noise_std: float | None) -> dict:
    """Every number of the report for the run in `run_dir`, at test noise `noise_std` (None: the
    run's own). Every method is fitted once, at the run's own noise, as the model was."""
    if noise_std is not None and not 0 <= noise_std <= MAX_NOISE_STD:  # nan fails this too
        raise ValueError(f"noise_std must be from 0 to {MAX_NOISE_STD:g}, got {noise_std}")
    model, checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    training_noise_std = checkpoint["config"]["noise_std"]
    noise_std = training_noise_std if noise_std is None else noise_std
    run = run_data(model, checkpoint, data_dir, noise_std)
    # The run's split: PCA fits its training images, the blur its validation
    all_components = PrincipalComponents.fit(run.train_images)
    pca = all_components.first(model.latent_dim)  # a linear code as large as the model's
    blur_sigma = choose_blur_sigma(run.val_noisy, run.val_clean)
    methods = denoisers(model, pca, blur_sigma)
    clean, noisy = run.test_clean, run.test_noisy  # (10000, 1, 28, 28) each
    denoised = model.decode(run.test_codes)  # (10000, 1, 28, 28)
    test_mae = mean_absolute_error(denoised, clean)
    levels = sorted({*NOISE_LEVELS, training_noise_std, noise_std})  # the run's noise, and this one
    state = run_state(checkpoint, run_dir)
    return {
        "test_mae": test_mae,
        "published_test_mae": PUBLISHED_TEST_MAE,
        "published_does_not_apply": why_published_does_not_apply(checkpoint, noise_std, state),
        "noise_std": noise_std,
        "test_noise_seed": TEST_NOISE_SEED,
        "test_images": len(clean),
        "blur_sigma": blur_sigma,
        "methods": {name: scores(denoise(noisy), clean) for name, denoise in methods.items()},
        "pca": {"components": pca.size, "fitted_on": len(run.train_images),
                "components_to_match_the_model": components_to_match(all_components, noisy, clean,
                                                                   test_mae)},
        "noise_levels": {"noise_std": levels, "mae": errors_at_noise_levels(
            methods, clean, standard_test_noise(clean.shape), levels)},
        "mae_per_class": mae_per_class(denoised, clean, run.test_labels),
        "knn": {
            "k": NEIGHBOURS,
            "train_codes": len(run.train_codes),
            "accuracy": knn_accuracy(run.train_codes, run.train_labels, run.test_codes,
                                     run.test_labels, NEIGHBOURS),
            "pca_accuracy": knn_accuracy(pca.encode(run.train_noisy), run.train_labels,
                                         pca.encode(noisy), run.test_labels, NEIGHBOURS),
        },
        "run": {
            "checkpoint": str(run_dir / CHECKPOINT_FILE),
            "seed": checkpoint["config"]["seed"],
            **describes(checkpoint),  # best_epoch, checkpoint_stamp: the weights this describes
            "epochs_run": len(checkpoint["history"]["val_loss"]),
            "stop_reason": checkpoint["stop_reason"],
            "state": state,
            "device": checkpoint["device"],
            "model": model.name,
            "model_short_name": model.short_name,
            "latent_dim": model.latent_dim,
            "training_noise_std": training_noise_std,
        },
    }


def print_report(metrics: dict) -> None:
    run, knn, pca = metrics["run"], metrics["knn"], metrics["pca"]
    print(f"run         {run['checkpoint']}: seed {run['seed']}, best epoch {run['best_epoch']} of "
          f"{run['epochs_run']} ({run['state']}), trained on {run['device']}")
    print(f"test set    {metrics['test_images']:,} images, noise std {metrics['noise_std']}, "
          f"noise seed {metrics['test_noise_seed']}")
    reason = metrics["published_does_not_apply"]
    published = (f"(published: {metrics['published_test_mae']})" if reason is None
                 else f"(the published {metrics['published_test_mae']} does not compare: {reason})")
    print(f"\ntest MAE    {metrics['test_mae']:.5f}   {published}")
    untouched = metrics["methods"][NOISY]["mae"]
    if metrics["noise_std"] == 0:
        print(f"            at noise std 0 the input is the clean image itself, so nothing beats "
              f"it: this is what the {run['latent_dim']}-number code loses")
    elif metrics["test_mae"] >= untouched:
        print(f"            worse than the untouched noisy input ({untouched:.5f}): this model has "
              f"not learned to denoise: train it for more steps, with more --epochs or a smaller "
              f"--batch-size (docs/short-runs.md)")

    print(f"\n{'method':<52}{'MAE':>9}{'PSNR':>10}")
    for method, score in metrics["methods"].items():
        label = f"{method} (sigma {metrics['blur_sigma']})" if method == BLUR else method
        print(f"{label:<52}{score['mae']:>9.5f}{decibels(score['psnr_db']):>7} dB")
    matching = pca["components_to_match_the_model"]
    print(f"PCA (fitted on the run's {pca['fitted_on']:,} clean training images) needs "
          + (f"{matching} components to match the model's {run['latent_dim']}" if matching
             else f"more than all 784 components to match the model's {run['latent_dim']}"))

    levels = metrics["noise_levels"]
    names = list(levels["mae"])
    print(f"\nMAE at other test noise levels (every method as fitted at noise std "
          f"{run['training_noise_std']})")
    print(f"{'noise std':>9}" + "".join(f"{short_name(name, run):>12}" for name in names))
    for index, std in enumerate(levels["noise_std"]):
        mark = " *" if std == run["training_noise_std"] else "  "
        errors = "".join(f"{levels['mae'][name][index]:>12.5f}" for name in names)
        print(f"{std:>7.2f}{mark}{errors}")
    print("  * the noise the model was trained with")

    print("\nMAE per class, hardest first")
    for name, mae in metrics["mae_per_class"].items():
        print(f"  {name:<12}{mae:.5f}")
    print(f"\nlatent space: {knn['k']}-nearest-neighbour accuracy of the {run['latent_dim']}-D "
          f"test codes against {knn['train_codes']:,} training codes: {knn['accuracy']:.1%} "
          f"(PCA's {pca['components']}-D codes: {knn['pca_accuracy']:.1%}; chance: 10%)")


def short_name(method: str, run: dict) -> str:
    """A column heading for the noise-level table."""
    headings = {run["model"]: run["model_short_name"], NOISY: "noisy", CLIPPED: "clipped",
                BLUR: "blur"}
    return headings.get(method, method.replace("PCA with ", "PCA-").replace(" components", ""))


def metrics_file(noise_std: float, training_noise_std: float) -> str:
    """metrics.json holds the run's own evaluation; a test at other noise goes beside it."""
    return "metrics.json" if noise_std == training_noise_std else f"metrics-noise{noise_std:g}.json"


def decibels(psnr: float | None) -> str:
    """A PSNR for the table; None in metrics.json is an exact copy's, an infinite PSNR."""
    return "inf" if psnr is None else f"{psnr:.2f}"


def json_text(metrics: dict) -> str:
    """metrics as strict JSON: an infinite PSNR (an exact copy) becomes null, as readers expect."""
    def finite(value):
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [finite(item) for item in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps(finite(metrics), indent=2, allow_nan=False) + "\n"


# ---- The command line ----

def run_state(checkpoint: dict, run_dir: Path) -> str:
    """How a run ended, in words; for one that never said, whether it is still alive."""
    if checkpoint["stop_kind"] != runs.RUNNING:
        return checkpoint["stop_reason"]
    pid = runs.training_pid(run_dir)
    if pid:
        return f"still training (pid {pid})"
    return "stopped without recording why (killed, or the machine went down)"


def run_to_use(run_dir: str | None, doing: str, while_training: bool = False) -> Path:
    """--run-dir's run, or the newest finished one, said in a line; a run still training
    only if asked."""
    pid = run_dir and runs.training_pid(Path(run_dir))
    if pid and not while_training:
        raise cli.UserError(f"the run in {run_dir} is still training (pid {pid}): wait for it to "
                            f"end, or pass --while-training to use its best weights so far (what "
                            f"is written says which)")
    if run_dir is not None:
        return Path(run_dir)
    recorded, training = [], []
    for path in runs.RUNS_DIR.glob(f"*/{CHECKPOINT_FILE}"):
        try:
            recorded.append((load_checkpoint(path)[1]["saved_at"], path.parent))
        except (cli.UserError, OSError):  # not a run of this code: not a candidate
            pass
    # By each run's own record, never a file's time
    for saved, path in sorted(recorded, reverse=True):
        if runs.training_pid(path) is None:
            why = "the only run there" if len(recorded) == 1 else (
                f"of {len(recorded)} runs, the last saved by their records: "
                f"{saved[:19].replace('T', ' ')}")
            note = (f"; passed over {len(training)} newer run(s) still training, the newest "
                    f"{training[0]}" if training else "")
            print(f"{doing} the newest run, {path} ({why}; pass --run-dir for another){note}")
            return path
        training.append(f"{path} (pid {runs.training_pid(path)})")
    if training:
        raise cli.UserError(f"no run in {runs.RUNS_DIR} has finished; {len(training)} still "
                            f"training, the newest {training[0]}: wait for it, or pass its "
                            f"--run-dir with --while-training")
    raise cli.UserError(f"no run in {runs.RUNS_DIR}: run `python train.py` first, or pass "
                        f"--run-dir")


@cli.script
def main(argv=None) -> None:
    parser = cli.parser("evaluate.py", "Measure a trained run on Fashion-MNIST's test set.")
    parser.add_argument("--run-dir", default=None,
                        help="the run to evaluate (default: the newest in runs/)")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    parser.add_argument("--noise-std", type=cli.bounded(float, 0, MAX_NOISE_STD), default=None,
                        help="test noise std (default: the noise the run was trained with)")
    parser.add_argument("--while-training", action="store_true",
                        help="measure a run still training, at its best weights so far")
    args = parser.parse_args(argv)

    run_dir = run_to_use(args.run_dir, "evaluating", args.while_training)
    metrics = evaluate(run_dir, args.data_dir, args.noise_std)
    # written before printed: `| head -3` leaves it whole
    name = metrics_file(metrics["noise_std"], metrics["run"]["training_noise_std"])
    write_atomically(run_dir / name, json_text(metrics).encode())
    print_report(json.loads(json_text(metrics)))  # the report shows what the file holds
    print(f"\nwritten to {run_dir / name}")


if __name__ == "__main__":
    main()
