"""docs/vae.patch, the guide from this DAE to a VAE, and docs/conv.patch on top of it, to a
convolutional VAE: each must apply to this code.

This is the quick check (`git apply`, a fraction of a second). `.ci/run` goes further, as a step of
its own: it runs the VAE fork's whole suite, and trains the convolutional fork for an epoch through
evaluate.py and visualize.py (docs/install.md says how to run both here). When a change to the main
code breaks a patch, this fails: then the patch needs making again (docs/vae.md says how).
"""

import shutil
import subprocess

import pytest

import checkpoints
from conftest import ROOT

PATCHES = [ROOT / "docs" / "vae.patch", ROOT / "docs" / "conv.patch"]
# The patches turn the DAE into a VAE; in a fork that has applied them already, there is nothing left to check.
pytestmark = pytest.mark.skipif(checkpoints.CHECKPOINT_FORMAT != "fashion-mnist-dae/1",
                                reason="this code is no longer the DAE that docs/vae.patch applies to")


def test_the_vae_patch_applies_and_the_conv_patch_on_top_of_it(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed, so the patches cannot be applied")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("this copy of the project is not a git clone: no list of its files to copy")
    for name in tracked:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for patch in PATCHES:  # git apply works outside a repository too, as a plain patch tool
        result = subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, f"{patch.name} no longer applies to the code; make it again:\n{result.stderr}"
    assert 'CHECKPOINT_FORMAT = "fashion-mnist-vae/1"' in (tmp_path / "checkpoints.py").read_text()
    assert "nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)" in (tmp_path / "dae.py").read_text()
