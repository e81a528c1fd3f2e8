"""bench.py runs end to end, and counts an epoch's arithmetic as a hand count does (no timing is asserted)."""

import re

from torch import nn

import bench
import dae


def test_bench_runs_end_to_end_on_the_tiny_stand_in(tiny_data_dir, capsys, monkeypatch):
    # The arithmetic row's own code, on products small enough to take milliseconds, not seconds, on a CPU.
    monkeypatch.setattr(bench, "MATMUL_SIZE", 256)
    monkeypatch.setattr(bench, "TIMER_SECONDS", 0.05)
    bench.main(["--epochs", "2", "--device", "cpu", "--data-dir", str(tiny_data_dir)])
    captured = capsys.readouterr()
    for row in ("this project (train.py's train_one_epoch)", "bare in-memory loop (the floor)",
                "DataLoader + ToTensor (tutorial style)", "arithmetic alone", "test images per second",
                "projected full run, 200 epochs"):
        assert row in captured.out
    assert "300 images, batch 4096" in captured.out
    assert "CUDA graph" not in captured.out  # only on CUDA
    header = [line for line in captured.out.splitlines() if line.startswith("training epoch")][0]
    assert header.split() == ["training", "epoch", "median", "s", "fastest", "slowest", "x", "this", "project"]
    # No warning on the way. torch 2.6's benchmark module says this one line when it is imported on a
    # machine with a CUDA compiler and no GPU, as here: torch's own, about the machine, not the bench.
    assert re.sub(r"No CUDA runtime is found, using CUDA_HOME='[^']*'\n", "", captured.err) == ""


def test_the_published_recipe_flops_per_epoch_by_hand():
    # The weights of the six Linear layers: 784*128 + 128*64 + 64*8 + 8*64 + 64*128 + 128*784 = 218,112.
    # Forward, 2 FLOPs a weight; backward, 2 for the weights' gradients and 2 for the inputs' gradients,
    # except the first layer's, whose input (the image) needs none: 784*128 = 100,352 fewer.
    assert bench.flops_per_epoch(1) == 2 * 218_112 + 2 * 218_112 + 2 * (218_112 - 100_352)
    assert bench.flops_per_epoch(50_000) == 50_000 * bench.flops_per_epoch(1)


class ConvolutionalDecoder(dae.DenoisingAutoencoder):
    """A fork's model: the same encoder, a decoder of a Linear, an Unflatten and a transposed convolution."""

    def __init__(self, latent_dim: int = 8):
        super().__init__(latent_dim)
        self.decoder.layers = nn.Sequential(nn.Linear(latent_dim, 8 * 14 * 14), nn.Unflatten(1, (8, 14, 14)),
                                            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid())


def test_flops_are_counted_whatever_the_layers(monkeypatch):
    monkeypatch.setattr(bench, "DenoisingAutoencoder", ConvolutionalDecoder)
    encoder_weights = 784 * 128 + 128 * 64 + 64 * 8  # 109,056, the published encoder
    decoder_products = 8 * 1568 + 8 * 14 * 14 * 4 * 4  # Linear 8 -> 1568; each input pixel's 4x4 kernel, 8 -> 1
    # 2 FLOPs a product, three times (forward, the weights' and the inputs' gradients), but the image's.
    assert bench.flops_per_epoch(1) == 2 * (3 * encoder_weights - 784 * 128) + 2 * 3 * decoder_products


def test_each_row_reports_its_spread_and_a_busy_machine_is_named():
    steady, busy = bench.Timing([1.0, 1.1, 1.2]), bench.Timing([1.0, 1.1, 11.0])
    assert (steady.median, steady.fastest, steady.slowest) == (1.1, 1.0, 1.2) and not steady.unsteady
    assert busy.median == 1.1 and busy.unsteady
    assert bench.Timing([2.0, 3.0]).scaled(0.5).seconds == [1.0, 1.5]


class BatchNormDecoder(dae.DenoisingAutoencoder):
    """A fork's model: BatchNorm after the decoder's first layer, which refuses a batch of one in training."""

    def __init__(self, latent_dim: int = 8):
        super().__init__(latent_dim)
        first, *rest = self.decoder.layers
        self.decoder.layers = nn.Sequential(first, nn.LazyBatchNorm1d(), *rest)  # its width, at the first call


def test_flops_are_counted_for_a_batchnorm_decoder_as_for_the_published_one(monkeypatch):
    published = bench.flops_per_epoch(1)
    monkeypatch.setattr(bench, "DenoisingAutoencoder", BatchNormDecoder)
    assert bench.flops_per_epoch(1) == published  # BatchNorm multiplies no matrices
