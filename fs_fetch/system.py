"""The controller side's contact with the system: iptables-save, bird -p, birdc, the BIRD file.

Checked with iptables 1.8.9 and BIRD 2.0.12. birdc answers `0003 Reconfigured` on success (even
when nothing changed) and a `8xxx` line plus exit status 1 on a refused configuration, which
BIRD then does not apply (wire facts 4.2). `show protocols all` gives, per BGP protocol and
channel, the route change counters the stepped apply (fs_fetch/steps.py) waits on.

Beside the BIRD file live only fs-fetch's own files: `.NAME.XXXXXXXX` while a new file is
written (mkstemp; one left behind by a killed run is removed by the next), `.NAME.pending`
from writing a file until BIRD has taken it, and `.NAME.lock`, the default lock.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

from flowseg.lock import FileLock
from flowseg.errors import BirdRejected, ToolFailed
from flowseg.model import Family
from flowseg.run import iptables_save, run
from fs_fetch.steps import ChannelCounters

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
        return configure_reply(self._birdc("configure"))

    def session(self) -> ControlSocket:
        """One connection to BIRD's control socket, for the many requests of a stepped apply.

        A birdc run through sh costs about 110 ms; a request on an open socket about 1 ms.
        """
        return ControlSocket(self.bird_socket or DEFAULT_SOCKET)

    def bgp_channels(self) -> list[ChannelCounters]:
        """Every channel of every BGP protocol, with its state and route change counters."""
        return parse_protocols(self._birdc("show", "protocols", "all"))


def configure_reply(lines: list[str]) -> str:
    codes = {m.group(1): m.group(2).strip() for ln in lines if (m := BIRD_REPLY.match(ln))}
    for code in ACCEPTED:
        if code in codes:
            return codes[code]
    last = lines[-1] if lines else "no answer"
    raise ToolFailed(f"birdc configure answered {last!r}; BIRD did not take the new file")


# Where Debian's BIRD 2 listens, and so where birdc connects without -s.
DEFAULT_SOCKET = "/run/bird/bird.ctl"


class ControlSocket:
    """BIRD's control socket, spoken directly: the line protocol birdc speaks.

    Every reply line is `CODE-text` (more follows), ` text` (more of the same code),
    `+text` (asynchronous, e.g. a log line) or `CODE text` (the last line). Lines come back as
    `birdc -v` prints them, so the same parsers read both.
    """

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def __enter__(self) -> ControlSocket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise ToolFailed(f"cannot reach BIRD's control socket {self.path}: "
                             f"{exc.strerror or exc}; start BIRD or give --bird-socket") from None
        self.sock = sock
        self._reply()
        return self

    def __exit__(self, *exc) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _line(self) -> str:
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise ToolFailed(f"BIRD's control socket {self.path}: {exc}") from None
            if not chunk:
                raise ToolFailed(f"BIRD closed its control socket {self.path}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _reply(self) -> list[str]:
        lines = []
        while True:
            line = self._line()
            if line.startswith("+"):
                continue
            lines.append(line)
            if BIRD_REPLY.match(line) and line[4] == " ":
                return lines

    def request(self, command: str) -> list[str]:
        if "\n" in command:
            raise ValueError("one line per command")
        try:
            self.sock.sendall(command.encode() + b"\n")
        except OSError as exc:
            raise ToolFailed(f"BIRD's control socket {self.path}: {exc}") from None
        lines = self._reply()
        errors = [m.group(2).strip() for ln in lines if (m := BIRD_ERROR.match(ln))]
        if errors:
            raise BirdRejected(f"BIRD refused the configuration: {errors[0]}")
        return lines

    def configure(self) -> str:
        return configure_reply(self.request("configure"))

    def bgp_channels(self) -> list[ChannelCounters]:
        return parse_protocols(self.request("show protocols all"))


CODE = re.compile(r"^\d{4}[ -]")
PROTOCOL_LINE = re.compile(r"^(\S+)\s+(\S+)\s+\S+\s+\S+")


def parse_protocols(lines: list[str]) -> list[ChannelCounters]:
    """`birdc [-v] show protocols all`, BGP protocols only, one entry per channel.

    Detail lines are indented; with -v each line starts with a reply code or, when it goes on
    with the code of the line before, a space.
    """
    out = []
    proto = kind = None
    state = ""
    channel: dict | None = None

    def flush() -> None:
        if channel is not None and kind == "BGP" and channel.get("table"):
            # A channel the peer did not negotiate is not UP and sends nothing.
            up = state == "Established" and channel.get("state", "UP") == "UP"
            out.append(ChannelCounters(
                proto, channel["table"], up, channel.get("exported", 0),
                channel.get("ew_received", 0), channel.get("ew_accepted", 0),
                channel.get("iw_received", 0),
            ))

    for raw in lines:
        line = raw[5:] if CODE.match(raw) else raw[1:] if raw.startswith(" ") else raw
        if line and not line[0].isspace():
            m = PROTOCOL_LINE.match(line)
            if m and m.group(1) != "Name" and not line.startswith("BIRD "):
                flush()
                proto, kind, state, channel = m.group(1), m.group(2), "", None
            continue
        text = line.strip()
        if text.startswith("BGP state:"):
            state = text.split(":", 1)[1].strip()
        elif text.startswith("Channel "):
            flush()
            channel = {}
        elif channel is None:
            continue
        elif text.startswith("Table:"):
            channel["table"] = text.split(":", 1)[1].strip()
        elif text.startswith("State:"):
            channel["state"] = text.split(":", 1)[1].strip()
        elif text.startswith("Routes:"):
            m = re.search(r"(\d+) exported", text)
            channel["exported"] = int(m.group(1)) if m else 0
        elif text.startswith(("Import withdraws:", "Export withdraws:")):
            cells = text.split(":", 1)[1].split()
            nums = [int(c) if c.isdigit() else None for c in cells]
            side = "iw" if text.startswith("Import") else "ew"
            channel[f"{side}_received"] = nums[0] or 0
            channel[f"{side}_accepted"] = nums[-1] or 0
    flush()
    return out


def read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class WriteFailed(ToolFailed):
    """The file system refused to write beside the BIRD file (full, read-only, no right)."""


def write_failed(path: Path, exc: OSError) -> WriteFailed:
    what = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "make room there",
        errno.EDQUOT: "make room there",
        errno.EROFS: "mount it read-write",
        errno.EACCES: "run as BIRD's user or fix the folder's rights",
        errno.EPERM: "run as BIRD's user or fix the folder's rights",
    }.get(exc.errno, "check the folder")
    return WriteFailed(f"cannot write {path}: {what}; {hint}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, fsync, rename over it: readers see the old or the new file.

    An OSError (disk full, read-only) leaves the target as it was and no temporary file.
    """
    try:
        _write_atomic(path, data)
    except OSError as exc:
        raise write_failed(path, exc) from exc


