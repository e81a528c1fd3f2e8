"""The command line the scripts share: their flags, and every failure as one line and a status.
Each script imports it first, so that a failure while torch loads (Ctrl-C, say) is one line too."""

import sys


def in_one_line(kind, error, trace, previous=sys.excepthook):
    """A failure before main() starts: one line, no traceback."""
    if sys.flags.dev_mode:
        previous(kind, error, trace)
    words = globals().get("in_words", lambda error: f"{error}: python -m pip install -r requirements.txt")
    print("interrupted" if issubclass(kind, KeyboardInterrupt) else f"error: {words(error)}", file=sys.stderr)


sys.excepthook = in_one_line

import argparse  # noqa: E402
import contextlib  # noqa: E402
import errno  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402

from data import DataError  # noqa: E402

OUTPUT = "the output"  # how a failed write names stdout
# SIGTERM (a scheduler, `timeout`) and SIGHUP (a closed terminal) end a script as Ctrl-C does
SIGNALS = {getattr(signal, name): word for name, word in (("SIGTERM", "terminated"), ("SIGHUP", "hung up"))
           if hasattr(signal, name)}


class UserError(Exception):
    """Something the user can fix; the message says what is wrong, then what to do."""


class Stop(BaseException):
    """SIGTERM or SIGHUP, raised wherever the script is, as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, number: int):
        super().__init__(SIGNALS[number])
        self.status = 128 + number


def stop(number, frame):
    raise Stop(number)


# ---- Flags ----

class DefaultsInHelp(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # no "(default: None)" or "(default: False)"
        return super()._get_help_string(action) if action.default not in (None, False) else action.help


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """argparse, named for its script, each default in --help, no abbreviated flags."""
    return argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                   formatter_class=DefaultsInHelp)


def bounded(kind, low, high=math.inf, above=False):
    """A flag type: a finite `kind` (int or float) from `low` (or `above` it) to `high`."""

    def parse(text: str):
        value = kind(text)
        if not (math.isfinite(value) and (value > low if above else value >= low) and value <= high):
            limits = f"from {low} to {high}" if high < math.inf else f"{'above' if above else 'at least'} {low}"
            raise argparse.ArgumentTypeError(f"must be {limits}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value: 'ten'"
    return parse


# ---- Failures in words ----

CAUSES = {  # errno -> what went wrong: what fixes it
    errno.ENOSPC: "no space left on the disk: free some space, or write to another disk",
    errno.EDQUOT: "your disk quota is used up: free some space, or write to another disk",
    errno.EROFS: "the file system is read-only: write to a disk you can write to",
    errno.EISDIR: "a directory is in the way: move or rename it",
    errno.ENOENT: "it does not exist (was it deleted?): create it, or use another directory",
    **dict.fromkeys((errno.EACCES, errno.EPERM), "permission denied: change its permissions, or use another "
                                                 "directory"),
    **dict.fromkeys((errno.ENOTDIR, errno.EEXIST), "a file is in the way where a directory should be: move or "
                                                   "rename it"),
    **dict.fromkeys((errno.ENOLCK, errno.ENOSYS), "this file system cannot lock files (a network disk?): use a "
                                                  "directory on a local disk"),
}


def in_words(error: BaseException) -> str:
    """Any failure as one line: what went wrong, and what to do."""
    if isinstance(error, OSError) and error.filename == OUTPUT:
        return f"cannot write the output ({error.strerror}): send it to another file or device"
    if isinstance(error, OSError) and error.errno is not None:
        cause = CAUSES.get(error.errno, f"{error.strerror}: check the disk, or use another directory")
        place = error.filename2 or error.filename  # os.replace names its destination second
        return f"{place}: {cause}" if place else cause
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error):  # CUDA's, or a Mac's
        return "the GPU's memory ran out: train with a smaller --batch-size, or on the CPU with --device cpu"
    if isinstance(error, MemoryError) or "can't allocate memory" in str(error):
        return "this machine's memory ran out: pass a smaller --batch-size to train, or close other programs"
    if isinstance(error, (UserError, DataError)):
        return str(error)
    if isinstance(error, ImportError):
        return f"{error}: install what the project needs with python -m pip install -r requirements.txt"
    first_line = str(error).strip().partition("\n")[0]
    why = ("the model's methods take other arguments than the scripts give: docs/vae.md" if isinstance(
        error, TypeError) and "argument" in first_line else "unexpected: `python -X dev` shows where it happened")
    return f"{type(error).__name__}: {first_line} ({why})"


class NamedOutput:
    """sys.stdout, whose failed writes and flushes say that it is the output that failed."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):  # write, flush, fileno, encoding ...
        attribute = getattr(self.stream, name)
        return functools.partial(self.named, attribute) if name in ("write", "flush") else attribute

    @staticmethod
    def named(call, *arguments):
        try:
            return call(*arguments)
        except OSError as error:
            raise OSError(error.errno, error.strerror, OUTPUT) from None


def script(main):
    """Run a script's main(): any failure is one line on stderr and status 1; a signal is its word
    and the shell's status (Ctrl-C: "interrupted", 130)."""

    @functools.wraps(main)
    def run(*arguments, **keywords):
        handlers = {number: stop for number in SIGNALS if signal.getsignal(number) == signal.SIG_DFL}  # not nohup's
        if hasattr(signal, "SIGPIPE"):
            handlers[signal.SIGPIPE] = signal.SIG_DFL  # `| head`: end quietly, as Unix tools do
        previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
        stdout, sys.stdout = sys.stdout, NamedOutput(sys.stdout)
        try:
            main(*arguments, **keywords)
            sys.stdout.flush()  # a full device under buffered output shows up here
        except (KeyboardInterrupt, Stop) as signalled:
            print(str(signalled) or "interrupted", file=sys.stderr)
            sys.exit(getattr(signalled, "status", 130))
        except Exception as error:
            if sys.flags.dev_mode:
                traceback.print_exc()
            with contextlib.suppress(OSError, ValueError):  # a notebook's output is no file
                try:
                    stdout.flush()
                except OSError:  # full: drop the rest, or the exit's flush fails too
                    os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            sys.exit(f"error: {in_words(error)}")
        finally:
            sys.stdout = stdout
            for number, handler in previous.items():
                signal.signal(number, handler)

    return run
