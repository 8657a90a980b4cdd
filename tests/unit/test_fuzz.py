"""Fuzzing the parsers that read untrusted text (issue 7): vtysh JSON, FRR's operator strings,
iptables-save. Whatever the input, they either return model objects or raise the typed
FlowsegError that the CLIs turn into one line; nothing else escapes.

1,000 cases per parser in the normal run; `make fuzz` (FLOWSEG_FUZZ=long) runs 50,000.
"""

from __future__ import annotations

import json
import os
import shlex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowseg.errors import FlowsegError
from flowseg.iptables import parse_policy, render_chain, split_args, split_families
from flowseg.model import Family
from fs_inject import frr

EXAMPLES = 50_000 if os.environ.get("FLOWSEG_FUZZ") == "long" else 1_000
fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

OPS = st.sampled_from(["", "=", "<", ">", "<=", ">=", "!=", "=<", "∋", "!"])
NUMBERS = st.one_of(st.integers(-5, 70000), st.just(2**32), st.just(2**64))
NUMERIC = st.lists(st.tuples(OPS, NUMBERS), min_size=1, max_size=8).map(
    lambda terms: " , ".join(f"{op} {n}" for op, n in terms) + " ")
BITMASK = st.lists(st.tuples(st.sampled_from(["=", "∋", "= !", "∋ !", "?"]),
                             st.integers(-1, 5000)), min_size=1, max_size=5).map(
    lambda terms: "".join((sep if i else "") + f"{op} {n}" for i, (op, n) in enumerate(terms)
                          for sep in [",&" if i % 2 else ",|"]))
PREFIX = st.one_of(
    st.from_regex(r"\A(\d{1,3}\.){3}\d{1,3}/\d{1,2}\Z"),
    st.from_regex(r"\A2001:db8:[0-9a-f]{0,4}::/\d{1,3}/off \d\Z"),
    st.text(max_size=20),
)
KEYS = st.sampled_from(["to", "from", "proto", "dstp", "srcp", "port", "type", "code", "tcp",
                        "pktlen", "dscp", "pktfrag", "flwlbl", "weird"])
ECOM = st.lists(st.one_of(
    st.builds(lambda n: f"FS:marking {n}", st.integers(-1, 300)),
    st.builds(lambda r: f"FS:rate {r}", st.sampled_from(["0.000000", "-0.000000", "nan", "inf",
                                                         "1000.000000", "-1.0", "1e40", "x"])),
    st.builds(lambda a, n: f"{a}:{n}", st.sampled_from([65535, 65534, 65533, 65000, 1]),
              st.integers(0, 2**32 + 5)),
    st.sampled_from(["FS:action terminate (apply)", "FS:redirect VRF RT:65000:1",
                     "UNK:128, 15", "NH:192.0.2.1:255", "LB:65000:0 (0 bps)"]),
), max_size=5).map(" ".join)


def component(key):
    if key in ("to", "from"):
        return PREFIX
    if key in ("tcp", "pktfrag"):
        return BITMASK
    return NUMERIC


ROUTE = st.tuples(
    st.dictionaries(KEYS, st.none(), max_size=6).flatmap(
        lambda d: st.fixed_dictionaries({k: component(k) for k in d})),
    ECOM,
)


@fuzz
@given(st.text(max_size=300))
def test_vtysh_stream_never_crashes_on_any_text(text):
    try:
        frr.read_routes(text)
    except FlowsegError:
        pass


@fuzz
@given(st.lists(ROUTE, max_size=6))
def test_routes_either_translate_and_render_or_are_refused(routes):
    entries = []
    for match, ecom in routes:
        obj = [match, {"ecomlist": ecom}, {"time": "00:00:01"}] if ecom else [
            match, {"time": "00:00:01"}]
        entries.append(json.dumps(obj, ensure_ascii=False, indent=2))
    text = "\n".join(entries)
    for family in (Family.V4, Family.V6):
        try:
            sel = frr.select(frr.read_family(text, family))
        except FlowsegError:
            continue
        for line in render_chain(sel.entries, "FLOWSPEC", generation=sel.generation):
            assert "\n" not in line and line.startswith("-A FLOWSPEC ")


@fuzz
@given(NUMERIC)
def test_numeric_operator_strings(text):
    try:
        intervals = frr.parse_numeric(text, 65535, "fuzz")
    except FlowsegError:
        return
    assert all(0 <= iv.lo <= iv.hi <= 65535 for iv in intervals)


@fuzz
@given(BITMASK)
def test_bitmask_operator_strings(text):
    try:
        mask = frr.parse_bitmask(text, 0xFFF, "fuzz")
    except FlowsegError:
        return
    assert mask.want & ~mask.mask == 0


RULE_WORDS = st.sampled_from([
    "-s", "-d", "192.0.2.0/24", "2001:db8::/32", "-p", "tcp", "udp", "icmp", "47", "!",
    "-m", "tcp", "multiport", "comment", "icmp", "length", "dscp", "frag", "conntrack",
    "--dport", "--sport", "--dports", "--ports", "80", "1:2", ":5", "70000", "80,443",
    "--icmp-type", "echo-request", "8/0", "--tcp-flags", "SYN,ACK", "SYN", "--syn",
    "--length", "0:100", "--dscp", "0x2e", "--comment", '"a b"', '"x\\"y"', "-f",
    "-j", "ACCEPT", "DROP", "REJECT", "LOG", "-i", "eth0", "--ctstate", "ESTABLISHED",
])


@fuzz
@given(st.lists(st.lists(RULE_WORDS, max_size=12).map(" ".join), max_size=5),
       st.sampled_from(["ACCEPT", "DROP", "-"]))
def test_iptables_save_parser(rules, policy):
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD %s [0:0]\n%sCOMMIT\n" % (
        policy, "".join(f"-A FORWARD {r}\n" for r in rules))
    try:
        for table in split_families(text):
            parse_policy(table, "FORWARD")
    except FlowsegError:
        pass


@fuzz
@given(st.text(alphabet=st.characters(max_codepoint=0x2030), max_size=60)
       | st.lists(RULE_WORDS, max_size=12).map(" ".join))
def test_the_fast_word_split_is_shlex(text):
    # split_args skips shlex for lines without quoting: it must give shlex's words, always.
    try:
        want = shlex.split(text)
    except ValueError:
        with pytest.raises(ValueError):
            split_args(text)
        return
    assert split_args(text) == want
