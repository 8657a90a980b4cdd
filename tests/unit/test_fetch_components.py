"""Every match fs-fetch carries, on iptables-save captured from iptables 1.8.9, to BIRD text and
to what FRR 8.4.4 showed for that text (tests/fixtures/bird/components, captured in the lab)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from flowseg.errors import UnsupportedRule
from flowseg.iptables import parse_policy, parse_rule, split_families
from flowseg.model import (
    FRAG_FF,
    FRAG_ISF,
    TCP_SYN,
    Bitmask,
    Family,
    Interval,
    Verdict,
)
from fs_fetch import bird

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}


def iv(*pairs) -> tuple[Interval, ...]:
    return tuple(Interval(p, p) if isinstance(p, int) else Interval(*p) for p in pairs)


def policies(case: str):
    text = (FIX / "iptables" / case / "iptables-save.txt").read_text()
    return {t.family: parse_policy(t, "FORWARD") for t in split_families(text)}


def rules(family: Family = Family.V4):
    return {r.number: r for r in policies("components")[family].rules}


# (rule number, the fields it must have) for examples/policies/components.sh.
V4_EXPECTED = [
    (2, dict(protocol=6, dport=iv(7000), tcp_flags=Bitmask(0x12, 0x12), verdict=Verdict.DROP)),
    (3, dict(protocol=6, dport=iv(7001), tcp_flags=TCP_SYN)),
    (4, dict(dport=iv(7002), tcp_flags=Bitmask(0x3F, 0))),
    (5, dict(sport=iv((0, 1023)), dport=iv(7003))),
    (6, dict(dport=iv((7100, 65535)))),
    (7, dict(dport=iv((0, 21), (23, 65535)), comment="all tcp but ssh")),
    (8, dict(protocol=17, port=iv(53, 123, (5000, 5010)), sport=(), dport=())),
    (9, dict(dport=iv(0, (1024, 65535)), length=iv((1400, 65535)))),
    (10, dict(protocol=1, icmp_type=iv(8), length=iv((1001, 65535)))),
    (11, dict(icmp_type=iv(8), icmp_code=())),
    (12, dict(icmp_type=iv(3), icmp_code=iv(4))),
    (13, dict(icmp_type=iv((1, 255)))),
    (14, dict(dscp=iv(46), protocol=None)),
    (15, dict(dscp=iv(34))),
    (16, dict(dscp=iv((1, 63)))),
    (17, dict(fragment=Bitmask(FRAG_ISF, FRAG_ISF))),
    (18, dict(protocol=47, fragment=Bitmask(FRAG_ISF, 0), verdict=Verdict.ACCEPT)),
    (19, dict(protocol=17, protocol_negated=True,
              comment='quote " and backslash \\ stay inside the comment')),
    (20, dict(protocol=17, dport=iv(9), verdict=Verdict.DROP)),
    (21, dict(protocol=132, dport=iv(9899))),
]
V6_EXPECTED = [
    (1, dict(protocol=6, dport=iv(7001), tcp_flags=TCP_SYN)),
    (2, dict(dport=iv((0, 21), (23, 65535)))),
    (3, dict(protocol=17, port=iv(53, 123), length=iv((0, 1280)))),
    (4, dict(protocol=58, icmp_type=iv(128))),
    (5, dict(icmp_type=iv(1), icmp_code=iv(4))),
    (6, dict(icmp_type=iv((0, 134), (136, 255)), verdict=Verdict.DROP)),
    (7, dict(dscp=iv((0, 9), (11, 63)))),
    (8, dict(fragment=Bitmask(FRAG_FF, FRAG_FF))),
    (9, dict(protocol=6, protocol_negated=True, comment="not tcp")),
    (10, dict(protocol=6, dport=iv(9), verdict=Verdict.DROP)),
]


@pytest.mark.parametrize(
    "family, number, want",
    [(Family.V4, n, w) for n, w in V4_EXPECTED] + [(Family.V6, n, w) for n, w in V6_EXPECTED],
    ids=[f"v4-rule{n}" for n, _ in V4_EXPECTED] + [f"v6-rule{n}" for n, _ in V6_EXPECTED],
)
def test_each_match_reads_as_its_component(family, number, want):
    rule = rules(family)[number]
    assert {k: getattr(rule, k) for k in want} == want


def test_stateful_rule_is_left_out_with_a_notice_and_numbers_keep_their_places(caplog):
    p = policies("components")[Family.V4]
    assert [r.number for r in p.rules] == list(range(2, 22))
    assert len(p.skipped) == 1 and p.skipped[0].startswith(
        "FORWARD rule 1 (-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT): not carried"
    )
    assert "fs-inject with --stateful" in caplog.text


def test_reject_is_carried_as_drop_with_a_notice(caplog):
    rule = rules()[20]
    assert rule.verdict is Verdict.DROP
    assert "FORWARD rule 20 (-j REJECT): carried as DROP" in caplog.text
    assert "drop silently" in caplog.text


def test_stateful_notice_warns_about_drop_rules_in_front():
    text = (
        "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -p tcp -m tcp --dport 23 -j DROP\n"
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n"
    )
    (p,) = [parse_policy(t) for t in split_families(text)]
    assert "rule 1 no longer apply to return traffic" in p.skipped[0]


def test_render_matches_golden_file():
    text = bird.render(list(policies("components").values()), TABLES, "fixture components")
    assert text == (FIX / "bird" / "components" / "expected-flowspec.conf").read_text()


def frr_routes(family: Family) -> dict[tuple, list[dict]]:
    """Captured FRR routes by (marking, dropped), each a list of match objects."""
    from fs_inject.frr import decode_stream

    text = (FIX / "bird" / "components" / f"vtysh-flowspec-v{family.value}.json").read_text()
    out: dict[tuple, list[dict]] = {}
    for entry in decode_stream(text):
        ecom = next((o["ecomlist"] for o in entry if "ecomlist" in o), "")
        marking = next((int(w) for w in ecom.split("FS:marking ")[1:2]), 0)
        out.setdefault((marking, "FS:rate 0.000000" in ecom), []).append(entry[0])
    return out


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
def test_frr_showed_exactly_what_fs_fetch_predicts(family):
    policy = policies("components")[family]
    predicted: dict[tuple, list[dict]] = {}
    for route in bird.plan(policy):
        key = (route.number, route.verdict is Verdict.DROP)
        predicted.setdefault(key, []).append(bird.frr_match(route))
    assert predicted == frr_routes(family)


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
def test_every_numeric_string_frr_showed_reads_back_exactly(family):
    """fs-inject's reader gives back the intervals fs-fetch meant, for every component."""
    from fs_inject.frr import parse_numeric

    keys = {"proto": ("protocol", 255), "port": ("port", 65535), "dstp": ("dport", 65535),
            "srcp": ("sport", 65535), "type": ("icmp_type", 255), "code": ("icmp_code", 255),
            "pktlen": ("length", 65535), "dscp": ("dscp", 63)}
    shown = frr_routes(family)
    for route in bird.plan(policy := policies("components")[family]):
        assert policy
        (match,) = shown[(route.number, route.verdict is Verdict.DROP)]
        for key, text in match.items():
            if key not in keys:
                continue
            name, top = keys[key]
            want = bird.protocol_values(route) if name == "protocol" else getattr(route, name)
            assert parse_numeric(text, top, key) == want, (route.number, key, text)


