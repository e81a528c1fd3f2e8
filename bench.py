"""How fast one training epoch is, measured side by side on this machine (docs/speed.md).

    python bench.py                    # this machine's accelerator, or the CPU
    python bench.py --device cpu --epochs 30

Rows, on the same model, images and batches: this project's train_one_epoch, the same arithmetic
written bare, the DataLoader style of the tutorials, and on CUDA a CUDA graph. Then the
arithmetic's floor, evaluation throughput, and what a full run would take.
"""

import logging
import statistics
import time

import cli  # first: Ctrl-C while torch loads is then one line, not a traceback
import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode

from dae import DenoisingAutoencoder
from data import DATA_DIR, fetch_data, load_fashion_mnist, noisy_test_set
from train import RECIPE, make_optimizer, pick_device, train_one_epoch, training_loss, validation_loss

TRAIN_IMAGES = 60_000 - RECIPE["val_size"]  # what train.py trains on, the validation images held out
BATCH_SIZE, NOISE_STD, LR = RECIPE["batch_size"], RECIPE["noise_std"], RECIPE["lr"]
UNSTEADY = 1.5  # slowest / fastest above this: a busy machine
TIMER_SECONDS = 1.0  # per timed statement
MATMUL_SIZE = 4096  # the arithmetic row's square matrices


def synchronize(device: torch.device) -> None:
    # else the clock reads only the launches
    if device.type != "cpu":
        torch.accelerator.synchronize()


class Timing:
    """The seconds of each timed repeat; the median is what a row reports, the fastest and slowest its spread."""

    def __init__(self, seconds: list[float]):
        self.seconds = seconds
        self.median, self.fastest, self.slowest = statistics.median(seconds), min(seconds), max(seconds)

    def scaled(self, factor: float) -> "Timing":
        return Timing([seconds * factor for seconds in self.seconds])

    @property
    def unsteady(self) -> bool:
        return self.slowest > UNSTEADY * self.fastest


def time_repeats(run_once, device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        run_once()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run_once()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def fresh_training_state(device):
    """(model, optimizer, noise generator), built the same way for each row, so the rows start alike.

    `device` is the images' own (cuda:0, not cuda): a generator must sit on the very device it draws for.
    """
    torch.manual_seed(0)
    model = DenoisingAutoencoder().to(device)
    return model, make_optimizer(model, LR), torch.Generator(device).manual_seed(0)


def time_this_project(images, device, epochs) -> float:
    model, optimizer, generator = fresh_training_state(device)

    def epoch():
        train_one_epoch(model, optimizer, images, BATCH_SIZE, NOISE_STD, generator=generator)

    return time_repeats(epoch, device, epochs)


def time_bare_loop(images, device, epochs) -> float:
    model, optimizer, generator = fresh_training_state(device)

    def epoch():
        order = torch.randperm(len(images), device=device, generator=generator)
        for start in range(0, len(images), BATCH_SIZE):
            clean = images[order[start : start + BATCH_SIZE]]
            noisy = clean + NOISE_STD * torch.randn(clean.shape, device=device, generator=generator)
            loss = training_loss(model, noisy, clean)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return time_repeats(epoch, device, epochs)


def time_dataloader_tutorial(data_dir, image_count, device, epochs) -> float:
    """The style most tutorials teach: PIL images turned into tensors one at a time, every epoch."""
    dataset = torchvision.datasets.FashionMNIST(data_dir, train=True, transform=torchvision.transforms.ToTensor())
    loader = DataLoader(Subset(dataset, range(image_count)), batch_size=BATCH_SIZE, shuffle=True)
    torch.manual_seed(0)
    model = DenoisingAutoencoder().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # as tutorials write it

    def epoch():
        for clean, _ in loader:
            clean = clean.to(device)
            noisy = clean + NOISE_STD * torch.randn_like(clean)
            loss = training_loss(model, noisy, clean)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return time_repeats(epoch, device, epochs)


def time_cuda_graph(images, device, epochs) -> float:
    """The same step captured in a CUDA graph: one launch per batch instead of dozens.
    Full batches only; the noise comes from the default CUDA generator, which a replay advances."""
    torch.manual_seed(0)
    model = DenoisingAutoencoder().to(device)
    # capturable: Adam's step count stays on the GPU
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, capturable=True)
    static_clean = images[:BATCH_SIZE].clone()

    def step():
        noisy = static_clean + NOISE_STD * torch.randn_like(static_clean)
        training_loss(model, noisy, static_clean)["loss"].backward()
        optimizer.step()

    side_stream = torch.cuda.Stream()  # warm up off the default stream, as capture requires
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()  # backward inside the graph writes fresh gradients on every replay

    full_batches = len(images) // BATCH_SIZE

    def epoch():
        order = torch.randperm(len(images), device=device)
        for batch in range(full_batches):
            static_clean.copy_(images[order[batch * BATCH_SIZE : (batch + 1) * BATCH_SIZE]])
            graph.replay()

    return time_repeats(epoch, device, epochs)


