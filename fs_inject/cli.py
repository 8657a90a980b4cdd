"""fs-inject: FRR's Flow-Spec routes to the switch's FLOWSPEC chain.

Reads `show bgp ipv4|ipv6 flowspec detail json` (or --from-file), turns each route back into
an iptables rule in the controller's order and replaces the chain in one iptables-restore
transaction per family. When anything cannot be read or applied, the chain in force stays.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field

import click

from flowseg import __version__, metrics
from flowseg.errors import EXIT_CODES, ApplyFailed, BadRoute, FlowsegError
from flowseg.iptables import (
    ChainState,
    check_chain_name,
    read_state,
    render_chain,
    render_restore,
    render_rollback,
)
from flowseg.logs import setup_logging
from flowseg.model import Family
from fs_inject import frr, show, system

log = logging.getLogger("fs-inject")

EXIT_APPLIED = 10
EXIT_HELP = EXIT_CODES + f"""
With --detailed-exit, --once exits 0 when nothing changed and {EXIT_APPLIED} when it applied.
A stop request (SIGTERM, SIGINT) lets an apply under way finish; a run it stops before its
apply, or whose iptables-restore it kills too, exits 128 + the signal (143, 130)."""


class RouteTarget(click.ParamType):
    """A route target as FRR prints it: ASN:N or A.B.C.D:N."""

    name = "route-target"

    def convert(self, value, param, ctx):
        m = re.fullmatch(r"(\d+|\d+\.\d+\.\d+\.\d+):(\d+)", str(value))
        if not m or int(m.group(2)) > 2**32 - 1:
            self.fail(f"{value!r} is not a route target like 65000:101", param, ctx)
        return str(value)


ROUTE_TARGET = RouteTarget()


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
            text, up = from_text, True
        else:
            up = session_state(switch, family)
            report.session = up if report.session is None else report.session and up
            if not up and opts.on_session_down == "keep":
                log.warning("IPv%d %s kept as it was until a session is back "
                            "(--on-session-down flush empties it)", family.value, opts.chain)
                kept = True
                continue
            plans.append(read_and_plan(switch, family, opts, up, cache))
            continue
        mixed = len(opts.families) > 1
        plans.append(plan_family(switch, family, text, opts, mixed, up))
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
            raise put_back(switch, applied, p, opts, exc) from None
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


def put_back(switch: system.Switch, applied: list[Plan], failed: Plan, opts: Options,
             exc: FlowsegError) -> FlowsegError:
    """Undo the families this run already applied, so that no family enforces a policy the
    others do not: the switch keeps the whole policy that was in force, or says it could not.

    An iptables-restore killed by a signal may have died after the kernel took its
    transaction: the failed family is read again, and if it holds the new chain whole, the
    others keep theirs too.
    """
    if not applied:
        return exc
    try:
        now = read_state(switch.iptables_save(failed.family), failed.family, opts.chain,
                         opts.parent)
    except FlowsegError:
        now = None
    if now is not None and render_restore(failed.lines, now, opts.chain, opts.parent,
                                          failed.family) is None:
        log.warning("IPv%d %s holds the new policy all the same (%d rules)",
                    failed.family.value, opts.chain, len(failed.lines))
        whole = type(exc)(f"{str(exc).rstrip('.')}; all the same every family's {opts.chain} "
                          "holds the new policy")
        whole.kept = False
        return whole
    done = []
    for p in reversed(applied):
        assert p.state is not None
        try:
            switch.iptables_restore(p.family, render_rollback(p.state, opts.chain, opts.parent))
        except FlowsegError as again:
            return PartlyApplied(
                f"{str(exc).rstrip('.')}; putting IPv{p.family.value} {opts.chain} back failed "
                f"too ({str(again).rstrip('.')}): IPv{p.family.value} enforces the new policy "
                "and the failed family the old one until a run succeeds")
        log.warning("put IPv%d %s back as it was (%d rules): IPv%d could not be applied",
                    p.family.value, opts.chain, len(p.state.rules), failed.family.value)
        done.append(f"IPv{p.family.value}")
    return type(exc)(f"{str(exc).rstrip('.')}; {' and '.join(done)} {opts.chain} put back "
                     "as it was")


class Signals:
    """Stop requests never cut an apply in two; SIGHUP makes the daemon poll now.

    Stop requests: SIGTERM and SIGINT, and with --once SIGHUP too (as fs-fetch). Before a run's
    first iptables-restore starts nothing has been written, and the run stops at once (Stopped,
    raised from the handler; the tool being waited for is killed). From then on the request is
    only noted: every family's transaction of the run goes through, then the command stops.
    When the request reached iptables-restore too (a signal to the whole process group) and it
    died of it, the kernel took that family's transaction whole or not at all: the chain in
    force is the old one or the complete new one, and the next run checks and repairs it.
    Between runs the daemon stops at once.
    """

    IDLE, READING, APPLYING = "idle", "reading", "applying"

    class Stopped(BaseException):
        """A stop request before the run wrote anything. A BaseException, like
        KeyboardInterrupt, so that no `except Exception` takes it for a failure."""

        def __init__(self, signum: int) -> None:
            super().__init__(signum)
            self.signum = signum

    def __init__(self, switch: system.Switch | None = None, once: bool = False) -> None:
        self.stop: int | None = None  # the first stop request's signal number
        self.poll_now = False
        self.phase = self.IDLE
        self.applying: list[Family] = []  # the families whose iptables-restore started this run
        self.current: Family | None = None  # the family whose iptables-restore runs now
        # The family being applied when a stop request came (None: it came outside an apply),
        # and the error of its iptables-restore if the request killed it too.
        self.under_way: Family | None = None
        self.cut_by: FlowsegError | None = None
        if switch is not None:
            switch.before_apply, switch.after_apply = self._applying, self._applied
        for sig in (signal.SIGTERM, signal.SIGINT, *((signal.SIGHUP,) if once else ())):
            signal.signal(sig, self._stop)
        if not once:
            signal.signal(signal.SIGHUP, self._hup)

    def __enter__(self) -> Signals:
        """One run: from here to the first iptables-restore a stop request stops it at once."""
        self.applying, self.current, self.under_way, self.cut_by = [], None, None, None
        self.phase = self.READING
        if self.stop is not None:
            self.phase = self.IDLE
            raise self.Stopped(self.stop)
        return self

    def __exit__(self, *exc) -> None:
        self.phase = self.IDLE

    def _applying(self, family: Family) -> None:
        self.phase = self.APPLYING
        self.applying.append(family)
        self.current = family

    def _applied(self, family: Family, error: FlowsegError | None) -> None:
        if error is not None and self.under_way is family and self.current is family \
                and self.cut_by is None:
            self.cut_by = error
        self.current = None

    def _stop(self, signum, frame) -> None:
        if self.stop is None:
            self.stop = signum
        if self.phase == self.READING:
            self.phase = self.IDLE
            raise self.Stopped(signum)
        if self.phase == self.APPLYING and self.under_way is None:
            self.under_way = self.current if self.current is not None else self.applying[-1]

    def _hup(self, signum, frame) -> None:
        self.poll_now = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop and not self.poll_now and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))
        self.poll_now = False

    @property
    def during_apply(self) -> bool:
        return self.under_way is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.stop).name if self.stop is not None else "a signal"

    def finished_line(self, chain: str) -> str:
        """The apply went through although a stop request came in its middle."""
        families = " and ".join(f"IPv{f.value}" for f in dict.fromkeys(self.applying))
        return (f"got {self.name} while applying IPv{self.under_way.value} {chain}: finished "
                f"the apply first ({families} {chain} complete); stopping now")

    def cut_line(self, exc: FlowsegError, chain: str, families: tuple[Family, ...]) -> str:
        """The stop request killed the iptables-restore under way too: what the chains hold.
        The families before it are in the error's own words (run_once puts them back)."""
        cut = self.under_way
        rest = " and ".join(f"IPv{f.value}" for f in families[families.index(cut) + 1:]) \
            if cut in families else ""
        rest = f"; {rest} {chain} not touched" if rest else ""
        return (f"stopped by {self.name} in the middle of the IPv{cut.value} apply "
                f"({str(exc).rstrip('.')}): IPv{cut.value} {chain} is the old chain or the "
                f"complete new one, never half{rest}. The next run checks {chain} and "
                "repairs it.")

    @property
    def cut(self) -> bool:
        """The run failed because the stop request killed the iptables-restore under way (a
        refusal is iptables-restore's own answer, reported as such, and is not this)."""
        return self.cut_by is not None


