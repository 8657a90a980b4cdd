"""fs-fetch: the controller's FORWARD chain to BIRD 2 Flow-Spec routes.

Reads the filter table (iptables-save, ip6tables-save, or --from-file), translates the chain
into routes, checks every route against the receiving switches' limits (--receiver), writes the
file that bird.conf includes, checks it with BIRD and reloads BIRD. The file in force stays in
force until a complete, valid replacement has been accepted by BIRD.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from flowseg import __version__
from flowseg import metrics
from flowseg.errors import EXIT_CODES, BadInput, FlowsegError
from flowseg.iptables import check_chain_name, parse_policy, split_families
from flowseg.logs import setup_logging
from flowseg.model import Family, FlowRule, Policy
from fs_fetch import bird, scopes, steps, system

log = logging.getLogger("fs-fetch")


@dataclass
class Outcome:
    """What one run did, for the summary and --json."""

    policies: list[Policy]
    plans: list[list[FlowRule]]
    path: Path
    changed: bool = False
    written: bool = False
    reloaded: bool = False
    reply: str = ""
    notes: list[str] = field(default_factory=list)
    stamps: bird.Stamps | None = None
    steps: int = 1


def read_policies(
    text: str,
    chain: str,
    families: list[Family],
    skip_unsupported: bool = False,
    force: bool = False,
) -> list[Policy]:
    tables = {t.family: t for t in split_families(text)}
    policies = []
    for family in families:
        if family in tables:
            policies.append(parse_policy(tables[family], chain, skip_unsupported, force))
    if not policies:
        raise BadInput("the input holds no filter table; give iptables-save output")
    return policies


def run_fetch(
    controller: system.Controller,
    text: str,
    source: str,
    bird_conf: Path,
    chain: str,
    tables: dict[Family, str],
    families: list[Family],
    templates: Path | None,
    dry_run: bool,
    reload: bool,
    receiver: bird.Receiver = bird.RECEIVERS["frr"],
    skip_unsupported: bool = False,
    force: bool = False,
    show_file: bool = True,
    encoding: bird.Encoding = bird.SLIDES,
) -> Outcome:
    """One fs-fetch run: read, translate and lint, render, then write, check and reload."""
    policies = read_policies(text, chain, families, skip_unsupported, force)
    for p in policies:
        log.info(
            "read %d rules from IPv%d %s, policy %s",
            len(p.rules) + len(p.skipped), p.family.value, p.chain, p.default.value,
        )
    # Every route is linted for the receiver here, before anything touches BIRD.
    plans = [bird.plan(p, receiver, encoding) for p in policies]
    old = system.read_file(bird_conf)
    text, stamps = bird.render_stamped(policies, tables, source, templates, receiver, plans,
                                       encoding, old)
    new = text.encode()
    out = Outcome(policies, plans, bird_conf, stamps=stamps)
    if stamps.generation is not None:
        log.info("policy generation %d", stamps.generation)
    routes = sum(len(p) for p in plans)
    if log.isEnabledFor(logging.DEBUG):
        for policy, planned in zip(policies, plans):
            for route in planned:
                log.debug("route %s", bird.route_json(route, policy.chain, stamps)["bird"])
    out.changed = old != new
    if dry_run:
        if show_file:
            sys.stdout.write(new.decode())
        return out

    pending = system.Pending(bird_conf)
    if not out.changed and not (reload and pending.exists()):
        log.info("%s unchanged (%d routes): BIRD not reloaded", bird_conf, routes)
        return out
    if not out.changed:
        log.warning("%s is right, but the run that wrote it stopped before BIRD confirmed it: "
                    "reloading BIRD", bird_conf)

    with tempfile.TemporaryDirectory(prefix="fs-fetch-") as tmp:
        candidate = Path(tmp) / bird_conf.name
        candidate.write_bytes(new)
        controller.bird_check(candidate, tables)

    if not reload:
        system.write_atomic(bird_conf, new)
        out.written = True
        log.info("wrote %s: %d routes", bird_conf, routes)
        return out
    # Steps when the change withdraws more than FRR takes at once (fs_fetch/steps.py); on an
    # error the file BIRD holds is put back.
    applied = steps.apply(controller, bird_conf, old, new, tables, system.write_atomic,
                          pending=pending)
    out.written = out.reloaded = True
    out.reply, out.steps = applied.reply, applied.steps
    log.info("wrote %s: %d routes", bird_conf, routes)
    log.info("birdc configure: %s", out.reply or "ok")
    return out


def metric_facts(out: Outcome | None, failed: FlowsegError | None) -> metrics.MetricFacts:
    """What the last run did, for --metrics-file (flowseg/metrics.py)."""
    if failed is not None or out is None:
        return metrics.MetricFacts(
            program="fs-fetch",
            # A run that stopped at a rule it cannot translate counts that rule.
            routes_refused=1 if failed is not None and failed.exit_code == 3 else 0,
            last_apply_time=time.time(),
            last_apply_result="failed",
        )
    return metrics.MetricFacts(
        program="fs-fetch",
        rules_installed={p.family: len(p.rules) for p in out.policies},
        routes_refused=sum(len(p.skipped) for p in out.policies),
        last_apply_time=time.time(),
        last_apply_result="applied" if out.written else "unchanged",
        generation=out.stamps.generation if out.stamps else None,
    )


def write_metrics(path: Path | None, out: Outcome | None, failed: FlowsegError | None) -> None:
    if path is None:
        return
    try:
        metrics.write_textfile(path, metrics.render(metric_facts(out, failed)))
    except OSError as exc:
        log.warning("cannot write the metrics file %s: %s", path, exc.strerror or exc)


def outcome_json(out: Outcome) -> dict:
    """The routes and what happened to them, for scripts (--json)."""
    return {
        "file": str(out.path),
        "changed": out.changed,
        "written": out.written,
        "reloaded": out.reloaded,
        "bird_reply": out.reply,
        "generation": out.stamps.generation if out.stamps else None,
        "families": [
            {
                "family": p.family.afi,
                "chain": p.chain,
                "policy": p.default.value,
                "rules_carried": len(p.rules),
                "left_out": list(p.skipped),
                "numbering": out.stamps.carriers[p.family].describe() if out.stamps else "",
                "routes": [bird.route_json(r, p.chain, out.stamps) for r in planned],
            }
            for p, planned in zip(out.policies, out.plans)
        ],
    }


def summary_lines(out: Outcome, dry_run: bool, reload: bool) -> list[str]:
    lines = []
    for p, planned in zip(out.policies, out.plans):
        lines.append(
            f"IPv{p.family.value} {p.chain}: {len(p.rules) + len(p.skipped)} rules read, "
            f"{len(p.rules)} carried, {len(p.skipped)} left out, {len(planned)} routes, "
            f"policy {p.default.value}"
        )
    if dry_run:
        state = "would change" if out.changed else "would stay as it is"
    elif out.reloaded:
        how = f" in {out.steps} steps" if out.steps > 1 else ""
        state = f"written, BIRD reconfigured{how} ({out.reply or 'ok'})"
    elif not out.changed:
        state = "unchanged, BIRD not reloaded"
    else:
        state = "written, BIRD not reloaded (--no-reload)" if not reload else "written"
    lines.append(f"{out.path}: {state}")
    return lines


def print_summary(out: Outcome, dry_run: bool, reload: bool) -> None:
    """On a terminal a small rich table; in a pipe plain `fs-fetch: ...` lines."""
    lines = summary_lines(out, dry_run, reload)
    if not sys.stderr.isatty():
        for line in lines:
            click.echo(f"fs-fetch: {line}", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fs-fetch", title_justify="left", show_edge=False)
    for name in ("family", "chain", "rules read", "carried", "left out", "routes", "policy"):
        table.add_column(name, justify="right" if name not in ("family", "chain") else "left")
    for p, planned in zip(out.policies, out.plans):
        table.add_row(
            f"IPv{p.family.value}", p.chain, str(len(p.rules) + len(p.skipped)),
            str(len(p.rules)), str(len(p.skipped)), str(len(planned)), p.default.value,
        )
    console = Console(stderr=True)
    console.print(table)
    console.print(lines[-1], markup=False, highlight=False)


def read_scoping(path: Path | None, switches: tuple[str, ...]) -> scopes.Scoping:
    """The scopes file (if any) with the --switch options on top; a bad --switch is a usage
    error, a bad file is input that cannot be read (exit 3)."""
    scoping = scopes.read_scopes(path) if path is not None else scopes.NO_SCOPING
    extra = []
    for text in switches:
        try:
            extra.append(scopes.parse_switch(text))
        except FlowsegError as exc:
            raise click.BadParameter(str(exc), param_hint="--switch") from None
    if not extra:
        return scoping
    try:
        return scoping.with_switches(extra)
    except FlowsegError as exc:
        raise click.BadParameter(str(exc), param_hint="--switch") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.option(
    "--bird-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/bird/flowspec.conf"),
    show_default=True,
    help="The file bird.conf includes; fs-fetch replaces it whole.",
)
@click.option("--bird-socket", type=click.Path(dir_okay=False), help="birdc -s PATH.")
@click.option("--table4", default="flowtab4", show_default=True, help="BIRD flow4 table.")
@click.option("--table6", default="flowtab6", show_default=True, help="BIRD flow6 table.")
@click.option("--chain", default="FORWARD", show_default=True, help="Chain to translate.")
@click.option(
    "--family",
    type=click.Choice(["ipv4", "ipv6", "both"]),
    default="both",
    show_default=True,
    help="Which filter tables to read.",
)
@click.option(
    "--from-file",
    # Bytes that are not UTF-8 (a hostile comment) become U+FFFD, as they do when fs-fetch
    # runs iptables-save itself: inert in a BIRD comment, refused anywhere else.
    type=click.File("r", errors="replace"),
    help="Read iptables-save (and ip6tables-save) text from FILE or - instead of running them.",
)
@click.option(
    "--templates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Use the Jinja2 templates in DIR instead of the installed ones.",
)
@click.option(
    "--receiver",
    type=click.Choice(sorted(bird.RECEIVERS)),
    default="frr",
    show_default=True,
    help="What the switches accept: frr (at most 5 operator pairs per component; longer "
    "lists become several routes) or rfc (no limit).",
)
@click.option(
    "--skip-unsupported",
    is_flag=True,
    help="Leave out rules flowspec cannot carry, with a warning each, instead of stopping.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --skip-unsupported: also leave out a DROP rule that shields a later ACCEPT.",
)
@click.option(
    "--numbering",
    type=click.Choice(bird.NUMBERINGS),
    default="auto",
    show_default=True,
    help="What carries rule numbers: marking (traffic-marking, rules 1-63), rt (route target "
    "65535:N), both, or auto (marking while every rule number fits, else rt).",
)
@click.option(
    "--no-generation",
    is_flag=True,
    help="Leave out the generation (65534:G) and route count (65533:C) route targets, for "
    "switches that only know the slides' encoding.",
)
@click.option(
    "--scopes",
    "scopes_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Scopes file: scope names to route targets, destination prefixes to scopes, the "
    "switches (examples/scopes.conf).",
)
@click.option(
    "--switch",
    "switches",
    multiple=True,
    metavar="NAME=ADDRESS[,SCOPE...]",
    help="A switch (its BGP protocol's name in bird.conf) and the scopes it enforces; "
    "repeatable; adds to or replaces the scopes file's [switches].",
)
@click.option(
    "--lock-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Lock held while a run writes and reloads, so two runs never interleave "
    "[default: .NAME.lock beside --bird-conf].",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the lock before giving up (exit 4).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Prometheus textfile (node_exporter's textfile collector) after every run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the translated routes as JSON.")
@click.option("--show", "show_state", is_flag=True,
              help="Print the routes of the file in force and BIRD's state (--json: as JSON).")
@click.option("--dry-run", is_flag=True, help="Print the file it would write; touch nothing.")
@click.option("--no-reload", is_flag=True, help="Write the file but do not reload BIRD.")
@click.option("-v", "--verbose", count=True, help="More log (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only (no summary).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="fs-fetch")
def main(
    bird_conf: Path,
    bird_socket: str | None,
    table4: str,
    table6: str,
    chain: str,
    family: str,
    from_file,
    templates: Path | None,
    receiver: str,
    skip_unsupported: bool,
    force: bool,
    numbering: str,
    no_generation: bool,
    scopes_file: Path | None,
    switches: tuple[str, ...],
    lock_file: Path | None,
    lock_timeout: float,
    metrics_file: Path | None,
    as_json: bool,
    show_state: bool,
    dry_run: bool,
    no_reload: bool,
    verbose: int,
    quiet: bool,
    debug: bool,
) -> None:
    """Translate the controller's FORWARD chain into BIRD 2 Flow-Spec routes and reload BIRD."""
    setup_logging("fs-fetch", verbose, quiet, debug)
    if show_state:
        from fs_fetch import show

        try:
            show.show(bird_conf, bird_socket, {Family.V4: table4, Family.V6: table6}, as_json)
        except FlowsegError as exc:
            click.echo(f"fs-fetch: {exc}", err=True)
            sys.exit(exc.exit_code)
        return
    try:
        check_chain_name(chain)
        for name in (table4, table6):
            bird.check_table_name(name)
        bird.check_path(bird_conf)
        if force and not skip_unsupported:
            raise click.UsageError("--force only makes sense with --skip-unsupported")
        families = {"ipv4": [Family.V4], "ipv6": [Family.V6]}.get(family, [Family.V4, Family.V6])
        encoding = bird.Encoding(numbering, not no_generation,
                                 read_scoping(scopes_file, switches))
        controller = system.Controller(bird_socket)
        if from_file is not None:
            text = from_file.read()
            source = f"file {from_file.name}, table filter, chain {chain}"
        else:
            text = "".join(controller.iptables_save(f) for f in families)
            source = f"host {socket.gethostname()}, table filter, chain {chain}"
        if not dry_run:
            # Held until the command returns; the leftovers of a killed run go first.
            click.get_current_context().with_resource(
                system.Lock(lock_file or system.default_lock(bird_conf), lock_timeout))
            system.clean_stale(bird_conf)
        out = run_fetch(
            controller,
            text,
            source,
            bird_conf,
            chain,
            {Family.V4: table4, Family.V6: table6},
            families,
            templates,
            dry_run,
            not no_reload,
            bird.RECEIVERS[receiver],
            skip_unsupported,
            force,
            show_file=not as_json,
            encoding=encoding,
        )
    except FlowsegError as exc:
        if debug:
            log.exception("failed")
        # After some steps of a stepped apply, something did change (fs_fetch/steps.py).
        tail = "" if getattr(exc, "partly", False) else " Nothing changed."
        click.echo(f"fs-fetch: {str(exc).rstrip('.')}.{tail}", err=True)
        if not dry_run:
            write_metrics(metrics_file, None, exc)
        sys.exit(exc.exit_code)
    if not dry_run:
        write_metrics(metrics_file, out, None)
    if as_json:
        click.echo(json.dumps(outcome_json(out), indent=2))
    if not quiet:
        print_summary(out, dry_run, not no_reload)


if __name__ == "__main__":
    main()
