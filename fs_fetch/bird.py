"""FlowRules to BIRD 2 `route flow4` / `route flow6` text, through the Jinja2 templates.

Checked against BIRD 2.0.12 (Debian 12) and what FRR 8.4.4 makes of it (see
shared/docs/flowspec-wire-facts.md). The encoding is the slides' one, widened by
flowseg/encoding.py (the contract with fs-inject):

- rule N (its FORWARD position) carries traffic-marking N, `(generic, 0x80090000, N)`,
  RFC 8955 section 7.5, while N fits 1-63; past that (or with `--numbering rt`) the route
  target `(rt, 65535, N)` instead, which FRR prints exactly for any N (wire facts 3.3).
  `--numbering auto`, the command's default, uses marking alone while every rule number of the
  family fits, so the slides' case gives the slides' routes; `both` sends both carriers. Every
  route of a split rule carries the same number.
- a DROP rule also carries traffic-rate 0, `(generic, 0x80060000, 0x0)`, section 7.3;
- the chain's policy is the catch-all route (src and dst 0/0), with traffic-rate 0 when the
  policy is DROP and no community when it is ACCEPT;
- unless `--no-generation`: every route carries the policy's generation `(rt, 65534, G)`, and
  the catch-all also the number of routes of G in its family, `(rt, 65533, C)`. G is kept in
  the file's header; a changed policy gets G + 1, an unchanged one the same bytes as before;
- a scoped rule (fs_fetch/scopes.py) carries its scopes' route targets on every route, and one
  export filter per switch keeps other scopes' routes off that switch's session and puts that
  switch's own route count on the catch-all.

Numeric components (RFC 8955 4.2.1.1) are written only in the grammar that survives FRR's
text, where the only AND is the one inside a range (wire facts 2.2): an OR-list of `v`,
`a..b`, `<= v` (first) and `>= v` (last), in ascending order, so that a lower bound is never
directly followed by an upper bound except inside a range. `!=` and `true`, which make FRR
reset the session, are never written: a negated match is its complement as ranges.

Bitmask components (4.2.1.2) are one conjunction each, written so that FRR prints every term
with its own operator (wire facts 2.4): TCP flags as `tcp flags 0xW/0xM` (FRR: `= W,&∋ ! C`,
`= W` or `∋ ! M`), fragments as `is_fragment && !dont_fragment` keywords.

The receiver profile decides how long a component may be: FRR (`--receiver frr`, the default)
resets the whole session on a component with more than 5 operator pairs (wire facts 2.5), so a
longer list becomes several routes that carry the same rule number and verdict; the union of
their matches is the rule's match, and their order among themselves does not matter. The plain
RFC (`--receiver rfc`) sets no limit. IPv6 prefix offsets are never written (FRR misreads them).

BGP keeps one route per NLRI. When two routes of a family have the same match, the later one
can never decide a packet in iptables either (first match wins), so it is left out with a
warning, whatever its verdict: the switch's chain then means what the controller's meant.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2

from flowseg import model, templates_dir
from flowseg.encoding import COUNT_AS, GENERATION_AS, MARKING_MAX, RT_VALUE_MAX, SEQUENCE_AS
from flowseg.errors import FlowsegError, UnsupportedRule
from flowseg.model import PORT_MAX, PROTO_MAX, Family, FlowRule, Intervals, Policy, Verdict
from fs_fetch.scopes import NO_SCOPING, Scoping, Target

log = logging.getLogger(__name__)

MARKING = "(generic, 0x80090000, 0x{:x})"
RATE_ZERO = "(generic, 0x80060000, 0x0)"
SEQUENCE = f"(rt, {SEQUENCE_AS}, {{}})"
GENERATION = f"(rt, {GENERATION_AS}, {{}})"
COUNT = f"(rt, {COUNT_AS}, {{}})"
NUMBERINGS = ("auto", "marking", "rt", "both")
# The generation as the file's header states it, for the next run to read back.
GENERATION_LINE = re.compile(rb"^# Generation: (\d+)$", re.MULTILINE)
GENERATION_RT = re.compile(rb"\(rt, %d, (\d+)\)" % GENERATION_AS)
NET_TYPES = {Family.V4: "NET_FLOW4", Family.V6: "NET_FLOW6"}
# FRR 8.4.4 (Debian) and FRR >= 10.7 reset the session past 5 operator pairs per component.
FRR_MAX_PAIRS = 5
# A rule whose lists multiply into more routes than this is refused: one policy change then
# withdraws so many routes at once that FRR resets the session (wire facts 7: 200 was fine,
# 400 was not).
ROUTES_PER_RULE_MAX = 64

FRAGMENT_WORDS = {
    model.FRAG_DF: "dont_fragment",
    model.FRAG_ISF: "is_fragment",
    model.FRAG_FF: "first_fragment",
    model.FRAG_LF: "last_fragment",
}


class TemplateFailed(FlowsegError):
    exit_code = 3


@dataclass(frozen=True)
class Receiver:
    """What the BGP speakers that receive the routes can take."""

    name: str
    max_pairs: int | None  # operator/value pairs per numeric component; None: no limit


RECEIVERS = {
    "frr": Receiver("frr", FRR_MAX_PAIRS),
    "rfc": Receiver("rfc", None),
}


@dataclass(frozen=True)
class Encoding:
    """How rule numbers, the generation and scopes ride on the routes (flowseg/encoding.py).

    The default is the slides' encoding: traffic-marking alone, no stamps, no scopes. The
    command's defaults are auto numbering with generations.
    """

    numbering: str = "marking"
    generation: bool = False
    scoping: Scoping = NO_SCOPING

    def __post_init__(self) -> None:
        if self.numbering not in NUMBERINGS:
            raise ValueError(f"numbering {self.numbering!r} is not one of {NUMBERINGS}")


SLIDES = Encoding()


@dataclass(frozen=True)
class Carriers:
    """Which communities carry the rule numbers of one family's routes."""

    marking: bool  # traffic-marking, for numbers 1-63
    sequence: bool  # route target 65535:N

    def describe(self) -> str:
        words = []
        if self.marking:
            words.append("traffic-marking")
        if self.sequence:
            words.append(f"route target {SEQUENCE_AS}:N")
        return " and ".join(words)


