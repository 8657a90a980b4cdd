"""vtysh's `show bgp ipv4|ipv6 flowspec detail json` to FlowRules, in the controller's order.

Checked against FRR 8.4.4 (Debian 8.4.4-1.1~deb12u2) fed by BIRD 2.0.12; the shape is the
same up to FRR 10.7 (shared/docs/flowspec-wire-facts.md section 1). The output is one JSON
array per NLRI, back to back, or nothing when the table is empty. Inside an array each path is
a match object, an optional `ecomlist` object and a `time` object.

Reading numeric components: FRR does not print the AND bit (wire facts 2.2). fs-fetch sends
only OR-lists of `= v`, `a..b` (`>= a` AND `<= b`), a leading `<= v` / `< v` and a trailing
`>= v` / `> v`; so a lower bound directly followed by an upper bound is read as one range and
every other entry as an OR term. That is exact for everything fs-fetch sends. A string outside
this grammar (an empty operator, a bound that cannot start or end a range there) is refused.

Actions (RFC 8955 section 7): traffic-marking N (0x8009) is rule N, ACCEPT; traffic-rate 0
(0x8006) is DROP; a catch-all route (0/0 to 0/0) without marking is the chain's policy.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import math
import re
from dataclasses import dataclass

from flowseg.encoding import COUNT_AS, GENERATION_AS, RESERVED_AS, SEQUENCE_AS
from flowseg.errors import BadInput, BadRoute, InvalidValue
from flowseg.iptables import ChainEntry, bucket_name, render_rule_args
from flowseg.model import (
    PORT_PROTOCOLS,
    DSCP_MAX,
    ICMP_MAX,
    ICMP_PROTOCOLS,
    LENGTH_MAX,
    PORT_MAX,
    TCP_FLAGS_MAX,
    Bitmask,
    Family,
    FlowRule,
    Interval,
    Intervals,
    Verdict,
    normalize,
)

log = logging.getLogger(__name__)

NUMERIC_ENTRY = re.compile(r"^\s*(<=|>=|<|>|=|)\s*(\d+)\s*$")
TOKEN_START = re.compile(r"^(FS:|UNK:|NH:|LB:|[0-9.]+:[0-9]+$)")
# Keys that fs-inject turns into iptables matches. Others are refused, never ignored:
# leaving out a component would widen the rule.
KNOWN_KEYS = {"to", "from", "proto", "dstp", "srcp", "port", "type", "code", "tcp", "pktlen", "dscp",
              "pktfrag"}


@dataclass(frozen=True)
class Route:
    """One NLRI as vtysh printed it: its match strings and its extended communities."""

    match: dict[str, str]
    ecomlist: tuple[str, ...]

    def describe(self) -> str:
        parts = [f"{k} {v.strip()}" for k, v in self.match.items()]
        return " ".join(parts) or "(empty match)"


def decode_stream(text: str) -> list[list]:
    """Split vtysh's back-to-back JSON arrays; empty output is an empty table."""
    decoder = json.JSONDecoder()
    out = []
    pos = 0
    end = len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return out
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise BadInput(f"vtysh JSON unreadable at char {exc.pos}: {exc.msg}") from None
        if isinstance(obj, dict):
            # FRR reports problems as {"warning": ...} with exit status 0 (wire facts 1.3).
            detail = obj.get("warning") or obj.get("error") or json.dumps(obj)[:80]
            raise BadInput(f"vtysh answered {detail!r} instead of routes")
        if not isinstance(obj, list):
            raise BadInput(f"vtysh printed a JSON {type(obj).__name__} where a route belongs")
        out.append(obj)


def split_paths(entry: list) -> list[Route]:
    """The paths of one NLRI: each ends at the object that holds `time`."""
    paths = []
    match: dict | None = None
    ecom: tuple[str, ...] = ()
    for obj in entry:
        if not isinstance(obj, dict):
            raise BadInput(f"vtysh route holds a JSON {type(obj).__name__}, not an object")
        if "time" in obj:
            if match is None:
                raise BadInput("vtysh route has a time object but no match object")
            paths.append(Route(match, ecom))
            match, ecom = None, ()
        elif "ecomlist" in obj or "ecom6list" in obj:
            ecom = tuple(_ecom_tokens(str(obj.get("ecomlist", ""))))
            ecom += tuple(_ecom_tokens(str(obj.get("ecom6list", ""))))
        else:
            if not all(isinstance(v, str) for v in obj.values()):
                raise BadInput("vtysh route has a match component that is not a string")
            match = dict(obj)
    if match is not None:
        raise BadInput("vtysh route ends without its time object (truncated output?)")
    return paths