@pytest.mark.parametrize(
    "case, option",
    [
        ("refused-1", "(! --tcp-flags)"),
        ("refused-2", "(! --icmp-type 3/4)"),
        ("refused-3", "(--ctstate NEW)"),
        ("refused-4", "(--ctstate ESTABLISHED,RELATED)"),
        ("refused-5", "(--tcp-option)"),
        ("refused-6", "(-m ttl)"),
        ("refused-7", "(-j LOG)"),
        ("refused6-1", "(-m frag --fraglast)"),
        ("refused6-2", "(-m frag)"),
        ("refused6-3", "(-p ipv6-frag)"),
        ("refused6-4", "(--fragid)"),
    ],
)
def test_refused_rule_names_rule_and_option(case, option):
    text = (FIX / "iptables" / case / "iptables-save.txt").read_text()
    tables = split_families(text)
    table = tables[-1]
    with pytest.raises(UnsupportedRule) as exc:
        parse_policy(table)
    assert str(exc.value).startswith(f"FORWARD rule 1 {option}")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "args, family, fields",
    [
        ("-p 6 -m tcp --dport 22 -j ACCEPT", Family.V4, dict(protocol=6)),
        ("-p TCP --dport 22 -j ACCEPT", Family.V4, dict(protocol=6, dport=iv(22))),
        ("-p 0 -j ACCEPT", Family.V6, dict(protocol=None)),
        ("-p all -j DROP", Family.V4, dict(protocol=None)),
        ("-p icmp -m icmp --icmp-type port-unreachable -j ACCEPT", Family.V4,
         dict(icmp_type=iv(3), icmp_code=iv(3))),
        ("-p icmp -m icmp --icmp-type any -j ACCEPT", Family.V4, dict(icmp_type=())),
        ("-p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT", Family.V6,
         dict(icmp_type=iv(135))),
        ("-p tcp -m tcp --syn -j ACCEPT", Family.V4, dict(tcp_flags=TCP_SYN)),
        ("-p tcp -m tcp --tcp-flags ALL ALL -j DROP", Family.V4,
         dict(tcp_flags=Bitmask(0x3F, 0x3F))),
        ("-p tcp -m tcp --tcp-flags NONE NONE -j DROP", Family.V4, dict(tcp_flags=None)),
        ("-p tcp -m tcp --tcp-flags SYN SYN -m tcp --tcp-flags ACK NONE -j DROP", Family.V4,
         dict(tcp_flags=Bitmask(0x12, 0x02))),
        ("-m dscp --dscp-class EF -j ACCEPT", Family.V4, dict(dscp=iv(46))),
        ("-m dscp --dscp 10 -j ACCEPT", Family.V4, dict(dscp=iv(10))),
        ("-m length --length :64 -j DROP", Family.V4, dict(length=iv((0, 64)))),
        ("-p tcp -m multiport ! --ports 22,80 -j DROP", Family.V4,
         dict(port=(), sport=iv((0, 21), (23, 79), (81, 65535)),
              dport=iv((0, 21), (23, 79), (81, 65535)))),
        ("-p tcp -m tcp --dport 80 -m multiport --dports 80,443 -j DROP", Family.V4,
         dict(dport=iv(80))),
        ("-p tcp -m tcp --dport 1000: -m multiport --dports 80,2000:3000 -j DROP", Family.V4,
         dict(dport=iv((2000, 3000)))),
        ("-p udp --sport 53 -j ACCEPT", Family.V4, dict(sport=iv(53))),
        ("-p ospf -j ACCEPT", Family.V4, dict(protocol=89)),
        ("! -p icmp -j ACCEPT", Family.V4, dict(protocol=1, protocol_negated=True)),
        ("-m comment --comment one -m comment --comment two -j ACCEPT", Family.V4,
         dict(comment="one; two")),
    ],
)
def test_spellings_and_combinations(args, family, fields):
    rule = parse_rule(args, 1, family)
    assert {k: getattr(rule, k) for k in fields} == fields


