"""fs-inject: FRR's Flow-Spec routes to the switch's FLOWSPEC chain.

Reads `show bgp ipv4|ipv6 flowspec detail json` (or --from-file), turns each route back into
an iptables rule in the controller's order and replaces the chain in one iptables-restore
transaction per family. When anything cannot be read or applied, the chain in force stays.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import time

import click

from flowseg import __version__, metrics
from flowseg.errors import EXIT_CODES, BadRoute, FlowsegError
from flowseg.iptables import check_chain_name
from flowseg.logs import setup_logging
from flowseg.model import Family
from fs_inject import show, system
from fs_inject.apply import Options, Outcome, Report, run_once
from fs_inject.signals import Signals

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