def _ecom_tokens(text: str) -> list[str]:
    """ecomlist is space-joined and some entries hold spaces: cut at each known entry start."""
    tokens: list[str] = []
    for word in text.split():
        if TOKEN_START.match(word) or not tokens:
            tokens.append(word)
        else:
            tokens[-1] += " " + word
    return tokens


def read_routes(text: str) -> list[Route]:
    routes = []
    for entry in decode_stream(text):
        paths = split_paths(entry)
        if not paths:
            raise BadInput("vtysh printed an empty route")
        if any(p != paths[0] for p in paths[1:]):
            log.warning("route %s: peers disagree on its actions; using the first path",
                        paths[0].describe())
        routes.append(paths[0])
    return routes


def parse_numeric(text: str, top: int, where: str) -> Intervals:
    """FRR's `>= 80 , <= 90 , = 443 ` back to intervals (the grammar in the docstring)."""
    entries = []
    for piece in text.split(","):
        m = NUMERIC_ENTRY.match(piece)
        if not m:
            raise BadRoute(f"{where}: cannot read {text.strip()!r}")
        op, value = m.group(1), int(m.group(2))
        if value > top:
            raise BadRoute(f"{where}: value {value} out of range 0-{top}")
        if op == "":
            raise BadRoute(f"{where}: operator 'false' matches nothing; not installed")
        entries.append((op, value))
    out: list[Interval] = []
    i = 0
    while i < len(entries):
        op, value = entries[i]
        nxt = entries[i + 1] if i + 1 < len(entries) else None
        if op in (">", ">=") and nxt and nxt[0] in ("<", "<="):
            lo = value + (op == ">")
            hi = nxt[1] - (nxt[0] == "<")
            if lo > hi:
                raise BadRoute(f"{where}: range {text.strip()!r} is empty")
            out.append(Interval(lo, hi))
            i += 2
            continue
        if op == "=":
            out.append(Interval(value, value))
        elif op == "<=":
            out.append(Interval(0, value))
        elif op == "<":
            if value == 0:
                raise BadRoute(f"{where}: '< 0' matches nothing")
            out.append(Interval(0, value - 1))
        elif op == ">=":
            out.append(Interval(value, top))
        elif op == ">":
            if value >= top:
                raise BadRoute(f"{where}: '> {value}' matches nothing")
            out.append(Interval(value + 1, top))
        i += 1
    return normalize(out, top)


def _prefix(text: str, where: str):
    body, _, offset = text.partition("/off ")
    if offset and offset.strip() != "0":
        # FRR mis-reads IPv6 offsets (wire facts 2.5); the match cannot be trusted.
        raise BadRoute(f"{where}: IPv6 prefix offset {offset.strip()} is not supported")
    try:
        return ipaddress.ip_network(body.strip(), strict=True)
    except ValueError:
        raise BadRoute(f"{where}: bad prefix {text!r}") from None


RT_TOKEN = re.compile(r"^(\d+(?:\.\d+){3}|\d+):(\d+)$")


@dataclass(frozen=True)
class Actions:
    marking: int | None
    rate: float | None
    targets: tuple[str, ...] = ()


