"""Timing one command, with its peak memory, and summarising repeated samples.

A command runs as a child of the benchmark (in a lab namespace through `ip netns exec`, which
execs the command in the same process), with stdin, stdout and stderr on temporary files, so
that no pipe-reading thread competes with it for the machine's two cores. Its wall time runs
from just before the fork to the return of wait4.

Peak RSS is the command's own VmHWM (the kernel's high-water mark of its resident set),
sampled from /proc/<pid>/status every 2 ms until it exits: that is what "RSS of fs-inject"
means, without its children. It can miss growth in the last 2 ms, and a command that ends
within a sample or two gets no number. wait4's ru_maxrss is no use here: it counts the
benchmark's own pages, which the child holds between fork and exec.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Commands run from the bench folder: a `python -c` there imports the installed package, as
# the console scripts do, not the source tree.
HERE = Path(__file__).resolve().parent
_SAMPLE_EVERY = 0.002


@dataclass
class Run:
    argv: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    rss_own_kb: int
    cpu_seconds: float = 0.0

    def check(self) -> Run:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip()[-1500:]
            raise RuntimeError(f"{' '.join(self.argv[:8])} exited {self.returncode}\n{tail}")
        return self


def _vmhwm(pid: int) -> int:
    """VmHWM of pid in kB; 0 while it is still `ip netns exec` (before its exec) or gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            status = fh.read()
    except OSError:
        return 0
    if status.startswith(b"Name:\tip\n"):
        return 0
    for line in status.splitlines():
        if line.startswith(b"VmHWM:"):
            return int(line.split()[1])
    return 0


def timed(argv: list[str], input: str | None = None, cwd: Path = HERE) -> Run:
    """Run argv to completion and measure it; never raises on a non-zero exit (see Run.check)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp:
        if input is not None:
            inp.write(input.encode())
            inp.seek(0)
        peak = [0]
        done = threading.Event()
        begin = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=inp if input is not None else subprocess.DEVNULL, stdout=out, stderr=err,
            cwd=cwd,
        )

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _vmhwm(proc.pid))
                done.wait(_SAMPLE_EVERY)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - begin
        done.set()
        sampler.join()
        # wait4 reaped it: tell Popen, so that it never waits for the pid again.
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            argv=list(argv),
            seconds=seconds,
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            rss_own_kb=peak[0],
            # User and system time of the command and of the children it waited for.
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )


def clock(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one in-process call.

    The benchmark's own objects (policies, dumps) are frozen out of the garbage collector's
    reach first, so that the call pays for its own objects only, as in a fresh command.
    """
    gc.collect()
    gc.freeze()
    try:
        begin = time.perf_counter()
        result = fn(*args, **kwargs)
        return time.perf_counter() - begin, result
    finally:
        gc.unfreeze()


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


@dataclass
class Summary:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Summary:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}
