"""The data (data.py): where the files come from, what they hold, the split and the noise."""

import errno
import os
import stat

import pytest
import torch
import torchvision

import cli
import data
from conftest import (
    DEBIAN_COPY, REAL_DATA_DIR, TINY_TEST, TINY_TRAIN, idx_bytes, requires_real_data, write_tiny_dataset,
)
from data import DataError, add_noise, fetch_data, load_fashion_mnist, training_split


def fetch_and_load(data_dir, system_copy, train=True):
    fetch_data(data_dir, system_copy=system_copy)
    return load_fashion_mnist(data_dir, train=train)


def test_loads_idx_files_from_the_data_directory(tiny_data_dir, tmp_path):
    images, labels = fetch_and_load(tiny_data_dir, tmp_path / "no-system-copy")
    assert images.shape == (TINY_TRAIN, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (TINY_TRAIN,) and labels.dtype == torch.int64
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    # The fixture draws class 0's bar in columns 2-4 at a brightness of 128-255 out of 255, and nothing else:
    # the pixels are the bytes divided by 255.
    raw = data.read_idx(tiny_data_dir / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
    assert torch.equal(images[:, 0], raw.float() / 255)
    assert images[0, 0, 10, 2] >= 0.5 and images[0, 0, 10, 10] == 0 and images.max() <= 1
    test_images, _ = load_fashion_mnist(tiny_data_dir, train=False)
    assert test_images.shape == (TINY_TEST, 1, 28, 28)


def test_unpacks_the_debian_copy_into_the_data_directory(tmp_path):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    images, _ = fetch_and_load(tmp_path / "data", system_copy)
    assert images.shape == (TINY_TRAIN, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data" / "FashionMNIST" / "raw").iterdir()) == sorted(data.IDX_FILES)


@pytest.mark.parametrize("where, compress", [("data directory", True), ("data directory", False),
                                             ("raw directory", True)])
def test_idx_files_put_by_hand_load_packed_or_not(tmp_path, where, compress):
    """Debian's .gz files differ from torchvision's checksums; dropped into the data directory they must still load."""
    data_dir = tmp_path / "data"
    write_tiny_dataset(data_dir if where == "data directory" else data_dir / "FashionMNIST" / "raw", compress)
    # No system copy, and any download would fail: only the files put by hand can be read.
    images, labels = fetch_and_load(data_dir, tmp_path / "no-system-copy")
    assert images.shape == (TINY_TRAIN, 1, 28, 28) and labels[:3].tolist() == [0, 1, 2]


@pytest.mark.skipif(not all((DEBIAN_COPY / f"{name}.gz").is_file() for name in data.IDX_FILES),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_gz_files_copied_into_the_data_directory_load(tmp_path, monkeypatch):
    """The very files Debian ships, whose checksums torchvision would refuse, put by hand in --data-dir."""
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    for name in data.IDX_FILES:
        (tmp_path / f"{name}.gz").symlink_to(DEBIAN_COPY / f"{name}.gz")
    images, _ = fetch_and_load(tmp_path, tmp_path / "no-system-copy", train=False)
    assert images.shape == (10_000, 1, 28, 28)


def test_unpacked_data_gets_ordinary_file_permissions(tmp_path):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    old_umask = os.umask(0o022)
    try:
        fetch_data(tmp_path / "data", system_copy=system_copy)
    finally:
        os.umask(old_umask)
    modes = {stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "data" / "FashionMNIST" / "raw").iterdir()}
    assert modes == {0o644}  # readable by others, as every other file the project writes


def test_public_functions_refuse_images_they_cannot_use_in_one_line():

    with pytest.raises(TypeError, match=r"^add_noise needs floating-point pixels .* got torch.uint8: .*/ 255$"):
        add_noise(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 0.2)
    for wrong in (torch.zeros(2, 28, 28), torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(2, 784)):
        with pytest.raises(ValueError) as error:
            data.check_images(wrong)
        assert "(N, 1, 28, 28)" in str(error.value) and str(tuple(wrong.shape)) in str(error.value)
        assert "\n" not in str(error.value)
    data.check_images(torch.zeros(2, 1, 28, 28))  # the right kind passes


def test_no_data_anywhere_names_both_remedies(tmp_path, monkeypatch):
    # Point torchvision's download at a closed local port, so the test never reaches the internet.
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError) as error:
        fetch_data(tmp_path / "data", system_copy=tmp_path / "no-system-copy")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "could not be downloaded (" in message
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "data") in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "corrupted header"])
def test_a_damaged_idx_file_is_named_with_the_remedy(tiny_data_dir, tmp_path, damage):
    damaged = tiny_data_dir / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    content = damaged.read_bytes()
    damaged.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"\x07" * 4 + content[4:])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is damaged .* delete it and run again"):
        fetch_data(tiny_data_dir, system_copy=tmp_path / "no-system-copy")