def read_actions(route: Route, where: str) -> Actions:
    marking = rate = None
    targets: list[str] = []
    for token in route.ecomlist:
        if token.startswith("FS:marking "):
            value = token.split(" ", 1)[1]
            if not value.isdigit():
                raise BadRoute(f"{where}: bad traffic-marking {token!r}")
            if marking is not None:
                raise BadRoute(f"{where}: two traffic-markings ({marking}, {value}): its place "
                               "in the chain is ambiguous")
            marking = int(value)
        elif token.startswith("FS:rate "):
            if rate is not None:
                raise BadRoute(f"{where}: two traffic-rates: which one applies is ambiguous")
            try:
                rate = float(token.split(" ", 1)[1])
            except ValueError:
                raise BadRoute(f"{where}: bad traffic-rate {token!r}") from None
            if math.isnan(rate) or math.isinf(rate):
                raise BadRoute(f"{where}: traffic-rate {token!r} is not a number")
            # RFC 8955 section 7.3: a negative rate is treated as 0, which means discard.
            rate = max(rate, 0.0)
        elif token.startswith("FS:action "):
            # FRR prints the wrong bits of traffic-action (wire facts 3.2). Its terminal bit
            # decides whether later rules still apply (RFC 8955 7.3), which a first-match chain
            # cannot honour unread: refused, not guessed. fs-fetch never sends it.
            raise BadRoute(f"{where}: traffic-action {token!r} cannot be read exactly from "
                           "FRR; not installed")
        elif RT_TOKEN.match(token):
            # A route target (or a look-alike SoO) changes no match and no verdict.
            targets.append(token)
        elif token.startswith("FS:redirect") or token.startswith("NH:"):
            raise BadRoute(f"{where}: redirect action {token!r} is not carried by flowseg; "
                           "not installed (it would widen into ACCEPT)")
        else:
            raise BadRoute(f"{where}: action {token!r} is not carried by flowseg; not installed")
    return Actions(marking, rate, tuple(targets))


BITMASK_ENTRY = re.compile(r"^(=|\u220b) (! )?(\d+)$")
# Protocol lists longer than this become too many iptables rules for one route.
PROTOCOLS_MAX = 16
# hashlimit's byte rates are 32-bit: 4e9 B/s is stored as 3855mb/s, 2^32 already wraps.
RATE_MAX = 4_000_000_000


def parse_bitmask(text: str, top: int, where: str) -> Bitmask:
    """FRR's `= 2,&∋ ! 16` back to one Bitmask: the AND of "all of V set" and "none of V set".

    Bitmask strings keep their AND/OR (wire facts 2.3). An OR, or a term that says "not all
    of V" or "any of V" for more than one bit, is no single (flags & mask) == want match and
    is refused rather than approximated.
    """
    mask = want = 0
    for i, piece in enumerate(re.split(r",([&|])", text.strip())):
        if i % 2 == 1:
            if piece == "|":
                raise BadRoute(f"{where}: bitmask OR {text.strip()!r} is not carried")
            continue
        m = BITMASK_ENTRY.match(piece.strip())
        if not m:
            raise BadRoute(f"{where}: cannot read bitmask {text.strip()!r}")
        op, negated, value = m.group(1), bool(m.group(2)), int(m.group(3))
        if value == 0 or value > top:
            raise BadRoute(f"{where}: bitmask value {value} out of range 1-{top}")
        single = value & (value - 1) == 0
        if op == "=" and not negated:
            bits_set, bits_clear = value, 0
        elif op != "=" and negated:
            bits_set, bits_clear = 0, value
        elif single:
            # "any of one bit" is "that bit set"; "not all of one bit" is "that bit clear".
            bits_set, bits_clear = (value, 0) if not negated else (0, value)
        else:
            raise BadRoute(f"{where}: bitmask term {piece.strip()!r} is no exact match")
        if (want | bits_set) & (mask & ~want | bits_clear) or bits_set & bits_clear:
            raise BadRoute(f"{where}: bitmask {text.strip()!r} wants a bit both set and clear")
        mask |= bits_set | bits_clear
        want |= bits_set
    return Bitmask(mask, want)


def _protocols(route: Route, where: str) -> list[tuple[int | None, bool]]:
    """(protocol, negated) per iptables rule: one per listed protocol, or `! -p X`."""
    if "proto" not in route.match:
        return [(None, False)]
    protos = parse_numeric(route.match["proto"], 255, where)
    if not protos:
        # The whole range 0-255: every protocol, the same as no protocol component.
        return [(None, False)]
    if len(protos) == 2 and protos[0].lo == 0 and protos[1].hi == 255 \
            and protos[1].lo == protos[0].hi + 2:
        return [(protos[0].hi + 1, True)]
    values = [v for iv in protos for v in range(iv.lo, iv.hi + 1)]
    if len(values) > PROTOCOLS_MAX:
        raise BadRoute(f"{where}: {len(values)} protocols are too many iptables rules")
    return [(v, False) for v in values]


