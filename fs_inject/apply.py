"""fs-inject's run: read FRR's routes, make each family's chain, apply it in one transaction.

run_once reads every family first and then applies, so a route that cannot be read in one
family changes nothing at all; a family refused after another went in puts that one back.
The tools are reached only through fs_inject.system.Switch; the translation is fs_inject.frr
and flowseg.iptables.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import sys
from dataclasses import dataclass, field

from flowseg.errors import ApplyFailed, FlowsegError
from flowseg.iptables import (
    ChainState,
    read_state,
    render_chain,
    render_restore,
    render_rollback,
)
from flowseg.model import Family
from fs_inject import frr, system

log = logging.getLogger("fs-inject")


class Outcome(enum.Enum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    KEPT = "kept"  # no established session: chain left as it was
    WAITING = "waiting"  # a new generation is still arriving: chain left as it was


@dataclass(frozen=True)
class Options:
    families: tuple[Family, ...]
    chain: str
    parent: str
    stateful: bool
    on_session_down: str
    dry_run: bool
    scopes: frozenset[str] = frozenset()
    verify_text: bool = True


@dataclass
class Plan:
    family: Family
    lines: list[str]
    restore: str | None
    repaired: int = 0
    waiting: str | None = None
    generation: int | None = None
    state: ChainState | None = None  # what was in force, to put back if a later family fails


@dataclass(frozen=True)
class Wanted:
    """The chain one family's routes make, and the log line that says what was read."""

    lines: list[str]
    generation: int | None
    summary: str


# The parts of FRR's dumps that change while the routes do not: each route's age.
ROUTE_AGE_JSON = re.compile(r'"time":"[^"\\]*"')
ROUTE_AGE_TEXT = re.compile(r"^\treceived for .*$", re.MULTILINE)


def dump_key(family: Family, routes_text: str, detail_text: str | None) -> str:
    """A digest of what the chain is made from: the dumps without the routes' ages (which
    nothing reads), so that equal keys make equal chains."""
    digest = hashlib.sha256(f"IPv{family.value}\0".encode())
    digest.update(ROUTE_AGE_JSON.sub('"time":""', routes_text).encode())
    if detail_text is not None:
        digest.update(b"\0" + ROUTE_AGE_TEXT.sub("", detail_text).encode())
    return digest.hexdigest()


def plan_family(switch: system.Switch, family: Family, routes_text: str, opts: Options,
                mixed: bool, session_up: bool, detail_text: str | None = None,
                cache: dict | None = None) -> Plan:
    """The chain FRR's routes make and the iptables-restore input that installs it.

    cache (the daemon's, one entry per family) keeps the last chain made and the key of the
    dumps it was made from: when FRR's routes have not changed since, parsing and rendering
    them again (most of an unchanged poll) is skipped. The chain in force is compared as
    always.
    """
    key = dump_key(family, routes_text, detail_text) if cache is not None else None
    hit = cache.get(family) if cache is not None else None
    if hit is not None and hit[0] == key:
        wanted = hit[1]
        log.info("%s (FRR's routes as at the last poll)", wanted.summary)
    else:
        wanted = make_chain(family, routes_text, opts, mixed, session_up, detail_text)
        if isinstance(wanted, str):
            return Plan(family, [], None, waiting=wanted)
        log.info("%s", wanted.summary)
        if cache is not None:
            cache[family] = (key, wanted)
    lines = wanted.lines
    if log.isEnabledFor(logging.DEBUG):
        for line in lines:
            log.debug("wanted: %s", line)
    if opts.dry_run:
        state = read_state("", family, opts.chain, opts.parent)
    else:
        state = read_state(switch.iptables_save(family), family, opts.chain, opts.parent)
    restore = render_restore(lines, state, opts.chain, opts.parent, family)
    repaired = 0
    if restore is not None and state.rules:
        repaired = len(set(state.rules) ^ set(lines))
    return Plan(family, lines, restore, repaired, generation=wanted.generation, state=state)


def make_chain(family: Family, routes_text: str, opts: Options, mixed: bool, session_up: bool,
               detail_text: str | None) -> Wanted | str:
    """The chain the routes make, or why it must wait (a generation still arriving)."""
    routes = frr.read_family(routes_text, family, mixed=mixed) if session_up else []
    if detail_text is not None:
        frr.verify_against_text([r.route for r in routes], detail_text)
    selection = frr.select(routes, opts.scopes)
    if selection.waiting:
        return selection.waiting
    lines = render_chain(selection.entries, opts.chain, stateful=opts.stateful,
                         generation=selection.generation)
    gen = f", generation {selection.generation}" if selection.generation is not None else ""
    scope = f", {selection.out_of_scope} out of scope" if selection.out_of_scope else ""
    summary = (f"read {selection.received} flowspec routes for IPv{family.value}{gen}{scope}: "
               f"{len(lines)} rules")
    return Wanted(lines, selection.generation, summary)


def read_and_plan(switch: system.Switch, family: Family, opts: Options, up: bool,
                  cache: dict | None = None) -> Plan:
    """FRR's routes as JSON, then as text to cross-check them. Routes that change between the
    two reads make them disagree: both are read again once before the routes are refused."""
    for attempt in (1, 2):
        text = switch.flowspec_json(family) if up else ""
        detail = switch.vtysh(f"show bgp {family.afi} flowspec detail", bulk=True) \
            if up and opts.verify_text else None
        try:
            return plan_family(switch, family, text, opts, False, up, detail, cache)
        except frr.TextDisagrees:
            if attempt == 2:
                raise
            log.info("IPv%d: FRR's JSON and text disagree, routes changed between the two "
                     "reads? Reading both again", family.value)
    raise AssertionError("unreachable")