@pytest.mark.parametrize(
    "args, family, option",
    [
        ("-p tcp -m tcp --dport 80 -m multiport --dports 22,443 -j DROP", Family.V4,
         "(--dports)"),
        ("! -p all -j DROP", Family.V4, "(! -p all)"),
        ("-p icmp -m icmp ! --icmp-type any -j DROP", Family.V4, "(! --icmp-type any)"),
        ("-p tcp -m tcp --tcp-flags SYN ACK -j DROP", Family.V4, "(--tcp-flags SYN ACK)"),
        ("-p tcp -m tcp --syn -m tcp --tcp-flags SYN NONE -j DROP", Family.V4,
         "(--tcp-flags)"),
        ("-f -j DROP", Family.V6, "(-f)"),
        ("-m dscp --dscp 64 -j DROP", Family.V4, "(--dscp 64)"),
        ("-m dscp --dscp-class AF5 -j DROP", Family.V4, "(--dscp-class AF5)"),
        ("-m length --length 70000 -j DROP", Family.V4, "(--length 70000)"),
        ("-p tcp -m tcp ! --dport 0:65535 -j DROP", Family.V4, "(! --dport)"),
        ("-p 43 -j DROP", Family.V6, "(-p 43)"),
        ("-p icmp -m icmp --icmp-type 8 -j ACCEPT", Family.V6, "(-m icmp)"),
        ("-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT", Family.V4, "(-m icmp6)"),
        ("! -p tcp -m tcp --dport 22 -j DROP", Family.V4, ": ports need protocol tcp"),
        ("-m multiport --dports 22 -j DROP", Family.V4, ""),
        ("-j DROP -m tcp", Family.V4, "(-m)"),
        ("-i eth0 -j ACCEPT", Family.V4, "(-i)"),
        ("-g other", Family.V4, "(-g)"),
        ("-j REJECT --reject-with tcp-reset --bogus", Family.V4, "(--bogus)"),
    ],
)
def test_what_cannot_be_said_is_refused(args, family, option):
    with pytest.raises(UnsupportedRule) as exc:
        parse_rule(args, 4, family)
    assert str(exc.value).startswith(f"FORWARD rule 4{'' if option[:1] == ':' else ' '}{option}"
                                     .rstrip())