@dataclass(frozen=True)
class Received:
    """One route read from FRR: its chain entries and what it says about order and policy."""

    route: Route
    entries: tuple[ChainEntry, ...]
    sequence: int | None
    marking: int | None
    generation: int | None
    count: int | None
    scopes: frozenset[str]


def _reserved(targets: tuple[str, ...], asn: int, where: str) -> int | None:
    values = {int(t.split(":")[1]) for t in targets if t.split(":")[0] == str(asn)}
    if len(values) > 1:
        raise BadRoute(f"{where}: {len(values)} different {asn}:N route targets")
    return values.pop() if values else None


def _is_scope(target: str) -> bool:
    admin = target.split(":")[0]
    return "." in admin or int(admin) not in RESERVED_AS


def route_to_rules(route: Route, family: Family) -> list[ChainEntry]:
    """One route as chain entries (several when it lists several protocols)."""
    return list(receive(route, family).entries)


def receive(route: Route, family: Family) -> Received:
    """One route as chain entries plus its sequence, generation and scopes."""
    where = f"route '{route.describe()}'"
    unknown = set(route.match) - KNOWN_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise BadRoute(f"{where}: component {key!r} is not carried by flowseg; not installed")
    any_net = family.any_net
    src = _prefix(route.match["from"], where) if "from" in route.match else any_net
    dst = _prefix(route.match["to"], where) if "to" in route.match else any_net
    for net in (src, dst):
        if net.version != family.value:
            raise BadRoute(f"{where}: {net} in the IPv{family.value} table")
    m = route.match

    def numeric(key: str, top: int) -> Intervals:
        return parse_numeric(m[key], top, where) if key in m else ()

    fields = dict(
        sport=numeric("srcp", PORT_MAX),
        dport=numeric("dstp", PORT_MAX),
        port=numeric("port", PORT_MAX),
        icmp_type=numeric("type", ICMP_MAX),
        icmp_code=numeric("code", ICMP_MAX),
        length=numeric("pktlen", LENGTH_MAX),
        dscp=numeric("dscp", DSCP_MAX),
        tcp_flags=parse_bitmask(m["tcp"], TCP_FLAGS_MAX, where) if "tcp" in m else None,
        fragment=parse_bitmask(m["pktfrag"], 0x0F, where) if "pktfrag" in m else None,
    )
    protocols = _protocols(route, where)
    # TCP flags and ICMP type/code only exist in their protocol's header: a route that gives
    # them without a protocol matches that protocol only, and so does the iptables rule.
    # This goes by the components present, not by their values: `dport >= 0` matches every
    # port, yet only packets that have ports.
    implied = None
    if "tcp" in m:
        implied = 6
    if "type" in m or "code" in m:
        implied = ICMP_PROTOCOLS[family] if implied is None else -1
    if implied is not None:
        if implied == -1:
            raise BadRoute(f"{where}: TCP flags and ICMP in one route match nothing")
        if protocols == [(None, False)]:
            protocols = [(implied, False)]
        elif protocols != [(implied, False)]:
            raise BadRoute(f"{where}: its protocol contradicts its TCP flags or ICMP match")
    if {"srcp", "dstp", "port"} & set(m):
        if any(p not in PORT_PROTOCOLS for p, _ in protocols) or \
                any(negated for _, negated in protocols):
            raise BadRoute(f"{where}: ports need protocol tcp, udp, sctp or dccp; not installed")

    actions = read_actions(route, where)
    verdict = Verdict.DROP if actions.rate == 0.0 else Verdict.ACCEPT
    rate = actions.rate if actions.rate else None
    if rate is not None and rate > RATE_MAX:
        # hashlimit keeps byte rates in 32 bits: above this it would store a wrong rate.
        raise BadRoute(f"{where}: traffic-rate {rate:.0f} B/s is above the {RATE_MAX} B/s "
                       "iptables can limit to; not installed")
    catch_all = src == any_net and dst == any_net and protocols == [(None, False)] \
        and not any(fields.values())
    sequence = _reserved(actions.targets, SEQUENCE_AS, where)
    generation = _reserved(actions.targets, GENERATION_AS, where)
    count = _reserved(actions.targets, COUNT_AS, where)
    scopes = frozenset(t for t in actions.targets if _is_scope(t))
    number = sequence if sequence is not None else actions.marking
    if number is None:
        if not catch_all:
            raise BadRoute(f"{where}: no traffic-marking or sequence number, so its place in "
                           "the chain is unknown")
        number = 0
    elif number == 0:
        raise BadRoute(f"{where}: rule number 0 is no rule number")
    entries = []
    try:
        for protocol, negated in protocols:
            rule = FlowRule(number, family, verdict, src, dst, protocol, comment="",
                            origin=route.describe(), protocol_negated=negated, **fields)
            # Rendered here, once: what iptables cannot say is refused now, with the route
            # named, and render_chain takes the arguments from the entry.
            entries.append(ChainEntry(rule, rate, tuple(render_rule_args(rule))))
    except InvalidValue as exc:
        raise BadRoute(f"{where}: {exc}; not installed") from None
    if rate is not None and len(entries) > 1:
        # One rate for all the route's traffic (RFC 8955 7.1), whichever protocol it is.
        bucket = bucket_name(family, (a for e in entries for a in e.args), rate)
        entries = [dataclasses.replace(e, bucket=bucket) for e in entries]
    return Received(route, tuple(entries), sequence, actions.marking, generation, count, scopes)