def carriers(numbering: str, routes: list[FlowRule]) -> Carriers:
    """marking, rt and both as they say; auto: marking while every number fits 1-63."""
    if numbering == "auto":
        top = max((r.number for r in routes), default=0)
        numbering = "marking" if top <= MARKING_MAX else "rt"
    return Carriers(numbering in ("marking", "both"), numbering in ("rt", "both"))

# Numeric fields of FlowRule: (field, BIRD keyword, largest value, JSON key as FRR shows it).
NUMERIC_FIELDS = (
    ("port", "port", PORT_MAX),
    ("dport", "dport", PORT_MAX),
    ("sport", "sport", PORT_MAX),
    ("icmp_type", "icmp type", model.ICMP_MAX),
    ("icmp_code", "icmp code", model.ICMP_MAX),
    ("length", "length", model.LENGTH_MAX),
    ("dscp", "dscp", model.DSCP_MAX),
)


@dataclass(frozen=True)
class RouteView:
    """What the route template sees: only strings that fs-fetch built from typed values."""

    word: str
    components: tuple[str, ...]
    communities: tuple[str, ...]
    label: str
    origin: str
    comment: str = ""
    number: int = 0
    verdict: str = "ACCEPT"


@dataclass(frozen=True)
class BlockView:
    name: str
    family: Family
    table: str
    chain: str
    default: str
    rule_count: int
    routes: tuple[RouteView, ...]
    skipped: tuple[str, ...] = ()
    numbering: str = ""