def write_metrics(path: str, switch: system.Switch, opts: Options, outcome: Outcome | None,
                  report: Report, refused: int) -> None:
    """The Prometheus textfile for this run; a failure to write it only warns."""
    counters = []
    totals: dict[tuple[Family, str], list[int]] = {}
    try:
        for family in opts.families:
            saved = switch.iptables_save(family, counters=True)
            rows = show.installed(saved, family, opts.chain)
            for row in rows:
                if row.rule in ("stateful", "?"):
                    continue
                rule = metrics.POLICY if row.rule == "policy" else int(row.rule)
                pair = totals.setdefault((family, rule), [0, 0])
                pair[0] += row.packets
                pair[1] += row.bytes
            report.rules.setdefault(family, len(rows))
    except FlowsegError as exc:
        log.warning("metrics: cannot read the counters: %s", exc)
    for (family, rule), (packets, nbytes) in totals.items():
        counters.append(metrics.RuleCounter(family, rule, packets, nbytes))
    result = {Outcome.APPLIED: "applied", None: "failed"}.get(outcome, "unchanged")
    facts = metrics.MetricFacts(
        program="fs-inject",
        rules_installed=report.rules,
        routes_refused=refused,
        last_apply_time=time.time(),
        last_apply_result=result,
        session_established=report.session,
        generation=report.generation,
        counters=counters,
    )
    try:
        metrics.write_textfile(path, metrics.render(facts))
    except OSError as exc:
        log.warning("metrics: cannot write %s: %s", path, exc)