def _write_atomic(path: Path, data: bytes) -> None:
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


# mkstemp's names: the prefix, then 8 of these characters.
TEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}")


def clean_stale(path: Path) -> list[Path]:
    """Remove the temporary files a killed run left beside the BIRD file (call under the lock)."""
    removed = []
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if name.startswith(prefix) and TEMP_SUFFIX.fullmatch(name[len(prefix):]):
            stale = path.parent / name
            try:
                stale.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise write_failed(stale, exc) from exc
            removed.append(stale)
            log.warning("removed %s, left behind by an fs-fetch run that was killed", stale)
    return removed


class Pending:
    """`.NAME.pending` beside the BIRD file: a file was written that BIRD may not have read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mark = path.parent / f".{path.name}.pending"

    def exists(self) -> bool:
        return self.mark.exists()

    def set(self) -> None:
        try:
            fd = os.open(self.mark, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.mark.parent)
        except OSError as exc:
            raise write_failed(self.path, exc) from exc

    def clear(self) -> None:
        try:
            self.mark.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise write_failed(self.mark, exc) from exc


def _fsync_dir(folder: Path) -> None:
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def default_lock(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


class Lock(FileLock):
    """The fs-fetch lock: two runs never write the BIRD file at once."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        super().__init__(path, timeout, "fs-fetch run")