def numeric_terms(intervals: Intervals, top: int) -> list[tuple[str, int]]:
    """(BIRD text, operator pairs) per OR term, in the order FRR can read back."""
    terms = []
    for iv in intervals:
        if iv.lo == iv.hi:
            terms.append((str(iv.lo), 1))
        elif iv.lo == 0:
            terms.append((f"<= {iv.hi}", 1))
        elif iv.hi == top:
            terms.append((f">= {iv.lo}", 1))
        else:
            terms.append((f"{iv.lo}..{iv.hi}", 2))
    return terms


def numeric_text(intervals: Intervals, top: int) -> str:
    terms = [t for t, _ in numeric_terms(intervals, top)]
    if any(t.startswith(("<", ">")) for t in terms):
        return " || ".join(terms)
    return ", ".join(terms)


def numeric_pairs(intervals: Intervals, top: int) -> int:
    return sum(pairs for _, pairs in numeric_terms(intervals, top))


def frr_text(intervals: Intervals, top: int) -> str:
    """The component as FRR 8.4 prints it (wire facts 2.2), for tests and --json."""
    out = []
    for iv in intervals:
        if iv.lo == iv.hi:
            out.append(f"= {iv.lo} ")
        elif iv.lo == 0:
            out.append(f"<= {iv.hi} ")
        elif iv.hi == top:
            out.append(f">= {iv.lo} ")
        else:
            out += [f">= {iv.lo} ", f"<= {iv.hi} "]
    return ", ".join(out)


def frr_bitmask_text(bits: model.Bitmask, order: tuple[int, ...] | None = None) -> str:
    """A bitmask component as FRR 8.4 prints it (wire facts 2.3 and 2.4).

    TCP flags go out as one `value/mask` term (order None): "all of want" then "none of the
    rest". Fragments go out one keyword per bit, in `order`.
    """
    if order is None:
        terms = [f"= {bits.want}"] if bits.want else []
        if bits.clear:
            terms.append(f"∋ ! {bits.clear}")
    else:
        terms = [f"= {b}" if bits.want & b else f"∋ ! {b}" for b in order if bits.mask & b]
    return ",&".join(terms)


def frr_match(route: FlowRule) -> dict[str, str]:
    """The match object FRR's detail JSON shows for the route (wire facts 2.1)."""
    def prefix(net) -> str:
        return f"{net}/off 0" if route.family is Family.V6 else str(net)

    out = {"to": prefix(route.dst), "from": prefix(route.src)}
    if route.protocol is not None:
        out["proto"] = frr_text(protocol_values(route), PROTO_MAX)
    keys = {"port": "port", "dport": "dstp", "sport": "srcp", "icmp_type": "type",
            "icmp_code": "code", "length": "pktlen", "dscp": "dscp"}
    for name, _, top in NUMERIC_FIELDS:
        if getattr(route, name):
            out[keys[name]] = frr_text(getattr(route, name), top)
    if route.tcp_flags is not None:
        out["tcp"] = frr_bitmask_text(route.tcp_flags)
    if route.fragment is not None:
        out["pktfrag"] = frr_bitmask_text(route.fragment, tuple(FRAGMENT_WORDS))
    return out


def split_for_receiver(intervals: Intervals, top: int, max_pairs: int | None) -> list[Intervals]:
    """Cut an OR-list into pieces of at most max_pairs operator pairs each."""
    if not intervals or max_pairs is None:
        return [intervals]
    pieces: list[list] = [[]]
    used = 0
    for iv, (_, pairs) in zip(intervals, numeric_terms(intervals, top)):
        if used + pairs > max_pairs and pieces[-1]:
            pieces.append([])
            used = 0
        pieces[-1].append(iv)
        used += pairs
    return [tuple(p) for p in pieces]


def protocol_values(rule: FlowRule) -> Intervals:
    """The protocol component as intervals: one value, or the two ranges around it."""
    if rule.protocol is None:
        return ()
    one = (model.Interval(rule.protocol, rule.protocol),)
    return model.complement(one, PROTO_MAX) if rule.protocol_negated else one


