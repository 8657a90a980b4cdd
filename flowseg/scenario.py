"""The lab scenarios that the demo and the lab tests share: policies, commands, probes.

The policies are examples/policies/*.sh (iptables arguments, one invocation per line). The
expected verdicts below are read off those policies by hand, rule by rule, so that a probe
checks the whole chain of translations against what the controller's chain says.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "examples" / "policies"

# (probe, arrives) for examples/policies/rich.sh and rich6.sh, from h1 to h2 unless said.
RICH_PROBES: list[tuple[dict, bool, str]] = [
    (dict(proto="tcp", dport=8080), False, "rule 1 DROP in front of rule 2's range"),
    (dict(proto="tcp", dport=8081), True, "rule 2, tcp 8000:8999"),
    (dict(proto="tcp", dport=22), True, "rule 3, multiport 22,80,443"),
    (dict(proto="tcp", dport=443), True, "rule 3"),
    (dict(proto="tcp", dport=23), False, "policy DROP"),
    (dict(proto="udp", dport=53), True, "rule 4, udp 53"),
    (dict(proto="udp", dport=5005), False, "rule 5 DROP in front of rule 6"),
    (dict(proto="udp", dport=5500), True, "rule 6, udp 5000:6000"),
    (dict(proto="udp", dport=6001), False, "policy DROP"),
    (dict(proto="icmp"), True, "rule 7, icmp from h1"),
    (dict(proto="tcp", dport=9000, sport=40050), True, "rule 8, source ports 40000:40100"),
    (dict(proto="tcp", dport=9000, sport=39999), False, "outside rule 8's source ports"),
    (dict(proto="tcp", dport=1001), True, "rule 9, first of its two routes"),
    (dict(proto="tcp", dport=1013), True, "rule 9, second route (FRR's 5-pair limit)"),
    (dict(proto="tcp", dport=1002), False, "not in rule 9's list"),
    (dict(proto="tcp", src="h2", dst="h1", dport=22), False, "h2 to h1: policy DROP"),
    (dict(proto="tcp", dport=80, family=6), True, "IPv6 rule 1, tcp 80"),
    (dict(proto="tcp", dport=81, family=6), False, "IPv6 policy DROP"),
    (dict(proto="udp", dport=123, family=6), True, "IPv6 rule 2, udp 53,123"),
    (dict(proto="udp", dport=124, family=6), False, "IPv6 policy DROP"),
    (dict(proto="icmp6"), True, "IPv6 rule 3, ipv6-icmp"),
]


def describe(probe: dict) -> str:
    fam = probe.get("family", 6 if probe["proto"] == "icmp6" else 4)
    text = f"IPv{fam} {probe.get('src', 'h1')}->{probe.get('dst', 'h2')} {probe['proto']}"
    if probe.get("dport") is not None:
        text += f" dport {probe['dport']}"
    if probe.get("sport") is not None:
        text += f" sport {probe['sport']}"
    return text


def command(name: str) -> list[str]:
    """The installed console script next to this Python, else the module (source tree)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    module = {"fs-fetch": "fs_fetch.cli", "fs-inject": "fs_inject.cli"}[name]
    return [sys.executable, "-m", module]


def load_policy(lab, name: str, v6: bool = False) -> None:
    """Load examples/policies/<name> into the controller namespace's iptables."""
    for raw in (POLICIES / name).read_text().splitlines():
        if raw.strip() and not raw.startswith("#"):
            lab.iptables("ctl", *shlex.split(raw), v6=v6)


def reset_policy(lab) -> None:
    for v6 in (False, True):
        lab.iptables("ctl", "-F", "FORWARD", v6=v6)
        lab.iptables("ctl", "-P", "FORWARD", "ACCEPT", v6=v6)


def fetch(lab, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """fs-fetch in the controller namespace, against the lab's BIRD."""
    return lab.run(
        "ctl", *command("fs-fetch"), "-v", "--bird-conf", str(lab.bird_conf),
        "--bird-socket", str(lab.bird_socket), *extra, check=check,
    )


def inject(lab, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """fs-inject --once in the switch namespace, against the lab's FRR pathspace."""
    return lab.run(
        "sw", *command("fs-inject"), "-v", "--once", "--pathspace", lab.pathspace,
        "--lock-file", str(lab.tmpdir / "fs-inject.lock"), *extra, check=check,
    )


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", every: float = 0.2):
    """Poll predicate until it returns something true (returned), or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
