"""The switch side's contact with the system: vtysh, iptables-save and iptables-restore.

Checked with FRR 8.4.4 and iptables 1.8.9 (both backends). vtysh exits 0 with
`{"warning": ...}` for some failures and exits 1 with `bgpd is not running` on stderr when bgpd
is down (wire facts 1.3): neither means "no routes", and neither may empty the chain.

iptables has two backends, legacy (x_tables) and nf_tables, and the host's rules live in one
of them. Writing into the other would leave our chain invisible to the packets' path through
the host's real rules, so the backend is detected the way kubernetes' iptables-wrappers does it:
whichever backend holds more rules is the one in use; a tie goes to what `iptables` points to.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from flowseg.lock import FileLock
from flowseg.errors import ApplyFailed, BadInput, ToolFailed
from flowseg.model import Family
from flowseg.run import run

log = logging.getLogger(__name__)

INCOMPATIBLE = "is incompatible, use 'nft' tool"


@dataclass(frozen=True)
class Peer:
    address: str
    state: str

    @property
    def established(self) -> bool:
        return self.state == "Established"


class Switch:
    """vtysh and iptables on the switch, as one object the CLI is given."""

    def __init__(self, pathspace: str | None = None, backend: str = "auto", wait: int = 10):
        self.pathspace = pathspace
        self.wait = wait
        self._backend = backend if backend != "auto" else None
        # Told of each iptables-restore: before_apply(family) just before it starts, then
        # after_apply(family, error), error being the ToolFailed of an iptables-restore that
        # did not run to its end (killed by a signal, timed out), else None. The CLI's signal
        # handling (fs_inject.signals.Signals) tells from them a stop request in the middle of an
        # apply from one that came before anything was written, or one that killed it.
        self.before_apply: Callable[[Family], None] | None = None
        self.after_apply: Callable[[Family, ToolFailed | None], None] | None = None

    # -- FRR --------------------------------------------------------------------------------

    def vtysh(self, command: str, bulk: bool = False) -> str:
        argv = ["vtysh"]
        if self.pathspace:
            argv += ["-N", self.pathspace]
        res = run([*argv, "-c", command], bulk=bulk)
        if res.exit_code != 0:
            raise ToolFailed(f"vtysh -c '{command}': {res.first_error_line()}")
        return res.stdout

    def flowspec_json(self, family: Family) -> str:
        return self.vtysh(f"show bgp {family.afi} flowspec detail json", bulk=True)

    def flowspec_peers(self, family: Family) -> list[Peer]:
        """The neighbors of the flowspec address family and their BGP state."""
        text = self.vtysh(f"show bgp {family.afi} flowspec summary json")
        return parse_summary(text)

    # -- iptables ---------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        if self._backend is None:
            self._backend = detect_backend()
            log.info("iptables backend: %s", self._backend)
        return self._backend

    def _prog(self, family: Family, verb: str) -> str:
        base = "iptables" if family is Family.V4 else "ip6tables"
        return f"{base}-{self.backend}-{verb}" if self.backend != "default" else f"{base}-{verb}"

    def iptables_save(self, family: Family, counters: bool = False) -> str:
        prog = self._prog(family, "save")
        res = run([prog, "-t", "filter", *(["-c"] if counters else [])], bulk=True)
        if res.exit_code != 0:
            raise ToolFailed(f"{prog}: {res.first_error_line()}")
        if INCOMPATIBLE in res.stdout:
            raise ToolFailed(f"{prog}: the filter table was written by nft directly; "
                             "fs-inject cannot read it")
        return res.stdout

    def iptables_restore(self, family: Family, text: str) -> None:
        prog = self._prog(family, "restore")
        if self.before_apply is not None:
            self.before_apply(family)
        # --wait: another writer holding the xtables lock delays us instead of failing us.
        try:
            res = run([prog, "--noflush", "--wait", str(self.wait)], input=text, bulk=True)
        except ToolFailed as exc:
            if self.after_apply is not None:
                self.after_apply(family, exc)
            raise
        if self.after_apply is not None:
            self.after_apply(family, None)
        if res.exit_code != 0:
            why = restore_errors(res.stderr) or res.first_error_line()
            raise ApplyFailed(f"{prog} refused {failed_rule(text, res.stderr)}: {why}")


def restore_errors(stderr: str) -> str:
    """iptables-restore's complaint in one line: its first error, how many more, and a hint
    where the cause is outside fs-inject."""
    lines = [re.sub(r"^\S+ v[\d.]+ \([^)]*\):\s*", "", ln.strip()) for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Error occurred at line", "Try "))]
    if not lines:
        return ""
    why = lines[0][:160] + (f" (and {len(lines) - 1} more errors)" if len(lines) > 1 else "")
    if "Operation not permitted" in stderr:
        why += ("; the kernel said no: another program may own the table (`nft list tables` "
                "shows flags owner), or CAP_NET_ADMIN is missing")
    return why


def failed_rule(text: str, stderr: str) -> str:
    """Which rule iptables-restore stopped at, from its `Error occurred at line: N`."""
    m = re.search(r"line:? (\d+)", stderr)
    lines = text.splitlines()
    if not m or not 0 < int(m.group(1)) <= len(lines):
        return "the transaction"
    line = lines[int(m.group(1)) - 1]
    label = re.search(r'--comment "?(flowseg [^"]*?)"?( -j|$)', line)
    return f"line {m.group(1)} ({label.group(1) if label else line[:60]})"


def parse_summary(text: str) -> list[Peer]:
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"vtysh summary JSON unreadable: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadInput("vtysh summary JSON is not an object")
    if "warning" in data:
        raise BadInput(f"vtysh answered {data['warning']!r} instead of a summary")
    peers = data.get("peers", {})
    if not isinstance(peers, dict):
        raise BadInput("vtysh summary has no peers object")
    return [Peer(str(addr), str(info.get("state", ""))) for addr, info in sorted(peers.items())
            if isinstance(info, dict)]


def _rule_count(prog: str) -> int | None:
    try:
        res = run([prog], bulk=True)
    except ToolFailed:
        return None
    if res.exit_code != 0:
        return None
    return sum(1 for line in res.stdout.splitlines() if line.startswith("-A "))


def detect_backend() -> str:
    """"nft", "legacy", or "default" when the host has only plain iptables commands.

    The legacy tables are read first: on most hosts they are empty, and then the nft side
    need not be listed at all (a full listing costs seconds at 50,000 rules).
    """
    legacy = _rule_count("iptables-legacy-save")
    if legacy is None or shutil.which("iptables-nft-save") is None:
        return "default"
    res = run(["iptables", "--version"])
    default = "legacy" if "legacy" in res.stdout else "nft"
    if legacy == 0 and default == "nft":
        return "nft"
    nft = _rule_count("iptables-nft-save")
    if nft is None or nft == legacy:
        return default
    return "nft" if nft > legacy else "legacy"


class Lock(FileLock):
    """The fs-inject lock: a cron run and the daemon never apply at the same time."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__(path, timeout, "fs-inject")
