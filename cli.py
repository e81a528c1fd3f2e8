"""The command line that train.py, evaluate.py, visualize.py, bench.py and explorer.py share: plumbing.

Nothing here is about the model or its training. It holds:

    ArgumentParser   argparse's parser, named for its script, except that a bad flag raises
                     FlagError rather than ending the process, so `parse_args([...])` in a notebook
                     or a REPL shows the mistake
    the flag types   positive_int, non_negative_int, positive_float, noise_std, seed, latent_dim,
                     device
    script           the decorator on each script's main(): an error a user can fix becomes one line
                     and exit status 1, a bad flag status 2, Ctrl-C 130, a closed pipe 141 (with no
                     line) and a full output device 1, with no traceback

Each script imports this module before torch, so that Ctrl-C while torch loads (seconds) is
already one line: the hook below is set before this module's own imports.
"""

import sys


def ctrl_c_in_one_line(kind, error, traceback, previous=sys.excepthook):
    """Ctrl-C before a script's main() has started: "interrupted", not a traceback. Python then
    ends the process as Ctrl-C does (the shell's status 130); other errors print as they did."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
    else:
        previous(kind, error, traceback)


sys.excepthook = ctrl_c_in_one_line

import argparse  # noqa: E402  (after the hook, on purpose)
import functools  # noqa: E402
import math  # noqa: E402

import torch  # noqa: E402

from dae import IMAGE_PIXELS, CheckpointError  # noqa: E402
from files import DataError  # noqa: E402
from runs import MAX_NOISE_STD, OutputError, RunError, silence_output  # noqa: E402


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
    """argparse, named for its script however it was started (`python train.py`, a test, a
    notebook), showing each flag's default in --help, refusing abbreviations (--epoch is not
    --epochs), and raising FlagError on a bad flag instead of calling sys.exit."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, allow_abbrev=False,
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


class CheckedOutput:
    """sys.stdout, except that a write that fails raises runs.OutputError, which a script and a
    training run know how to end on (a reader that left, a full device)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as error:
            raise OutputError(error) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            raise OutputError(error) from None

    def __getattr__(self, name):
        return getattr(self.stream, name)


def script(main):
    """Run `main` as command-line tools run: one line and a status for every way it can end badly."""

    @functools.wraps(main)
    def run(*arguments, **keywords):
        stdout = sys.stdout
        sys.stdout = CheckedOutput(stdout) if stdout is not None else None  # None: stdout was closed
        try:
            try:
                return main(*arguments, **keywords)
            finally:
                if sys.stdout is not None:
                    sys.stdout.flush()  # piped output waits in a buffer: a reader that left shows up here
        except FlagError as error:
            print(f"{error.usage}{error}", file=sys.stderr)  # argparse's own form and status
            sys.exit(2)
        except (CheckpointError, DataError, RunError) as error:
            sys.exit(f"error: {error}")
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except OutputError as error:
            silence_output()  # the exit's own flush would fail again
            if error.closed:  # `python evaluate.py | head -3`: the reader has gone, as it meant to
                sys.exit(141)
            sys.exit(f"error: cannot write the output ({error}): send it to another file or device")
        finally:
            sys.stdout = stdout

    return run
