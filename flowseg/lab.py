"""A network-namespace lab for flowseg's integration tests: BIRD, FRR bgpd and two hosts.

One `Lab` builds four network namespaces, each with a name unique to this process and lab:

    ctl (BIRD 2, AS 65000) --- sw (FRR bgpd -Z, AS 65001, forwarding) --- h1
                                                                       \\-- h2

`Lab(switches=3)` adds switches sw2 and sw3 (no hosts), each with its own bgpd and pathspace
and its own link to ctl, where BIRD has a session to each (switch2, switch3), cut from the
switch1 session of bird.conf; `Lab()` is the one-switch lab above.

BIRD in ctl announces Flow-Spec from a generated include file (`Lab.bird_conf`, the file
fs-fetch writes); bgpd in sw receives it, and `Lab.vtysh` reads it the way fs-inject does.
`Lab.probe` and `Lab.probe_many` tell whether single packets from one host reach the other,
which is how tests see the effect of the iptables chain on sw.

Everything a lab creates lives in its namespaces, in its temporary directory or in
/var/run/frr/<pathspace>; the host's iptables, /etc/bird and /etc/frr are never touched, and no
link leads out of the namespaces. Only documentation addresses are used (RFC 5737, RFC 3849).
`Lab.close` removes it all, also when a test fails; an atexit hook closes labs left open, and
`cleanup_stale` removes what a killed test run left behind.

Checked with BIRD 2.0.12, FRR 8.4.4 (Debian 12), iproute2 6.1, iptables 1.8.9 (nf_tables),
pyroute2 0.9.7 and Python 3.11.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

log = logging.getLogger(__name__)

# Addresses: documentation ranges only, so nothing here can clash with a real network.
CTL_V4 = "203.0.113.1"
SW_V4 = "203.0.113.2"
CTL_V6 = "2001:db8:ff::1"
SW_V6 = "2001:db8:ff::2"
H1_V4 = "192.0.2.10"
H1_GW_V4 = "192.0.2.1"
H1_V6 = "2001:db8:1::10"
H1_GW_V6 = "2001:db8:1::1"
H2_V4 = "198.51.100.10"
H2_GW_V4 = "198.51.100.1"
H2_V6 = "2001:db8:2::10"
H2_GW_V6 = "2001:db8:2::1"

CTL_AS = 65000
SW_AS = 65001
# The name of the BGP protocol in examples/bird.conf.
BIRD_PROTOCOL = "switch1"
# Lab(switches=N): switch k (2..N) is namespace sw<k>, FRR pathspace <lab>-sw<k> and BIRD protocol
# switch<k>, on link 203.0.113.(4k-4)/30: the controller .(4k-3), the switch .(4k-2). Switch 1
# is sw on 203.0.113.0/30. switch2 and switch3 have examples/bird-multi.conf's addresses.
SWITCHES_MAX = 16
SW_ROLE = re.compile(r"^sw(\d+)$")


def switch_link(k: int) -> tuple[str, str]:
    """(controller address, switch address) on switch k's link."""
    return f"203.0.113.{4 * k - 3}", f"203.0.113.{4 * k - 2}"

# Interface names. Each namespace has its own set, so the names need not be unique on the host.
SW_IF_CTL = "to-ctl"
SW_IF_H1 = "to-h1"
SW_IF_H2 = "to-h2"
HOST_IF = "to-sw"

ROLES = ("ctl", "sw", "h1", "h2")
HOSTS = {"h1": {4: H1_V4, 6: H1_V6}, "h2": {4: H2_V4, 6: H2_V6}}

# Per role: interface -> addresses, then the default gateways (hosts only).
_ADDRESSES: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {
    "ctl": {HOST_IF: ((CTL_V4, 30), (CTL_V6, 64))},
    "sw": {
        SW_IF_CTL: ((SW_V4, 30), (SW_V6, 64)),
        SW_IF_H1: ((H1_GW_V4, 24), (H1_GW_V6, 64)),
        SW_IF_H2: ((H2_GW_V4, 24), (H2_GW_V6, 64)),
    },
    "h1": {HOST_IF: ((H1_V4, 24), (H1_V6, 64))},
    "h2": {HOST_IF: ((H2_V4, 24), (H2_V6, 64))},
}
_GATEWAYS = {"h1": (H1_GW_V4, H1_GW_V6), "h2": (H2_GW_V4, H2_GW_V6)}
# sw's end of each veth, and the peer's end.
_SW_LINKS = {"ctl": SW_IF_CTL, "h1": SW_IF_H1, "h2": SW_IF_H2}

BGPD = "/usr/lib/frr/bgpd"
FRR_RUN_DIR = Path("/var/run/frr")
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
# The lines of examples/bird.conf that the lab replaces.
BIRD_INCLUDE_LINE = 'include "/etc/bird/flowspec.conf";'
BIRD_LOG_LINE = "log syslog all;"

KEEP_ENV = "FLOWSEG_LAB_KEEP"
# Every lab name starts with this, then the owning pid and a counter: fsl<pid>-<n>.
_PREFIX = "fsl"
_NAME_RE = re.compile(rf"^{_PREFIX}(\d+)-(\d+)(?:-(?:{'|'.join(ROLES)}|sw\d+))?$")
_COUNTER = itertools.count(1)
_LIVE: set[Lab] = set()

# Source ports the probes pick for themselves: below the kernel's ephemeral range (32768-60999)
# so that they never collide with a port the kernel hands out, and fresh on every probe so
# that no conntrack entry of an earlier probe on sw can apply.
_PROBE_PORTS = (20000, 30000)
_HELPER_READY_TIMEOUT = 5.0
_STOP_GRACE = 3.0


class LabError(RuntimeError):
    """The lab could not be built, or a daemon in it failed."""


class LabCommandError(subprocess.CalledProcessError):
    """A command in the lab exited non-zero; unlike the parent class, str() shows its output."""

    def __str__(self) -> str:
        text = f"{shlex.join(self.cmd)} exited {self.returncode}"
        for name, out in (("stdout", self.stdout), ("stderr", self.stderr)):
            if out and out.strip():
                text += f"\n--- {name} ---\n{out.strip()[-2000:]}"
        return text