def test_same_options_in_any_order_mean_the_same_rule():
    a = parse_rule("-p tcp -m tcp ! --dport 80 --tcp-flags SYN SYN -j ACCEPT", 1, Family.V4)
    b = parse_rule("-p tcp -m tcp --tcp-flags SYN SYN ! --dport 80 -j ACCEPT", 1, Family.V4)
    assert a.matches_key() == b.matches_key()
    assert a.dport == iv((0, 79), (81, 65535))


def test_every_field_is_part_of_the_nlri_key():
    base = parse_rule("-d 198.51.100.0/24 -p tcp -j DROP", 1, Family.V4)
    others = [
        "-d 198.51.100.0/24 -p tcp -m tcp --dport 1 -j DROP",
        "-d 198.51.100.0/24 -p tcp -m tcp --sport 1 -j DROP",
        "-d 198.51.100.0/24 -p tcp -m multiport --ports 1 -j DROP",
        "-d 198.51.100.0/24 -p tcp -m tcp --syn -j DROP",
        "-d 198.51.100.0/24 -p tcp -m length --length 1 -j DROP",
        "-d 198.51.100.0/24 -p tcp -m dscp --dscp 1 -j DROP",
        "-d 198.51.100.0/24 -p tcp -f -j DROP",
        "-d 198.51.100.0/24 ! -p tcp -j DROP",
    ]
    keys = {base.matches_key()} | {parse_rule(a, 1, Family.V4).matches_key() for a in others}
    assert len(keys) == len(others) + 1
    icmp = [parse_rule(f"-p icmp -m icmp --icmp-type {t} -j DROP", 1, Family.V4) for t in
            ("8", "8/0", "3")]
    assert len({r.matches_key() for r in icmp}) == 3


def table(lines: list[str], default: str = "DROP", family: Family = Family.V4):
    text = f"*filter\n:FORWARD {default} [0:0]\n" + "".join(
        f"-A FORWARD {ln}\n" for ln in lines) + "COMMIT\n"
    (t,) = split_families(text)
    t.family = family
    return t


def test_skip_unsupported_leaves_rules_out_with_a_warning_each(caplog):
    t = table([
        "-s 192.0.2.0/24 -d 198.51.100.0/24 -i eth0 -j ACCEPT",
        "-d 198.51.100.10/32 -j LOG",
        "-d 198.51.100.10/32 -p tcp -m tcp --dport 22 -j ACCEPT",
    ])
    p = parse_policy(t, skip_unsupported=True)
    assert [r.number for r in p.rules] == [3]
    assert len(p.skipped) == 2
    assert caplog.text.count("left out (--skip-unsupported)") == 2


def test_skip_unsupported_refuses_to_widen_a_later_accept():
    t = table([
        "-s 192.0.2.0/24 -m ttl --ttl-lt 5 -j DROP",
        "-d 198.51.100.10/32 -p tcp -m tcp --dport 22 -j ACCEPT",
    ])
    with pytest.raises(UnsupportedRule) as exc:
        parse_policy(t, skip_unsupported=True)
    message = str(exc.value)
    assert message.startswith("FORWARD rule 1: leaving it out would let rule 2 accept")
    assert "--force" in message
    p = parse_policy(t, skip_unsupported=True, force=True)
    assert [r.number for r in p.rules] == [2]


def test_skip_unsupported_allows_a_drop_that_shields_no_accept():
    t = table([
        "-s 192.0.2.0/24 -m ttl --ttl-lt 5 -j DROP",
        "-s 203.0.113.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
        "-s 192.0.2.0/24 -p udp -m udp --dport 53 -j DROP",
        "-s 192.0.2.0/24 -j LOG",
    ])
    p = parse_policy(t, skip_unsupported=True)
    assert [r.number for r in p.rules] == [2, 3]


def test_skip_unsupported_refuses_a_drop_in_front_of_an_accept_policy():
    t = table(["-s 192.0.2.0/24 -m ttl --ttl-lt 5 -j DROP"], default="ACCEPT")
    with pytest.raises(UnsupportedRule, match="ACCEPT policy"):
        parse_policy(t, skip_unsupported=True)


def test_skip_unsupported_treats_a_jump_to_a_user_chain_as_a_possible_drop():
    t = table(["-s 192.0.2.0/24 -j blocklist", "-p tcp -m tcp --dport 22 -j ACCEPT"])
    with pytest.raises(UnsupportedRule, match="rule 1: leaving it out"):
        parse_policy(t, skip_unsupported=True)


