"""The iptables grammar: iptables-save text captured from iptables 1.8.9 (tests/fixtures/iptables)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from flowseg.errors import UnsupportedRule
from flowseg.iptables import (
    ChainState,
    parse_policy,
    read_state,
    render_chain,
    render_restore,
    split_families,
)
from flowseg.model import Family, Interval, Verdict

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "iptables"


def policy(case: str, family: Family = Family.V4):
    tables = {t.family: t for t in split_families((FIX / case / "iptables-save.txt").read_text())}
    return parse_policy(tables[family], "FORWARD")


def test_slides_policy_reads_as_one_accept_and_drop_policy():
    p = policy("slides")
    assert p.default is Verdict.DROP
    assert len(p.rules) == 1
    rule = p.rules[0]
    assert (rule.number, rule.verdict) == (1, Verdict.ACCEPT)
    assert rule.src == ipaddress.ip_network("2.0.0.1/32")
    assert rule.dst == ipaddress.ip_network("1.0.0.1/32")
    assert rule.protocol is None and not rule.dport


def test_rich_policy_keeps_order_ports_and_comments():
    p = policy("rich")
    assert [r.verdict.value for r in p.rules] == [
        "DROP",
        "ACCEPT",
        "ACCEPT",
        "ACCEPT",
        "DROP",
        "ACCEPT",
        "ACCEPT",
        "ACCEPT",
        "ACCEPT",
        "DROP",
    ]
    assert p.rules[0].comment == "no direct access to the admin port"
    assert p.rules[1].dport == (Interval(8000, 8999),)
    assert p.rules[2].dport == (Interval(22, 22), Interval(80, 80), Interval(443, 443))
    assert p.rules[7].sport == (Interval(40000, 40100),)
    assert p.rules[9].protocol == 47  # iptables-save printed "gre"


def test_both_families_in_one_input():
    p6 = policy("rich", Family.V6)
    assert p6.family is Family.V6
    assert [r.protocol for r in p6.rules] == [6, 17, 58]
    assert p6.rules[0].dst == ipaddress.ip_network("2001:db8:2::10/128")


@pytest.mark.parametrize(
    "case, option",
    [
        ("unsupported-1", "(-i)"),
        ("unsupported-2", "(-j LOG)"),
        ("unsupported-3", "(! -s)"),
        ("unsupported-6", "(-m mark)"),
        ("unsupported-7", "(-j RETURN)"),
    ],
)
def test_unsupported_rule_names_rule_and_option(case, option):
    with pytest.raises(UnsupportedRule) as exc:
        policy(case)
    message = str(exc.value)
    assert message.startswith(f"FORWARD rule 1 {option}")
    assert "\n" not in message


def test_rendered_chain_reads_back_to_the_same_rules():
    rules = list(policy("rich").rules)
    lines = render_chain(rules, "FLOWSPEC")
    # The chain as iptables-save would show it reads back as the rules we rendered.
    state = read_state(
        "*filter\n:FORWARD DROP [0:0]\n:FLOWSPEC - [0:0]\n-A FORWARD -j FLOWSPEC\n"
        + "".join(f"{line}\n" for line in lines)
        + "COMMIT\n",
        Family.V4,
        "FLOWSPEC",
        "FORWARD",
    )
    assert render_restore(lines, state, "FLOWSPEC", "FORWARD") is None


def test_restore_replaces_chain_and_fixes_the_jump():
    lines = render_chain(list(policy("slides").rules), "FLOWSPEC")
    text = render_restore(lines, ChainState(True, (), (2, 5)), "FLOWSPEC", "FORWARD")
    assert text.splitlines() == [
        "*filter",
        ":FLOWSPEC - [0:0]",
        *lines,
        "-D FORWARD -j FLOWSPEC",
        "-D FORWARD -j FLOWSPEC",
        "-I FORWARD 1 -j FLOWSPEC",
        "COMMIT",
    ]


def test_long_multiport_list_splits_at_fifteen_slots():
    rules = list(policy("rich").rules)
    wide = rules[2].with_ports((), tuple(Interval(p, p) for p in range(100, 140, 2)))
    lines = render_chain([wide], "FLOWSPEC")
    assert len(lines) == 2
    assert lines[0].count(",") == 14
