"""`make demo`: the whole flowseg pipeline in a lab of network namespaces, shown step by step.

Builds a controller (BIRD 2), a switch (FRR bgpd) and two hosts, puts the slides' policy and
then a richer one on the controller, runs fs-fetch and fs-inject, shows each side, and proves
with real packets which flows pass. Everything is torn down at the end, also on failure.
Needs root; `make demo` installs what is missing first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.panel import Panel  # noqa: E402
from rich.table import Table  # noqa: E402

from flowseg.lab import Lab, missing_requirements  # noqa: E402
from flowseg.scenario import (  # noqa: E402
    RICH_PROBES,
    command,
    describe,
    fetch,
    inject,
    load_policy,
    reset_policy,
)
from fs_inject.frr import read_routes  # noqa: E402

# Wide enough for the probe table when make pipes the output (rich then assumes 80 columns).
console = Console(width=None if sys.stdout.isatty() else 110)


def show_text(title: str, text: str) -> None:
    console.print(Panel(text.rstrip() or "(empty)", title=title, title_align="left",
                        expand=False))


def show_frr(lab: Lab) -> None:
    table = Table(title="FRR on the switch: show bgp ipv4|ipv6 flowspec detail json",
                  title_justify="left")
    table.add_column("family")
    table.add_column("match")
    table.add_column("extended communities")
    for fam in (4, 6):
        text = lab.vtysh(f"show bgp ipv{fam} flowspec detail json").stdout
        for route in read_routes(text):
            table.add_row(f"IPv{fam}", route.describe(), " ".join(route.ecomlist) or "-")
    console.print(table)


def show_switch(lab: Lab) -> None:
    for cmd in ("iptables", "ip6tables"):
        out = lab.run("sw", cmd, "-L", "FLOWSPEC", "-n", "--line-numbers").stdout
        fwd = lab.run("sw", cmd, "-S", "FORWARD").stdout
        show_text(f"switch: {cmd} -S FORWARD / -L FLOWSPEC", fwd + "\n" + out)


def step(text: str) -> None:
    console.rule(f"[bold]{text}")


def run_demo(lab: Lab) -> int:
    step("1. The slides' case: FORWARD policy DROP, 1 ACCEPT 2.0.0.1 -> 1.0.0.1")
    load_policy(lab, "slides.sh")
    show_text("controller: iptables -L FORWARD -n --line-numbers",
              lab.run("ctl", "iptables", "-L", "FORWARD", "-n", "--line-numbers").stdout)
    res = fetch(lab)
    show_text("fs-fetch (controller)", res.stderr)
    show_text("BIRD: show route table flowtab4 all",
              lab.birdc("show", "route", "table", "flowtab4", "all").stdout)
    lab.wait_frr_routes(4, 2)
    show_frr(lab)
    res = inject(lab)
    show_text("fs-inject --once (switch)", res.stderr)
    show_switch(lab)

    step("2. A richer policy: tcp/udp/icmp, ports, ranges, lists, DROPs between ACCEPTs, IPv6")
    reset_policy(lab)
    load_policy(lab, "rich.sh")
    load_policy(lab, "rich6.sh", v6=True)
    show_text("controller: iptables -S FORWARD", lab.run("ctl", "iptables", "-S", "FORWARD").stdout)
    show_text("controller: ip6tables -S FORWARD",
              lab.run("ctl", "ip6tables", "-S", "FORWARD").stdout)
    res = fetch(lab)
    show_text("fs-fetch (controller)", res.stderr)
    lab.wait_frr_routes(4, 12)
    lab.wait_frr_routes(6, 4)
    show_frr(lab)
    res = inject(lab)
    show_text("fs-inject --once (switch)", res.stderr)
    show_switch(lab)

    step("3. Real packets through the switch")
    got = lab.probe_many([p for p, _, _ in RICH_PROBES])
    table = Table(title="probes from the hosts, through the switch's FLOWSPEC chain",
                  title_justify="left")
    for col in ("flow", "controller says", "switch did", "why", ""):
        table.add_column(col)
    bad = 0
    for (probe, want, why), arrived in zip(RICH_PROBES, got):
        ok = arrived == want
        bad += not ok
        table.add_row(
            describe(probe),
            "pass" if want else "blocked",
            "[green]pass[/]" if arrived else "[red]blocked[/]",
            why,
            "ok" if ok else "[bold red]MISMATCH[/]",
        )
    console.print(table)
    res = lab.run("sw", *command("fs-inject"), "--show")
    console.print("[bold]fs-inject --show[/]: which rules the probes hit, by controller rule")
    console.print(res.stdout)

    step("4. A second run of each command changes nothing")
    show_text("fs-fetch again", fetch(lab).stderr)
    show_text("fs-inject again", inject(lab).stderr)

    if bad:
        console.print(f"[bold red]{bad} of {len(got)} flows did not behave as the policy says")
        return 1
    console.print(f"[bold green]all {len(got)} flows behaved exactly as the controller's "
                  "chain says")
    return 0


def main() -> int:
    if os.geteuid() != 0:
        console.print("make demo needs root: it builds network namespaces")
        return 1
    missing = missing_requirements()
    if missing:
        console.print(f"missing: {', '.join(missing)}; run scripts/install-deps")
        return 1
    console.print("building the lab: controller (BIRD 2), switch (FRR bgpd), hosts h1 and h2")
    with Lab() as lab:
        console.print(f"lab {lab.name} up in {lab.setup_seconds:.1f} s; namespaces "
                      f"{', '.join(lab.namespaces.values())}")
        code = run_demo(lab)
    console.print("lab torn down: namespaces, daemons and temporary files removed")
    return code


if __name__ == "__main__":
    sys.exit(main())