def test_a_damaged_debian_copy_is_named(tmp_path):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    (system_copy / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz.*--reinstall dataset-fashion-mnist$"):
        fetch_data(tmp_path / "data", system_copy=system_copy)
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").glob("*.tmp"))


def test_the_split_holds_every_image_once_and_follows_its_seed():
    images = torch.arange(600, dtype=torch.float32).view(600, 1, 1, 1)  # each image is its own index
    labels = torch.arange(600) % 10

    def split(seed):
        generator = torch.Generator().manual_seed(seed)
        (train_x, train_y), (val_x, _) = training_split(images, labels, 100, 0.0, generator=generator)
        return (train_x, train_y), (val_x, labels[val_x.flatten().long()])

    (train_x, train_y), (val_x, val_y) = split(0)
    assert len(train_x) == len(train_y) == 500 and len(val_x) == len(val_y) == 100
    train_ids, val_ids = set(train_x.flatten().tolist()), set(val_x.flatten().tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(600))  # no image on both sides
    assert torch.equal(train_y, train_x.flatten().long() % 10)  # labels travel with their images
    assert torch.equal(split(0)[1][0], val_x) and not torch.equal(split(1)[1][0], val_x)
    with pytest.raises(ValueError, match="cannot hold out 600 of 600 images"):
        training_split(images, labels, 600, 0.2)


def test_noise_has_the_asked_mean_and_std_and_is_not_clipped():
    x = torch.full((200_000,), 0.5)
    noisy = add_noise(x, 0.2, generator=torch.Generator().manual_seed(0))
    noise = noisy - x
    assert abs(noise.mean().item()) < 0.002  # standard error 0.2 / sqrt(200000) = 0.00045
    assert abs(noise.std().item() - 0.2) < 0.002
    assert noisy.min() < 0 and noisy.max() > 1  # pure Gaussian: values leave [0, 1]


def test_the_validation_noise_is_drawn_once_after_the_split():
    """A run's validation images are the same every epoch, and rebuilt from the seed alone."""
    images, labels = torch.rand(50, 1, 28, 28), torch.arange(50) % 10
    (train, _), (val_clean, val_noisy) = training_split(images, labels, 10, 0.3,
                                                        generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    order = torch.randperm(50, generator=generator)  # the split comes first from the generator
    assert torch.equal(val_clean, images[order[:10]]) and torch.equal(train, images[order[10:]])
    assert torch.equal(val_noisy, val_clean + 0.3 * torch.randn(val_clean.shape, generator=generator))


@requires_real_data
def test_real_fashion_mnist_has_the_published_sizes():
    fetch_data(REAL_DATA_DIR)
    images, labels = load_fashion_mnist(REAL_DATA_DIR, train=True)
    assert images.shape == (60_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = load_fashion_mnist(REAL_DATA_DIR, train=False)
    assert test_images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test_labels).tolist() == [1000] * 10


@pytest.mark.parametrize("damage, complaint", [
    ("short labels", "train-labels-idx1-ubyte holds 299 labels for the 300 images of train-images-idx3-ubyte"),
    ("wrong size", "train-images-idx3-ubyte holds images of shape (27, 27), not 28 x 28"),
    ("label 10", "train-labels-idx1-ubyte holds labels outside 0-9"),
])
def test_idx_files_that_disagree_are_named_before_anything_starts(damage, complaint, tmp_path):
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    write_tiny_dataset(raw_dir)
    if damage == "short labels":
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.arange(TINY_TRAIN - 1) % 10))
    elif damage == "wrong size":
        (raw_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(torch.zeros(TINY_TRAIN, 27, 27)))
    else:
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.full((TINY_TRAIN,), 10)))
    with pytest.raises(DataError) as error:
        fetch_data(tmp_path / "data", system_copy=tmp_path / "none")
    assert str(error.value) == f"{raw_dir / complaint}: move it elsewhere to keep it, and put the dataset's original " \
                               f"file in its place"


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(DataError, match=r"^--data-dir .*data is a file, not a directory: pass the directory"):
        fetch_data(tmp_path / "data")


def test_unpacking_the_data_onto_a_full_disk_names_the_file_and_the_remedy(tmp_path, monkeypatch):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)

    def full(file_descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as error:
        fetch_data(tmp_path / "data", system_copy=system_copy)
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    assert cli.in_words(error.value) == (f"{raw_dir / data.IDX_FILES[0]}: no space left on the disk: free some space,"
                                         f" or write to another disk")
    assert not list(raw_dir.iterdir())  # no half file, no temporary file


def test_a_failed_download_says_why_and_another_dataset_never_gets_fashion_mnist(tmp_path, monkeypatch):
    """A student adapting the loader to MNIST, offline: Debian's Fashion-MNIST must not be fed as MNIST."""
    debian_copy = tmp_path / "usr-share"
    write_tiny_dataset(debian_copy, compress=True)
    monkeypatch.setitem(data.SYSTEM_COPIES, "FashionMNIST", debian_copy)
    monkeypatch.setattr(data, "DATASET", torchvision.datasets.MNIST)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed local port
    with pytest.raises(DataError) as error:
        fetch_data(tmp_path / "data")
    message = str(error.value)
    assert message.startswith(f"MNIST is not in {tmp_path / 'data' / 'MNIST' / 'raw'} and could not be downloaded (")
    assert "Connection refused" in message and "\n" not in message
    assert "dataset-fashion-mnist" not in message  # Debian's package holds Fashion-MNIST, not MNIST
    assert not [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
