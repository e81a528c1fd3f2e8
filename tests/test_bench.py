"""bench.py runs end to end and times the very epoch train.py runs (no timing is asserted here)."""

import bench
import train


def test_bench_times_the_epoch_function_and_the_objective_train_py_uses():
    assert bench.train_one_epoch is train.train_one_epoch
    assert bench.training_loss is train.training_loss


def test_bench_runs_end_to_end_on_the_tiny_stand_in(tiny_data_dir, capsys, monkeypatch):
    # The arithmetic row's own code, on products small enough to take milliseconds, not seconds, on a CPU.
    monkeypatch.setattr(bench, "MATMUL_SIZE", 256)
    bench.main(["--epochs", "2", "--device", "cpu", "--data-dir", str(tiny_data_dir)])
    output = capsys.readouterr().out
    for row in ("this project (train.py's train_one_epoch)", "bare in-memory loop (the floor)",
                "DataLoader + ToTensor (tutorial style)", "arithmetic alone", "test images per second",
                "projected full run, 200 epochs"):
        assert row in output
    assert "300 images, batch 4096" in output
    assert "CUDA graph" not in output  # only on CUDA
    header = [line for line in output.splitlines() if line.startswith("training epoch")][0]
    assert header.split() == ["training", "epoch", "median", "s", "fastest", "slowest", "x", "this", "project"]


def test_flops_per_epoch_by_hand():
    # Weights of the six Linear layers: 784*128 + 128*64 + 64*8 + 8*64 + 64*128 + 128*784 = 218,112
    assert bench.flops_per_epoch(1) == 3 * 2 * 218_112


def test_each_row_reports_its_spread_and_a_busy_machine_is_named():
    steady, busy = bench.Timing([1.0, 1.1, 1.2]), bench.Timing([1.0, 1.1, 11.0])
    assert (steady.median, steady.fastest, steady.slowest) == (1.1, 1.0, 1.2) and not steady.unsteady
    assert busy.median == 1.1 and busy.unsteady
    assert bench.Timing([2.0, 3.0]).scaled(0.5).seconds == [1.0, 1.5]