def routes_for(
    rule: FlowRule, receiver: Receiver = RECEIVERS["frr"], chain: str = "FORWARD"
) -> list[FlowRule]:
    """The routes that carry one rule: one, or several when a list is too long for FRR.

    Each numeric component is cut on its own and the routes are every combination of the
    pieces, so the union of their matches is exactly the rule's match.
    """
    choices = []
    for name, _, top in NUMERIC_FIELDS:
        choices.append([(name, piece) for piece in
                        split_for_receiver(getattr(rule, name), top, receiver.max_pairs)])
    count = 1
    for c in choices:
        count *= len(c)
    if count > ROUTES_PER_RULE_MAX:
        raise UnsupportedRule(
            f"{chain} rule {rule.number}: its lists need {count} routes with receiver profile "
            f"{receiver.name} (at most {ROUTES_PER_RULE_MAX}); split the rule or shorten its "
            "lists"
        )
    if count == 1:
        return [rule]
    return [replace(rule, **dict(combo)) for combo in itertools.product(*choices)]


def lint(route: FlowRule, receiver: Receiver, chain: str) -> None:
    """Refuse a route the receiver would choke on; every route is checked before BIRD is."""
    what = f"{chain} policy" if route.is_policy else f"{chain} rule {route.number}"
    numeric = [("proto", protocol_values(route), PROTO_MAX)]
    numeric += [(word, getattr(route, name), top) for name, word, top in NUMERIC_FIELDS]
    for word, values, top in numeric:
        pairs = numeric_pairs(values, top)
        if receiver.max_pairs is not None and pairs > receiver.max_pairs:
            raise UnsupportedRule(
                f"{what}: {word} needs {pairs} operator pairs, {receiver.name} takes "
                f"{receiver.max_pairs}; shorten the list"
            )
    for word, text in components(route):
        # What FRR resets the session for (wire facts 2.5), checked on the text BIRD gets.
        if re.search(r"!=|\btrue\b|\boffset\b", text):
            raise UnsupportedRule(f"{what}: {word} {text!r} would make FRR reset the session")


def check_numbers(routes: list[FlowRule], carry: Carriers, chain: str) -> None:
    """Every rule number fits what carries it: 1-63 in marking alone, 32 bits in a target."""
    for route in routes:
        if route.is_policy:
            continue
        if not carry.sequence and not 1 <= route.number <= MARKING_MAX:
            raise UnsupportedRule(
                f"{chain} rule {route.number}: traffic-marking carries rule numbers "
                f"1-{MARKING_MAX} only; use --numbering auto or rt, or shorten the chain to "
                f"{MARKING_MAX} rules"
            )
        if route.number > RT_VALUE_MAX:
            raise UnsupportedRule(f"{chain} rule {route.number}: rule numbers end at "
                                  f"{RT_VALUE_MAX}")


def plan(
    policy: Policy, receiver: Receiver = RECEIVERS["frr"], encoding: Encoding = SLIDES
) -> list[FlowRule]:
    """Every route of one family, rules first in order, the policy's catch-all last.

    BGP keeps one route per NLRI: a later rule with the same match as an earlier one can never
    match a packet in iptables either (first match wins), so it is left out with a warning.
    That is only right where every switch that would get the later rule also gets the earlier
    one; when scopes say otherwise the policy is refused.
    """
    routes: list[FlowRule] = []
    seen: dict[tuple, tuple[int, tuple[Target, ...]]] = {}
    for rule in [*policy.rules, policy.policy_rule()]:
        scopes = encoding.scoping.scopes_of(rule, policy.chain)
        for route in routes_for(rule, receiver, policy.chain):
            key = route.matches_key()
            if key in seen:
                first, first_scopes = seen[key]
                what = "the policy" if route.is_policy else f"rule {route.number}"
                if first_scopes and not (scopes and set(scopes) <= set(first_scopes)):
                    raise UnsupportedRule(
                        f"{policy.chain} {what}: same match as rule {first}, which only "
                        f"switches of {encoding.scoping.label(first_scopes)} get, and BGP "
                        f"carries one route per match; give rule {first} no scope or drop "
                        f"{what}"
                    )
                log.warning(
                    "%s %s: same match as rule %d, which always wins; not announced",
                    policy.chain, what, first,
                )
                continue
            lint(route, receiver, policy.chain)
            seen[key] = (route.number, scopes)
            routes.append(route)
    check_numbers(routes, carriers(encoding.numbering, routes), policy.chain)
    return routes


