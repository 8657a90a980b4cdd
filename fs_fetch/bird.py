"""FlowRules to BIRD 2 `route flow4` / `route flow6` text, through the Jinja2 templates.

Checked against BIRD 2.0.12 (Debian 12) and what FRR 8.4.4 makes of it (see
shared/docs/flowspec-wire-facts.md). The encoding is the slides' one:

- rule N (its FORWARD position) carries traffic-marking N, `(generic, 0x80090000, N)`,
  RFC 8955 section 7.5; a DROP rule also carries traffic-rate 0, `(generic, 0x80060000, 0x0)`,
  section 7.3;
- the chain's policy is the catch-all route (src and dst 0/0), with traffic-rate 0 when the
  policy is DROP and no community when it is ACCEPT.

Numeric components are written only in the grammar that survives FRR's text, where the only
AND is the one inside a range (wire facts 2.2): an OR-list of `v`, `a..b`, `<= v` (first) and
`>= v` (last). FRR resets the whole session on a component with more than 5 operator pairs
(wire facts 2.5), so longer lists become several routes with the same number and verdict.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from flowseg import templates_dir
from flowseg.errors import FlowsegError, UnsupportedRule
from flowseg.model import PORT_MAX, Family, FlowRule, Intervals, Policy, Verdict

log = logging.getLogger(__name__)

MARKING = "(generic, 0x80090000, 0x{:x})"
RATE_ZERO = "(generic, 0x80060000, 0x0)"
# The slides carry the rule number in traffic-marking, whose meaningful part is 6 bits.
MARKING_MAX = 63
# FRR 8.4.4 (Debian) and FRR >= 10.7 reset the session past 5 operator pairs per component.
FRR_MAX_PAIRS = 5


class TemplateFailed(FlowsegError):
    exit_code = 3


@dataclass(frozen=True)
class RouteView:
    """What the route template sees: only strings that fs-fetch built from typed values."""

    word: str
    components: tuple[str, ...]
    communities: tuple[str, ...]
    label: str
    origin: str


@dataclass(frozen=True)
class BlockView:
    name: str
    family: Family
    table: str
    chain: str
    default: str
    rule_count: int
    routes: tuple[RouteView, ...]


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


def split_for_receiver(intervals: Intervals, top: int, max_pairs: int) -> list[Intervals]:
    """Cut an OR-list into pieces of at most max_pairs operator pairs each."""
    if not intervals:
        return [()]
    pieces: list[list] = [[]]
    used = 0
    for iv, (_, pairs) in zip(intervals, numeric_terms(intervals, top)):
        if used + pairs > max_pairs and pieces[-1]:
            pieces.append([])
            used = 0
        pieces[-1].append(iv)
        used += pairs
    return [tuple(p) for p in pieces]


def routes_for(rule: FlowRule, max_pairs: int = FRR_MAX_PAIRS) -> list[FlowRule]:
    """The routes that carry one rule: one, or several when a port list is too long for FRR."""
    out = []
    for sport in split_for_receiver(rule.sport, PORT_MAX, max_pairs):
        for dport in split_for_receiver(rule.dport, PORT_MAX, max_pairs):
            out.append(rule.with_ports(sport, dport))
    return out


def plan(policy: Policy) -> list[FlowRule]:
    """Every route of one family, rules first in order, the policy's catch-all last.

    BGP keeps one route per NLRI: a later rule with the same match as an earlier one can never
    match a packet in iptables either (first match wins), so it is left out with a warning.
    """
    routes: list[FlowRule] = []
    seen: dict[tuple, int] = {}
    for rule in [*policy.rules, policy.policy_rule()]:
        if not rule.is_policy and rule.number > MARKING_MAX:
            raise UnsupportedRule(
                f"{policy.chain} rule {rule.number}: traffic-marking carries rule numbers "
                f"1-{MARKING_MAX} only; shorten the chain to {MARKING_MAX} rules"
            )
        for route in routes_for(rule):
            key = route.matches_key()
            if key in seen:
                what = "the policy" if route.is_policy else f"rule {route.number}"
                log.warning(
                    "%s %s: same match as rule %d, which always wins; not announced",
                    policy.chain, what, seen[key],
                )
                continue
            seen[key] = route.number
            routes.append(route)
    return routes


def route_view(route: FlowRule, chain: str) -> RouteView:
    comps = [f"dst {route.dst}", f"src {route.src}"]
    if route.protocol is not None:
        word = "proto" if route.family is Family.V4 else "next header"
        comps.append(f"{word} {route.protocol}")
    if route.dport:
        comps.append(f"dport {numeric_text(route.dport, PORT_MAX)}")
    if route.sport:
        comps.append(f"sport {numeric_text(route.sport, PORT_MAX)}")
    communities = []
    if route.verdict is Verdict.DROP:
        communities.append(RATE_ZERO)
    if not route.is_policy:
        communities.append(MARKING.format(route.number))
    if route.is_policy:
        label = f"{chain} policy {route.verdict.value}"
    else:
        label = f"{chain} {route.number}"
    return RouteView(
        word=route.family.bird_word,
        components=tuple(comps),
        communities=tuple(communities),
        label=label,
        origin=_inert(route.origin),
    )


def _inert(text: str) -> str:
    """Text safe inside a BIRD `#` comment: one line of printable characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def environment(templates: Path | None = None) -> jinja2.Environment:
    if templates is not None:
        loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(templates))
    else:
        loader = jinja2.FileSystemLoader(str(templates_dir()))
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(
    policies: list[Policy],
    tables: dict[Family, str],
    source: str,
    templates: Path | None = None,
) -> str:
    """The complete file: one `protocol static` block per family that has a chain."""
    blocks = []
    for policy in policies:
        routes = plan(policy)
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
            )
        )
    try:
        text = environment(templates).get_template("flowspec.conf.j2").render(
            source=_inert(source), blocks=blocks
        )
    except jinja2.TemplateError as exc:
        where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise TemplateFailed(f"template{where}: {exc}; fix the template or drop --templates")
    return text.rstrip("\n") + "\n"


def count_routes(policies: list[Policy]) -> int:
    return sum(len(plan(p)) for p in policies)



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