@pytest.mark.parametrize("field, top", [
    ("port", 65535), ("dport", 65535), ("sport", 65535), ("icmp_type", 255),
    ("icmp_code", 255), ("length", 65535), ("dscp", 63),
])
def test_long_lists_of_every_numeric_component_split_for_frr(field, top):
    protocol = 1 if field.startswith("icmp") else 6
    values = tuple(Interval(v, v) for v in range(1, 24, 2))  # 12 values
    rule = parse_rule(f"-p {protocol} -j ACCEPT", 3, Family.V4)
    from dataclasses import replace

    rule = replace(rule, **{field: values})
    routes = bird.routes_for(rule)
    assert [len(getattr(r, field)) for r in routes] == [5, 5, 2]
    assert {r.number for r in routes} == {3} and {r.verdict for r in routes} == {rule.verdict}
    assert tuple(v for r in routes for v in getattr(r, field)) == values
    assert bird.routes_for(rule, bird.RECEIVERS["rfc"]) == [rule]


def test_forty_ports_make_eight_routes_and_lists_multiply():
    ports = ",".join(str(p) for p in range(2000, 2080, 2))
    rule = parse_rule(f"-p tcp -m multiport --dports {ports} -j ACCEPT", 1, Family.V4)
    assert len(bird.routes_for(rule)) == 8
    both = parse_rule(f"-p tcp -m multiport --dports {ports} --sports {ports} -j ACCEPT", 1,
                      Family.V4)
    assert len(bird.routes_for(both)) == 64
    more = ",".join(str(p) for p in range(2000, 2090, 2))
    huge = parse_rule(f"-p tcp -m multiport --dports {more} --sports {more} -j ACCEPT", 1,
                      Family.V4)
    with pytest.raises(UnsupportedRule, match="FORWARD rule 1: its lists need 81 routes"):
        bird.routes_for(huge)


def test_lint_refuses_what_frr_would_reset_the_session_for():
    rule = parse_rule("-p tcp -j ACCEPT", 1, Family.V4)
    from dataclasses import replace

    wide = replace(rule, dport=iv(*range(1, 13, 2)))
    with pytest.raises(UnsupportedRule, match="dport needs 6 operator pairs, frr takes 5"):
        bird.lint(wide, bird.RECEIVERS["frr"], "FORWARD")
    bird.lint(wide, bird.RECEIVERS["rfc"], "FORWARD")


def test_ipv6_prefixes_never_carry_an_offset():
    routes = bird.plan(policies("components")[Family.V6])
    text = bird.render([policies("components")[Family.V6]], TABLES, "x")
    assert "offset" not in text
    assert all(bird.frr_match(r)["to"].endswith("/off 0") for r in routes)


def test_duplicate_nlri_keeps_the_first_rule_whatever_the_verdict(caplog):
    t = table([
        "-d 198.51.100.10/32 -p tcp -m tcp --dport 22 -j DROP",
        "-d 198.51.100.10/32 -p tcp -m tcp --dport 22 -j ACCEPT",
        "-d 198.51.100.10/32 -p tcp -m tcp ! --dport 22 -j ACCEPT",
        "-d 198.51.100.10/32 -p tcp -m tcp --dport :21 -m multiport --dports 0:21,23:65535 "
        "-j ACCEPT",
    ])
    routes = bird.plan(parse_policy(t))
    assert [(r.number, r.verdict) for r in routes] == [
        (1, Verdict.DROP), (3, Verdict.ACCEPT), (4, Verdict.ACCEPT), (0, Verdict.DROP)]
    assert "rule 2: same match as rule 1, which always wins; not announced" in caplog.text


def test_json_view_of_a_route():
    route = bird.plan(policies("components")[Family.V4])[6]
    view = bird.route_json(route, "FORWARD")
    assert view["rule"] == 8 and view["verdict"] == "ACCEPT" and view["family"] == "ipv4"
    assert view["components"]["port"] == "53, 123, 5000..5010"
    assert view["frr"]["port"] == "= 53 , = 123 , >= 5000 , <= 5010 "
    assert view["bird"].startswith("route flow4 { dst 198.51.100.10/32; src 0.0.0.0/0; ")
    json.dumps(view)


def test_comment_cannot_break_out_of_a_bird_string():
    assert bird.bird_string('a "b" \\ c\x07') == "\"a 'b' / c?\""


def test_negated_prefix_is_refused_with_its_option():
    with pytest.raises(UnsupportedRule, match=r"^FORWARD rule 2 \(! -d\)"):
        parse_rule("! -d 198.51.100.0/24 -j DROP", 2, Family.V4)
    assert parse_rule("-d 198.51.100.0/24 -j DROP", 2, Family.V4).dst == ipaddress.ip_network(
        "198.51.100.0/24")
