"""The controller side's contact with the system: iptables-save, bird -p, birdc, the BIRD file.

Checked with iptables 1.8.9 and BIRD 2.0.12. birdc answers `0003 Reconfigured` on success (even
when nothing changed) and a `8xxx` line plus exit status 1 on a refused configuration, which
BIRD then does not apply (wire facts 4.2).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from flowseg.errors import BirdRejected, ToolFailed
from flowseg.model import Family
from flowseg.run import iptables_save, run

log = logging.getLogger(__name__)

BIRD_ERROR = re.compile(r"^(8\d{3}|9\d{3})[ -](.*)$")
BIRD_REPLY = re.compile(r"^(\d{4})[ -](.*)$")
# 0003 Reconfigured; 0004 Reconfiguration in progress; 0005 ... queueing new config. All three
# mean BIRD has the new file and applies it (0004/0005 as soon as the running one is done).
ACCEPTED = ("0003", "0004", "0005")


class Controller:
    """iptables-save, bird and birdc, as one object the CLI is given (tests pass their own)."""

    def __init__(self, bird_socket: str | None = None) -> None:
        self.bird_socket = bird_socket

    def iptables_save(self, family: Family) -> str:
        return iptables_save(family)

    def _birdc(self, *args: str) -> list[str]:
        argv = ["birdc", "-v"]
        if self.bird_socket:
            argv += ["-s", self.bird_socket]
        res = run([*argv, *args])
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        errors = [m.group(2).strip() for ln in lines if (m := BIRD_ERROR.match(ln))]
        if errors:
            raise BirdRejected(f"BIRD refused the configuration: {errors[0]}")
        if res.exit_code != 0:
            raise ToolFailed(f"birdc {' '.join(args)}: {res.first_error_line()}")
        return lines

    def bird_check(self, path: Path, tables: dict[Family, str]) -> None:
        """Parse the file with `bird -p` inside a minimal main config, before BIRD sees it."""
        with tempfile.TemporaryDirectory(prefix="fs-fetch-") as tmp:
            main = Path(tmp) / "check.conf"
            decls = "".join(f"{f.bird_word} table {t};\n" for f, t in tables.items())
            main.write_text(f'{decls}include "{path}";\n')
            try:
                res = run(["bird", "-p", "-c", str(main)])
            except ToolFailed:
                log.info("bird not in PATH: leaving the syntax check to birdc configure")
                return
        if res.exit_code != 0:
            raise BirdRejected(f"bird -p refused the new file: {res.first_error_line()}")

    def configure(self) -> str:
        """`birdc configure`, and what BIRD said: "Reconfigured" or that it queued the change.

        Any other answer means BIRD did not take the new file (wire facts 4.2).
        """
        lines = self._birdc("configure")
        codes = {m.group(1): m.group(2).strip() for ln in lines if (m := BIRD_REPLY.match(ln))}
        for code in ACCEPTED:
            if code in codes:
                return codes[code]
        last = lines[-1] if lines else "no answer"
        raise ToolFailed(f"birdc configure answered {last!r}; BIRD did not take the new file")


def read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, fsync, rename over it: readers see the old or the new file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def restore(path: Path, previous: bytes | None) -> None:
    """Put back the file that was in force (or remove ours if there was none)."""
    if previous is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    else:
        write_atomic(path, previous)
