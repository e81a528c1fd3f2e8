"""README's guide from this DAE to a VAE, kept as docs/vae.patch: it must apply, and the fork must train.

The main suite keeps a quick check: the patch applies to a copy of the project, and the fork's
real-data test trains it there (in a process of its own: the fork's modules have these names).
`.ci/run` runs the fork's whole suite as a step of its own. When a change to the main code breaks
the patch or the fork, this fails: then docs/vae.patch needs updating (docs/vae.md).
"""

import shutil
import subprocess
import sys

import pytest

import dae
from conftest import REAL_DATA_DIR, ROOT, real_data_available

PATCH = ROOT / "docs" / "vae.patch"
# The patch turns the DAE into a VAE; in a fork that has applied it already, there is nothing left to check.
pytestmark = pytest.mark.skipif(dae.CHECKPOINT_FORMAT != "fashion-mnist-dae/1",
                                reason="this code is no longer the DAE that docs/vae.patch applies to")
QUICK_CHECK = ["tests/test_vae.py::test_the_vae_learns_on_fashion_mnist_without_collapsing"]


def patch_command() -> list[str]:
    if shutil.which("git"):
        return ["git", "apply", str(PATCH)]  # works outside a repository too, as a plain patch tool
    if shutil.which("patch"):
        return ["patch", "-p1", "-i", str(PATCH)]
    pytest.skip("neither git nor patch is installed, so docs/vae.patch cannot be applied")


def test_docs_vae_patch_applies_and_the_fork_learns(tmp_path):
    fork = tmp_path / "fork"
    (fork / "tests").mkdir(parents=True)
    for path in [*ROOT.glob("*.py"), *(ROOT / "tests").glob("*.py")]:
        shutil.copy(path, fork / path.relative_to(ROOT))
    REAL_DATA_DIR.mkdir(exist_ok=True)
    (fork / "data").symlink_to(REAL_DATA_DIR)  # the dataset, unpacked once, shared with the fork
    result = subprocess.run(patch_command(), cwd=fork, capture_output=True, text=True)
    assert result.returncode == 0, f"docs/vae.patch no longer applies to the code; update the guide:\n{result.stderr}"

    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *QUICK_CHECK],
                            cwd=fork, capture_output=True, text=True)
    assert result.returncode == 0, f"the VAE fork's own tests fail:\n{result.stdout}\n{result.stderr}"
    if real_data_available():  # the real-data test must have run, not been skipped
        assert "skipped" not in result.stdout.splitlines()[-1], result.stdout
