"""fs-fetch: the controller's FORWARD chain to BIRD 2 Flow-Spec routes.

Reads the filter table (iptables-save, ip6tables-save, or --from-file), translates the chain
into routes, writes the file that bird.conf includes, checks it and reloads BIRD. The file in
force stays in force until a complete, valid replacement has been accepted by BIRD.
"""

from __future__ import annotations

import logging
import socket
import sys
import tempfile
from pathlib import Path

import click

from flowseg import __version__
from flowseg.errors import EXIT_CODES, BadInput, FlowsegError
from flowseg.iptables import check_chain_name, parse_policy, split_families
from flowseg.logs import setup_logging
from flowseg.model import Family, Policy
from fs_fetch import bird, system

log = logging.getLogger("fs-fetch")


def read_policies(text: str, chain: str, families: list[Family]) -> list[Policy]:
    tables = {t.family: t for t in split_families(text)}
    policies = []
    for family in families:
        if family in tables:
            policies.append(parse_policy(tables[family], chain))
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
) -> bool:
    """One fs-fetch run; returns whether BIRD got a new configuration."""
    policies = read_policies(text, chain, families)
    for p in policies:
        log.info(
            "read %d rules from IPv%d %s, policy %s",
            len(p.rules), p.family.value, p.chain, p.default.value,
        )
    new = bird.render(policies, tables, source, templates).encode()
    routes = bird.count_routes(policies)
    if dry_run:
        sys.stdout.write(new.decode())
        return False

    old = system.read_file(bird_conf)
    if old == new:
        log.info("%s unchanged (%d routes): BIRD not reloaded", bird_conf, routes)
        return False

    with tempfile.TemporaryDirectory(prefix="fs-fetch-") as tmp:
        candidate = Path(tmp) / bird_conf.name
        candidate.write_bytes(new)
        controller.bird_check(candidate, tables)

    system.write_atomic(bird_conf, new)
    log.info("wrote %s: %d routes", bird_conf, routes)
    if not reload:
        return False
    try:
        reply = controller.configure()
    except FlowsegError:
        system.restore(bird_conf, old)
        log.info("put the previous %s back", bird_conf)
        raise
    log.info("birdc configure: %s", reply or "ok")
    return True


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
    type=click.File("r"),
    help="Read iptables-save (and ip6tables-save) text from FILE or - instead of running them.",
)
@click.option(
    "--templates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Use the Jinja2 templates in DIR instead of the installed ones.",
)
@click.option("--dry-run", is_flag=True, help="Print the file it would write; touch nothing.")
@click.option("--no-reload", is_flag=True, help="Write the file but do not reload BIRD.")
@click.option("-v", "--verbose", count=True, help="More log (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
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
    dry_run: bool,
    no_reload: bool,
    verbose: int,
    quiet: bool,
    debug: bool,
) -> None:
    """Translate the controller's FORWARD chain into BIRD 2 Flow-Spec routes and reload BIRD."""
    setup_logging("fs-fetch", verbose, quiet, debug)
    try:
        check_chain_name(chain)
        for name in (table4, table6):
            bird.check_table_name(name)
        bird.check_path(bird_conf)
        families = {"ipv4": [Family.V4], "ipv6": [Family.V6]}.get(family, [Family.V4, Family.V6])
        controller = system.Controller(bird_socket)
        if from_file is not None:
            text = from_file.read()
            source = f"file {from_file.name}, table filter, chain {chain}"
        else:
            text = "".join(controller.iptables_save(f) for f in families)
            source = f"host {socket.gethostname()}, table filter, chain {chain}"
        run_fetch(
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
        )
    except FlowsegError as exc:
        if debug:
            log.exception("failed")
        click.echo(f"fs-fetch: {str(exc).rstrip('.')}. Nothing changed.", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
