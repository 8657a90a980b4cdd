"""Running the external tools (iptables-save, iptables-restore, birdc, bird, vtysh) through sh.

Arguments go to the program as an argv list, never through a shell, so no value from a rule,
a route or an option can become shell syntax. stdout and stderr are kept apart: vtysh prints
warnings on stderr that must not reach the JSON parser.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass

import sh

from flowseg.errors import ToolFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def first_error_line(self) -> str:
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f"exit status {self.exit_code}"


def run(argv: list[str], input: str | None = None, timeout: float = 60.0,
        bulk: bool = False) -> Result:
    """Run argv to completion; a missing program, a timeout or a signal raises ToolFailed.

    Control commands (birdc, bird -p, vtysh summaries) go through sh. Bulk transfers
    (iptables-save, iptables-restore, the vtysh route dump: megabytes at 10,000 rules) take
    plain subprocess pipes, because sh copies stdin and stdout through Python threads at about
    3 MB/s and its timeout watcher adds 100 ms to every call (measured by `make bench`).
    """
    if shutil.which(argv[0]) is None:
        raise ToolFailed(f"{argv[0]} not found in PATH; install it or fix PATH")
    log.debug("running %s", " ".join(argv))
    if bulk:
        return _run_pipes(argv, input, timeout)
    cmd = sh.Command(argv[0])
    # A timer of our own instead of sh's _timeout, whose watcher costs 100 ms a call (and
    # sh's wait(timeout=) can return before stdout and stderr are read in full). A daemon
    # thread, and started inside the try: an exception raised from a signal handler at any
    # point here must neither leave the tool running nor keep the process alive for the
    # timer's length at exit (seen: a stop request 60 s late).
    expired = threading.Event()
    proc = None

    def expire() -> None:
        expired.set()
        with contextlib.suppress(Exception):
            proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    try:
        proc = cmd(
            *argv[1:],
            _in=input,
            _ok_code=list(range(256)),
            _return_cmd=True,
            _bg=True,
            _bg_exc=False,  # the exit is handled below, not printed from sh's thread
            _tty_out=False,
            _decode_errors="replace",
        )
        timer.start()
        proc.wait()
    except sh.SignalException as exc:
        if expired.is_set():
            raise ToolFailed(f"{argv[0]} did not answer within {timeout:.0f} s") from None
        # A tool killed by a signal (iptables-restore dies of SIGFPE on some hashlimit rates).
        name = type(exc).__name__.rsplit("_", 1)[-1]
        raise ToolFailed(f"{argv[0]} was killed by {name}") from None
    except BaseException:
        # Interrupted from a signal handler (Ctrl-C, a stop request): the tool goes too, as
        # subprocess.run does with the bulk ones, instead of being left running on its own.
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.kill()
        raise
    finally:
        timer.cancel()
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    return Result(tuple(argv), proc.exit_code, out, err)


def _run_pipes(argv: list[str], input: str | None, timeout: float) -> Result:
    try:
        proc = subprocess.run(argv, input=(input or "").encode(), capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ToolFailed(f"{argv[0]} was killed by {name}")
    return Result(tuple(argv), proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"))


def iptables_save(family) -> str:
    """The filter table of one family, as iptables-save / ip6tables-save print it."""
    prog = "iptables-save" if family.value == 4 else "ip6tables-save"
    res = run([prog, "-t", "filter"], bulk=True)
    if res.exit_code != 0:
        raise ToolFailed(f"{prog}: {res.first_error_line()}")
    return res.stdout