def bitmask_text(bits: model.Bitmask) -> str:
    return f"0x{bits.want:x}/0x{bits.mask:x}"


def fragment_text(bits: model.Bitmask) -> str:
    words = []
    for bit, word in FRAGMENT_WORDS.items():
        if bits.mask & bit:
            words.append(word if bits.want & bit else f"!{word}")
    return " && ".join(words)


def components(route: FlowRule) -> list[tuple[str, str]]:
    """(BIRD keyword, value text) per component, in RFC 8955 type order."""
    comps = [("dst", str(route.dst)), ("src", str(route.src))]
    if route.protocol is not None:
        word = "proto" if route.family is Family.V4 else "next header"
        comps.append((word, numeric_text(protocol_values(route), PROTO_MAX)))
    for name, word, top in NUMERIC_FIELDS[:5]:
        if getattr(route, name):
            comps.append((word, numeric_text(getattr(route, name), top)))
    if route.tcp_flags is not None:
        comps.append(("tcp flags", bitmask_text(route.tcp_flags)))
    for name, word, top in NUMERIC_FIELDS[5:]:
        if getattr(route, name):
            comps.append((word, numeric_text(getattr(route, name), top)))
    if route.fragment is not None:
        comps.append(("fragment", fragment_text(route.fragment)))
    return comps


@dataclass(frozen=True)
class SwitchView:
    """One switch's export filter, for the filter template: strings built here from typed values."""

    name: str
    filter: str
    address: str
    scopes: str
    others: tuple[str, ...]  # BIRD route targets of every scope this switch does not enforce
    mine: tuple[str, ...]  # and of those it does
    # (BIRD net type, count route target): the routes of each family this switch is sent.
    counts: tuple[tuple[str, str], ...]
    count_any: str = f"(rt, {COUNT_AS}, *)"


@dataclass(frozen=True)
class Stamps:
    """What one file's routes carry beside match and verdict: numbers, generation, scopes."""

    encoding: Encoding
    generation: int | None
    carriers: dict[Family, Carriers]
    counts: dict[Family, int]
    scopes: dict[tuple, tuple[Target, ...]]
    routes: dict[Family, tuple[FlowRule, ...]]

    def route_scopes(self, route: FlowRule) -> tuple[Target, ...]:
        return self.scopes.get(route.matches_key(), ())

    def communities(self, route: FlowRule) -> list[str]:
        out = []
        if route.verdict is Verdict.DROP:
            out.append(RATE_ZERO)
        if not route.is_policy:
            carry = self.carriers[route.family]
            if carry.marking and route.number <= MARKING_MAX:
                out.append(MARKING.format(route.number))
            if carry.sequence:
                out.append(SEQUENCE.format(route.number))
        out += [t.bird for t in self.route_scopes(route)]
        if self.generation is not None:
            out.append(GENERATION.format(self.generation))
            if route.is_catch_all:
                out.append(COUNT.format(self.counts[route.family]))
        return out

    def sent_to(self, targets: frozenset[Target], route: FlowRule) -> bool:
        scopes = self.route_scopes(route)
        return not scopes or bool(targets & set(scopes))

    def switch_views(self) -> tuple[SwitchView, ...]:
        scoping = self.encoding.scoping
        used = sorted({t for ts in self.scopes.values() for t in ts})
        views = []
        for switch in scoping.switches:
            mine = scoping.switch_targets(switch)
            counts = ()
            if self.generation is not None:
                counts = tuple(
                    (NET_TYPES[family], COUNT.format(sum(self.sent_to(mine, r) for r in routes)))
                    for family, routes in self.routes.items()
                )
            views.append(SwitchView(
                name=switch.name,
                filter=switch.filter_name,
                address=str(switch.address),
                scopes=scoping.label(mine) or "none",
                others=tuple(t.bird for t in used if t not in mine),
                mine=tuple(t.bird for t in sorted(mine)),
                counts=counts,
            ))
        return tuple(views)