def session_state(switch: system.Switch, family: Family) -> bool:
    peers = switch.flowspec_peers(family)
    up = [p.address for p in peers if p.established]
    if not up:
        states = ", ".join(f"{p.address} {p.state}" for p in peers) or "no flowspec neighbor"
        log.warning("IPv%d flowspec: no Established session (%s)", family.value, states)
    return bool(up)


@dataclass
class Report:
    """What a run saw, for --metrics-file."""

    session: bool | None = None
    generation: int | None = None
    rules: dict[Family, int] = field(default_factory=dict)


def run_once(switch: system.Switch, opts: Options, from_text: str | None,
             report: Report | None = None, cache: dict | None = None) -> Outcome:
    """Read every family first, then apply: a bad route in one family changes nothing at all."""
    report = report if report is not None else Report()
    plans = []
    kept = False
    for family in opts.families:
        if from_text is not None:
            # The file is the whole truth: no daemon is asked anything.
            mixed = len(opts.families) > 1
            plans.append(plan_family(switch, family, from_text, opts, mixed, True))
            continue
        up = session_state(switch, family)
        report.session = up if report.session is None else report.session and up
        if not up and opts.on_session_down == "keep":
            log.warning("IPv%d %s kept as it was until a session is back "
                        "(--on-session-down flush empties it)", family.value, opts.chain)
            kept = True
            continue
        plans.append(read_and_plan(switch, family, opts, up, cache))
    if opts.dry_run:
        for p in plans:
            wait = f"# waiting: {p.waiting}\n" if p.waiting else ""
            sys.stdout.write(f"# IPv{p.family.value}\n{wait}{p.restore or ''}")
        return Outcome.UNCHANGED
    changed = waiting = False
    applied: list[Plan] = []
    for p in plans:
        if p.generation is not None:
            report.generation = p.generation
        if p.waiting:
            log.warning("IPv%d: waiting for a complete policy (%s); %s kept as it was",
                        p.family.value, p.waiting, opts.chain)
            waiting = True
            continue
        report.rules[p.family] = len(p.lines)
        if p.restore is None:
            log.info("IPv%d %s unchanged (%d rules): nothing written",
                     p.family.value, opts.chain, len(p.lines))
            continue
        try:
            switch.iptables_restore(p.family, p.restore)
        except FlowsegError as exc:
            later = [q for q in plans[plans.index(p) + 1:] if q.restore is not None]
            raise put_back(switch, applied, p, bool(later), opts, exc) from None
        applied.append(p)
        if p.repaired:
            log.warning("applied IPv%d %s: %d rules (%d rules differed from the routes, "
                        "edited by hand or a new policy)", p.family.value, opts.chain,
                        len(p.lines), p.repaired)
        else:
            log.warning("applied IPv%d %s: %d rules", p.family.value, opts.chain, len(p.lines))
        changed = True
    if changed:
        return Outcome.APPLIED
    if waiting:
        return Outcome.WAITING
    return Outcome.KEPT if kept else Outcome.UNCHANGED


class PartlyApplied(ApplyFailed):
    """A family's apply failed after another family's, and putting that one back failed too."""

    kept = False


def put_back(switch: system.Switch, applied: list[Plan], failed: Plan, later: bool,
             opts: Options, exc: FlowsegError) -> FlowsegError:
    """Undo what this run wrote, so that no family enforces a policy the others do not: the
    switch keeps the whole policy that was in force, or says it could not.

    applied are the families written before `failed`; later says whether families after it
    had something to write. An iptables-restore that failed to run to its end (killed by a
    signal, timed out) may have died after the kernel took its transaction, so the failed
    family is read again first. If it holds the new chain whole and so does every other
    family, nothing is undone; if it took its chain while families after it did not, it is
    put back with the rest.
    """
    try:
        now = read_state(switch.iptables_save(failed.family), failed.family, opts.chain,
                         opts.parent)
        took = render_restore(failed.lines, now, opts.chain, opts.parent, failed.family) is None
    except FlowsegError:
        took = False
    if took:
        log.warning("IPv%d %s holds the new policy all the same (%d rules)",
                    failed.family.value, opts.chain, len(failed.lines))
    if took and not later:
        whole = type(exc)(f"{str(exc).rstrip('.')}; all the same every family's {opts.chain} "
                          "holds the new policy")
        whole.kept = False
        return whole
    undo = [*applied, failed] if took else list(applied)
    if not undo:
        return exc
    done = []
    for p in reversed(undo):
        assert p.state is not None
        try:
            switch.iptables_restore(p.family, render_rollback(p.state, opts.chain, opts.parent))
        except FlowsegError as again:
            return PartlyApplied(
                f"{str(exc).rstrip('.')}; putting IPv{p.family.value} {opts.chain} back failed "
                f"too ({str(again).rstrip('.')}): IPv{p.family.value} may still enforce the new "
                "policy and the others the old one until a run succeeds")
        log.warning("put IPv%d %s back as it was (%d rules): IPv%d could not be applied",
                    p.family.value, opts.chain, len(p.state.rules), failed.family.value)
        done.append(f"IPv{p.family.value}")
    return type(exc)(f"{str(exc).rstrip('.')}; {' and '.join(done)} {opts.chain} put back "
                     "as it was")