@dataclass(frozen=True)
class FrrSession:
    """bgpd's view of the session to BIRD, from `show bgp neighbor <ip> json`.

    Two snapshots with different `established` or `dropped` counts prove a reset in between;
    equal counts are strong evidence of none, but FRR was once seen to miss a reset in them on
    a loaded machine (its uptime fell). `established_epoch` is derived from the uptime and
    jitters by a second, so it is no exact test either.
    """

    state: str
    established: int = 0
    dropped: int = 0
    uptime_ms: int = 0
    established_epoch: int | None = None
    families: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Probe:
    """One test packet from host `src` to host `dst` (see `Lab.probe`)."""

    proto: str
    src: str = "h1"
    dst: str = "h2"
    dport: int | None = None
    sport: int | None = None
    family: int = 4
    icmp_type: int | None = None
    icmp_code: int = 0


@dataclass
class _Helper:
    """A helper script running in a namespace, read line by line."""

    role: str
    kind: str
    proc: subprocess.Popen
    buffer: bytes = b""
    lines: list[str] = field(default_factory=list)
    eof: bool = False


def _run(
    argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess:
    log.debug("run: %s", shlex.join(argv))
    proc = subprocess.run(
        argv,
        check=False,
        input=input,
        capture_output=True,
        text=True,
        # vtysh prints UTF-8 (the bitmask operator) whatever the locale says.
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def _pid_alive(pid: int) -> bool:
    """Whether pid is a live process; a zombie counts as gone, it holds no resources."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat[stat.rindex(")") + 2] not in "ZX"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _netns_inodes(names: Iterable[str]) -> set[tuple[int, int]]:
    inodes = set()
    for name in names:
        try:
            st = os.stat(f"/run/netns/{name}")
        except OSError:
            continue
        inodes.add((st.st_dev, st.st_ino))
    return inodes


def _find_pids(
    *, needles: Iterable[str] = (), pathspaces: Iterable[str] = (), ns_names: Iterable[str] = ()
) -> set[int]:
    """Processes that name one of the paths (needles) in their command line, that run with
    `-N <pathspace>` (bgpd, vtysh), or that live in one of the named network namespaces."""
    needles = [n for n in needles if n]
    pathspaces = set(pathspaces)
    inodes = _netns_inodes(ns_names)
    found = set()
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        argv = _cmdline(pid)
        if any(arg == n or f"{n}/" in arg for n in needles for arg in argv):
            found.add(pid)
        elif any(a == "-N" and b in pathspaces for a, b in itertools.pairwise(argv)):
            found.add(pid)
        elif inodes:
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in inodes:
                found.add(pid)
    return found


def _terminate(pids: Iterable[int], grace: float = _STOP_GRACE) -> set[int]:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the pids that still live."""
    pids = {pid for pid in pids if _pid_alive(pid)}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = {pid for pid in pids if _pid_alive(pid)}
        if not pids:
            break
    return pids


def missing_requirements() -> list[str]:
    """What this machine lacks for a lab; empty when a lab can run."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("ip", "setpriv", "bird", "birdc", "vtysh", "sysctl", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not os.access(BGPD, os.X_OK):
        missing.append(BGPD)
    return missing


def cleanup_stale() -> list[str]:
    """Remove namespaces, daemons, FRR run dirs and temp dirs of labs whose process is dead.

    Only names of the lab's own pattern (fsl<pid>-<n>...) whose pid no longer exists are
    touched; a kept temp dir (FLOWSEG_LAB_KEEP=1) stays. Returns what was removed.
    """

    def stale(name: str) -> bool:
        match = _NAME_RE.match(name)
        return bool(match) and not _pid_alive(int(match.group(1)))

    ns_names = [name for name in netns.listnetns() if stale(name)]
    pathspaces = []
    if FRR_RUN_DIR.is_dir():
        pathspaces = [p.name for p in FRR_RUN_DIR.iterdir() if p.is_dir() and stale(p.name)]
    tmp_root = Path(tempfile.gettempdir())
    tmpdirs = [
        p
        for p in tmp_root.glob(f"{_PREFIX}*")
        if p.is_dir() and stale(p.name.rsplit("-", 1)[0]) and not (p / ".keep").exists()
    ]
    if not (ns_names or pathspaces or tmpdirs):
        return []
    needles = [str(p) for p in tmpdirs]
    leftover = _terminate(_find_pids(needles=needles, pathspaces=pathspaces, ns_names=ns_names))
    if leftover:
        log.warning("stale lab processes survived SIGKILL: %s", sorted(leftover))
    for name in ns_names:
        try:
            netns.remove(name)
        except FileNotFoundError:
            # Another process's cleanup_stale got there first.
            pass
        except OSError as exc:
            log.warning("cannot remove stale netns %s: %s", name, exc)
    for name in pathspaces:
        shutil.rmtree(FRR_RUN_DIR / name, ignore_errors=True)
    for path in tmpdirs:
        shutil.rmtree(path, ignore_errors=True)
    removed = ns_names + [str(FRR_RUN_DIR / n) for n in pathspaces] + needles
    log.info("removed stale lab leftovers: %s", removed)
    return removed


def split_json_stream(text: str) -> list:
    """vtysh's flowspec detail JSON: back-to-back arrays, one per route, or nothing at all."""
    decoder = json.JSONDecoder()
    routes = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return routes
        obj, pos = decoder.raw_decode(text, pos)
        if not isinstance(obj, list):
            # {"warning": ...}: vtysh exits 0 but has no table to show.
            raise LabError(f"vtysh answered {obj!r} instead of routes")
        routes.append(obj)


def _afi(family: int | str) -> str:
    names = {4: "ipv4", 6: "ipv6", "4": "ipv4", "6": "ipv6", "ipv4": "ipv4", "ipv6": "ipv6"}
    try:
        return names[family]
    except KeyError:
        raise ValueError(f"family must be 4 or 6, not {family!r}") from None


def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address))