def error_line(exc: FlowsegError, chain: str) -> str:
    if not getattr(exc, "kept", True):
        return f"fs-inject: {str(exc).rstrip('.')}; run fs-inject again once it is fixed."
    return f"fs-inject: {str(exc).rstrip('.')}. {chain} kept as it was."


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@click.option("--once", is_flag=True, help="Apply once and exit (for cron).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between polls without --once.")
@click.option("--pathspace", "-N", help="FRR pathspace: vtysh -N NAME.")
@click.option("--family", type=click.Choice(["ipv4", "ipv6", "both"]), default="both",
              show_default=True, help="Which flowspec tables to read and which chains to write.")
@click.option("--chain", default="FLOWSPEC", show_default=True, help="Chain fs-inject owns.")
@click.option("--parent", default="FORWARD", show_default=True,
              help="Built-in chain that jumps to --chain, first.")
@click.option("--stateful", is_flag=True,
              help="Accept ESTABLISHED,RELATED traffic first, so replies of allowed flows pass.")
@click.option("--on-session-down", type=click.Choice(["keep", "flush"]), default="keep",
              show_default=True,
              help="With no Established flowspec session: keep the chain, or empty it.")
@click.option("--scope", "scopes", multiple=True, type=ROUTE_TARGET, metavar="RT",
              help="Apply only routes carrying this route target (or no scope); repeatable.")
@click.option("--generation-timeout", type=click.FloatRange(min=1), default=60.0,
              show_default=True,
              help="Seconds to wait for a new policy to arrive whole before warning loudly.")
@click.option("--verify-text/--no-verify-text", default=True, show_default=True,
              help="Cross-check the JSON with vtysh's text form, which shows repeated "
                   "components the JSON hides.")
@click.option("--backend", type=click.Choice(["auto", "nft", "legacy"]), default="auto",
              show_default=True, help="iptables backend; auto: the one holding the host's rules.")
@click.option("--lock-file", default="/run/fs-inject.lock", show_default=True,
              help="Held while applying, so a cron run and the daemon never interleave.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for --lock-file before giving up (exit 4).")
@click.option("--from-file", type=click.File("r"),
              help="Read vtysh detail JSON from FILE or - instead of running vtysh.")
@click.option("--dry-run", is_flag=True, help="Print the iptables-restore input; touch nothing.")
@click.option("--show", "show_state", is_flag=True,
              help="Print the installed rules with their packet and byte counters.")
@click.option("--json", "as_json", is_flag=True, help="With --show: JSON for scripts.")
@click.option("--metrics-file", type=click.Path(dir_okay=False),
              help="Write a Prometheus textfile-collector file after every run.")
@click.option("--detailed-exit", is_flag=True,
              help=f"--once exits {EXIT_APPLIED} when it applied a change, 0 when unchanged.")
