"""fs-fetch's generation stamps (issue 5, complete policies only) and what fs-inject makes of
them, on FRR output captured in the lab (tests/fixtures/frr/fetch-stamps, see its README).

Every route carries the generation (rt, 65534, G); the catch-all also the number of routes of
G in its family (rt, 65533, C). G lives in the file's header: the same policy gives the same
bytes (no write, no reload), a changed one G + 1.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowseg.iptables import parse_policy, split_families
from flowseg.model import Family, Verdict
from fs_fetch import bird
from fs_fetch.cli import main as fetch
from fs_inject import frr
from fs_inject.cli import main as inject

FIX = Path(__file__).resolve().parents[1] / "fixtures"
STAMPS = FIX / "frr" / "fetch-stamps"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}
AUTO = bird.Encoding("auto", generation=True)


def policies(text: str):
    return [parse_policy(t) for t in split_families(text)]


def render(text: str, encoding: bird.Encoding = AUTO, old: bytes | None = None,
           source: str = "x") -> tuple[str, bird.Stamps]:
    pols = policies(text)
    plans = [bird.plan(p, encoding=encoding) for p in pols]
    return bird.render_stamped(pols, TABLES, source, None, bird.RECEIVERS["frr"], plans,
                               encoding, old)


def without_source(text: str) -> str:
    return re.sub(r"^# Source: .*\n", "", text, flags=re.MULTILINE)


@pytest.mark.parametrize("case", ["slides", "rt70"])
def test_the_file_is_the_one_birds_routes_came_from(case):
    text, stamps = render((STAMPS / case / "iptables-save.txt").read_text())
    assert stamps.generation == 1
    assert without_source(text) == without_source((STAMPS / case / "flowspec.conf").read_text())


def ecomlists(case: str, family: int = 4) -> dict[str, str]:
    text = (STAMPS / case / f"switch1.vtysh-flowspec-v{family}.json").read_text()
    return {r.describe(): " ".join(r.ecomlist) for r in frr.read_routes(text)}


def test_slides_keep_marking_and_rate_and_gain_the_reserved_route_targets():
    # Done-when 4 of issue 5, as FRR printed it.
    assert ecomlists("slides") == {
        "to 1.0.0.1/32 from 2.0.0.1/32": "65534:1 FS:marking 1",
        "to 0.0.0.0/0 from 0.0.0.0/0": "65533:2 65534:1 FS:rate 0.000000",
    }


def test_no_generation_gives_exactly_the_slides_file():
    text, stamps = render((FIX / "iptables/slides/iptables-save.txt").read_text(),
                          bird.Encoding("auto", generation=False), source="fixture slides")
    assert stamps.generation is None
    assert text == (FIX / "bird/slides/expected-flowspec.conf").read_text()


def installed(case: str, family: Family, switch: str = "switch1",
              scopes: frozenset[str] = frozenset()) -> frr.Selection:
    text = (STAMPS / case / f"{switch}.vtysh-flowspec-v{family.value}.json").read_text()
    return frr.select(frr.read_family(text, family), scopes)


def test_fs_inject_installs_the_slides_generation_whole():
    sel = installed("slides", Family.V4)
    assert (sel.waiting, sel.generation) == (None, 1)
    assert [(e.rule.number, e.rule.verdict) for e in sel.entries] == [
        (1, Verdict.ACCEPT), (0, Verdict.DROP)]


def test_fs_inject_orders_70_rules_by_sequence_and_keeps_a_split_rule_together():
    sel = installed("rt70", Family.V4)
    assert (sel.waiting, sel.generation, sel.received) == (None, 1, 72)
    got = [e.rule.number for e in sel.entries]
    assert got == list(range(1, 67)) + [66] + list(range(67, 71)) + [0]
    assert sel.entries[63].rule.verdict is Verdict.DROP
    assert all("FS:marking" not in r for r in ecomlists("rt70").values())
    split = [d for d, r in ecomlists("rt70").items() if r.split()[-1] == "65535:66"]
    assert len(split) == 2 and all("dstp = 20" in d for d in split)


def test_fs_inject_cli_accepts_the_captured_routes():
    captured = STAMPS / "rt70" / "switch1.vtysh-flowspec-v4.json"
    res = CliRunner().invoke(inject, ["--from-file", str(captured), "--family", "ipv4",
                                      "--dry-run"])
    assert res.exit_code == 0, res.output
    rules = [ln for ln in res.stdout.splitlines() if ln.startswith("-A FLOWSPEC")]
    assert len(rules) == 72
    assert '--comment "flowseg 64 ' in rules[63] and rules[63].endswith("-j DROP")
    assert '"flowseg policy g1 ' in rules[-1]


def test_a_missing_route_makes_fs_inject_wait():
    text = (STAMPS / "rt70/switch1.vtysh-flowspec-v4.json").read_text()
    routes = frr.read_family(text, Family.V4)
    rules = [r for r in routes if r.count is None]
    sel = frr.select([r for r in routes if r is not rules[5]])
    assert sel.waiting and "71 of the 72 routes of generation 1" in sel.waiting


def test_counts_are_per_family_and_include_the_catch_all():
    v6 = ("*filter\n:FORWARD DROP [0:0]\n"
          "-A FORWARD -d 2001:db8:2::/64 -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n")
    text, stamps = render((FIX / "iptables/rich/iptables-save.txt").read_text().split("*filter")[0]
                          + "*filter" + (FIX / "iptables/rich/iptables-save.txt").read_text()
                          .split("*filter")[1] + v6)
    assert stamps.counts == {Family.V4: 12, Family.V6: 2}
    assert text.count("(rt, 65533, 12)") == 1 and text.count("(rt, 65533, 2)") == 1
    assert text.count("(rt, 65534, 1)") == 14


def test_a_rule_that_matches_everything_carries_the_count():
    text = ("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -d 198.51.100.10/32 -j DROP\n"
            "-A FORWARD -j ACCEPT\nCOMMIT\n")
    out, _ = render(text)
    # The policy's route has the same NLRI as rule 2, which always wins; rule 2 carries C.
    (last,) = [ln for ln in out.splitlines() if "dst 0.0.0.0/0; src 0.0.0.0/0;" in ln]
    assert "(generic, 0x80090000, 0x2)" in last and "(rt, 65533, 2)" in last


def test_generation_is_kept_for_the_same_policy_and_grows_with_a_change():
    slides = (FIX / "iptables/slides/iptables-save.txt").read_text()
    first, _ = render(slides)
    again, stamps = render(slides, old=first.encode())
    assert again == first and stamps.generation == 1
    changed = slides.replace("-j ACCEPT", "-j DROP")
    second, stamps = render(changed, old=first.encode())
    assert stamps.generation == 2 and "# Generation: 2" in second
    back, stamps = render(slides, old=second.encode())
    assert stamps.generation == 3 and back != first


def test_previous_generation_from_the_header_or_the_routes():
    assert bird.previous_generation(None) is None
    assert bird.previous_generation(b"") is None
    assert bird.previous_generation(b"# x\n# Generation: 41\n") == 41
    route = b"route flow4 { dst 0.0.0.0/0; } { bgp_ext_community.add((rt, 65534, 9)); };\n"
    assert bird.previous_generation(route) == 9
    assert bird.previous_generation(b"protocol static x { }\n") is None


def test_generation_wraps_after_the_largest_route_target_value():
    slides = (FIX / "iptables/slides/iptables-save.txt").read_text()
    old = b"# Generation: 4294967295\n"
    _, stamps = render(slides, old=old)
    assert stamps.generation == 1


def run(*args: str):
    return CliRunner().invoke(fetch, list(args), catch_exceptions=False)


def test_cli_writes_once_per_policy_and_counts_generations(tmp_path):
    conf = tmp_path / "flowspec.conf"
    src = tmp_path / "chain.txt"
    src.write_text((FIX / "iptables/slides/iptables-save.txt").read_text())
    args = ["--from-file", str(src), "--no-reload", "--bird-conf", str(conf)]
    assert run(*args).exit_code == 0
    assert "# Generation: 1" in conf.read_text()
    mtime = conf.stat().st_mtime_ns
    res = run("-v", *args)
    assert "unchanged" in res.stderr and conf.stat().st_mtime_ns == mtime
    src.write_text(src.read_text().replace("2.0.0.1", "2.0.0.2"))
    res = run("-v", *args)
    assert "policy generation 2" in res.stderr
    assert "(rt, 65534, 2)" in conf.read_text()
    res = run("--no-generation", *args)
    assert "65534" not in conf.read_text() and "Generation" not in conf.read_text()


def test_cli_json_has_the_generation(tmp_path):
    import json

    res = run("--from-file", str(FIX / "iptables/slides/iptables-save.txt"), "--dry-run",
              "--json", "--bird-conf", str(tmp_path / "f"))
    data = json.loads(res.stdout)
    assert data["generation"] == 1
    assert data["families"][0]["routes"][1]["communities"] == [
        "(generic, 0x80060000, 0x0)", "(rt, 65534, 1)", "(rt, 65533, 2)"]
