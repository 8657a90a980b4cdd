"""The lock both commands take while they apply, so a cron run and a daemon (or two cron
runs) never interleave. An flock: it goes away with the process that holds it, also on SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import time

from flowseg.errors import ToolFailed


class FileLock:
    """An flock on a file, so that two runs of one command never apply at the same time.

    The wait is measured on the monotonic clock, so a clock jump neither shortens nor lengthens
    it.
    """

    def __init__(self, path, timeout: float = 60.0, who: str = "run") -> None:
        self.path = path
        self.who = who
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ToolFailed(f"cannot open lock file {self.path}: {exc.strerror}; give "
                             "--lock-file a path it can write") from exc
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise ToolFailed(f"lock {self.path} held by another {self.who} for "
                                     f"{self.timeout:g} s; try again when it is done") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