def _rfc_prefix(net, any_net) -> tuple:
    # RFC 8955 5.1: a route with the component precedes one without; a longer (more specific)
    # prefix precedes a shorter one; equal lengths go by the lower address.
    if net == any_net:
        return (1, 0, 0)
    return (0, -net.prefixlen, int(net.network_address))


def _rfc_values(value) -> tuple:
    # Other components: present before absent, then the lower value first (a stand-in for the
    # RFC's byte comparison of the encoded component, which gives the same order for the
    # single values and ranges fs-fetch writes). Values of one field compare as numbers.
    if value in ((), None, False):
        return (1,)
    if isinstance(value, tuple):
        return (0, tuple((iv.lo, iv.hi) for iv in value))
    if isinstance(value, Bitmask):
        return (0, (value.mask, value.want))
    return (0, (value,))


def order_key(entry: ChainEntry) -> tuple:
    """Controller order: by rule number, the policy (0) last; ties in RFC 8955 5.1 order.

    Routes of one rule (a long list split for FRR) share a number and a verdict, so their
    order among themselves does not change what the chain does; two rules that arrive with
    the same number (duplicate markings from a foreign speaker) get the RFC's order.
    """
    rule = entry.rule
    any_net = rule.family.any_net
    return (
        rule.number == 0,
        rule.number,
        _rfc_prefix(rule.dst, any_net),
        _rfc_prefix(rule.src, any_net),
        *(_rfc_values(getattr(rule, f)) for f in (
            "protocol", "port", "dport", "sport", "icmp_type", "icmp_code", "tcp_flags",
            "length", "dscp", "fragment")),
        rule.protocol_negated,
        entry.rate or 0.0,
    )


def route_family(route: Route) -> Family | None:
    """The family a route's prefixes say, or None when it has no prefix."""
    for key in ("to", "from"):
        if key in route.match:
            return Family.V6 if ":" in route.match[key].partition("/")[0] else Family.V4
    return None


@dataclass(frozen=True)
class Selection:
    """What to install for one family, or why to wait."""

    entries: list[ChainEntry]
    generation: int | None
    waiting: str | None = None
    received: int = 0
    out_of_scope: int = 0


def read_family(text: str, family: Family, mixed: bool = False) -> list[Received]:
    """Every route of one family. mixed: the text may hold both families (--from-file)."""
    out = []
    for route in read_routes(text):
        if mixed:
            found = route_family(route)
            if found is None:
                raise BadRoute(f"route '{route.describe()}': no prefix, so its family is "
                               "unknown; give --family ipv4 or ipv6")
            if found is not family:
                continue
        out.append(receive(route, family))
    return out


