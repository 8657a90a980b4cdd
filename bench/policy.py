"""Realistic controller policies of any size, as iptables-save text, for the benchmark.

A generated FORWARD chain looks like one an operator writes for a few hundred services: mostly
host-to-service ACCEPTs (one tcp or udp port, a port range, a multiport list), some ICMP, some
any-protocol rules between prefixes, source-port ranges, and DROPs that carve a host or a port
out of a broader ACCEPT further down. Policy DROP. Prefixes come only from the documentation
ranges the lab uses (RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24): prefix lengths
/24 to /32, hosts as /32. The same size and seed always give the same text.

The text is in the exact form iptables-save prints (`-p tcp -m tcp --dport 22`, `/32` on
hosts), so it can be loaded into the controller's namespace with iptables-restore and read back
unchanged by fs-fetch.
"""

from __future__ import annotations

import ipaddress
import random

NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
SERVICES_TCP = (22, 25, 80, 110, 143, 389, 443, 636, 993, 1433, 3306, 5432, 6379, 8080, 8443,
                9090, 9200, 11211, 27017)
SERVICES_UDP = (53, 67, 69, 123, 161, 162, 500, 514, 1812, 4500, 5353)
RANGES = ((1024, 2047), (3000, 3999), (5000, 5999), (8000, 8999), (10000, 19999),
          (30000, 32767), (49152, 65535))
COMMENTS = ("web tier", "db access", "monitoring", "backup window", "legacy app",
            "admin only", "dns")


def _prefix(rng: random.Random, host_share: float = 0.5) -> str:
    net = ipaddress.ip_network(rng.choice(NETS))
    length = 32 if rng.random() < host_share else rng.randint(24, 31)
    size = 2 ** (32 - length)
    base = int(net.network_address) + rng.randrange(0, 256 // size) * size
    return f"{ipaddress.ip_address(base)}/{length}"


def _port_list(rng: random.Random) -> list[str]:
    # 2-7 items, now and then a range among them: more than 5 operator pairs makes fs-fetch
    # split the rule into two routes for FRR, more than 15 slots two iptables rules.
    items = sorted(rng.sample(range(1, 65535), rng.randint(2, 7)))
    out = [str(p) for p in items]
    if rng.random() < 0.2:
        lo, hi = rng.choice(RANGES)
        out.append(f"{lo}:{hi}")
    return out


def _rule(rng: random.Random) -> tuple[str, str]:
    """(arguments after `-A FORWARD`, verdict) of one ACCEPT-shaped rule."""
    src = _prefix(rng, 0.3) if rng.random() < 0.8 else None
    dst = _prefix(rng, 0.7)
    head = (f"-s {src} " if src else "") + f"-d {dst} "
    shape = rng.random()
    if shape < 0.35:
        port = rng.choice(SERVICES_TCP) if rng.random() < 0.6 else rng.randint(1024, 65535)
        body = f"-p tcp -m tcp --dport {port}"
    elif shape < 0.50:
        lo, hi = rng.choice(RANGES)
        body = f"-p tcp -m tcp --dport {lo}:{hi}"
    elif shape < 0.60:
        body = f"-p tcp -m multiport --dports {','.join(_port_list(rng))}"
    elif shape < 0.75:
        port = rng.choice(SERVICES_UDP) if rng.random() < 0.6 else rng.randint(1024, 65535)
        body = f"-p udp -m udp --dport {port}"
    elif shape < 0.80:
        lo, hi = rng.choice(RANGES)
        body = f"-p udp -m udp --dport {lo}:{hi}"
    elif shape < 0.85:
        body = "-p udp -m multiport --dports " + ",".join(_port_list(rng))
    elif shape < 0.90:
        lo, hi = rng.choice(RANGES)
        body = f"-p tcp -m tcp --sport {lo}:{hi} --dport {rng.choice(SERVICES_TCP)}"
    elif shape < 0.95:
        body = "-p icmp"
    else:
        body = ""
    return (head + body).strip(), "ACCEPT"


def _narrower(rng: random.Random, args: str) -> str:
    """A DROP that matches part of what `args` accepts: one host, or one port of its range."""
    words = args.split()
    if "-d" in words:
        i = words.index("-d") + 1
        net = ipaddress.ip_network(words[i])
        if net.prefixlen < 32:
            host = int(net.network_address) + rng.randrange(net.num_addresses)
            words[i] = f"{ipaddress.ip_address(host)}/32"
            return " ".join(words)
    for opt in ("--dport", "--dports"):
        if opt in words:
            i = words.index(opt) + 1
            first = words[i].split(",")[0]
            lo, _, hi = first.partition(":")
            words[i] = str(rng.randint(int(lo), int(hi or lo)))
            if opt == "--dports":
                # One port is a plain tcp/udp match, as iptables-save prints it.
                proto = words[words.index("-p") + 1]
                j = words.index("multiport")
                words[j] = proto
                words[i - 1] = "--dport"
            return " ".join(words)
    return args


def generate(rules: int, seed: int = 6) -> list[tuple[str, str]]:
    """`rules` distinct (arguments, verdict) pairs in chain order."""
    rng = random.Random(f"{seed}-{rules}")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < rules:
        args, verdict = _rule(rng)
        # A DROP in front of about one ACCEPT in six (when there is room for both).
        pair = rng.random() < 0.17 and len(out) + 2 <= rules
        candidates = []
        if pair:
            drop = _narrower(rng, args)
            if drop != args:
                candidates.append((drop, "DROP"))
        candidates.append((args, verdict))
        if any(a in seen for a, _ in candidates):
            continue
        for a, v in candidates:
            if rng.random() < 0.1 and v == "ACCEPT":
                comment = rng.choice(COMMENTS)
                a = f'{a} -m comment --comment "{comment}"'
            seen.add(a.split(" -m comment")[0])
            out.append((a, v))
    return out


def iptables_save(rules: list[tuple[str, str]], chain: str = "FORWARD") -> str:
    """The filter table as iptables-save prints it (and iptables-restore reads it)."""
    lines = [
        "# Generated by iptables-save v1.8.9 (nf_tables)",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        f":{chain} DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
    ]
    for args, verdict in rules:
        lines.append(f"-A {chain} {args} -j {verdict}".replace("  ", " "))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
