"""fs-fetch --numbering: which communities carry rule numbers (issue 5, conclusion A).

traffic-marking carries 1-63 (the slides); the route target 65535:N any number
(flowseg/encoding.py). The policies here are built from iptables-save text of the shape
iptables 1.8.9 prints; tests/unit/test_fetch_numbering_generations.py covers the generation
stamps and tests/lab/test_scale_scopes.py the same routes through real BIRD, FRR and fs-inject.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowseg.errors import UnsupportedRule
from flowseg.iptables import parse_policy, split_families
from flowseg.model import Family
from fs_fetch import bird
from fs_fetch.cli import main as fetch

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}
MARK = re.compile(r"\(generic, 0x80090000, 0x([0-9a-f]+)\)")
SEQ = re.compile(r"\(rt, 65535, (\d+)\)")


def chain(count: int, extra: dict[int, str] | None = None) -> str:
    """iptables-save text of `count` ACCEPT rules, each its own NLRI; extra replaces rules."""
    lines = ["*filter", ":FORWARD DROP [0:0]"]
    for n in range(1, count + 1):
        rule = (extra or {}).get(n) or (
            f"-s 10.{n // 250}.{n % 250}.1/32 -d 198.51.100.10/32 -p tcp -m tcp --dport "
            f"{1000 + n} -j ACCEPT")
        lines.append(f"-A FORWARD {rule}")
    return "\n".join(lines + ["COMMIT", ""])


def plan(text: str, numbering: str) -> tuple[list, bird.Stamps]:
    policies = [parse_policy(t) for t in split_families(text)]
    encoding = bird.Encoding(numbering)
    plans = [bird.plan(p, encoding=encoding) for p in policies]
    return plans[0], bird.stamp(policies, plans, encoding)


def numbers(stamps: bird.Stamps, route) -> tuple[list[int], list[int]]:
    """(markings, sequence numbers) a route carries."""
    ecs = " ".join(stamps.communities(route))
    return [int(m, 16) for m in MARK.findall(ecs)], [int(n) for n in SEQ.findall(ecs)]


@pytest.mark.parametrize("numbering, carried", [
    ("auto", ([1], [])), ("marking", ([1], [])), ("rt", ([], [1])), ("both", ([1], [1])),
])
def test_each_numbering_on_the_slides_rule(numbering, carried):
    routes, stamps = plan((FIX / "iptables/slides/iptables-save.txt").read_text(), numbering)
    assert numbers(stamps, routes[0]) == carried
    # The catch-all has no number in any numbering; it is the policy, last.
    assert numbers(stamps, routes[-1]) == ([], [])


def test_auto_keeps_marking_at_63_rules_and_switches_every_rule_to_rt_at_64():
    routes, stamps = plan(chain(63), "auto")
    assert [numbers(stamps, r) for r in routes[:-1]] == [([n], []) for n in range(1, 64)]
    routes, stamps = plan(chain(64), "auto")
    # Not a mix: fs-inject refuses routes with and without sequence in one family.
    assert [numbers(stamps, r) for r in routes[:-1]] == [([], [n]) for n in range(1, 65)]


def test_both_marks_only_what_fits_and_numbers_everything():
    routes, stamps = plan(chain(70), "both")
    got = [numbers(stamps, r) for r in routes[:-1]]
    assert got[62] == ([63], [63])
    assert got[63] == ([], [64])
    assert all(seq == [n] for n, (_, seq) in enumerate(got, 1))


def test_marking_refuses_rule_64_and_rt_has_no_63_rule_limit():
    with pytest.raises(UnsupportedRule, match=r"FORWARD rule 64: traffic-marking carries rule "
                                              r"numbers 1-63 only; use --numbering auto or rt"):
        plan(chain(64), "marking")
    routes, stamps = plan(chain(5000), "rt")
    assert len(routes) == 5001
    assert numbers(stamps, routes[4998]) == ([], [4999])


def test_a_split_rule_keeps_one_number_on_all_its_routes():
    ports = ",".join(str(p) for p in range(2001, 2029, 2))  # 14 ports: three routes for FRR
    wide = f"-d 198.51.100.10/32 -p tcp -m multiport --dports {ports} -j DROP"
    routes, stamps = plan(chain(300, {256: wide}), "auto")
    split = [r for r in routes if r.number == 256]
    assert len(split) == 3
    for route in split:
        assert numbers(stamps, route) == ([], [256])
        assert "(generic, 0x80060000, 0x0)" in stamps.communities(route)


def test_numbering_is_chosen_per_family():
    v6 = ("*filter\n:FORWARD DROP [0:0]\n"
          "-A FORWARD -d 2001:db8:2::/64 -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n")
    policies = [parse_policy(t) for t in split_families(chain(64) + v6)]
    encoding = bird.Encoding("auto")
    plans = [bird.plan(p, encoding=encoding) for p in policies]
    stamps = bird.stamp(policies, plans, encoding)
    assert stamps.carriers[Family.V4] == bird.Carriers(marking=False, sequence=True)
    assert stamps.carriers[Family.V6] == bird.Carriers(marking=True, sequence=False)


def run(*args: str):
    return CliRunner().invoke(fetch, list(args), catch_exceptions=False)


def test_cli_default_is_auto(tmp_path):
    src = tmp_path / "big.txt"
    src.write_text(chain(64))
    res = run("--from-file", str(src), "--dry-run", "--bird-conf", str(tmp_path / "f"))
    assert res.exit_code == 0, res.stderr
    assert "# Rule numbers in route target 65535:N" in res.stdout
    assert "0x80090000" not in res.stdout
    assert "bgp_ext_community.add((rt, 65535, 64));" in res.stdout
    res = run("--from-file", str(src), "--dry-run", "--bird-conf", str(tmp_path / "f"),
              "--numbering", "marking")
    assert res.exit_code == 3
    assert res.stderr.splitlines()[0].startswith("fs-fetch: FORWARD rule 64: traffic-marking")


def test_cli_json_names_the_numbering(tmp_path):
    import json

    src = tmp_path / "big.txt"
    src.write_text(chain(70))
    res = run("--from-file", str(src), "--dry-run", "--json", "--numbering", "both",
              "--bird-conf", str(tmp_path / "f"))
    (v4,) = json.loads(res.stdout)["families"]
    assert v4["numbering"] == "traffic-marking and route target 65535:N"
    assert v4["routes"][69]["communities"][:1] == ["(rt, 65535, 70)"]