# Runs in the destination namespace: prints one JSON line per IPv4/IPv6 packet that arrives from
# one of the given sources for one of the given destinations, until stdin closes. An AF_PACKET
# socket sees the packet before the host's own stack answers it, so no reply is needed.
_SNIFFER = r"""
import json, select, socket, struct, sys
want = json.loads(sys.argv[1])
sources, targets = set(want["src"]), set(want["dst"])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
print("READY", flush=True)
while True:
    ready, _, _ = select.select([sock, sys.stdin], [], [])
    if sys.stdin in ready:
        break
    data, addr = sock.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    if addr[1] == 0x0800 and len(data) >= 20:
        if struct.unpack("!H", data[6:8])[0] & 0x1FFF:
            continue
        family, proto = 4, data[9]
        src = socket.inet_ntop(socket.AF_INET, data[12:16])
        dst = socket.inet_ntop(socket.AF_INET, data[16:20])
        l4 = data[(data[0] & 15) * 4:]
    elif addr[1] == 0x86DD and len(data) >= 40:
        family, proto = 6, data[6]
        src = socket.inet_ntop(socket.AF_INET6, data[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, data[24:40])
        l4 = data[40:]
    else:
        continue
    if src not in sources or dst not in targets:
        continue
    seen = {"f": family, "p": proto, "s": src, "d": dst}
    if proto in (6, 17) and len(l4) >= 4:
        seen["sp"], seen["dp"] = struct.unpack("!HH", l4[:4])
    elif proto in (1, 58) and len(l4) >= 16:
        seen["tok"] = l4[8:16].hex()
    else:
        continue
    print(json.dumps(seen), flush=True)
"""

# Runs in the source namespace: sends one packet per probe, prints SENT, then keeps its sockets
# open until stdin closes, so that a SYN still waiting for ARP/ND is not thrown away.
# TCP is a non-blocking connect() (the kernel sends the SYN), UDP one datagram, ICMP a raw
# packet whose payload carries the probe's token.
_SENDER = r"""
import errno, json, socket, struct, sys

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

sockets = []
for p in json.loads(sys.argv[1]):
    family = socket.AF_INET if p["f"] == 4 else socket.AF_INET6
    if p["proto"] in ("tcp", "udp"):
        kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(family, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((p["src"], p["sport"]))
        if p["proto"] == "tcp":
            s.setblocking(False)
            err = s.connect_ex((p["dst"], p["dport"]))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, "connect failed", p)
        else:
            s.sendto(b"flowseg-probe", (p["dst"], p["dport"]))
    else:
        proto = socket.IPPROTO_ICMP if p["f"] == 4 else socket.IPPROTO_ICMPV6
        s = socket.socket(family, socket.SOCK_RAW, proto)
        s.bind((p["src"], 0))
        packet = struct.pack("!BBHHH", p["type"], p["code"], 0, p["ident"], 1)
        packet += bytes.fromhex(p["tok"])
        if p["f"] == 4:
            # The kernel fills in the ICMPv6 checksum of a raw socket, not the ICMP one.
            packet = packet[:2] + struct.pack("!H", checksum(packet)) + packet[4:]
        s.sendto(packet, (p["dst"], 0))
    sockets.append(s)
print("SENT", flush=True)
sys.stdin.read()
"""


