"""Actions other than the slides' two, sent by real BIRD through real FRR: a positive
traffic-rate, traffic-action, a redirect and a route target (RFC 8955 section 7)."""

from __future__ import annotations

import re

import pytest

from flowseg.scenario import inject

pytestmark = pytest.mark.lab

BLOCK = """protocol static flowseg4 {{
	flow4 {{ table flowtab4; }};
{routes}
}}
"""


def announce(lab, *routes: str) -> None:
    lab.load_flowspec(BLOCK.format(routes="\n".join(f"\troute flow4 {r};" for r in routes)))
    lab.wait_frr_routes(4, len(routes))


def chain(lab) -> list[str]:
    return [ln for ln in lab.run("sw", "iptables", "-S", "FLOWSPEC", check=False).stdout
            .splitlines() if ln.startswith("-A")]


def test_positive_rate_becomes_a_hashlimit_drop_in_front_of_the_accept(lab):
    # 0x447a0000 is 1000.0 as an IEEE float: 1000 bytes per second.
    announce(
        lab,
        "{ dst 198.51.100.10/32; proto 17; dport 53; } "
        "{ bgp_ext_community.add((generic, 0x80060000, 0x447a0000)); "
        "bgp_ext_community.add((generic, 0x80090000, 1)); "
        "bgp_ext_community.add((rt, 65000, 101)); }",
        "{ dst 0.0.0.0/0; src 0.0.0.0/0; } { bgp_ext_community.add((generic, 0x80060000, 0)); }",
    )
    inject(lab, "--family", "ipv4")
    rules = chain(lab)
    assert len(rules) == 3
    assert "--hashlimit-above" in rules[0] and rules[0].endswith("-j DROP")
    assert "rate 1000B/s" in rules[0]
    assert rules[1].endswith("-j ACCEPT") and rules[2].endswith("-j DROP")
    # One datagram is well under the rate: it passes; another port falls to the policy.
    assert lab.probe_many([dict(proto="udp", dport=53), dict(proto="udp", dport=54)]) == [
        True, False]
    assert "unchanged" in inject(lab, "--family", "ipv4").stderr


def test_redirect_is_refused_and_the_chain_kept(lab):
    announce(lab, "{ dst 0.0.0.0/0; src 0.0.0.0/0; } { bgp_ext_community.add((generic, 0x80060000, 0)); }")
    inject(lab, "--family", "ipv4")
    before = chain(lab)
    announce(
        lab,
        "{ dst 0.0.0.0/0; src 0.0.0.0/0; } { bgp_ext_community.add((generic, 0x80060000, 0)); }",
        "{ dst 198.51.100.10/32; } { bgp_ext_community.add((generic, 0x8008fde8, 100)); "
        "bgp_ext_community.add((generic, 0x80090000, 1)); }",
    )
    res = inject(lab, "--family", "ipv4", check=False)
    assert res.returncode == 3
    assert "redirect action 'FS:redirect VRF RT:65000:100'" in res.stderr
    assert res.stderr.rstrip().endswith("FLOWSPEC kept as it was.")
    assert chain(lab) == before


def burst(lab, n: int = 40) -> int:
    """How many of n datagrams sent at once to 198.51.100.10 port 53 arrive."""
    return sum(lab.probe_many([dict(proto="udp", dport=53, sport=20000 + i) for i in range(n)]))


def rate_route(rate_hex: str) -> str:
    return ("{ dst 198.51.100.10/32; proto 17; dport 53; } "
            f"{{ bgp_ext_community.add((generic, 0x80060000, {rate_hex})); "
            "bgp_ext_community.add((generic, 0x80090000, 1)); }")


POLICY = "{ dst 0.0.0.0/0; src 0.0.0.0/0; } { bgp_ext_community.add((generic, 0x80060000, 0)); }"


def test_a_changed_rate_is_the_rate_the_kernel_enforces(lab):
    # The kernel keeps one hashlimit table per name, with the rate it was created with: the
    # new rate must come with a new name, or the old limit stays in force under new text.
    announce(lab, rate_route("0x447a0000"), POLICY)  # 1000.0 B/s
    inject(lab, "--family", "ipv4")
    slow = burst(lab)
    announce(lab, rate_route("0x4b3ebc20"), POLICY)  # 12,500,000.0 B/s (100 Mbit/s)
    assert "applied" in inject(lab, "--family", "ipv4").stderr
    assert "rate 12500000B/s" in chain(lab)[0]
    fast = burst(lab)
    assert slow < 40 and fast == 40, (slow, fast)
    # One table per rate route, one slot each (a default table is 128 KiB of kernel memory).
    tables = lab.run("sw", "ls", "/proc/net/ipt_hashlimit").stdout.split()
    assert len(tables) == 1, tables
    assert "--hashlimit-htable-size 1 --hashlimit-htable-max 1" in chain(lab)[0]


def test_a_rate_route_with_several_protocols_has_one_bucket(lab):
    # One route, two protocols: two iptables rules, one rate for the route's traffic.
    announce(lab,
             "{ dst 198.51.100.10/32; proto 6, 17; dport 53; } "
             "{ bgp_ext_community.add((generic, 0x80060000, 0x447a0000)); "
             "bgp_ext_community.add((generic, 0x80090000, 1)); }", POLICY)
    inject(lab, "--family", "ipv4")
    limits = [ln for ln in chain(lab) if "--hashlimit-above" in ln]
    assert len(limits) == 2 and "-p tcp" in limits[0] and "-p udp" in limits[1], limits
    names = {re.search(r"--hashlimit-name (\S+)", ln).group(1) for ln in limits}
    assert len(names) == 1, limits
    assert lab.run("sw", "ls", "/proc/net/ipt_hashlimit").stdout.split() == list(names)
