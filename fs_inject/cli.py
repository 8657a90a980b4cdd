"""fs-inject: FRR's Flow-Spec routes to the switch's FLOWSPEC chain.

Reads `show bgp ipv4|ipv6 flowspec detail json` (or --from-file), turns each route back into
an iptables rule in the controller's order and replaces the chain in one iptables-restore
transaction per family. When anything cannot be read or applied, the chain in force stays.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass

import click

from flowseg import __version__
from flowseg.errors import EXIT_CODES, FlowsegError
from flowseg.iptables import check_chain_name, read_state, render_chain, render_restore
from flowseg.logs import setup_logging
from flowseg.model import Family
from fs_inject import frr, system

log = logging.getLogger("fs-inject")


@dataclass
class Plan:
    family: Family
    lines: list[str]
    restore: str | None


def plan_family(
    switch: system.Switch,
    family: Family,
    routes_text: str,
    chain: str,
    parent: str,
    dry_run: bool,
    mixed: bool,
) -> Plan:
    rules = frr.rules_from_vtysh(routes_text, family, mixed=mixed)
    lines = render_chain(rules, chain)
    log.info("read %d flowspec routes for IPv%d: %d rules", len(rules), family.value, len(lines))
    for line in lines:
        log.debug("wanted: %s", line)
    if dry_run:
        state = read_state("", family, chain, parent)
    else:
        state = read_state(switch.iptables_save(family), family, chain, parent)
    restore = render_restore(lines, state, chain, parent, family)
    if restore is not None and state.exists and state.rules:
        changed = len(set(state.rules) ^ set(lines))
        log.info("IPv%d %s differs from the routes in %d rules", family.value, chain, changed)
    return Plan(family, lines, restore)


def run_once(
    switch: system.Switch,
    families: list[Family],
    from_text: str | None,
    chain: str,
    parent: str,
    dry_run: bool,
) -> bool:
    """Read every family first, then apply: a bad route in one family changes nothing at all."""
    plans = []
    for family in families:
        text = from_text if from_text is not None else switch.flowspec_json(family)
        mixed = from_text is not None and len(families) > 1
        plans.append(plan_family(switch, family, text, chain, parent, dry_run, mixed))
    if dry_run:
        for p in plans:
            sys.stdout.write(f"# IPv{p.family.value}\n{p.restore or ''}")
        return False
    changed = False
    for p in plans:
        if p.restore is None:
            log.info("IPv%d %s unchanged (%d rules): nothing written",
                     p.family.value, chain, len(p.lines))
            continue
        switch.iptables_restore(p.family, p.restore)
        log.warning("applied IPv%d %s: %d rules", p.family.value, chain, len(p.lines))
        changed = True
    return changed


class Stop:
    """SIGTERM/SIGINT set a flag; the loop exits between applies, never in the middle."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, frame) -> None:
        self.requested = True


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.option("--once", is_flag=True, help="Apply once and exit (for cron).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between polls without --once.")
@click.option("--pathspace", "-N", help="FRR pathspace: vtysh -N NAME.")
@click.option("--family", type=click.Choice(["ipv4", "ipv6", "both"]), default="both",
              show_default=True, help="Which flowspec tables to read and which chains to write.")
@click.option("--chain", default="FLOWSPEC", show_default=True, help="Chain fs-inject owns.")
@click.option("--parent", default="FORWARD", show_default=True,
              help="Built-in chain that jumps to --chain, first.")
@click.option("--from-file", type=click.File("r"),
              help="Read vtysh detail JSON from FILE or - instead of running vtysh.")
@click.option("--dry-run", is_flag=True, help="Print the iptables-restore input; touch nothing.")
@click.option("-v", "--verbose", count=True, help="More log (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="fs-inject")
def main(once, interval, pathspace, family, chain, parent, from_file, dry_run, verbose, quiet,
         debug) -> None:
    """Install FRR's Flow-Spec routes as the switch's FLOWSPEC iptables chain."""
    setup_logging("fs-inject", verbose, quiet, debug)
    try:
        check_chain_name(chain)
        check_chain_name(parent)
    except FlowsegError as exc:
        raise click.BadParameter(str(exc)) from None
    families = {"ipv4": [Family.V4], "ipv6": [Family.V6]}.get(family, [Family.V4, Family.V6])
    switch = system.Switch(pathspace)
    from_text = from_file.read() if from_file is not None else None
    if once or dry_run or from_text is not None:
        try:
            run_once(switch, families, from_text, chain, parent, dry_run)
        except FlowsegError as exc:
            if debug:
                log.exception("failed")
            click.echo(f"fs-inject: {str(exc).rstrip('.')}. {chain} kept as it was.", err=True)
            sys.exit(exc.exit_code)
        return

    stop = Stop()
    log.info("polling FRR every %g s", interval)
    while not stop.requested:
        try:
            run_once(switch, families, None, chain, parent, False)
        except FlowsegError as exc:
            log.error("%s; %s kept as it was, retrying in %g s", exc, chain, interval)
        deadline = time.monotonic() + interval
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(min(0.2, interval))
    log.info("stopping")


if __name__ == "__main__":
    main()
