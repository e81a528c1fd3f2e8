"""README's guide from this DAE to a VAE, kept as docs/vae.patch: it must apply, train, evaluate, draw, not collapse.

These tests copy the project, apply the patch and run the fork's own scripts. When a change to the
main code breaks the patch or the fork, they fail: then the guide and docs/vae.patch need updating
(README, "From here to a VAE").
"""

import json
import shutil
import subprocess
import sys

import pytest

import dae
from conftest import REAL_DATA_DIR, ROOT, requires_real_data, tiny_train_args

PATCH = ROOT / "docs" / "vae.patch"
VAE_FORMAT = "fashion-mnist-vae/1"
# The patch turns the DAE into a VAE; in a fork that has applied it already, there is nothing left to check.
pytestmark = pytest.mark.skipif(dae.CHECKPOINT_FORMAT != "fashion-mnist-dae/1",
                                reason="this code is no longer the DAE that docs/vae.patch applies to")
# Mean KL divergence of the test codes from N(0, I), in nats. A collapsed VAE, whose codes all sit
# on the prior and carry nothing about the image, measures about 0.0002.
KL_OF_THE_CODES = """
import sys, torch
from dae import load_checkpoint
from data import noisy_test_set
model, checkpoint = load_checkpoint(sys.argv[1] + "/checkpoint.pt")
_, noisy, _ = noisy_test_set(sys.argv[2], checkpoint["config"]["noise_std"])
with torch.no_grad():
    mu, logvar = model.encoder(noisy)
print((-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean().item())
"""


def patch_command() -> list[str]:
    if shutil.which("git"):
        return ["git", "apply", str(PATCH)]  # works outside a repository too, as a plain patch tool
    if shutil.which("patch"):
        return ["patch", "-p1", "-i", str(PATCH)]
    pytest.skip("neither git nor patch is installed, so docs/vae.patch cannot be applied")


@pytest.fixture
def fork(tmp_path):
    """A copy of the project's code and tests with docs/vae.patch applied, as a reader forking it would have."""
    fork = tmp_path / "fork"
    (fork / "tests").mkdir(parents=True)
    for path in [*ROOT.glob("*.py"), *(ROOT / "tests").glob("*.py")]:
        shutil.copy(path, fork / path.relative_to(ROOT))
    result = subprocess.run(patch_command(), cwd=fork, capture_output=True, text=True)
    assert result.returncode == 0, f"docs/vae.patch no longer applies to the code; update the guide:\n{result.stderr}"
    return fork


def run_in(fork, *command: str) -> str:
    result = subprocess.run([sys.executable, *command], cwd=fork, capture_output=True, text=True)
    assert result.returncode == 0, f"`{' '.join(command)}` fails in the VAE fork:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_vae_fork_trains_evaluates_and_draws_with_no_other_change(fork, tiny_run, tmp_path):
    data, run = str(tiny_run / "data"), str(tmp_path / "vae-run")
    run_in(fork, "train.py", *tiny_train_args(tiny_run / "data", tmp_path / "vae-run", "--epochs", "2"))
    report = run_in(fork, "evaluate.py", "--run-dir", run, "--data-dir", data)
    assert "does not compare" in report
    assert json.loads((tmp_path / "vae-run" / "metrics.json").read_text())["knn"]["train_codes"] == 240
    drawn = run_in(fork, "visualize.py", "--run-dir", run, "--data-dir", data)
    assert drawn.count("wrote ") == 5


def test_the_vae_fork_refuses_a_dae_checkpoint_by_name(fork, tiny_run):
    result = subprocess.run([sys.executable, "evaluate.py", "--run-dir", str(tiny_run / "run"),
                             "--data-dir", str(tiny_run / "data")], cwd=fork, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"holds a 'fashion-mnist-dae/1' model, and this code reads '{VAE_FORMAT}': "
        f"train one with this code's `python train.py`"
    )


@requires_real_data
def test_the_vae_fork_learns_on_fashion_mnist_without_collapsing(fork, tmp_path):
    run = str(tmp_path / "vae-run")
    # Smaller batches than the recipe's 4096, for enough optimizer steps in a few seconds.
    run_in(fork, "train.py", "--epochs", "3", "--batch-size", "256", "--device", "cpu",
           "--data-dir", str(REAL_DATA_DIR), "--run-dir", run)
    run_in(fork, "evaluate.py", "--run-dir", run, "--data-dir", str(REAL_DATA_DIR))
    metrics = json.loads((tmp_path / "vae-run" / "metrics.json").read_text())
    # It denoises: better than leaving the noise where it is (a collapsed VAE measured 0.2226 here).
    assert metrics["test_mae"] < metrics["methods"]["noisy input, as is"]["mae"]
    # Its codes carry the image: far from the prior, and they group images by class (chance is 10%).
    assert float(run_in(fork, "-c", KL_OF_THE_CODES, run, str(REAL_DATA_DIR))) > 1.0
    assert metrics["knn"]["accuracy"] > 0.5