@click.option("-v", "--verbose", count=True, help="More log (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="fs-inject")
def main(once, interval, pathspace, family, chain, parent, stateful, on_session_down, scopes,
         generation_timeout, verify_text, backend, lock_file, lock_timeout, from_file, dry_run,
         show_state, as_json, metrics_file, detailed_exit, verbose, quiet, debug) -> None:
    """Install FRR's Flow-Spec routes as the switch's FLOWSPEC iptables chain."""
    setup_logging("fs-inject", verbose, quiet, debug)
    try:
        check_chain_name(chain)
        check_chain_name(parent)
    except FlowsegError as exc:
        raise click.BadParameter(str(exc)) from None
    families = {"ipv4": (Family.V4,), "ipv6": (Family.V6,)}.get(family, (Family.V4, Family.V6))
    opts = Options(families, chain, parent, stateful, on_session_down, dry_run,
                   frozenset(scopes), verify_text)
    switch = system.Switch(pathspace, backend)

    if show_state:
        try:
            show.show(switch, families, chain, as_json)
        except FlowsegError as exc:
            click.echo(f"fs-inject: {exc}", err=True)
            sys.exit(exc.exit_code)
        return

    from_text = from_file.read() if from_file is not None else None
    if once or dry_run or from_text is not None:
        report = Report()
        # A dry run writes nothing: the usual signal behaviour is right for it.
        signals = Signals(switch, once=True) if not dry_run else None
        try:
            if dry_run:
                outcome = run_once(switch, opts, from_text, report)
            else:
                with signals, system.Lock(lock_file, lock_timeout):
                    outcome = run_once(switch, opts, from_text, report)
        except Signals.Stopped as stop:
            click.echo(f"fs-inject: stopped by {signal.Signals(stop.signum).name} before "
                       f"applying anything. {chain} kept as it was.", err=True)
            sys.exit(128 + stop.signum)
        except FlowsegError as exc:
            if debug:
                log.exception("failed")
            cut = signals is not None and signals.cut
            click.echo("fs-inject: " + signals.cut_line(exc, chain, families) if cut
                       else error_line(exc, chain), err=True)
            if metrics_file and not dry_run:
                write_metrics(metrics_file, switch, opts, None, report,
                              int(isinstance(exc, BadRoute)))
            sys.exit(128 + signals.stop if cut else exc.exit_code)
        if signals is not None and signals.during_apply:
            # The run did all it had to: 0 (or 10), as fs-fetch exits 0 after an apply it
            # finished despite a stop request.
            log.warning("%s", signals.finished_line(chain))
        if metrics_file and not dry_run:
            write_metrics(metrics_file, switch, opts, outcome, report, 0)
        if detailed_exit and outcome is Outcome.APPLIED:
            sys.exit(EXIT_APPLIED)
        return

    signals = Signals(switch)
    log.info("polling FRR every %g s", interval)
    cache: dict = {}  # the last chain made per family (plan_family)
    waiting_since: float | None = None
    try:
        while not signals.stop:
            report = Report()
            outcome = None
            refused = 0
            try:
                with signals, system.Lock(lock_file, lock_timeout):
                    outcome = run_once(switch, opts, None, report, cache)
                if signals.during_apply:
                    log.warning("%s", signals.finished_line(chain))
                if outcome is not Outcome.WAITING:
                    waiting_since = None
                elif waiting_since is None:
                    waiting_since = time.monotonic()
                elif time.monotonic() - waiting_since > generation_timeout:
                    log.error("a new policy has been arriving for %.0f s and is still "
                              "incomplete; the switch enforces the previous one (check the "
                              "controller's BGP sessions and BIRD's export filters)",
                              time.monotonic() - waiting_since)
            except FlowsegError as exc:
                if signals.cut:
                    log.error("%s", signals.cut_line(exc, chain, families))
                    if metrics_file:
                        write_metrics(metrics_file, switch, opts, None, report, 0)
                    sys.exit(128 + signals.stop)
                refused = int(isinstance(exc, BadRoute))
                retry = f" Retrying in {interval:g} s." if not signals.stop else ""
                log.error("%s", error_line(exc, chain).removeprefix("fs-inject: ") + retry)
            if metrics_file:
                write_metrics(metrics_file, switch, opts, outcome, report, refused)
            signals.sleep(interval)
    except Signals.Stopped as stop:
        log.info("stopping on %s before applying anything; %s kept as it was",
                 signal.Signals(stop.signum).name, chain)
        return
    log.info("stopping on signal")


if __name__ == "__main__":
    main()