def flops_per_epoch(image_count: int) -> float:
    """An epoch's training FLOPs, as torch's FlopCounterMode counts a batch of two (BatchNorm refuses
    one): the matrix products and convolutions, forward and backward, whatever the layers."""
    model, images = DenoisingAutoencoder(), torch.rand(2, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        training_loss(model, images, images)["loss"].backward()
    return counter.get_total_flops() / 2 * image_count  # each image costs the same


def timed(statement):
    """torch.utils.benchmark's timing of a short statement: it repeats it, and waits for the device."""
    # its import warns of a CUDA toolkit it does not use here
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    timer = benchmark.Timer("statement()", globals={"statement": statement}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=TIMER_SECONDS)


def time_arithmetic_alone(image_count: int, device: torch.device) -> tuple[Timing, float]:
    """How long an epoch's FLOPs take at the rate of a large float32 matrix product on this device: (timing, FLOP/s)."""
    size = MATMUL_SIZE
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    matmul = Timing(timed(lambda: a @ b).times)
    return matmul.scaled(flops_per_epoch(image_count) / (2 * size**3)), 2 * size**3 / matmul.median


@cli.script
def main(argv=None) -> None:
    parser = cli.parser(
        "bench.py", "Time one training epoch of this project beside a bare loop and the DataLoader style.")
    parser.add_argument("--device", type=pick_device, default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--epochs", type=cli.bounded(int, 1), default=10,
                        help="timed epochs per row, after one warm-up")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="where Fashion-MNIST is, or goes")
    args = parser.parse_args(argv)
    device = args.device

    fetch_data(args.data_dir)
    images, _ = load_fashion_mnist(args.data_dir, train=True)
    test_clean, test_noisy, _ = noisy_test_set(args.data_dir, NOISE_STD)
    images = images[:TRAIN_IMAGES].to(device)  # (50000, 1, 28, 28)
    device = images.device  # cuda:0, not cuda: for generators
    test_clean, test_noisy = test_clean.to(device), test_noisy.to(device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{len(images):,} images, batch {BATCH_SIZE}; median of {args.epochs} epochs after 1 warm-up")

    ours = time_this_project(images, device, args.epochs)
    rows = {
        "this project (train.py's train_one_epoch)": ours,
        "bare in-memory loop (the floor)": time_bare_loop(images, device, args.epochs),
        "DataLoader + ToTensor (tutorial style)": time_dataloader_tutorial(args.data_dir, len(images), device,
                                                                           args.epochs),
    }
    if device.type == "cuda":
        rows["the same step in a CUDA graph (full batches)"] = time_cuda_graph(images, device, args.epochs)
    arithmetic, rate = time_arithmetic_alone(len(images), device)
    rows["arithmetic alone, at this device's matmul rate"] = arithmetic

    print(f"\n{'training epoch':<48}{'median s':>10}{'fastest':>10}{'slowest':>10}{'x this project':>16}")
    for name, timing in rows.items():
        print(f"{name:<48}{timing.median:>10.4f}{timing.fastest:>10.4f}{timing.slowest:>10.4f}"
              f"{timing.median / ours.median:>15.2f}x")
    print(f"(the arithmetic: {flops_per_epoch(len(images)) / 1e9:.1f} GFLOP per epoch at {rate / 1e12:.2f} TFLOP/s)")
    for name, timing in rows.items():
        if timing.unsteady:
            print(f"warning: '{name}' ranged from {timing.fastest:.4f}s to {timing.slowest:.4f}s, over {UNSTEADY}x: "
                  f"the machine was busy, so its median is unreliable; rerun on an idle machine or with more --epochs")

    # train.py's validation pass over 10,000 images costs what evaluating the 10,000 test images does.
    model = DenoisingAutoencoder().to(device)
    validation = timed(lambda: validation_loss(model, test_noisy, test_clean))
    print(f"\nevaluation: {len(test_noisy) / validation.median:,.0f} test images per second")
    print(f"projected full run, {RECIPE['epochs']} epochs with a validation pass each: "
          f"{RECIPE['epochs'] * (ours.median + validation.median):.1f}s")
    dataloader, bare = rows["DataLoader + ToTensor (tutorial style)"], rows["bare in-memory loop (the floor)"]
    print(f"DataLoader style / this project: {dataloader.median / ours.median:.1f}x; "
          f"this project / bare loop: {ours.median / bare.median:.2f}x")


if __name__ == "__main__":
    main()
