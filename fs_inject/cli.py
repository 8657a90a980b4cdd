"""fs-inject: FRR's Flow-Spec routes to the switch's FLOWSPEC chain.

Reads `show bgp ipv4|ipv6 flowspec detail json` (or --from-file), turns each route back into
an iptables rule in the controller's order and replaces the chain in one iptables-restore
transaction per family. When anything cannot be read or applied, the chain in force stays.
"""

from __future__ import annotations

import enum
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field

import click

from flowseg import __version__, metrics
from flowseg.errors import EXIT_CODES, BadRoute, FlowsegError
from flowseg.iptables import check_chain_name, read_state, render_chain, render_restore
from flowseg.logs import setup_logging
from flowseg.model import Family
from fs_inject import frr, show, system

log = logging.getLogger("fs-inject")

EXIT_APPLIED = 10
EXIT_HELP = EXIT_CODES + f"""
With --detailed-exit, --once exits 0 when nothing changed and {EXIT_APPLIED} when it applied."""


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


def plan_family(switch: system.Switch, family: Family, routes_text: str, opts: Options,
                mixed: bool, session_up: bool, detail_text: str | None = None) -> Plan:
    routes = frr.read_family(routes_text, family, mixed=mixed) if session_up else []
    if detail_text is not None:
        frr.verify_against_text([r.route for r in routes], detail_text)
    selection = frr.select(routes, opts.scopes)
    if selection.waiting:
        return Plan(family, [], None, waiting=selection.waiting)
    lines = render_chain(selection.entries, opts.chain, stateful=opts.stateful,
                         generation=selection.generation)
    gen = f", generation {selection.generation}" if selection.generation is not None else ""
    scope = f", {selection.out_of_scope} out of scope" if selection.out_of_scope else ""
    log.info("read %d flowspec routes for IPv%d%s%s: %d rules", selection.received,
             family.value, gen, scope, len(lines))
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
    return Plan(family, lines, restore, repaired, generation=selection.generation)


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
             report: Report | None = None) -> Outcome:
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
            text = switch.flowspec_json(family) if up else ""
            detail = switch.vtysh(f"show bgp {family.afi} flowspec detail", bulk=True) \
                if up and opts.verify_text else None
            if not up and opts.on_session_down == "keep":
                log.warning("IPv%d %s kept as it was until a session is back "
                            "(--on-session-down flush empties it)", family.value, opts.chain)
                kept = True
                continue
        mixed = from_text is not None and len(opts.families) > 1
        plans.append(plan_family(switch, family, text, opts, mixed, up,
                                 detail if from_text is None else None))
    if opts.dry_run:
        for p in plans:
            wait = f"# waiting: {p.waiting}\n" if p.waiting else ""
            sys.stdout.write(f"# IPv{p.family.value}\n{wait}{p.restore or ''}")
        return Outcome.UNCHANGED
    changed = waiting = False
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
        switch.iptables_restore(p.family, p.restore)
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


class Signals:
    """SIGTERM/SIGINT: stop between applies, never in the middle; SIGHUP: poll now."""

    def __init__(self) -> None:
        self.stop = False
        self.poll_now = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hup)

    def _stop(self, signum, frame) -> None:
        self.stop = True

    def _hup(self, signum, frame) -> None:
        self.poll_now = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop and not self.poll_now and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))
        self.poll_now = False


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
        try:
            if dry_run:
                outcome = run_once(switch, opts, from_text, report)
            else:
                with system.Lock(lock_file, lock_timeout):
                    outcome = run_once(switch, opts, from_text, report)
        except FlowsegError as exc:
            if debug:
                log.exception("failed")
            click.echo(error_line(exc, chain), err=True)
            if metrics_file and not dry_run:
                write_metrics(metrics_file, switch, opts, None, report,
                              int(isinstance(exc, BadRoute)))
            sys.exit(exc.exit_code)
        if metrics_file and not dry_run:
            write_metrics(metrics_file, switch, opts, outcome, report, 0)
        if detailed_exit and outcome is Outcome.APPLIED:
            sys.exit(EXIT_APPLIED)
        return

    signals = Signals()
    log.info("polling FRR every %g s", interval)
    waiting_since: float | None = None
    while not signals.stop:
        report = Report()
        outcome = None
        refused = 0
        try:
            with system.Lock(lock_file, lock_timeout):
                outcome = run_once(switch, opts, None, report)
            if outcome is not Outcome.WAITING:
                waiting_since = None
            elif waiting_since is None:
                waiting_since = time.monotonic()
            elif time.monotonic() - waiting_since > generation_timeout:
                log.error("a new policy has been arriving for %.0f s and is still incomplete; "
                          "the switch enforces the previous one (check the controller's BGP "
                          "sessions and BIRD's export filters)", time.monotonic() - waiting_since)
        except FlowsegError as exc:
            refused = int(isinstance(exc, BadRoute))
            log.error("%s", error_line(exc, chain).removeprefix("fs-inject: ")
                      + f" Retrying in {interval:g} s.")
        if metrics_file:
            write_metrics(metrics_file, switch, opts, outcome, report, refused)
        signals.sleep(interval)
    log.info("stopping on signal")


if __name__ == "__main__":
    main()
