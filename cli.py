"""The command line that train.py, evaluate.py, visualize.py and bench.py share: off the reader's path.

Nothing here is about the model or its training. It holds:

    ArgumentParser   argparse's parser, except that a bad flag raises FlagError rather than ending
                     the process, so `parse_args([...])` in a notebook or a REPL shows the mistake
    the flag types   positive_int, non_negative_int, positive_float, noise_std, seed, latent_dim,
                     device
    script           the decorator on each script's main(): an error a user can fix becomes one line
                     and exit status 1, a bad flag status 2, Ctrl-C 130 and a closed pipe 141, with
                     no traceback
"""

import argparse
import functools
import math
import sys

import torch

from dae import IMAGE_PIXELS, CheckpointError
from data import DataError
from runs import RunError, silence_closed_output

# Pixels lie in [0, 1]: at std 10 the noise is already 100 times the signal. A cap keeps every
# number of a report within its column.
MAX_NOISE_STD = 10.0


class FlagError(ValueError):
    """A flag is mistyped or has a value the recipe cannot use; the message is argparse's own line."""

    def __init__(self, message: str, usage: str):
        super().__init__(message)
        self.usage = usage


class DefaultsInHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where there is none to show (None, or off)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, showing each flag's default in --help, refusing abbreviations (--epoch is not
    --epochs), and raising FlagError on a bad flag instead of calling sys.exit."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_abbrev=False,
                         formatter_class=DefaultsInHelp)

    def error(self, message: str):
        raise FlagError(f"{self.prog}: error: {message}", self.format_usage())


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {value}")
    return value


def noise_std(text: str) -> float:
    value = non_negative_float(text)
    if value > MAX_NOISE_STD:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_NOISE_STD:g} (pixels lie in [0, 1]), got {value:g}")
    return value


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**64:  # torch's generators take 64-bit seeds
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**64 - 1, got {value}")
    return value


def latent_dim(text: str) -> int:
    value = positive_int(text)
    if value > IMAGE_PIXELS:
        raise argparse.ArgumentTypeError(
            f"must be at most {IMAGE_PIXELS}: a code larger than the image is no bottleneck")
    return value


def device(name: str) -> torch.device:
    """'auto' is this machine's accelerator (CUDA, Apple MPS ...) or else the CPU."""
    if name == "auto":
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    present = {"cpu": True, "cuda": torch.cuda.is_available(),
               "mps": torch.backends.mps.is_available()}
    if name not in present:
        raise argparse.ArgumentTypeError(f"unknown device '{name}': choose auto, cpu, cuda or mps")
    if not present[name]:
        raise argparse.ArgumentTypeError(
            f"this machine has no {name} device: use --device auto or --device cpu")
    return torch.device(name)


def script(main):
    """Run `main` as command-line tools run: one line and a status for every way it can end badly."""

    @functools.wraps(main)
    def run(*arguments, **keywords):
        try:
            try:
                return main(*arguments, **keywords)
            finally:
                sys.stdout.flush()  # piped output waits in a buffer: a reader that left shows up here
        except FlagError as error:
            print(f"{error.usage}{error}", file=sys.stderr)  # argparse's own form and status
            sys.exit(2)
        except (CheckpointError, DataError, RunError) as error:
            sys.exit(f"error: {error}")
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except BrokenPipeError:  # `python evaluate.py | head -3`: the reader has gone
            silence_closed_output()
            sys.exit(141)

    return run
