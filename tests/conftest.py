"""Shared test fixtures: a tiny synthetic stand-in for Fashion-MNIST, written as real IDX files,
a run trained on it, the scripts in processes of their own, and a browser.

Each class is a bright vertical bar at its own column, at a random brightness, so a model can
learn it in a few epochs. The files go into torchvision's layout, exactly where data.py looks.
"""

import gzip
import os
import shutil
import signal
import struct
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the project's modules and scripts sit at the repository root
sys.path.insert(0, str(TESTS))  # and the tests' helpers here, however pytest was started

from data import IDX_FILES, SYSTEM_COPIES  # noqa: E402

TINY_TRAIN, TINY_TEST = 300, 100
REAL_DATA_DIR = ROOT / "data"  # the scripts' default --data-dir, filled from the Debian copy as train.py would
DEBIAN_COPY = SYSTEM_COPIES["FashionMNIST"]


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """The IDX format: 0x0000, type 0x08 (unsigned byte), the number of dimensions, each size big-endian, the data."""
    header = struct.pack(">HBB", 0, 0x08, tensor.ndim) + b"".join(struct.pack(">I", size) for size in tensor.shape)
    return header + tensor.to(torch.uint8).numpy().tobytes()


def synthetic_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(count) % 10  # every class present, evenly
    images = torch.zeros(count, 28, 28)
    brightness = 0.5 + 0.5 * torch.rand(count, generator=generator)
    for index, label in enumerate(labels.tolist()):
        images[index, 4:24, 2 + 2 * label : 5 + 2 * label] = brightness[index]
    return (images * 255).round().to(torch.uint8), labels.to(torch.uint8)


def write_tiny_dataset(raw_dir: Path, compress: bool = False) -> None:
    generator = torch.Generator().manual_seed(1234)
    train_images, train_labels = synthetic_images(TINY_TRAIN, generator)
    test_images, test_labels = synthetic_images(TINY_TEST, generator)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, tensor in zip(IDX_FILES, (train_images, train_labels, test_images, test_labels)):
        if compress:
            (raw_dir / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(tensor)))
        else:
            (raw_dir / name).write_bytes(idx_bytes(tensor))


@pytest.fixture
def tiny_data_dir(tmp_path) -> Path:
    """A --data-dir holding the tiny stand-in, in torchvision's layout."""
    data_dir = tmp_path / "data"
    write_tiny_dataset(data_dir / "FashionMNIST" / "raw")
    return data_dir


def tiny_train_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """train.py flags for a run of a few seconds on the tiny stand-in."""
    return ["--data-dir", str(data_dir), "--run-dir", str(run_dir), "--val-size", "60", "--batch-size", "32",
            "--device", "cpu", *extra]


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory) -> Path:
    """A run trained for 15 epochs on the tiny stand-in, once per session; tests take a copy (tiny_run)."""
    import train

    base = tmp_path_factory.mktemp("tiny_run")
    data_dir = base / "data"
    write_tiny_dataset(data_dir / "FashionMNIST" / "raw")
    train.main(tiny_train_args(data_dir, base / "run", "--epochs", "15"))
    return base


@pytest.fixture
def tiny_run(trained_tiny_run, tmp_path) -> Path:
    """A fresh copy of that run (tiny_run / "run") beside its data (tiny_run / "data"), for one test to change."""
    copy = tmp_path / "tiny_run"
    shutil.copytree(trained_tiny_run / "run", copy / "run")
    shutil.copytree(trained_tiny_run / "data", copy / "data")
    return copy


# ---- The scripts in processes of their own (tests/processes.py) ----

SERVER = None


def pytest_collection_finish(session):
    """Start the process server as soon as a collected test needs it, so that its imports overlap the rest."""
    global SERVER
    if hasattr(os, "fork") and any("scripts" in item.fixturenames for item in session.items):
        from processes import Server

        SERVER = Server()


def pytest_sessionfinish(session):
    if SERVER is not None:
        SERVER.close()


@pytest.fixture
def scripts():
    """Starts the project's scripts as processes of their own: `scripts.start("train.py", ..., cwd=...)`.
    Whatever a test leaves running (an endless training, where the test failed) is killed after it."""
    if SERVER is None:
        pytest.skip("no os.fork here (Windows): the tests of whole processes need it")
    started = len(SERVER.started)
    yield SERVER
    for script in SERVER.started[started:]:
        if SERVER.event(script.number, "returncode", timeout=0) is None:
            script.send_signal(signal.SIGKILL)


def real_data_available() -> bool:
    return all((DEBIAN_COPY / f"{name}.gz").is_file() for name in IDX_FILES) or all(
        (REAL_DATA_DIR / "FashionMNIST" / "raw" / name).is_file() for name in IDX_FILES
    )


requires_real_data = pytest.mark.skipif(
    not real_data_available(),
    reason="real Fashion-MNIST not found: apt-get install dataset-fashion-mnist",
)
