"""Real processes of the project's scripts, forked from one Python that has imported them already.

A test of what a process does on its own (its exit status, a signal, what it prints, an output
that fails) needs a real process. Starting Python and importing torch takes seconds on a small
machine, so one server imports the scripts once, in the background while other tests run, and
forks a child for each script a test starts. A child is a process of its own, with its own pid,
signals, output and exit: it runs the script as `python script.py ARGS` does, from its
`if __name__ == "__main__":` on, and ends through the interpreter's own exit, the flush of its
output included. Only what the imports themselves do needs a fresh interpreter (test_faults.py:
Ctrl-C while torch loads).

    script = start("train.py", "--epochs", "5", cwd=tmp_path)
    script.wait_for_lines("epoch", 3)
    script.send_signal(signal.SIGINT)
    assert script.wait() == 130
"""

import gc
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("train", "evaluate", "visualize", "explorer", "bench")


class Script:
    """A script running in a process of its own; its output goes to files, read as it grows."""

    def __init__(self, server: "Server", number: int, stdout: Path, stderr: Path):
        self.server, self.number, self.stdout_path, self.stderr_path = server, number, stdout, stderr
        self.pid = server.event(number, "pid")

    def wait(self, timeout: float = 60) -> int:
        """The exit status as subprocess gives it: the code, or minus the number of a killing signal."""
        return self.server.event(self.number, "returncode", timeout)

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def stdout(self) -> str:
        return self.stdout_path.read_text() if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        """What it wrote to stderr, less nanobind's report at exit of objects serve() froze (triton 3.9's
        extension reports them as leaked; a script run on its own prints no such lines)."""
        return self.stderr_path.read_text().partition("nanobind: leaked ")[0]

    def wait_for_lines(self, start: str, count: int, timeout: float = 60) -> list[str]:
        """The first `count` lines of its output that begin with `start`, once it has printed them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.stdout().splitlines() if line.startswith(start)]
            if len(lines) >= count:
                return lines[:count]
            if self.server.event(self.number, "returncode", timeout=0) is not None:
                raise AssertionError(f"it ended before {count} lines: {self.stdout()}\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"no {count} lines in {timeout}s: {self.stdout()}")


class Server:
    """The Python that has imported the scripts; it forks them and reports their pids and exits."""

    def __init__(self):
        # Started as CI and a user's shell start a script: no display, SIGINT at its default.
        environment = {name: value for name, value in os.environ.items() if name not in ("DISPLAY", "MPLBACKEND")}
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=environment, cwd=ROOT,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.events, self.changed, self.count, self.started = {}, threading.Condition(), 0, []
        threading.Thread(target=self.listen, daemon=True).start()

    def listen(self) -> None:
        for line in self.process.stdout:
            event = json.loads(line)
            with self.changed:
                self.events.setdefault(event["number"], {}).update(event)
                self.changed.notify_all()

    def event(self, number: int, name: str, timeout: float = 120):
        with self.changed:
            self.changed.wait_for(lambda: name in self.events.get(number, {}), timeout=timeout)
            return self.events.get(number, {}).get(name)

    def start(self, script: str, *arguments: str, cwd, stdout: str | None = None, unbuffered: bool = True,
              environment: dict | None = None, threads: int = 1) -> Script:
        """Run `python script ARGS` in `cwd`. `stdout`: None for a file, "closed pipe", or a device such
        as /dev/full. `unbuffered` as `python -u`. `threads`, torch's, as OMP_NUM_THREADS would set
        them: one each, so that a test's processes running side by side do not crowd the cores."""
        self.count += 1
        output, errors = Path(cwd) / f".out-{self.count}", Path(cwd) / f".err-{self.count}"
        request = {"number": self.count, "script": str(ROOT / script), "arguments": list(arguments),
                   "cwd": str(cwd), "stdout": stdout or str(output), "stderr": str(errors),
                   "unbuffered": unbuffered, "environment": environment or {}, "threads": threads}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        self.started.append(Script(self, self.count, output, errors))
        return self.started[-1]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


# ---- The server's side ----

def serve() -> None:
    sys.path.insert(0, str(ROOT))
    for name in SCRIPTS:  # what costs the seconds: torch, torchvision, matplotlib and the scripts
        __import__(name)
    # Frozen, the imported objects are out of the collector's sight: a child's exit then touches,
    # and so copies, fewer of the memory pages it shares with this process (1.5 s to 0.45 s here).
    gc.freeze()
    requests = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.02)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:
                return
            requests += chunk
            while b"\n" in requests:
                line, requests = requests.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    run_script(request)  # never returns: the child ends through the interpreter's exit
                report(number=request["number"], pid=pid)
                children[pid] = request["number"]
        reap()


children = {}


def reap() -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        report(number=children.pop(pid), returncode=code)


def report(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run_script(request: dict) -> None:
    """In the child: become `python script ARGS` with the asked output, then run the script."""
    import runpy

    import torch

    torch.set_num_threads(request["threads"])
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    if request["stdout"] == "closed pipe":
        reader, writer = os.pipe()
        os.close(reader)  # the reader has gone before anything is written
    else:
        writer = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(writer, 1)
    os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    # The streams a fresh interpreter makes for these files: block-buffered as open() buffers a file
    # (a buffer of the file's block size), or unbuffered as with -u.
    binary = open(1, "wb", buffering=0 if request["unbuffered"] else -1, closefd=False)
    sys.stdout = io.TextIOWrapper(binary, write_through=request["unbuffered"])
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace")
    os.environ.update(request["environment"])
    sys.argv = [request["script"], *request["arguments"]]
    runpy.run_path(request["script"], run_name="__main__")
    sys.exit(0)


if __name__ == "__main__":
    serve()
