"""vtysh detail JSON to FlowRules (fs_inject.frr), on output captured from FRR 8.4.4."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from flowseg.errors import BadInput, BadRoute
from flowseg.iptables import parse_policy, split_families
from flowseg.model import Family, Interval, Verdict
from fs_inject import frr

FIX = Path(__file__).resolve().parents[1] / "fixtures"
DOCS = FIX / "frr" / "lab-2026-12-03-docs"


def rules_of(text: str, family: Family):
    return [entry.rule for entry in frr.rules_from_vtysh(text, family)]


def vtysh(case: str, family: int = 4) -> str:
    return (FIX / "frr" / case / f"vtysh-flowspec-v{family}.json").read_text()


def test_slides_routes_come_back_in_order_with_policy_last():
    rules = rules_of(vtysh("slides"), Family.V4)
    assert [(r.number, r.verdict) for r in rules] == [(1, Verdict.ACCEPT), (0, Verdict.DROP)]
    assert rules[0].src == ipaddress.ip_network("2.0.0.1/32")
    assert rules[0].dst == ipaddress.ip_network("1.0.0.1/32")
    assert rules[1].is_catch_all


@pytest.mark.parametrize("family", [Family.V4, Family.V6])
def test_rich_routes_mean_what_the_controller_chain_meant(family):
    text = (FIX / "iptables" / "rich" / "iptables-save.txt").read_text()
    table = next(t for t in split_families(text) if t.family is family)
    controller = parse_policy(table, "FORWARD")
    got = rules_of(vtysh("rich", family.value), family)
    # Merge the routes a long port list was split into, then compare rule by rule.
    merged: dict[int, list] = {}
    for rule in got:
        merged.setdefault(rule.number, []).append(rule)
    assert sorted(merged) == [0] + [r.number for r in controller.rules]
    for want in controller.rules:
        pieces = merged[want.number]
        assert {p.verdict for p in pieces} == {want.verdict}
        assert {(p.src, p.dst, p.protocol, p.sport) for p in pieces} == {
            (want.src, want.dst, want.protocol, want.sport)
        }
        assert tuple(sorted(iv for p in pieces for iv in p.dport)) == want.dport
    assert merged[0][0].verdict is Verdict.DROP


def test_empty_output_is_an_empty_table():
    assert frr.rules_from_vtysh("", Family.V4) == []
    assert frr.rules_from_vtysh("\n", Family.V4) == []


def test_v6_slides_policy_accept_has_no_community():
    (rule,) = rules_of(vtysh("slides", 6), Family.V6)
    assert rule.is_policy and rule.verdict is Verdict.ACCEPT


@pytest.mark.parametrize("cut", [2, 10, 40, 100])
def test_truncated_output_is_refused(cut):
    text = vtysh("rich")
    with pytest.raises(BadInput):
        frr.rules_from_vtysh(text[:-cut], Family.V4)


def test_warning_object_is_an_error_not_an_empty_table():
    with pytest.raises(BadInput, match="View/Vrf is unknown"):
        frr.decode_stream('{\n  "warning":"View/Vrf is unknown"\n}\n')


def test_docs_captures_every_entry_decodes():
    for name in ("v4-components", "v6-components", "v4-extcommunities"):
        routes = frr.read_routes((DOCS / f"{name}.detail.json").read_text())
        assert routes and all(isinstance(r.match, dict) for r in routes)


@pytest.mark.parametrize(
    "text, intervals",
    [
        ("= 80 , >= 8000 , <= 8080 ", [(80, 80), (8000, 8080)]),
        (">= 1 , <= 2 , >= 10 , <= 20 ", [(1, 2), (10, 20)]),
        ("< 64 , > 9000 ", [(0, 63), (9001, 65535)]),
        ("= 65535 ", [(65535, 65535)]),
        ("<= 21 , >= 23 ", [(0, 21), (23, 65535)]),
    ],
)
def test_numeric_strings_from_the_captures(text, intervals):
    got = frr.parse_numeric(text, 65535, "test")
    assert got == tuple(Interval(a, b) for a, b in intervals)


def test_numeric_false_operator_is_refused():
    # Captured: BIRD `dport false 0` shows as " 0 ".
    with pytest.raises(BadRoute, match="false"):
        frr.parse_numeric(" 0 ", 65535, "test")


def test_unknown_components_and_actions_are_refused_not_ignored():
    for name in ("v4-components", "v4-extcommunities"):
        text = (DOCS / f"{name}.detail.json").read_text()
        for entry in frr.decode_stream(text):
            (route,) = frr.split_paths(entry)
            try:
                rules = frr.route_to_rules(route, Family.V4)
            except BadRoute as exc:
                assert str(exc).startswith("route '")
                continue
            # What is accepted must not have lost a component on the way.
            assert set(route.match) <= frr.KNOWN_KEYS
            assert rules