def completeness(routes: list[Received]) -> tuple[int | None, str | None]:
    """(generation, None) when a whole generation is here, (None, why) while one arrives."""
    gens = {r.generation for r in routes}
    if not routes or gens == {None}:
        return None, None
    if None in gens:
        return None, "routes with and without a generation stamp are mixed"
    if len(gens) > 1:
        return None, f"generations {', '.join(str(g) for g in sorted(gens))} are mixed"
    (gen,) = gens
    counts = {r.count for r in routes if r.count is not None}
    if not counts:
        return None, f"the policy route of generation {gen} (with the route count) is missing"
    if len(counts) > 1:
        raise BadRoute(f"generation {gen} names {len(counts)} different route counts")
    (count,) = counts
    if len(routes) != count:
        return None, f"{len(routes)} of the {count} routes of generation {gen} are here"
    return gen, None


def select(routes: list[Received], scopes: frozenset[str] = frozenset()) -> Selection:
    """Complete, in scope, in the controller's order; or the reason to keep what is in force."""
    gen, waiting = completeness(routes)
    if waiting:
        return Selection([], None, waiting, len(routes))
    rules = [r for r in routes if r.entries[0].rule.number != 0]
    with_seq = sum(r.sequence is not None for r in rules)
    if 0 < with_seq < len(rules):
        raise BadRoute(f"{with_seq} of {len(rules)} routes carry a sequence number and the "
                       "others only traffic-marking: their order is unknown")
    kept = [r for r in routes if not (scopes and r.scopes and not r.scopes & scopes)]
    entries = sorted((e for r in kept for e in r.entries), key=order_key)
    numbers: dict[int, Verdict] = {}
    for entry in entries:
        rule = entry.rule
        if numbers.setdefault(rule.number, rule.verdict) is not rule.verdict:
            log.warning("rule %d arrives as both ACCEPT and DROP; its routes go in RFC 8955 "
                        "5.1 order", rule.number)
    return Selection(entries, gen, None, len(routes), len(routes) - len(kept))


def rules_from_vtysh(text: str, family: Family, mixed: bool = False) -> list[ChainEntry]:
    """All routes of one family, in the order the controller's chain had them."""
    selection = select(read_family(text, family, mixed))
    if selection.waiting:
        raise BadRoute(f"policy incomplete: {selection.waiting}")
    return selection.entries


# The labels of `show bgp ... flowspec detail` (text) for the JSON keys (wire facts 2.1).
TEXT_LABELS = {
    "Destination Address": "to", "Source Address": "from", "IP Protocol": "proto",
    "Port": "port", "Destination Port": "dstp", "Source Port": "srcp", "ICMP Type": "type",
    "ICMP Code": "code", "TCP Flags": "tcp", "Packet Length": "pktlen", "DSCP field": "dscp",
    "Packet Fragment": "pktfrag", "Packet Flow Label": "flwlbl",
}
TEXT_LINE = re.compile(r"^\t(" + "|".join(sorted(map(re.escape, TEXT_LABELS), key=len,
                                                 reverse=True)) + r") (.*)$")


def text_signatures(text: str) -> list[tuple]:
    """Each entry of the text detail output as its sorted (key, value) components."""
    out: list[list] = []
    for line in text.splitlines():
        if line.startswith("BGP flowspec entry"):
            out.append([])
            continue
        m = TEXT_LINE.match(line)
        if m and out:
            out[-1].append((TEXT_LABELS[m.group(1)], m.group(2).strip()))
    return sorted(tuple(sorted(sig)) for sig in out)


def verify_against_text(routes: list[Route], text: str) -> None:
    """Refuse the read when FRR's text shows components its JSON left out.

    FRR's JSON holds one value per component key, so an NLRI that repeats a component (RFC
    8955 section 4.2 forbids it; BIRD never sends one, but another speaker can) shows only its
    last value there, a wider match than the route. The text form prints every component.
    """
    from_json = sorted(tuple(sorted((k, v.strip()) for k, v in r.match.items()))
                       for r in routes)
    from_text = text_signatures(text)
    if from_json == from_text:
        return
    extra = [sig for sig in from_text if sig not in from_json]
    what = " ".join(f"{k} {v}" for k, v in extra[0]) if extra else "a route"
    raise TextDisagrees(f"route '{what}': FRR's text shows components its JSON leaves out "
                        "(a repeated component?); not installed")


class TextDisagrees(BadRoute):
    """FRR's text and JSON dumps show different routes: a repeated component, or routes that
    changed between the two reads (the caller reads both again once before refusing)."""
