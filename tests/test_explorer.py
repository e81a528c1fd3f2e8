"""The explorer page: its decoder draws what the model's does, in a real browser, and it is one file.

The browser test opens the page from disk in headless Chromium (Debian's `chromium`), sets the code
through the page's address, and reads back the pixels the page drew on its canvas.
"""

import json
import re
import shutil
import subprocess

import pytest
import torch

import explorer
from conftest import REAL_DATA_DIR, requires_real_data
from dae import DenoisingAutoencoder
from runs import CHECKPOINT_FILE, load_checkpoint, save_checkpoint, written_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install chromium")


def dump_dom(page, fragment: str) -> str:
    """The page's DOM after it has loaded in headless Chromium, at the address page#fragment."""
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             f"{page.as_uri()}#{fragment}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def attribute(dom: str, name: str) -> str | None:
    match = re.search(rf'{name}="([^"]*)"', dom)
    return match and match.group(1)


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory):
    run_dir = tiny_run / "run"
    explorer.main(["--run-dir", str(run_dir), "--data-dir", str(tiny_run / "data")])
    return run_dir / "explorer.html"


@needs_chromium
@torch.no_grad()
def test_the_page_draws_what_the_models_decoder_draws(page, tiny_run):
    model, _ = load_checkpoint(tiny_run / "run" / CHECKPOINT_FILE)
    codes = torch.randn(2, model.latent_dim, generator=torch.Generator().manual_seed(0)) * 3
    for code in codes:
        fragment = "z=" + ",".join(f"{value:.4f}" for value in code.tolist())
        dom = dump_dom(page, fragment)
        assert attribute(dom, "data-state") == "ready" and attribute(dom, "data-error") is None
        drawn = torch.tensor([float(value) for value in attribute(dom, "data-pixels").split(",")])
        expected = 255 * model.decode(torch.tensor([[round(v, 4) for v in code.tolist()]])).flatten()
        assert (drawn - expected).abs().max() <= 1, "the page's decoder differs from dae.py's by over 1/255"


def test_the_page_is_one_file_that_needs_no_network(page, tiny_run):
    html = page.read_text()
    assert "http" not in html and "<script src" not in html and "@import" not in html
    assert "explorer.html" in written_files(tiny_run / "run")  # written like every report
    data = json.loads(re.search(r"const RUN = (.*);\n", html).group(1))
    assert data["model"] == DenoisingAutoencoder.name and data["latent_dim"] == 8


@requires_real_data
@pytest.mark.parametrize("latent_dim", [2, 8, 16, 784])
def test_the_page_stays_under_its_size_limit(latent_dim, tmp_path):
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim)
    save_checkpoint(tmp_path / CHECKPOINT_FILE, model, model.state_dict(), best_epoch=1, stamp="s",
                    config={"noise_std": 0.2, "seed": 0, "val_size": 10_000})
    page, _ = explorer.build_page(tmp_path, REAL_DATA_DIR)
    assert len(page) <= explorer.MAX_BYTES


@needs_chromium
@pytest.mark.parametrize("latent_dim", [1, 20])
def test_the_page_works_for_any_code_size_and_says_what_it_does_past_16(latent_dim, tiny_data_dir, tmp_path):
    torch.manual_seed(0)
    model = DenoisingAutoencoder(latent_dim)
    save_checkpoint(tmp_path / CHECKPOINT_FILE, model, model.state_dict(), best_epoch=1, stamp="s",
                    config={"noise_std": 0.2, "seed": 0, "val_size": 60})
    page, _ = explorer.build_page(tmp_path, tiny_data_dir)
    (tmp_path / "explorer.html").write_bytes(page)
    dom = dump_dom(tmp_path / "explorer.html", "image=3")
    assert attribute(dom, "data-state") == "ready" and attribute(dom, "data-error") is None
    assert len(re.findall(r'<input type="range" id="z\d+"', dom)) == min(latent_dim, 16)  # one per number
    assert (f"This code has {latent_dim} numbers: the sliders move the first 16" in dom) == (latent_dim > 16)