class Lab:
    """BIRD in ctl, FRR bgpd in sw, hosts h1 and h2; a context manager.

    `with Lab() as lab:` builds the namespaces, starts both daemons and waits until the BGP
    session is Established; leaving the block (normally or by an exception) calls `close`.
    """

    ctl_v4, sw_v4, ctl_v6, sw_v6 = CTL_V4, SW_V4, CTL_V6, SW_V6
    h1_v4, h1_gw_v4, h1_v6, h1_gw_v6 = H1_V4, H1_GW_V4, H1_V6, H1_GW_V6
    h2_v4, h2_gw_v4, h2_v6, h2_gw_v6 = H2_V4, H2_GW_V4, H2_V6, H2_GW_V6
    ctl_as, sw_as = CTL_AS, SW_AS
    sw_if_ctl, sw_if_h1, sw_if_h2 = SW_IF_CTL, SW_IF_H1, SW_IF_H2

    def __init__(
        self,
        examples_dir: str | os.PathLike | None = None,
        keep: bool | None = None,
        zebra: bool = False,
        switches: int = 1,
        export_filter: str | None = None,
        flowspec: str = "",
    ):
        """switches: how many FRR switches (1 to SWITCHES_MAX). export_filter: a format such
        as "flowseg_export_{protocol}" that replaces `export all;` in every BGP session with
        `export filter <name>;`; the filters must then be in `flowspec`, the include file's
        content when BIRD starts (empty by default)."""
        if not 1 <= switches <= SWITCHES_MAX:
            raise ValueError(f"switches must be 1-{SWITCHES_MAX}, not {switches}")
        self.name = f"{_PREFIX}{os.getpid()}-{next(_COUNTER)}"
        # bgpd -N and vtysh -N: the sockets go to /var/run/frr/<pathspace>/.
        self.pathspace = self.name
        self.namespaces = {role: f"{self.name}-{role}" for role in ROLES}
        self.ctl, self.sw, self.h1, self.h2 = (self.namespaces[role] for role in ROLES)
        # Every switch by role: "sw", then "sw2", "sw3", ...
        self.switches = ["sw"] + [f"sw{k}" for k in range(2, switches + 1)]
        for role in self.switches[1:]:
            self.namespaces[role] = f"{self.name}-{role}"
        self.pathspaces = {r: self.name if r == "sw" else f"{self.name}-{r}" for r in self.switches}
        self.bird_protocols = {r: f"switch{self._index(r)}" for r in self.switches}
        self.links = {r: switch_link(self._index(r)) for r in self.switches}
        self.export_filter = export_filter
        self.initial_flowspec = flowspec
        self.examples_dir = Path(examples_dir) if examples_dir else EXAMPLES_DIR
        for name in ("bird.conf", "frr.conf"):
            if not (self.examples_dir / name).is_file():
                # An installed (not editable) package has no examples/ beside it.
                raise LabError(f"no {name} in {self.examples_dir}; pass examples_dir=")
        self.keep = os.environ.get(KEEP_ENV) == "1" if keep is None else keep
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.bird_main_conf = self.tmpdir / "bird.conf"
        # The generated Flow-Spec file that BIRD includes; fs-fetch writes this one.
        self.bird_conf = self.tmpdir / "flowspec.conf"
        self.bird_socket = self.tmpdir / "bird.ctl"
        self.bird_pidfile = self.tmpdir / "bird.pid"
        self.bird_log = self.tmpdir / "bird.log"
        self.frr_conf = self.tmpdir / "frr.conf"
        self.bgpd_pidfile = self.tmpdir / "bgpd.pid"
        self.bgpd_log = self.tmpdir / "bgpd.log"
        self.frr_run_dir = FRR_RUN_DIR / self.pathspace
        self.frr_run_dirs = {r: FRR_RUN_DIR / ps for r, ps in self.pathspaces.items()}
        self.setup_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._daemons: dict[str, subprocess.Popen] = {}
        self._bgpd_pids: set[int] = set()
        # zebra=True: a zebra beside bgpd, for the tests about zebra (FRR 8.4's zebra crashes
        # when flowspec drop routes are withdrawn, wire facts 5); every other test runs -Z.
        self.zebra = zebra
        self.zebra_socket = self.tmpdir / "zebra" / "zserv.api"
        self._ports = itertools.cycle(range(*_PROBE_PORTS))
        self._icmp_ids = itertools.cycle(range(1, 0x10000))
        self._started = False
        self._closed = False
        self._owner = os.getpid()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<Lab {self.name} tmpdir={self.tmpdir}>"

    @staticmethod
    def _index(role: str) -> int:
        """1 for sw, k for sw<k>."""
        if role == "sw":
            return 1
        match = SW_ROLE.match(role)
        if not match:
            raise ValueError(f"{role!r} is no switch; use sw, sw2, sw3, ...")
        return int(match.group(1))

    def _switch_files(self, role: str) -> tuple[Path, Path, Path]:
        """(frr.conf, bgpd pid file, bgpd log) of one switch."""
        if role == "sw":
            return self.frr_conf, self.bgpd_pidfile, self.bgpd_log
        return (self.tmpdir / f"frr-{role}.conf", self.tmpdir / f"bgpd-{role}.pid",
                self.tmpdir / f"bgpd-{role}.log")

    @staticmethod
    def _bgpd_name(role: str) -> str:
        return "bgpd" if role == "sw" else f"bgpd-{role}"

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- building and tearing down -------------------------------------------------------------

    def start(self, wait: bool = True) -> Lab:
        """Build the network, start BIRD and bgpd, and (with `wait`) wait for the session."""
        if self._closed:
            raise LabError(f"{self.name} is closed")
        if self._started:
            return self
        self._started = True
        begin = time.monotonic()
        try:
            cleanup_stale()
            self._build_network()
            self._write_configs()
            self._start_bird()
            if self.zebra:
                self._start_zebra()
            self._start_bgpd()
            for role in self.switches[1:]:
                self._start_bgpd(role)
            if wait:
                self.wait_established()
            self._check_frr_config()
        except BaseException:
            log.error("lab %s failed to start", self.name)
            self.close()
            raise
        self.setup_seconds = time.monotonic() - begin
        log.info("lab %s up in %.2f s", self.name, self.setup_seconds)
        return self

    def _build_network(self) -> None:
        for ns in self.namespaces.values():
            netns.create(ns)
        for role in ROLES:
            settings = [
                # No duplicate address detection: a v6 address with DAD pending cannot be
                # used for a second or two, which would make the first v6 probes fail.
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]
            if role == "sw":
                settings += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
            self.run(role, "sysctl", "-q", "-w", *settings)
        # All veths are created inside sw with the peer end placed straight into the other
        # namespace, so no lab interface ever exists in the host's namespace.
        with IPRoute(netns=self.sw) as ipr:
            for role, sw_if in _SW_LINKS.items():
                peer = {"ifname": HOST_IF, "net_ns_fd": self.namespaces[role]}
                ipr.link("add", ifname=sw_if, kind="veth", peer=peer)
        for role in ROLES:
            with IPRoute(netns=self.namespaces[role]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                for ifname, addresses in _ADDRESSES[role].items():
                    index = ipr.link_lookup(ifname=ifname)[0]
                    for address, prefixlen in addresses:
                        extra = {"flags": IFA_F_NODAD} if ":" in address else {}
                        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, **extra)
                    ipr.link("set", index=index, state="up")
                for gateway in _GATEWAYS.get(role, ()):
                    dst = "::/0" if ":" in gateway else "0.0.0.0/0"
                    ipr.route("add", dst=dst, gateway=gateway)
        for role in self.switches[1:]:
            self._build_switch_link(role)

    def _build_switch_link(self, role: str) -> None:
        """A further switch: its veth to ctl (to-ctl there, to-<role> in ctl), IPv4 only."""
        self.run(role, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv4.ip_forward=1")
        ctl_addr, sw_addr = self.links[role]
        ends = {role: (SW_IF_CTL, sw_addr), "ctl": (f"to-{role}", ctl_addr)}
        with IPRoute(netns=self.namespaces[role]) as ipr:
            peer = {"ifname": ends["ctl"][0], "net_ns_fd": self.ctl}
            ipr.link("add", ifname=SW_IF_CTL, kind="veth", peer=peer)
        for ns, (ifname, address) in ends.items():
            with IPRoute(netns=self.namespaces[ns]) as ipr:
                if ns != "ctl":
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                index = ipr.link_lookup(ifname=ifname)[0]
                ipr.addr("add", index=index, address=address, prefixlen=30)
                ipr.link("set", index=index, state="up")

    def _write_configs(self) -> None:
        template = (self.examples_dir / "bird.conf").read_text()
        replacements = {
            BIRD_INCLUDE_LINE: f'include "{self.bird_conf}";',
            BIRD_LOG_LINE: f'log "{self.bird_log}" all;',
        }
        for old, new in replacements.items():
            if template.count(old) != 1:
                raise LabError(f"{self.examples_dir / 'bird.conf'} must contain {old!r} once")
            template = template.replace(old, new)
        if len(self.switches) > 1:
            template = self._more_sessions(template)
        if self.export_filter:
            template = self._export_filters(template)
        self.bird_main_conf.write_text(template)
        self.bird_conf.write_text(self.initial_flowspec)
        shutil.copyfile(self.examples_dir / "frr.conf", self.frr_conf)
        frr = (self.examples_dir / "frr.conf").read_text()
        for role in self.switches[1:]:
            ctl_addr, sw_addr = self.links[role]
            # examples/frr.conf names the switch by SW_V4 and the controller by CTL_V4.
            swap = {SW_V4: sw_addr, CTL_V4: ctl_addr}
            text = re.sub(r"(?<![\d.])203\.0\.113\.[12](?![\d.])", lambda m: swap[m.group(0)], frr)
            self._switch_files(role)[0].write_text(text)

    def _more_sessions(self, template: str) -> str:
        """switch2, switch3, ...: copies of bird.conf's switch1 session on their own links."""
        block = re.search(rf"^protocol bgp {BIRD_PROTOCOL}\b[^{{]*\{{.*?^\}}\n", template,
                          re.MULTILINE | re.DOTALL)
        if not block:
            raise LabError(f"{self.examples_dir / 'bird.conf'} has no protocol bgp "
                           f"{BIRD_PROTOCOL} block to copy for more switches")
        sessions = []
        for role in self.switches[1:]:
            name = self.bird_protocols[role]
            if re.search(rf"^protocol bgp {name}\b", template, re.MULTILINE):
                raise LabError(f"{self.examples_dir / 'bird.conf'} already has {name}")
            ctl_addr, sw_addr = self.links[role]
            text = block.group(0).replace(f"protocol bgp {BIRD_PROTOCOL}", f"protocol bgp {name}")
            text = text.replace(f"local {CTL_V4}", f"local {ctl_addr}")
            text = text.replace(f"neighbor {SW_V4}", f"neighbor {sw_addr}")
            note = f"# Lab switch {self._index(role)}, cut from {BIRD_PROTOCOL}."
            sessions.append(f"\n{note}\n{text}")
        return template.rstrip("\n") + "\n" + "".join(sessions)

    def _export_filters(self, template: str) -> str:
        """Each session's `export all;` becomes its switch's export filter."""
        out = []
        for part in re.split(r"(?=^protocol bgp )", template, flags=re.MULTILINE):
            name = re.match(r"protocol bgp (\w+)", part)
            if name:
                fname = self.export_filter.format(protocol=name.group(1))
                part = part.replace("export all;", f"export filter {fname};")
            out.append(part)
        return "".join(out)

    def _spawn(self, role: str, argv: list[str], logname: str) -> subprocess.Popen:
        # Foreground daemons as our own children: we can wait() for them, so no zombie stays
        # behind to show up in pgrep. If the test process dies without closing the lab
        # (SIGKILL), the parent-death signal stops them; setpriv sets it and `ip netns exec`
        # execs in the same process, so it reaches bird and bgpd.
        with open(self.tmpdir / logname, "wb") as out:
            return subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "ip", "netns", "exec", self.namespaces[role]]
                + argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # A Ctrl-C in the terminal goes to pytest alone, which then closes the lab in
                # order, instead of also hitting the daemons in the middle of a test.
                start_new_session=True,
            )

    def _wait_ready(self, daemon: str, ready, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_daemons()
            if time.monotonic() > deadline:
                raise LabError(f"{daemon} not ready after {timeout} s\n{self.log_tail()}")
            time.sleep(0.02)

    def _start_bird(self) -> None:
        argv = ["bird", "-f", "-c", str(self.bird_main_conf)]
        argv += ["-s", str(self.bird_socket), "-P", str(self.bird_pidfile)]
        self._daemons["bird"] = self._spawn("ctl", argv, "bird.out")
        self._wait_ready(
            "bird",
            lambda: (
                self.bird_socket.exists()
                and self.birdc("show", "status", check=False).returncode == 0
            ),
        )

    def _start_zebra(self) -> None:
        # zebra has no -S and refuses `-u root` (root is not in frrvty), so it runs as frr, the
        # package's user: its socket, pid and log go to a folder of the lab that frr owns.
        zdir = self.tmpdir / "zebra"
        zdir.mkdir(exist_ok=True)
        os.chmod(self.tmpdir, 0o711)
        shutil.chown(zdir, "frr", "frr")
        if not FRR_RUN_DIR.exists():
            FRR_RUN_DIR.mkdir(mode=0o755)
            with contextlib.suppress(LookupError):
                shutil.chown(FRR_RUN_DIR, "frr", "frr")
        self.frr_run_dir.mkdir(exist_ok=True)
        shutil.chown(self.frr_run_dir, "frr", "frr")
        conf = zdir / "zebra.conf"
        conf.write_text("hostname sw\n")
        shutil.chown(conf, "frr", "frr")
        argv = [
            "/usr/lib/frr/zebra", "-N", self.pathspace, "-f", str(conf),
            "-z", str(self.zebra_socket), "-P", "0",
            "-i", str(zdir / "zebra.pid"), "--log", f"file:{zdir / 'zebra.log'}",
        ]  # fmt: skip
        self._daemons["zebra"] = self._spawn("sw", argv, "zebra.out")
        self._wait_ready("zebra", lambda: self.zebra_socket.exists())

    def _start_bgpd(self, role: str = "sw") -> None:
        # bgpd creates the pathspace dir itself, but only when it gets that far; making it
        # here means vtysh finds a dir (not a missing one) and close() has a known thing to
        # remove.
        if not FRR_RUN_DIR.exists():
            # Owned as the frr package would create it, so that a later start of the host's own
            # FRR finds what it expects.
            FRR_RUN_DIR.mkdir(mode=0o755)
            with contextlib.suppress(LookupError):
                shutil.chown(FRR_RUN_DIR, "frr", "frr")
        run_dir = self.frr_run_dirs[role]
        run_dir.mkdir(exist_ok=True)
        conf, pidfile, logfile = self._switch_files(role)
        argv = [
            BGPD,
            "-N", self.pathspaces[role],
            "-f", str(conf),
            # No zebra: flowseg builds the netfilter rules itself (see examples/frr.conf).
            *(["-z", str(self.zebra_socket)] if self.zebra and role == "sw" else ["-Z"]),
            # Stay root. `-u root -g root` is refused ("user(root) is not part of vty group
            # specified(frrvty)"), and running as frr would need the temp dir readable by it.
            "-S",
            # No TCP vty; vtysh uses the unix socket in the pathspace dir.
            "-P", "0",
            "-i", str(pidfile),
            "--log", f"file:{logfile}",
        ]  # fmt: skip
        name = self._bgpd_name(role)
        self._daemons[name] = self._spawn(role, argv, f"{name}.out")
        vty = run_dir / "bgpd.vty"
        self._wait_ready(
            name,
            lambda: (
                vty.exists()
                and self.vtysh("show bgp summary json", check=False, switch=role).returncode == 0
            ),
        )

    def _check_frr_config(self) -> None:
        # bgpd logs a config line it rejects but runs on (even `bgpd -C` exits 0). Checked
        # after the session is up, when bgpd has certainly read its config.
        for role in self.switches:
            conf, _, logfile = self._switch_files(role)
            bad = re.findall(r".* on config line \d+:.*", self._read(logfile))
            if bad:
                raise LabError(f"bgpd rejected lines of {conf}:\n" + "\n".join(bad))

    def _check_daemons(self) -> None:
        for name, proc in self._daemons.items():
            if proc.poll() is not None:
                raise LabError(f"{name} exited with {proc.returncode}\n{self.log_tail()}")

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        extra = [f"{self._bgpd_name(r)}{ext}" for r in self.switches[1:]
                 for ext in (".out", ".log")]
        for name in ("bird.out", "bird.log", "bgpd.out", "bgpd.log", *extra):
            text = self._read(self.tmpdir / name).strip()
            if text:
                parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def kill(self, daemon: str, sig: int = signal.SIGKILL) -> None:
        """Stop "bird" or "bgpd" the hard way, as a crash would (a fault test's first step)."""
        proc = self._daemons.pop(daemon)
        if daemon.startswith("bgpd"):
            self._bgpd_pids.add(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=10)
        if daemon == "bird":
            with contextlib.suppress(FileNotFoundError):
                self.bird_socket.unlink()

    def revive(self, daemon: str) -> None:
        """Start "bird" or "bgpd" again after kill(), with the same configuration."""
        if daemon.startswith("bgpd-") and daemon[5:] in self.switches:
            self._start_bgpd(daemon[5:])
            return
        {"bird": self._start_bird, "bgpd": self._start_bgpd, "zebra": self._start_zebra}[daemon]()

    def processes(self) -> set[int]:
        """Live processes that belong to this lab."""
        return _find_pids(
            needles=[str(self.tmpdir)],
            pathspaces=list(self.pathspaces.values()),
            ns_names=self.namespaces.values(),
        )

    def close(self) -> None:
        """Stop the daemons, remove namespaces, FRR run dir and temp dir; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        begin = time.monotonic()
        pids = {proc.pid for proc in self._daemons.values()}
        # bgpd keeps a crash-log folder per pid in /var/tmp/frr; it is ours to remove.
        self._bgpd_pids.update(p.pid for n, p in self._daemons.items() if n.startswith("bgpd"))
        pidfiles = [self.bird_pidfile] + [self._switch_files(r)[1] for r in self.switches]
        for pidfile in pidfiles:
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            # A pid file can outlive its process, and the pid can be reused by then.
            if any(str(self.tmpdir) in arg for arg in _cmdline(pid)):
                pids.add(pid)
        pids |= self.processes()
        leftover = _terminate(pids)
        if leftover:
            log.warning("lab %s: processes survived SIGKILL: %s", self.name, sorted(leftover))
        for proc in self._daemons.values():
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                log.warning("lab %s: pid %d not reaped", self.name, proc.pid)
        existing = set(netns.listnetns())
        for ns in self.namespaces.values():
            if ns in existing:
                try:
                    netns.remove(ns)
                except OSError as exc:
                    log.warning("lab %s: cannot remove netns %s: %s", self.name, ns, exc)
        for run_dir in self.frr_run_dirs.values():
            shutil.rmtree(run_dir, ignore_errors=True)
        if self.keep:
            (self.tmpdir / ".keep").touch()
            log.warning("lab %s: kept %s (%s=1)", self.name, self.tmpdir, KEEP_ENV)
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        for pid in self._bgpd_pids:
            shutil.rmtree(f"/var/tmp/frr/bgpd.{pid}", ignore_errors=True)
        self.teardown_seconds = time.monotonic() - begin
        log.info("lab %s closed in %.2f s", self.name, self.teardown_seconds)

    # -- running things --------------------------------------------------------------------------

    def _ns(self, ns: str) -> str:
        if ns in self.namespaces:
            return self.namespaces[ns]
        if ns in self.namespaces.values():
            return ns
        raise ValueError(f"unknown namespace {ns!r}; use one of {', '.join(ROLES)}")

    def run(
        self,
        ns: str,
        *argv: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess:
        """Run argv in namespace ns (a role such as "sw" or the full name); text output."""
        return _run(
            ["ip", "netns", "exec", self._ns(ns), *argv], input=input, check=check, timeout=timeout
        )

    def birdc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """birdc over the lab's control socket (no namespace needed for a unix socket)."""
        return _run(["birdc", "-s", str(self.bird_socket), *args], check=check)

    def vtysh(
        self, command: str, check: bool = True, switch: str = "sw"
    ) -> subprocess.CompletedProcess:
        """One vtysh command in the lab's pathspace; stdout and stderr stay apart.

        stderr always holds "% Can't open configuration file /etc/frr/<pathspace>/vtysh.conf":
        the lab leaves /etc/frr alone, and vtysh works without that file.
        """
        return _run(["vtysh", "-N", self.pathspaces[switch], "-c", command], check=check)

    def iptables(
        self, ns: str, *args: str, v6: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess:
        """iptables (or ip6tables) in a lab namespace, never on the host."""
        return self.run(ns, "ip6tables" if v6 else "iptables", *args, check=check)

    def iptables_save(self, ns: str = "sw", v6: bool = False) -> str:
        return self.run(ns, "ip6tables-save" if v6 else "iptables-save").stdout

    def load_flowspec(self, text: str) -> subprocess.CompletedProcess:
        """Write the generated Flow-Spec file and make BIRD read it (`birdc configure`)."""
        self.bird_conf.write_text(text)
        return self.birdc("configure")

    # -- BGP state -------------------------------------------------------------------------------

    def bird_bgp_state(self, switch: str = "sw") -> str:
        """BIRD's BGP state for the switch (Idle, Connect, Active, ..., Established)."""
        protocol = self.bird_protocols[switch]
        out = self.birdc("show", "protocols", "all", protocol, check=False).stdout
        match = re.search(r"^\s*BGP state:\s+(\S+)", out, re.MULTILINE)
        return match.group(1) if match else ""

    def bird_exported(self, switch: str = "sw") -> dict[str, int]:
        """How many routes BIRD exports on the switch's session, per channel (flow4, flow6),
        from `show protocols all <protocol>`: its "Routes: ... exported" lines."""
        protocol = self.bird_protocols[switch]
        out = self.birdc("show", "protocols", "all", protocol).stdout
        found = re.findall(r"^\s*Channel (\S+)\n(?:.*\n)*?\s*Routes:.*?(\d+) exported", out,
                           re.MULTILINE)
        return {channel: int(count) for channel, count in found}

    def frr_neighbor(self, switch: str = "sw") -> dict:
        """`show bgp neighbor <controller> json` for the controller; {} if bgpd has no data."""
        ctl_addr = self.links[switch][0]
        out = self.vtysh(f"show bgp neighbor {ctl_addr} json", check=False, switch=switch).stdout
        try:
            data = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            return {}
        return data.get(ctl_addr, {})

    def frr_session(self, switch: str = "sw") -> FrrSession:
        """State, uptime and established/dropped counts of bgpd's session to BIRD."""
        peer = self.frr_neighbor(switch)
        if not peer:
            return FrrSession(state="")
        extensions = peer.get("neighborCapabilities", {}).get("multiprotocolExtensions", {})
        families = frozenset(
            name for name, how in extensions.items() if how.get("advertisedAndReceived")
        )
        return FrrSession(
            state=peer.get("bgpState", ""),
            established=peer.get("connectionsEstablished", 0),
            dropped=peer.get("connectionsDropped", 0),
            uptime_ms=peer.get("bgpTimerUpMsec", 0),
            established_epoch=peer.get("bgpTimerUpEstablishedEpoch"),
            families=families,
        )

    def wait_established(self, timeout: float = 30.0) -> FrrSession:
        """Wait until BIRD and bgpd both show the session Established (every switch's; the
        first switch's is returned)."""
        deadline = time.monotonic() + timeout
        for role in reversed(self.switches):
            session = self._wait_session(role, deadline, timeout)
        return session

    def _wait_session(self, role: str, deadline: float, timeout: float) -> FrrSession:
        while True:
            bird_state = self.bird_bgp_state(role)
            session = self.frr_session(role)
            if bird_state == "Established" and session.state == "Established":
                return session
            self._check_daemons()
            if time.monotonic() > deadline:
                raise LabError(
                    f"BGP {self.bird_protocols[role]} not Established after {timeout} s (BIRD "
                    f"{bird_state or '?'}, FRR {session.state or '?'})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def frr_routes(self, family: int | str = 4, switch: str = "sw") -> list[list[dict]]:
        """The routes bgpd holds: one list of JSON objects per NLRI (detail JSON, split)."""
        out = self.vtysh(f"show bgp {_afi(family)} flowspec detail json", switch=switch).stdout
        return split_json_stream(out)

    def wait_frr_routes(
        self, family: int | str, count: int, timeout: float = 20.0, switch: str = "sw"
    ) -> list:
        """Wait until bgpd holds exactly `count` Flow-Spec routes of the family; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            routes = self.frr_routes(family, switch)
            if len(routes) == count:
                return routes
            self._check_daemons()
            if time.monotonic() > deadline:
                where = "" if switch == "sw" else f" on {switch}"
                raise LabError(
                    f"bgpd{where} holds {len(routes)} {_afi(family)} flowspec routes after "
                    f"{timeout} s, expected {count}\n{self.log_tail()}"
                )
            time.sleep(0.05)

    # -- probes ----------------------------------------------------------------------------------

    def probe(
        self,
        proto: str,
        src: str = "h1",
        dst: str = "h2",
        dport: int | None = None,
        sport: int | None = None,
        family: int = 4,
        icmp_type: int | None = None,
        icmp_code: int = 0,
        timeout: float = 1.0,
    ) -> bool:
        """Whether one packet sent from host src arrives at host dst.

        proto is "tcp" (a SYN), "udp" (one datagram), "icmp" or "icmp6" (one echo request
        unless icmp_type says otherwise); "icmp6" implies family 6. dport is required for tcp
        and udp; without sport the lab picks a fresh one. Stateless: it watches the packet
        arrive and never waits for a reply, which the switch's chain may drop.
        """
        spec = Probe(proto, src, dst, dport, sport, family, icmp_type, icmp_code)
        return self.probe_many([spec], timeout=timeout)[0]

    def _plan(self, spec: Probe | Mapping) -> tuple[tuple, dict, str, str]:
        """(key seen at dst, wire description, src role, dst role) for one probe."""
        if isinstance(spec, Mapping):
            spec = Probe(**spec)
        proto, family = spec.proto, spec.family
        if proto == "icmp6" or (proto == "icmp" and family == 6):
            proto, family = "icmp6", 6
        if proto not in ("tcp", "udp", "icmp", "icmp6") or family not in (4, 6):
            raise ValueError(f"cannot probe {spec.proto!r} over IPv{spec.family}")
        if spec.src not in HOSTS or spec.dst not in HOSTS or spec.src == spec.dst:
            raise ValueError(f"probes go between h1 and h2, not {spec.src!r} -> {spec.dst!r}")
        src = _canonical(HOSTS[spec.src][family])
        dst = _canonical(HOSTS[spec.dst][family])
        wire = {"f": family, "proto": proto, "src": src, "dst": dst}
        if proto in ("tcp", "udp"):
            if spec.dport is None:
                raise ValueError(f"a {proto} probe needs a dport")
            sport = next(self._ports) if spec.sport is None else spec.sport
            wire.update(sport=sport, dport=spec.dport)
            key = ("l4", family, 6 if proto == "tcp" else 17, src, dst, sport, spec.dport)
        else:
            echo = 8 if proto == "icmp" else 128
            token = os.urandom(8).hex()
            wire.update(
                type=echo if spec.icmp_type is None else spec.icmp_type,
                code=spec.icmp_code,
                ident=next(self._icmp_ids),
                tok=token,
            )
            key = ("icmp", token)
        return key, wire, spec.src, spec.dst

    def _helper(self, role: str, kind: str, source: str, arg: object) -> _Helper:
        argv = ["ip", "netns", "exec", self.namespaces[role]]
        argv += [sys.executable, "-I", "-c", source, json.dumps(arg)]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return _Helper(role, kind, proc)

    @staticmethod
    def _pump(selector: selectors.BaseSelector, timeout: float) -> None:
        """Read what the helpers printed within timeout into their `lines`."""
        for key, _ in selector.select(timeout):
            helper = key.data
            chunk = os.read(key.fd, 65536)
            if not chunk:
                helper.eof = True
                selector.unregister(key.fd)
                continue
            helper.buffer += chunk
            *complete, helper.buffer = helper.buffer.split(b"\n")
            helper.lines += [line.decode() for line in complete]

    @staticmethod
    def _helper_failed(helper: _Helper) -> LabError:
        helper.proc.wait(timeout=2)
        err = helper.proc.stderr.read().decode(errors="replace").strip()
        return LabError(f"probe {helper.kind} in {helper.role} failed: {err or 'no output'}")

    def _wait_line(
        self, helpers: list[_Helper], selector, word: str, on_line, deadline: float
    ) -> None:
        """Pump until every helper printed `word`; other lines go to on_line."""
        waiting = {id(h) for h in helpers}
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"probe helpers did not print {word} in time")
            self._pump(selector, remaining)
            for helper in helpers:
                while helper.lines:
                    line = helper.lines.pop(0)
                    if line == word:
                        waiting.discard(id(helper))
                    else:
                        on_line(helper, line)
                if id(helper) in waiting and helper.eof:
                    raise self._helper_failed(helper)

    def probe_many(self, probes: Iterable[Probe | Mapping], timeout: float = 1.0) -> list[bool]:
        """Send many probes at once and tell for each whether it arrived.

        One sniffer per destination host and one sender per source host, whatever the number
        of probes; probes are told apart by their ports (tcp, udp) or a token in the payload
        (icmp). Probes that arrive are reported as soon as they are seen; the call waits the
        full timeout only if some probe does not arrive. Identical tcp/udp probes with the
        same explicit ports share one packet.
        """
        plans = [self._plan(spec) for spec in probes]
        if not plans:
            return []
        wires: dict[tuple, tuple[str, dict]] = {}
        watch: dict[str, dict[str, set[str]]] = {}
        for key, wire, src_role, dst_role in plans:
            wires.setdefault(key, (src_role, wire))
            addrs = watch.setdefault(dst_role, {"src": set(), "dst": set()})
            addrs["src"].add(wire["src"])
            addrs["dst"].add(wire["dst"])
        by_src: dict[str, list[dict]] = {}
        for src_role, wire in wires.values():
            by_src.setdefault(src_role, []).append(wire)

        seen: set[tuple] = set()

        def record(helper: _Helper, line: str) -> None:
            if helper.kind != "sniffer":
                return
            got = json.loads(line)
            if "tok" in got:
                seen.add(("icmp", got["tok"]))
            else:
                seen.add(("l4", got["f"], got["p"], got["s"], got["d"], got["sp"], got["dp"]))

        helpers: list[_Helper] = []
        selector = selectors.DefaultSelector()
        try:
            sniffers = []
            for role, addrs in watch.items():
                arg = {"src": sorted(addrs["src"]), "dst": sorted(addrs["dst"])}
                sniffers.append(self._helper(role, "sniffer", _SNIFFER, arg))
            helpers += sniffers
            for helper in sniffers:
                selector.register(helper.proc.stdout, selectors.EVENT_READ, helper)
            ready_by = time.monotonic() + _HELPER_READY_TIMEOUT
            self._wait_line(sniffers, selector, "READY", record, ready_by)
            senders = [self._helper(role, "sender", _SENDER, w) for role, w in by_src.items()]
            helpers += senders
            for helper in senders:
                selector.register(helper.proc.stdout, selectors.EVENT_READ, helper)
            sent_by = time.monotonic() + _HELPER_READY_TIMEOUT
            self._wait_line(senders, selector, "SENT", record, sent_by)
            deadline = time.monotonic() + timeout
            while True:
                # Lines read while waiting for SENT count too, so drain before pumping.
                for helper in helpers:
                    while helper.lines:
                        record(helper, helper.lines.pop(0))
                if wires.keys() <= seen:
                    break
                for helper in sniffers:
                    if helper.eof:
                        raise self._helper_failed(helper)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._pump(selector, remaining)
        finally:
            selector.close()
            for helper in helpers:
                # stdin EOF ends both scripts; kill only what does not stop by itself.
                with contextlib.suppress(OSError):
                    helper.proc.stdin.close()
            for helper in helpers:
                try:
                    helper.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    helper.proc.kill()
                    helper.proc.wait()
                helper.proc.stdout.close()
                helper.proc.stderr.close()
        return [key in seen for key, _, _, _ in plans]


def _close_all() -> None:
    # Labs that a crashed test or an interrupted session left open. A forked child that exits
    # through atexit must not close its parent's labs.
    for lab in list(_LIVE):
        if lab._owner != os.getpid():
            continue
        try:
            lab.close()
        except Exception:
            log.exception("closing %s at exit failed", lab.name)


atexit.register(_close_all)