def stamp(
    policies: list[Policy],
    plans: list[list[FlowRule]],
    encoding: Encoding = SLIDES,
    generation: int | None = None,
) -> Stamps:
    """The stamps for one file; generation None leaves generations and counts out."""
    if not encoding.generation:
        generation = None
    scopes = {}
    for policy, routes in zip(policies, plans):
        for route in routes:
            found = encoding.scoping.scopes_of(route, policy.chain)
            if found:
                scopes[route.matches_key()] = found
    return Stamps(
        encoding=encoding,
        generation=generation,
        carriers={p.family: carriers(encoding.numbering, r) for p, r in zip(policies, plans)},
        counts={p.family: len(r) for p, r in zip(policies, plans)},
        scopes=scopes,
        routes={p.family: tuple(r) for p, r in zip(policies, plans)},
    )


def communities(route: FlowRule, stamps: Stamps | None = None) -> list[str]:
    """The extended communities of a route; without stamps, the slides' encoding."""
    if stamps is not None:
        return stamps.communities(route)
    out = []
    if route.verdict is Verdict.DROP:
        out.append(RATE_ZERO)
    if not route.is_policy:
        out.append(MARKING.format(route.number))
    return out


def route_view(route: FlowRule, chain: str, stamps: Stamps | None = None) -> RouteView:
    if route.is_policy:
        label = f"{chain} policy {route.verdict.value}"
    else:
        label = f"{chain} {route.number}"
    return RouteView(
        word=route.family.bird_word,
        components=tuple(f"{word} {text}" for word, text in components(route)),
        communities=tuple(communities(route, stamps)),
        label=label,
        origin=_inert(route.origin),
        comment="" if route.is_policy else _inert(route.comment),
        number=route.number,
        verdict=route.verdict.value,
    )


def route_json(route: FlowRule, chain: str, stamps: Stamps | None = None) -> dict:
    """One route for --json: what it carries, in BIRD's words and in FRR's."""
    view = route_view(route, chain, stamps)
    return {
        "family": route.family.afi,
        "chain": chain,
        "rule": route.number if not route.is_policy else None,
        "policy": route.is_policy,
        "verdict": route.verdict.value,
        "components": {word: text for word, text in components(route)},
        "communities": list(view.communities),
        "scopes": [str(t) for t in stamps.route_scopes(route)] if stamps else [],
        "frr": frr_match(route),
        "bird": f"route {view.word} {{ "
        + "".join(f"{c}; " for c in view.components)
        + "} { "
        + "".join(f"bgp_ext_community.add({ec}); " for ec in view.communities)
        + "};",
        "origin": route.origin,
        "comment": route.comment if not route.is_policy else "",
    }


