"""fs-inject's signals: stop requests that never cut an apply in two, and SIGHUP."""

from __future__ import annotations

import signal
import time

from flowseg.errors import FlowsegError
from flowseg.model import Family
from fs_inject import system


class Signals:
    """Stop requests never cut an apply in two; SIGHUP makes the daemon poll now.

    Stop requests: SIGTERM and SIGINT, and with --once SIGHUP too (as fs-fetch). The handler only
    notes the request: an exception raised from it could land anywhere, inside the logging
    module's locks or subprocess's fork handling (seen: a traceback at exit, the exception
    lost). A request that came while the run reads FRR and the chain in force stops it just
    before its first iptables-restore (Stopped, raised there), so nothing is written. From the
    first iptables-restore on, every family's transaction of the run goes through, then the
    command stops.
    When the request reached iptables-restore too (a signal to the whole process group) and it
    died of it, the kernel took that family's transaction whole or not at all: the chain in
    force is the old one or the complete new one, and the next run checks and repairs it.
    Between runs the daemon stops at once.
    """

    IDLE, READING, APPLYING = "idle", "reading", "applying"

    class Stopped(BaseException):
        """A stop request before the run wrote anything. A BaseException, like
        KeyboardInterrupt, so that no `except Exception` takes it for a failure."""

        def __init__(self, signum: int) -> None:
            super().__init__(signum)
            self.signum = signum

    def __init__(self, switch: system.Switch | None = None, once: bool = False) -> None:
        self.stop: int | None = None  # the first stop request's signal number
        self.poll_now = False
        self.phase = self.IDLE
        self.applying: list[Family] = []  # the families whose iptables-restore started this run
        self.current: Family | None = None  # the family whose iptables-restore runs now
        # The family being applied when a stop request came (None: it came outside an apply),
        # and the error of its iptables-restore if the request killed it too.
        self.under_way: Family | None = None
        self.cut_by: FlowsegError | None = None
        if switch is not None:
            switch.before_apply, switch.after_apply = self._applying, self._applied
        for sig in (signal.SIGTERM, signal.SIGINT, *((signal.SIGHUP,) if once else ())):
            signal.signal(sig, self._stop)
        if not once:
            signal.signal(signal.SIGHUP, self._hup)

    def __enter__(self) -> Signals:
        """One run: a stop request from here to the first iptables-restore stops it there."""
        self.applying, self.current, self.under_way, self.cut_by = [], None, None, None
        self.phase = self.READING
        if self.stop is not None:
            self.phase = self.IDLE
            raise self.Stopped(self.stop)
        return self

    def __exit__(self, *exc) -> None:
        self.phase = self.IDLE

    def _applying(self, family: Family) -> None:
        if self.phase == self.READING and self.stop is not None:
            # Before the run's first write: normal control flow, not a signal handler.
            self.phase = self.IDLE
            raise self.Stopped(self.stop)
        # The family first, then the phase: a handler that sees APPLYING finds its family.
        self.applying.append(family)
        self.current = family
        self.phase = self.APPLYING

    def _applied(self, family: Family, error: FlowsegError | None) -> None:
        if error is not None and self.under_way is family and self.current is family \
                and self.cut_by is None:
            self.cut_by = error
        self.current = None

    def _stop(self, signum, frame) -> None:
        if self.stop is None:
            self.stop = signum
        if self.phase == self.APPLYING and self.under_way is None:
            self.under_way = self.current if self.current is not None else self.applying[-1]

    def _hup(self, signum, frame) -> None:
        self.poll_now = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop and not self.poll_now and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))
        self.poll_now = False

    @property
    def during_apply(self) -> bool:
        return self.under_way is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.stop).name if self.stop is not None else "a signal"

    def finished_line(self, chain: str) -> str:
        """The apply went through although a stop request came in its middle."""
        families = " and ".join(f"IPv{f.value}" for f in dict.fromkeys(self.applying))
        return (f"got {self.name} while applying IPv{self.under_way.value} {chain}: finished "
                f"the apply first ({families} {chain} complete); stopping now")

    def cut_line(self, exc: FlowsegError, chain: str, families: tuple[Family, ...]) -> str:
        """The stop request killed the iptables-restore under way too: what the chains hold.
        The families before it are in the error's own words (run_once puts them back)."""
        cut = self.under_way
        rest = " and ".join(f"IPv{f.value}" for f in families[families.index(cut) + 1:]) \
            if cut in families else ""
        rest = f"; {rest} {chain} not touched" if rest else ""
        return (f"stopped by {self.name} in the middle of the IPv{cut.value} apply "
                f"({str(exc).rstrip('.')}): IPv{cut.value} {chain} is the old chain or the "
                f"complete new one, never half{rest}. The next run checks {chain} and "
                "repairs it.")

    @property
    def cut(self) -> bool:
        """The run failed because the stop request killed the iptables-restore under way (a
        refusal is iptables-restore's own answer, reported as such, and is not this)."""
        return self.cut_by is not None
