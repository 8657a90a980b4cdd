"""FlowRules to BIRD 2 `route flow4` / `route flow6` text, through the Jinja2 templates.

Checked against BIRD 2.0.12 (Debian 12) and what FRR 8.4.4 makes of it (see
shared/docs/flowspec-wire-facts.md). The encoding is the slides' one:

- rule N (its FORWARD position) carries traffic-marking N, `(generic, 0x80090000, N)`,
  RFC 8955 section 7.5; a DROP rule also carries traffic-rate 0, `(generic, 0x80060000, 0x0)`,
  section 7.3;
- the chain's policy is the catch-all route (src and dst 0/0), with traffic-rate 0 when the
  policy is DROP and no community when it is ACCEPT.

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
from flowseg.errors import FlowsegError, UnsupportedRule
from flowseg.model import PORT_MAX, PROTO_MAX, Family, FlowRule, Intervals, Policy, Verdict

log = logging.getLogger(__name__)

MARKING = "(generic, 0x80090000, 0x{:x})"
RATE_ZERO = "(generic, 0x80060000, 0x0)"
# The slides carry the rule number in traffic-marking, whose meaningful part is 6 bits.
MARKING_MAX = 63
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
    if not route.is_policy and not 1 <= route.number <= MARKING_MAX:
        raise UnsupportedRule(
            f"{what}: traffic-marking carries rule numbers 1-{MARKING_MAX} only; shorten "
            f"the chain to {MARKING_MAX} rules"
        )


def plan(policy: Policy, receiver: Receiver = RECEIVERS["frr"]) -> list[FlowRule]:
    """Every route of one family, rules first in order, the policy's catch-all last.

    BGP keeps one route per NLRI: a later rule with the same match as an earlier one can never
    match a packet in iptables either (first match wins), so it is left out with a warning.
    """
    routes: list[FlowRule] = []
    seen: dict[tuple, int] = {}
    for rule in [*policy.rules, policy.policy_rule()]:
        for route in routes_for(rule, receiver, policy.chain):
            key = route.matches_key()
            if key in seen:
                what = "the policy" if route.is_policy else f"rule {route.number}"
                log.warning(
                    "%s %s: same match as rule %d, which always wins; not announced",
                    policy.chain, what, seen[key],
                )
                continue
            lint(route, receiver, policy.chain)
            seen[key] = route.number
            routes.append(route)
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


def communities(route: FlowRule) -> list[str]:
    out = []
    if route.verdict is Verdict.DROP:
        out.append(RATE_ZERO)
    if not route.is_policy:
        out.append(MARKING.format(route.number))
    return out


def route_view(route: FlowRule, chain: str) -> RouteView:
    if route.is_policy:
        label = f"{chain} policy {route.verdict.value}"
    else:
        label = f"{chain} {route.number}"
    return RouteView(
        word=route.family.bird_word,
        components=tuple(f"{word} {text}" for word, text in components(route)),
        communities=tuple(communities(route)),
        label=label,
        origin=_inert(route.origin),
        comment="" if route.is_policy else _inert(route.comment),
        number=route.number,
        verdict=route.verdict.value,
    )


def route_json(route: FlowRule, chain: str) -> dict:
    """One route for --json: what it carries, in BIRD's words and in FRR's."""
    view = route_view(route, chain)
    return {
        "family": route.family.afi,
        "chain": chain,
        "rule": route.number if not route.is_policy else None,
        "policy": route.is_policy,
        "verdict": route.verdict.value,
        "components": {word: text for word, text in components(route)},
        "communities": list(view.communities),
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
) -> str:
    """The complete file: one `protocol static` block per family that has a chain."""
    if plans is None:
        plans = [plan(p, receiver) for p in policies]
    blocks = []
    for policy, routes in zip(policies, plans):
        views = tuple(route_view(r, policy.chain) for r in routes)
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
            )
        )
    try:
        text = environment(templates).get_template("flowspec.conf.j2").render(
            source=_inert(source), blocks=blocks, receiver=receiver.name
        )
    except jinja2.TemplateError as exc:
        where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise TemplateFailed(f"template{where}: {exc}; fix the template or drop --templates")
    return text.rstrip("\n") + "\n"


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