def _inert(text: str) -> str:
    """Text safe inside a BIRD `#` comment: one line of printable characters."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def bird_string(text: str) -> str:
    """A BIRD string literal holding text (the `bird_string` filter for templates).

    BIRD's strings end at the next double quote and know no escapes, so quotes and
    backslashes become apostrophes and slashes, and the rest is made inert.
    """
    return '"' + _inert(str(text)).replace('"', "'").replace("\\", "/") + '"'


def environment(templates: Path | None = None) -> jinja2.Environment:
    if templates is not None:
        loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(templates))
    else:
        loader = jinja2.FileSystemLoader(str(templates_dir()))
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["bird_string"] = bird_string
    return env


def render(
    policies: list[Policy],
    tables: dict[Family, str],
    source: str,
    templates: Path | None = None,
    receiver: Receiver = RECEIVERS["frr"],
    plans: list[list[FlowRule]] | None = None,
    stamps: Stamps | None = None,
) -> str:
    """The complete file: one `protocol static` block per family that has a chain.

    Without stamps it is the slides' encoding; with them, the numbering, generation, scopes and
    per-switch export filters they hold.
    """
    if plans is None:
        plans = [plan(p, receiver) for p in policies]
    blocks = []
    for policy, routes in zip(policies, plans):
        views = tuple(route_view(r, policy.chain, stamps) for r in routes)
        blocks.append(
            BlockView(
                name=f"flowseg{policy.family.value}",
                family=policy.family,
                table=tables[policy.family],
                chain=policy.chain,
                default=policy.default.value,
                rule_count=len(policy.rules),
                routes=views,
                skipped=tuple(_inert(s) for s in policy.skipped),
                numbering=numbering_note(stamps, policy.family),
            )
        )
    try:
        text = environment(templates).get_template("flowspec.conf.j2").render(
            source=_inert(source),
            blocks=blocks,
            receiver=receiver.name,
            generation=stamps.generation if stamps else None,
            filters=stamps.switch_views() if stamps else (),
        )
    except jinja2.TemplateError as exc:
        where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise TemplateFailed(f"template{where}: {exc}; fix the template or drop --templates")
    return text.rstrip("\n") + "\n"


def numbering_note(stamps: Stamps | None, family: Family) -> str:
    """The block header's note on rule numbers; none for the slides' marking alone."""
    if stamps is None or stamps.carriers[family] == Carriers(True, False):
        return ""
    return stamps.carriers[family].describe()


def previous_generation(old: bytes | None) -> int | None:
    """The generation of the file in force: its header's, else its routes' route target."""
    if not old:
        return None
    found = GENERATION_LINE.search(old) or GENERATION_RT.search(old)
    return int(found.group(1)) if found else None


def render_stamped(
    policies: list[Policy],
    tables: dict[Family, str],
    source: str,
    templates: Path | None,
    receiver: Receiver,
    plans: list[list[FlowRule]],
    encoding: Encoding,
    old: bytes | None,
) -> tuple[str, Stamps]:
    """The file and its stamps; the generation persists through the file itself.

    The policy is rendered with the generation of the file in force first: the same policy
    gives the same bytes, so nothing is rewritten and BIRD is not reloaded. Any difference
    makes it the next generation (after 2^32 - 1 comes 1 again; fs-inject only asks that a
    switch holds one generation, never which is newer).
    """
    before = previous_generation(old) if encoding.generation else None
    generation = before or 1
    stamps = stamp(policies, plans, encoding, generation)
    text = render(policies, tables, source, templates, receiver, plans, stamps)
    if before is not None and text.encode() != old:
        stamps = stamp(policies, plans, encoding, before % RT_VALUE_MAX + 1)
        text = render(policies, tables, source, templates, receiver, plans, stamps)
    return text, stamps


def count_routes(policies: list[Policy], receiver: Receiver = RECEIVERS["frr"]) -> int:
    return sum(len(plan(p, receiver)) for p in policies)


BIRD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_table_name(name: str) -> str:
    if not BIRD_NAME.match(name):
        raise UnsupportedRule(f"table name {name!r} is not a BIRD symbol; use letters, digits, _")
    return name


def check_path(path: Path) -> Path:
    """A path that goes into BIRD text (an include) must stay one inert string."""
    text = str(path)
    if any(ch in text for ch in '"\n\r\0\\') or not text.isprintable():
        raise UnsupportedRule(f"path {text!r} holds a quote, backslash or control character")
    return path
