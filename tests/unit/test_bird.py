"""FlowRules to BIRD 2 text (fs_fetch.bird); BIRD's acceptance is checked in the lab tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowseg.errors import UnsupportedRule
from flowseg.iptables import parse_policy, split_families
from flowseg.model import Family, Interval, normalize
from fs_fetch import bird

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}


def policies(case: str):
    text = (FIX / "iptables" / case / "iptables-save.txt").read_text()
    return [parse_policy(t, "FORWARD") for t in split_families(text)]


@pytest.mark.parametrize("case", ["slides", "rich"])
def test_render_matches_golden_file(case):
    text = bird.render(policies(case), TABLES, f"fixture {case}")
    golden = FIX / "bird" / case / "expected-flowspec.conf"
    assert text == golden.read_text()


def test_slides_routes_carry_the_slides_communities():
    text = bird.render(policies("slides"), TABLES, "slides")
    assert (
        "route flow4 { dst 1.0.0.1/32; src 2.0.0.1/32; } "
        "{ bgp_ext_community.add((generic, 0x80090000, 0x1)); };"
    ) in text
    assert (
        "route flow4 { dst 0.0.0.0/0; src 0.0.0.0/0; } "
        "{ bgp_ext_community.add((generic, 0x80060000, 0x0)); };"
    ) in text


def test_same_policy_same_bytes():
    assert bird.render(policies("rich"), TABLES, "x") == bird.render(policies("rich"), TABLES, "x")


@pytest.mark.parametrize(
    "ports, text",
    [
        ([(80, 80)], "80"),
        ([(80, 80), (8000, 8080)], "80, 8000..8080"),
        ([(0, 21), (23, 65535)], "<= 21 || >= 23"),
        ([(0, 1023), (2000, 2001), (60000, 65535)], "<= 1023 || 2000..2001 || >= 60000"),
    ],
)
def test_numeric_text_uses_only_the_grammar_frr_reads_back(ports, text):
    ivs = normalize([Interval(a, b) for a, b in ports], 65535)
    assert bird.numeric_text(ivs, 65535) == text


def test_long_list_splits_into_routes_with_at_most_five_pairs():
    ivs = normalize([Interval(p, p) for p in range(1, 14, 2)] + [Interval(100, 200)], 65535)
    pieces = bird.split_for_receiver(ivs, 65535, 5)
    assert [sum(pairs for _, pairs in bird.numeric_terms(p, 65535)) for p in pieces] == [5, 4]
    assert tuple(iv for p in pieces for iv in p) == ivs


def test_rule_numbers_past_63_are_refused_with_marking():
    (p,) = policies("slides")
    many = p.__class__(
        p.family,
        p.chain,
        p.default,
        tuple(
            p.rules[0].__class__(
                n,
                Family.V4,
                p.rules[0].verdict,
                p.rules[0].src,
                p.rules[0].dst,
                protocol=6,
                dport=(Interval(n, n),),
            )
            for n in range(1, 65)
        ),
    )
    with pytest.raises(UnsupportedRule, match="rule 64"):
        bird.render([many], TABLES, "x")


def test_duplicate_match_keeps_the_first_rule_only(caplog):
    (p,) = policies("slides")
    twice = p.__class__(
        p.family,
        p.chain,
        p.default,
        (
            p.rules[0],
            p.rules[0].__class__(2, Family.V4, p.rules[0].verdict, p.rules[0].src, p.rules[0].dst),
        ),
    )
    routes = bird.plan(twice)
    assert [r.number for r in routes] == [1, 0]
    assert "same match as rule 1" in caplog.text


def test_user_templates_get_typed_values_and_a_safe_string_filter(tmp_path):
    for src in (bird.templates_dir()).glob("*.j2"):
        (tmp_path / src.name).write_text(src.read_text())
    route = (tmp_path / "route.j2").read_text().replace(
        "{%- endmacro %}", "{% if rt.comment %} # note {{ rt.comment|bird_string }}{% endif %}"
        "{%- endmacro %}")
    (tmp_path / "route.j2").write_text(route)
    text = (FIX / "iptables" / "components" / "iptables-save.txt").read_text()
    pols = [parse_policy(t, "FORWARD") for t in split_families(text)]
    out = bird.render(pols, TABLES, "x", tmp_path)
    assert "# note \"quote ' and backslash / stay inside the comment\"" in out
    (tmp_path / "route.j2").write_text(route.replace("rt.comment|", "rt.no_such_field|"))
    with pytest.raises(bird.TemplateFailed, match="no_such_field"):
        bird.render(pols, TABLES, "x", tmp_path)
