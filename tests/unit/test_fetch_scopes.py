"""fs-fetch's scopes (issue 5, conclusion C): route targets on scoped rules, and one BIRD
export filter per switch, checked against the lab capture tests/fixtures/frr/fetch-stamps/scoped
(three switches in three scopes, examples/scopes.conf) and against `bird -p`.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowseg.errors import BadInput, UnsupportedRule
from flowseg.iptables import parse_policy, parse_rule, split_families
from flowseg.lab import BIRD_INCLUDE_LINE
from flowseg.model import Family, FlowRule, Verdict
from fs_fetch import bird, scopes
from fs_fetch.cli import main as fetch
from fs_inject import frr

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
SCOPED = FIX / "frr" / "fetch-stamps" / "scoped"
SCOPES_CONF = ROOT / "examples" / "scopes.conf"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}
RACK = {"switch1": "65000:101", "switch2": "65000:102", "switch3": "65000:103"}
# What each switch must enforce: the controller's rule numbers of its share, in order.
SHARE = {
    "switch1": ([1, 4, 6, 7, 0], [1, 0]),
    "switch2": ([2, 4, 5, 6, 0], [2, 0]),
    "switch3": ([3, 4, 5, 6, 8, 0], [0]),
}

SWITCH1_FILTER = """\
# switch1: neighbor 203.0.113.2, scopes rack1 (65000:101)
filter flowseg_export_switch1
{
	# Routes of other switches' scopes are never sent here, unless they carry one of its own.
	if bgp_ext_community ~ [(rt, 65000, 102), (rt, 65000, 103)] && !(bgp_ext_community ~ [(rt, 65000, 101)]) then reject;
	# The catch-all carries the number of routes this switch is sent, per family.
	if bgp_ext_community ~ [(rt, 65533, *)] then {
		bgp_ext_community.delete([(rt, 65533, *)]);
		if net.type = NET_FLOW4 then bgp_ext_community.add((rt, 65533, 5));
		if net.type = NET_FLOW6 then bgp_ext_community.add((rt, 65533, 2));
	}
	accept;
}
"""


def example() -> scopes.Scoping:
    return scopes.read_scopes(SCOPES_CONF)


def render(text: str, scoping: scopes.Scoping, generation: bool = True, old=None) -> str:
    pols = [parse_policy(t) for t in split_families(text)]
    encoding = bird.Encoding("auto", generation, scoping)
    plans = [bird.plan(p, encoding=encoding) for p in pols]
    out, _ = bird.render_stamped(pols, TABLES, "x", None, bird.RECEIVERS["frr"], plans,
                                 encoding, old)
    return out


def without_source(text: str) -> str:
    return re.sub(r"^# Source: .*\n", "", text, flags=re.MULTILINE)


def test_the_example_scopes_file():
    s = example()
    assert {n: str(t) for n, t in s.targets.items()} == {
        "rack1": "65000:101", "rack2": "65000:102", "rack3": "65000:103"}
    assert [(str(n), names) for n, names in s.prefixes] == [
        ("198.51.100.0/26", ("rack1",)), ("198.51.100.64/26", ("rack2",)),
        ("198.51.100.128/26", ("rack3",)), ("2001:db8:2::/64", ("rack1",))]
    assert [(w.name, str(w.address), w.scopes) for w in s.switches] == [
        ("switch1", "203.0.113.2", ("rack1",)), ("switch2", "203.0.113.6", ("rack2",)),
        ("switch3", "203.0.113.10", ("rack3",))]


@pytest.mark.parametrize("args, expected", [
    ("-d 198.51.100.10/32 -p tcp -m tcp --dport 22 -j ACCEPT", ["65000:101"]),
    ("-d 198.51.100.0/24 -p tcp -m tcp --dport 22 -j ACCEPT", []),
    ('-d 198.51.100.10/32 -m comment --comment "scope=rack2,rack3" -j ACCEPT',
     ["65000:102", "65000:103"]),
    ('-d 198.51.100.10/32 -m comment --comment "web; scope=all" -j ACCEPT', []),
    ('-d 192.0.2.0/24 -m comment --comment "scope=64512:7 for the lab" -j ACCEPT',
     ["64512:7"]),
    ('-d 198.51.100.150/32 -m comment --comment "no tag here" -j ACCEPT', ["65000:103"]),
    ('-d 198.51.100.200/32 -m comment --comment "no tag here" -j ACCEPT', []),
])
def test_where_a_rules_scopes_come_from(args, expected):
    rule = parse_rule(args, 3, Family.V4)
    assert [str(t) for t in example().scopes_of(rule)] == expected


def test_the_file_is_the_one_the_lab_loaded():
    text = render((SCOPED / "iptables-save.txt").read_text(), example(),
                  old=b"# Generation: 1\n")
    assert without_source(text) == without_source((SCOPED / "flowspec.conf").read_text())


def test_the_filter_of_a_scoped_switch():
    text = (SCOPED / "flowspec.conf").read_text()
    assert SWITCH1_FILTER in text
    # The filters come before the protocols that name them.
    assert text.index("filter flowseg_export_switch3") < text.index("protocol static")


@pytest.mark.parametrize("switch", sorted(SHARE))
def test_each_switch_got_and_installs_exactly_its_share(switch):
    for family, wanted in zip((Family.V4, Family.V6), SHARE[switch]):
        text = (SCOPED / f"{switch}.vtysh-flowspec-v{family.value}.json").read_text()
        routes = frr.read_family(text, family)
        sel = frr.select(routes, frozenset({RACK[switch]}))
        assert (sel.waiting, sel.generation, sel.out_of_scope) == (None, 2, 0)
        assert [e.rule.number for e in sel.entries] == wanted
        counts = {r.count for r in routes} - {None}
        assert counts == {len(wanted)}


def test_fs_inject_scope_is_a_second_line_of_defense():
    # switch3's routes, read by a switch that claims rack1 only: the rack3 routes stay out.
    text = (SCOPED / "switch3.vtysh-flowspec-v4.json").read_text()
    sel = frr.select(frr.read_family(text, Family.V4), frozenset({"65000:101"}))
    assert [e.rule.number for e in sel.entries] == [4, 6, 0]
    assert sel.out_of_scope == 3


def test_no_switches_means_no_filters_and_the_whole_count():
    s = scopes.Scoping(example().targets, example().prefixes)
    text = render((SCOPED / "iptables-save.txt").read_text(), s)
    assert "filter " not in text
    assert "(rt, 65533, 9)" in text and "(rt, 65000, 101)" in text


def test_a_switch_without_scopes_gets_the_unscoped_rules_only():
    s = example().with_switches([scopes.parse_switch("leaf9=192.0.2.99")])
    text = render((SCOPED / "iptables-save.txt").read_text(), s)
    block = text.split("filter flowseg_export_leaf9")[1].split("}\n}")[0]
    assert "~ [(rt, 65000, 101), (rt, 65000, 102), (rt, 65000, 103)] then reject;" in block
    # IPv4: rules 4 and 6 (scope=all) and the policy; IPv6: the policy alone.
    assert "NET_FLOW4 then bgp_ext_community.add((rt, 65533, 3));" in block
    assert "NET_FLOW6 then bgp_ext_community.add((rt, 65533, 1));" in block


def test_without_generations_the_filters_only_filter():
    text = render((SCOPED / "iptables-save.txt").read_text(), example(), generation=False)
    assert "65533" not in text and "65534" not in text
    assert "then reject;" in text


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed (bird2)")
@pytest.mark.parametrize("chain", ["empty", "scoped"])
def test_bird_multi_conf_takes_the_generated_filters(chain, tmp_path):
    if chain == "empty":
        saved = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
    else:
        saved = (SCOPED / "iptables-save.txt").read_text()
    include = tmp_path / "flowspec.conf"
    include.write_text(render(saved, example()))
    main = tmp_path / "bird.conf"
    text = (ROOT / "examples" / "bird-multi.conf").read_text()
    assert text.count(BIRD_INCLUDE_LINE) == 1
    main.write_text(text.replace(BIRD_INCLUDE_LINE, f'include "{include}";'))
    res = subprocess.run(["bird", "-p", "-c", str(main)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    for name in ("switch1", "switch2", "switch3"):
        assert f"export filter flowseg_export_{name};" in text


def test_a_duplicate_match_across_scopes_is_refused():
    text = ("*filter\n:FORWARD DROP [0:0]\n"
            '-A FORWARD -d 192.0.2.0/24 -m comment --comment "scope=rack1" -j DROP\n'
            "-A FORWARD -d 192.0.2.0/24 -j ACCEPT\nCOMMIT\n")
    with pytest.raises(UnsupportedRule, match=r"FORWARD rule 2: same match as rule 1, which "
                                              r"only switches of rack1 \(65000:101\) get"):
        render(text, example())
    # The same scope, or a narrower one, is left out as before: the first rule always wins.
    same = text.replace("-d 192.0.2.0/24 -j ACCEPT",
                        '-d 192.0.2.0/24 -m comment --comment "scope=rack1" -j ACCEPT')
    assert render(same, example()).count("dst 192.0.2.0/24;") == 1


def test_a_scoped_rule_that_matches_everything_is_refused():
    text = ("*filter\n:FORWARD DROP [0:0]\n"
            '-A FORWARD -m comment --comment "scope=rack2" -j ACCEPT\nCOMMIT\n')
    with pytest.raises(UnsupportedRule, match="FORWARD the policy: same match as rule 1"):
        render(text, example())


@pytest.mark.parametrize("comment, message", [
    ("scope=rack9", "scope 'rack9' is unknown"),
    ("scope=", "empty scope"),
    ("scope=rack1,,rack2", "empty scope"),
    ("scope=all,rack1", "scope=all goes with no other scope"),
    ('scope=rack1"x', "is not a scope name"),
    ("scope=65535:1", "AS 65535 is flowseg's own"),
])
def test_bad_tags_are_refused_naming_the_rule(comment, message):
    rule = FlowRule(4, Family.V4, Verdict.ACCEPT, ipaddress.ip_network("0.0.0.0/0"),
                    ipaddress.ip_network("192.0.2.1/32"), comment=comment)
    with pytest.raises((UnsupportedRule, BadInput), match=re.escape(message)) as err:
        example().scopes_of(rule)
    assert str(err.value).startswith("FORWARD rule 4")


@pytest.mark.parametrize("text, message", [
    ("rack1 = 65000:1\n", "comes before any [section]"),
    ("[scope]\n", "is no section"),
    ("[scopes]\nrack1 65000:1\n", "is not `key = value`"),
    ("[scopes]\nrack1 = 65534:1\n", "AS 65534 is flowseg's own"),
    ("[scopes]\nrack1 = 70000:70000\n", "takes values up to 65535"),
    ("[scopes]\nrack1 = 192.0.2.1:70000\n", "takes values up to 65535"),
    ("[scopes]\nrack1 = 65000:1\nrack2 = 65000:1\n", "already scope rack1's route target"),
    ("[scopes]\nrack1 = 65000:1\nrack1 = 65000:2\n", "defined twice"),
    ("[scopes]\nall = 65000:1\n", "'all' means every switch"),
    ("[scopes]\n1rack = 65000:1\n", "scope name '1rack'"),
    ("[prefixes]\n192.0.2.1/24 = rack1\n", "host bits must be 0"),
    ("[prefixes]\n0.0.0.0/0 = rack1\n", "would scope every rule"),
    ("[scopes]\nrack1 = 65000:1\n[prefixes]\n192.0.2.0/24 = rack2\n", "'rack2' is not in [scopes]"),
    ("[switches]\nsw-1 = 192.0.2.1\n", "switch name 'sw-1'"),
    ("[switches]\nsw1 = 192.0.2.300\n", "is not an IP address"),
    ("[switches]\nsw1 = 192.0.2.1, rack1\n", "scope 'rack1' is unknown"),
    ("[switches]\nsw1 = 192.0.2.1\nsw2 = 192.0.2.1\n", "also switch sw1's"),
    ('[switches]\nsw1 = 192.0.2.1, "x"\n', "scope name '\"x\"'"),
])
def test_bad_scopes_files_are_refused_naming_the_line(text, message):
    with pytest.raises(BadInput, match=re.escape(message)) as err:
        scopes.parse_scopes(text, "scopes.conf")
    assert str(err.value).startswith("scopes.conf line ")


def test_route_targets_in_birds_words():
    assert scopes.parse_target("65000:4294967295", "x").bird == "(rt, 65000, 4294967295)"
    assert scopes.parse_target("4200000000:7", "x").bird == "(rt, 4200000000, 7)"
    assert scopes.parse_target("192.0.2.1:7", "x").bird == "(rt, 192.0.2.1, 7)"
    assert str(scopes.parse_target("192.0.2.1:7", "x")) == "192.0.2.1:7"


def run(*args: str):
    return CliRunner().invoke(fetch, list(args), catch_exceptions=False)


def test_cli_scopes_and_switches(tmp_path):
    src = str(SCOPED / "iptables-save.txt")
    res = run("--from-file", src, "--dry-run", "--bird-conf", str(tmp_path / "f"),
              "--scopes", str(SCOPES_CONF), "--switch", "switch3=203.0.113.10,rack1,rack3")
    assert res.exit_code == 0, res.stderr
    block = res.stdout.split("filter flowseg_export_switch3")[1].split("accept;")[0]
    mine = "[(rt, 65000, 101), (rt, 65000, 103)]"
    assert f"~ [(rt, 65000, 102)] && !(bgp_ext_community ~ {mine})" in block
    # Without a file, tags and switches name their scopes by route target.
    chain = tmp_path / "chain.txt"
    chain.write_text("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -d 192.0.2.1/32 -m comment "
                     '--comment "scope=65000:101" -j ACCEPT\nCOMMIT\n')
    res = run("--from-file", str(chain), "--dry-run", "--bird-conf", str(tmp_path / "f"),
              "--switch", "leaf1=2001:db8::1,65000:101", "--switch", "leaf2=192.0.2.2")
    assert res.exit_code == 0, res.stderr
    assert "# leaf1: neighbor 2001:db8::1, scopes 65000:101" in res.stdout
    assert "# leaf2: neighbor 192.0.2.2, scopes none" in res.stdout
    assert "(rt, 65000, 101)); bgp_ext_community.add((rt, 65534, 1));" in res.stdout


@pytest.mark.parametrize("option, message", [
    ("leaf-1=192.0.2.1", "switch name 'leaf-1'"),
    ("leaf1", "write NAME=ADDRESS"),
    ("leaf1=nowhere", "'nowhere' is not an IP address"),
    ("leaf1=192.0.2.1,rack9", "scope 'rack9' is unknown"),
    ('leaf1=192.0.2.1,a"b', "scope name 'a\"b'"),
])
def test_cli_bad_switch_is_a_usage_error(option, message, tmp_path):
    res = run("--from-file", str(SCOPED / "iptables-save.txt"), "--dry-run",
              "--bird-conf", str(tmp_path / "f"), "--scopes", str(SCOPES_CONF),
              "--switch", option)
    assert res.exit_code == 2
    assert message in res.stderr


def test_cli_bad_scopes_file_is_one_line_and_exit_3(tmp_path):
    bad = tmp_path / "scopes.conf"
    bad.write_text("[scopes]\nrack1 = 65535:1\n")
    res = run("--from-file", str(SCOPED / "iptables-save.txt"), "--dry-run",
              "--bird-conf", str(tmp_path / "f"), "--scopes", str(bad))
    assert res.exit_code == 3
    assert res.stderr.splitlines() == [
        f"fs-fetch: {bad} line 2: AS 65535 is flowseg's own (rule number, generation, count); "
        "give the scope another AS number. Nothing changed."]


def test_addresses_are_normalised_before_bird_sees_them():
    switch = scopes.parse_switch("leaf1=2001:DB8:0::1")
    assert str(switch.address) == "2001:db8::1"
    assert switch.address == ipaddress.ip_address("2001:db8::1")


@pytest.mark.parametrize("case", ["empty", "rich"])
def test_golden_files_for_bird_multi_conf(case):
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", FIX / "bird/scopes/render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.rendered(case) == (FIX / f"bird/scopes/{case}-flowspec.conf").read_text()
