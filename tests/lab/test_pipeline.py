"""End to end on real BIRD 2 and real FRR: controller chain -> BIRD -> BGP -> FRR -> FLOWSPEC.

Each test builds its own lab (flowseg.lab): BIRD in the controller namespace, FRR bgpd (-Z) in
the switch namespace, two hosts behind the switch. fs-fetch runs in the controller namespace
against its own iptables; fs-inject runs in the switch namespace. Packets are real.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowseg.scenario import RICH_PROBES, fetch, inject, load_policy

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def bird_routes(lab, table: str = "flowtab4") -> list[str]:
    out = lab.birdc("show", "route", "table", table, "all").stdout
    return [ln for ln in out.splitlines() if ln.startswith(("flow4", "flow6"))]


def last_reconfiguration(lab) -> str:
    out = lab.birdc("show", "status").stdout
    return re.search(r"Last reconfiguration on (.*)", out).group(1)


def chain(lab, name: str = "FLOWSPEC", v6: bool = False) -> list[str]:
    out = lab.run("sw", "ip6tables" if v6 else "iptables", "-S", name).stdout
    return [ln for ln in out.splitlines() if ln.startswith("-A")]


def strip_comments(lines: list[str]) -> list[str]:
    return [re.sub(r' -m comment --comment "[^"]*"', "", ln) for ln in lines]


def test_slides_case_end_to_end(lab):
    load_policy(lab, "slides.sh")
    fetch(lab)

    routes = bird_routes(lab)
    assert len(routes) == 2
    out = lab.birdc("show", "route", "table", "flowtab4", "all").stdout
    default = out.split("flow4 { dst 0.0.0.0/0; src 0.0.0.0/0; }")[1].split("flow4 {")[0]
    assert "(generic, 0x80060000, 0x0)" in default
    rule = out.split("flow4 { dst 1.0.0.1/32; src 2.0.0.1/32; }")[1]
    assert "(generic, 0x80090000, 0x1)" in rule

    entries = lab.wait_frr_routes(4, 2)
    ecoms = sorted(obj["ecomlist"] for e in entries for obj in e if "ecomlist" in obj)
    # The slides' marking and rate, plus generation 1 and the route count (issue 5).
    assert ecoms == ["65533:2 65534:1 FS:rate 0.000000", "65534:1 FS:marking 1"]

    inject(lab)
    forward = lab.run("sw", "iptables", "-S", "FORWARD").stdout.splitlines()
    assert forward.count("-A FORWARD -j FLOWSPEC") == 1
    assert forward[1] == "-A FORWARD -j FLOWSPEC"
    assert strip_comments(chain(lab)) == [
        "-A FLOWSPEC -s 2.0.0.1/32 -d 1.0.0.1/32 -j ACCEPT",
        "-A FLOWSPEC -j DROP",
    ]


def test_second_runs_change_nothing(lab):
    load_policy(lab, "rich.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 12)
    inject(lab)
    mtime = lab.bird_conf.stat().st_mtime_ns
    reconf = last_reconfiguration(lab)

    # Counters grow with traffic; an unchanged poll must not reset them.
    assert lab.probe("tcp", dport=22)
    before = lab.run("sw", "iptables-save", "-c", "-t", "filter").stdout
    assert re.search(r"\[[1-9]\d*:\d+\] -A FLOWSPEC", before)

    again = fetch(lab)
    assert "unchanged" in again.stderr
    assert lab.bird_conf.stat().st_mtime_ns == mtime
    assert last_reconfiguration(lab) == reconf

    again = inject(lab)
    assert "unchanged" in again.stderr
    after = lab.run("sw", "iptables-save", "-c", "-t", "filter").stdout
    strip = lambda t: [ln for ln in t.splitlines() if not ln.startswith("#")]  # noqa: E731
    assert strip(after) == strip(before)


def test_rich_policy_keeps_order_and_meaning_for_real_packets(lab):
    load_policy(lab, "rich.sh")
    load_policy(lab, "rich6.sh", v6=True)
    fetch(lab)
    lab.wait_frr_routes(4, 12)
    lab.wait_frr_routes(6, 4)
    session = lab.frr_session()

    # Before fs-inject the switch forwards everything.
    assert lab.probe("tcp", dport=8080)

    inject(lab)
    specs = [p for p, _, _ in RICH_PROBES]
    got = lab.probe_many(specs)
    assert [(why, g) for (_, _, why), g in zip(RICH_PROBES, got)] == [
        (why, want) for _, want, why in RICH_PROBES
    ]

    # FRR never reset the session on the way (the 7-port rule was split for it).
    now = lab.frr_session()
    assert (now.established, now.dropped) == (session.established, session.dropped)


def test_unsupported_rule_changes_nothing(lab):
    load_policy(lab, "slides.sh")
    fetch(lab)
    before = lab.bird_conf.read_bytes()
    lab.iptables("ctl", "-A", "FORWARD", "-j", "LOG")
    res = fetch(lab, check=False)
    assert res.returncode == 3
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("fs-fetch: ")]
    assert errors == [
        "fs-fetch: FORWARD rule 2 (-j LOG): flowspec carries only ACCEPT and DROP; use one of "
        "them. Nothing changed."
    ]
    assert lab.bird_conf.read_bytes() == before
    assert len(bird_routes(lab)) == 2


def test_bird_refusal_restores_the_previous_file(lab, tmp_path):
    load_policy(lab, "slides.sh")
    fetch(lab)
    before = lab.bird_conf.read_bytes()
    # A template that renders a route BIRD refuses (dscp 99 is out of range).
    templates = tmp_path / "templates"
    templates.mkdir()
    for src in (ROOT / "templates").glob("*.j2"):
        (templates / src.name).write_text(src.read_text().replace("route {{ rt.word }} {",
                                                                  "route {{ rt.word }} { dscp 99;"))
    lab.iptables("ctl", "-A", "FORWARD", "-d", "198.51.100.10", "-j", "ACCEPT")
    res = fetch(lab, "--templates", str(templates), check=False)
    assert res.returncode == 5
    assert "dscp value 99 out of range" in res.stderr
    assert lab.bird_conf.read_bytes() == before
    assert len(bird_routes(lab)) == 2


def test_fs_inject_keeps_the_chain_when_frr_is_unreadable(lab, tmp_path):
    load_policy(lab, "slides.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    inject(lab)
    before = lab.iptables_save()
    bad = tmp_path / "truncated.json"
    bad.write_text(lab.vtysh("show bgp ipv4 flowspec detail json").stdout[:-20])
    res = inject(lab, "--from-file", str(bad), check=False)
    assert res.returncode == 3
    assert "FLOWSPEC kept as it was" in res.stderr
    res = inject(lab, "--pathspace", "no-such-pathspace", check=False)
    assert res.returncode == 4
    strip = lambda t: [ln for ln in t.splitlines() if not ln.startswith("#")]  # noqa: E731
    assert strip(lab.iptables_save()) == strip(before)


def test_sample_controller_policy_file_end_to_end(lab):
    # examples/controller-policy.rules is iptables-save text of both families, as an operator
    # keeps it (e.g. /etc/iptables/rules.v4 and rules.v6); split and restored as such.
    text = (ROOT / "examples" / "controller-policy.rules").read_text()
    v4, v6 = text.split("# Generated by ip6tables-save")
    lab.run("ctl", "iptables-restore", input=v4)
    lab.run("ctl", "ip6tables-restore", input="# Generated by ip6tables-save" + v6)
    fetch(lab)
    lab.wait_frr_routes(4, 12)
    lab.wait_frr_routes(6, 4)
    inject(lab)
    got = lab.probe_many([p for p, _, _ in RICH_PROBES])
    assert got == [want for _, want, _ in RICH_PROBES]
