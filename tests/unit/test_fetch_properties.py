"""Property tests (hypothesis): random policies within what Flow-Spec can say.

Random rules go through the iptables-save grammar, the model, the receiver split and the BIRD
renderer; BIRD 2 itself (`bird -p`, no daemon needed) must accept every file, and every numeric
component, printed the way FRR 8.4 prints it, must read back through fs-inject's reader to the
intervals fs-fetch meant.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowseg.iptables import parse_rule
from flowseg.model import (
    DSCP_MAX,
    FRAG_BITS,
    ICMP_PROTOCOLS,
    LENGTH_MAX,
    PORT_MAX,
    Bitmask,
    Family,
    FlowRule,
    Interval,
    Policy,
    Verdict,
    normalize,
)
from fs_fetch import bird

TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def intervals(top: int, max_size: int = 8):
    def build(pairs):
        return normalize([Interval(min(a, b), max(a, b)) for a, b in pairs], top)

    edge = st.sampled_from([0, 1, top - 1, top])
    value = st.one_of(edge, st.integers(0, top))
    return st.lists(st.tuples(value, value), max_size=max_size).map(build)


def prefixes(family: Family):
    bits = 32 if family is Family.V4 else 128
    kind = ipaddress.IPv4Network if family is Family.V4 else ipaddress.IPv6Network
    return st.tuples(st.integers(0, 2**bits - 1), st.integers(0, bits)).map(
        lambda t: kind((t[0], t[1]), strict=False))


@st.composite
def rules(draw, family: Family, number: int):
    protocol = draw(st.sampled_from([None, 6, 17, 132, 47, ICMP_PROTOCOLS[family]]))
    negated = protocol is not None and draw(st.booleans()) and draw(st.booleans())
    fields = {}
    if protocol in (6, 17, 132) and not negated:
        for name in ("sport", "dport", "port"):
            if draw(st.booleans()):
                fields[name] = draw(intervals(PORT_MAX))
    if protocol == 6 and not negated and draw(st.booleans()):
        mask = draw(st.integers(1, 0xFF))
        fields["tcp_flags"] = Bitmask(mask, draw(st.integers(0, 0xFF)) & mask)
    if protocol == ICMP_PROTOCOLS[family] and not negated:
        fields["icmp_type"] = draw(intervals(255, 3))
        fields["icmp_code"] = draw(intervals(255, 2))
    if draw(st.booleans()):
        fields["length"] = draw(intervals(LENGTH_MAX, 3))
    if draw(st.booleans()):
        fields["dscp"] = draw(intervals(DSCP_MAX, 3))
    if draw(st.booleans()):
        mask = draw(st.integers(1, 0xF)) & FRAG_BITS[family] or 2
        fields["fragment"] = Bitmask(mask, draw(st.integers(0, 0xF)) & mask)
    return FlowRule(
        number,
        family,
        draw(st.sampled_from(list(Verdict))),
        draw(prefixes(family)),
        draw(prefixes(family)),
        protocol,
        protocol_negated=negated,
        **fields,
    )


@st.composite
def policies(draw):
    out = []
    for family in draw(st.sampled_from([[Family.V4], [Family.V6], [Family.V4, Family.V6]])):
        count = draw(st.integers(0, 6))
        rs = tuple(draw(rules(family, n)) for n in range(1, count + 1))
        out.append(Policy(family, "FORWARD", draw(st.sampled_from(list(Verdict))), rs))
    return out


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird is not installed")
@SETTINGS
@given(policies())
def test_bird_accepts_every_rendered_policy_and_rendering_is_stable(tmp_path_factory, pols):
    text = bird.render(pols, TABLES, "hypothesis")
    assert bird.render(pols, TABLES, "hypothesis") == text
    folder = tmp_path_factory.mktemp("bird")
    (folder / "flowspec.conf").write_text(text)
    (folder / "check.conf").write_text(
        "flow4 table flowtab4;\nflow6 table flowtab6;\n"
        f'include "{folder / "flowspec.conf"}";\n')
    res = subprocess.run(["bird", "-p", "-c", str(folder / "check.conf")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "!=" not in text and " true" not in text and "offset" not in text


@SETTINGS
@given(st.sampled_from([255, DSCP_MAX, PORT_MAX]).flatmap(
    lambda top: st.tuples(st.just(top), intervals(top, 12))))
def test_numeric_components_read_back_exactly_the_way_frr_prints_them(case):
    from fs_inject.frr import parse_numeric

    top, ivs = case
    if not ivs:
        return
    assert parse_numeric(bird.frr_text(ivs, top), top, "x") == ivs


@SETTINGS
@given(st.sampled_from([Family.V4, Family.V6]).flatmap(lambda f: rules(f, 7)))
def test_receiver_split_keeps_the_match_and_the_limit(rule):
    routes = bird.routes_for(rule)
    for route in routes:
        bird.lint(route, bird.RECEIVERS["frr"], "FORWARD")
        assert (route.number, route.verdict) == (rule.number, rule.verdict)
    for name, _, top in bird.NUMERIC_FIELDS:
        pieces = {getattr(r, name) for r in routes}
        joined = normalize([iv for p in pieces for iv in p], top)
        assert joined == getattr(rule, name)
    assert len({r.matches_key() for r in routes}) == len(routes)


def iptables_words(rule: FlowRule) -> str:
    """The rule as iptables-save would print it (this test's own small renderer)."""
    def ranges(ivs, sep=","):
        return sep.join(f"{iv.lo}" if iv.lo == iv.hi else f"{iv.lo}:{iv.hi}" for iv in ivs)

    words = []
    if rule.src.prefixlen:
        words += ["-s", str(rule.src)]
    if rule.dst.prefixlen:
        words += ["-d", str(rule.dst)]
    if rule.protocol is not None:
        words += (["!"] if rule.protocol_negated else []) + ["-p", str(rule.protocol)]
    if rule.sport or rule.dport:
        words += ["-m", "multiport"]
        if rule.sport:
            words += ["--sports", ranges(rule.sport)]
        if rule.dport:
            words += ["--dports", ranges(rule.dport)]
    if rule.port:
        words += ["-m", "multiport", "--ports", ranges(rule.port)]
    if rule.tcp_flags:
        def names(bits):
            return ",".join(n for n, b in (("FIN", 1), ("SYN", 2), ("RST", 4), ("PSH", 8),
                                           ("ACK", 16), ("URG", 32), ("ECE", 64), ("CWR", 128))
                            if bits & b) or "NONE"
        words += ["-m", "tcp", "--tcp-flags", names(rule.tcp_flags.mask),
                  names(rule.tcp_flags.want)]
    if rule.length:
        words += ["-m", "length", "--length", ranges(rule.length[:1])]
    if rule.dscp:
        words += ["-m", "dscp", "--dscp", f"0x{rule.dscp[0].lo:02x}"]
    words += ["-j", rule.verdict.value]
    return " ".join(words)


@SETTINGS
@given(st.sampled_from([Family.V4, Family.V6]).flatmap(lambda f: rules(f, 3)))
def test_iptables_text_reads_back_as_the_rule(rule):
    # What one iptables rule can say: one length range, one DSCP value, no ICMP/fragment here.
    rule = replace(rule, length=rule.length[:1], icmp_type=(), icmp_code=(), fragment=None,
                   dscp=tuple(Interval(iv.lo, iv.lo) for iv in rule.dscp[:1]))
    parsed = parse_rule(iptables_words(rule), 3, rule.family)
    assert parsed.matches_key() == rule.matches_key()
    assert parsed.verdict is rule.verdict
