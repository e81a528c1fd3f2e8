"""Where the data comes from, what it looks like, the split and the noise."""

import os
import stat

import pytest
import torch
import torchvision

import data
from conftest import DEBIAN_COPY, REAL_DATA_DIR, TINY_TEST, TINY_TRAIN, requires_real_data, write_tiny_dataset
from data import DataError, add_noise, load_fashion_mnist, split_train_validation


def test_loads_idx_files_from_the_data_directory(tiny_data_dir, tmp_path):
    images, labels = load_fashion_mnist(tiny_data_dir, train=True, system_copy=tmp_path / "no-system-copy")
    assert images.shape == (TINY_TRAIN, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (TINY_TRAIN,) and labels.dtype == torch.int64
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert images.min() == 0 and images.max() <= 1
    # The fixture draws class 0's bar in columns 2-4 at brightness 0.5-1, and nothing else.
    assert images[0, 0, 10, 2] >= 0.5 and images[0, 0, 10, 10] == 0
    test_images, _ = load_fashion_mnist(tiny_data_dir, train=False, system_copy=tmp_path / "no-system-copy")
    assert test_images.shape == (TINY_TEST, 1, 28, 28)


def test_unpacks_the_debian_copy_into_the_data_directory(tmp_path):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    images, _ = load_fashion_mnist(tmp_path / "data", train=True, system_copy=system_copy)
    assert images.shape == (TINY_TRAIN, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data" / "FashionMNIST" / "raw").iterdir()) == sorted(data.IDX_FILES)


@pytest.mark.parametrize("where, compress", [("data directory", True), ("data directory", False),
                                             ("raw directory", True)])
def test_idx_files_put_by_hand_load_packed_or_not(tmp_path, where, compress):
    """Debian's .gz files differ from torchvision's checksums; dropped into the data directory they must still load."""
    data_dir = tmp_path / "data"
    write_tiny_dataset(data_dir if where == "data directory" else data_dir / "FashionMNIST" / "raw", compress)
    # No system copy, and any download would fail: only the files put by hand can be read.
    images, labels = load_fashion_mnist(data_dir, train=True, system_copy=tmp_path / "no-system-copy")
    assert images.shape == (TINY_TRAIN, 1, 28, 28) and labels[:3].tolist() == [0, 1, 2]


@pytest.mark.skipif(not all((DEBIAN_COPY / f"{name}.gz").is_file() for name in data.IDX_FILES),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_gz_files_copied_into_the_data_directory_load(tmp_path, monkeypatch):
    """The very files Debian ships, whose checksums torchvision would refuse, put by hand in --data-dir."""
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    for name in data.IDX_FILES:
        (tmp_path / f"{name}.gz").symlink_to(DEBIAN_COPY / f"{name}.gz")
    images, _ = load_fashion_mnist(tmp_path, train=False, system_copy=tmp_path / "no-system-copy")
    assert images.shape == (10_000, 1, 28, 28)


def test_unpacked_data_gets_ordinary_file_permissions(tmp_path):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    old_umask = os.umask(0o022)
    try:
        load_fashion_mnist(tmp_path / "data", train=True, system_copy=system_copy)
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


def test_noise_without_a_generator_uses_torchs_global_one():
    torch.manual_seed(3)
    first = add_noise(torch.zeros(5), 1.0)
    torch.manual_seed(3)
    assert torch.equal(first, add_noise(torch.zeros(5), 1.0))


def test_no_data_anywhere_names_both_remedies(tmp_path, monkeypatch):
    # Point torchvision's download at a closed local port, so the test never reaches the internet.
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path / "data", train=True, system_copy=tmp_path / "no-system-copy")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "data") in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "corrupted header"])
def test_a_damaged_idx_file_is_named_with_the_remedy(tiny_data_dir, tmp_path, damage):
    damaged = tiny_data_dir / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    content = damaged.read_bytes()
    damaged.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"\x07" * 4 + content[4:])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is damaged .* delete it and run again"):
        load_fashion_mnist(tiny_data_dir, train=True, system_copy=tmp_path / "no-system-copy")


def test_a_damaged_debian_copy_is_named(tmp_path):
    system_copy = tmp_path / "usr-share"
    write_tiny_dataset(system_copy, compress=True)
    (system_copy / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz.*--reinstall dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "data", train=False, system_copy=system_copy)
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").glob("*.tmp"))


def test_split_sizes_disjointness_and_reproducibility():
    images = torch.arange(600, dtype=torch.float32).view(600, 1, 1, 1)  # each image is its own index
    labels = torch.arange(600) % 10

    def split(seed):
        return split_train_validation(images, labels, 100, generator=torch.Generator().manual_seed(seed))

    (train_x, train_y), (val_x, val_y) = split(0)
    assert len(train_x) == len(train_y) == 500 and len(val_x) == len(val_y) == 100
    train_ids, val_ids = set(train_x.flatten().tolist()), set(val_x.flatten().tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(600))
    assert torch.equal(train_y, train_x.flatten().long() % 10)  # labels travel with their images
    assert torch.equal(split(0)[1][0], val_x)
    assert not torch.equal(split(1)[1][0], val_x)


def test_noise_has_the_asked_mean_and_std_and_is_not_clipped():
    x = torch.full((200_000,), 0.5)
    noisy = add_noise(x, 0.2, generator=torch.Generator().manual_seed(0))
    noise = noisy - x
    assert abs(noise.mean().item()) < 0.002  # standard error 0.2 / sqrt(200000) = 0.00045
    assert abs(noise.std().item() - 0.2) < 0.002
    assert noisy.min() < 0 and noisy.max() > 1  # pure Gaussian: values leave [0, 1]


def test_noise_is_reproducible_with_a_seeded_generator():
    x = torch.rand(4, 1, 28, 28)
    first = add_noise(x, 0.2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, add_noise(x, 0.2, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, add_noise(x, 0.2, generator=torch.Generator().manual_seed(8)))


@requires_real_data
def test_real_fashion_mnist_has_the_published_sizes():
    images, labels = load_fashion_mnist(REAL_DATA_DIR, train=True)
    assert images.shape == (60_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = load_fashion_mnist(REAL_DATA_DIR, train=False)
    assert test_images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test_labels).tolist() == [1000] * 10
