"""Running the external tools (iptables-save, iptables-restore, birdc, bird, vtysh) through sh.

Arguments go to the program as an argv list, never through a shell, so no value from a rule,
a route or an option can become shell syntax. stdout and stderr are kept apart: vtysh prints
warnings on stderr that must not reach the JSON parser.
"""

from __future__ import annotations

import logging
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


def run(argv: list[str], input: str | None = None, timeout: float = 60.0) -> Result:
    """Run argv to completion; a missing program or a timeout raises ToolFailed."""
    try:
        cmd = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise ToolFailed(f"{argv[0]} not found in PATH; install it or fix PATH") from None
    log.debug("running %s", " ".join(argv))
    try:
        proc = cmd(
            *argv[1:],
            _in=input,
            _ok_code=list(range(256)),
            _return_cmd=True,
            _tty_out=False,
            _timeout=timeout,
            _decode_errors="replace",
        )
    except sh.TimeoutException:
        raise ToolFailed(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    except sh.SignalException as exc:
        # A tool killed by a signal (iptables-restore dies of SIGFPE on some hashlimit rates).
        name = type(exc).__name__.rsplit("_", 1)[-1]
        raise ToolFailed(f"{argv[0]} was killed by {name}") from None
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    return Result(tuple(argv), proc.exit_code, out, err)


def iptables_save(family) -> str:
    """The filter table of one family, as iptables-save / ip6tables-save print it."""
    prog = "iptables-save" if family.value == 4 else "ip6tables-save"
    res = run([prog, "-t", "filter"])
    if res.exit_code != 0:
        raise ToolFailed(f"{prog}: {res.first_error_line()}")
    return res.stdout
