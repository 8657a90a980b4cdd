"""`fs-fetch --show`: the policy BIRD is serving, read from the file in force and from BIRD.

The generated file is our own format (templates/), so it is read back by its comment lines:
`# Generation: G` in the header, `# <chain> N: <iptables rule>` before each route. BIRD's side
is `birdc show route table <table> count` and the state of every BGP protocol.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from flowseg.errors import FlowsegError
from flowseg.run import run

ROUTE = re.compile(r"^\s*route (flow4|flow6) \{ (.*?) \} \{(.*)\};\s*$")
LABEL = re.compile(r"^\s*# (\S+) (\d+|policy \S+)(?:: (.*))?$")
GENERATION = re.compile(r"^# Generation: (\d+)$", re.M)
COMMUNITY = re.compile(r"bgp_ext_community\.add\((\(.*?\))\);")


@dataclass(frozen=True)
class Served:
    family: int
    rule: str
    match: str
    communities: str
    origin: str


def routes_in_file(text: str) -> list[Served]:
    out = []
    label, origin = "?", ""
    for line in text.splitlines():
        m = LABEL.match(line)
        if m:
            label, origin = m.group(2), m.group(3) or ""
            continue
        m = ROUTE.match(line)
        if m:
            fam = 4 if m.group(1) == "flow4" else 6
            comms = " ".join(COMMUNITY.findall(m.group(3)))
            out.append(Served(fam, label.split()[0], m.group(2).strip(), comms, origin))
    return out


def bird_counts(socket: str | None, tables: dict) -> dict:
    counts: dict = {}
    argv = ["birdc", *(["-s", socket] if socket else [])]
    for fam, table in tables.items():
        res = run([*argv, "show", "route", "table", table, "count"])
        m = re.search(r"(\d+) of (\d+) routes", res.stdout)
        counts[f"IPv{fam.value} {table}"] = int(m.group(1)) if m else res.first_error_line()
    res = run([*argv, "show", "protocols"])
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "BGP":
            counts[f"BGP {parts[0]}"] = " ".join(parts[5:]) or parts[3]
    return counts


def show(bird_conf: Path, socket: str | None, tables: dict, as_json: bool) -> None:
    try:
        text = bird_conf.read_text()
    except OSError as exc:
        raise FlowsegError(f"{bird_conf}: {exc.strerror}; nothing written yet?") from None
    served = routes_in_file(text)
    gen = GENERATION.search(text)
    try:
        counts = bird_counts(socket, tables)
    except FlowsegError as exc:
        counts = {"BIRD": str(exc)}
    if as_json:
        json.dump({"file": str(bird_conf), "generation": int(gen.group(1)) if gen else None,
                   "bird": counts, "routes": [asdict(r) for r in served]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    title = f"{bird_conf}: {len(served)} routes" + (f", generation {gen.group(1)}" if gen else "")
    table = Table(title=title, title_justify="left")
    for col in ("family", "rule", "match", "communities"):
        table.add_column(col)
    for r in served:
        table.add_row(f"IPv{r.family}", r.rule, r.match, r.communities)
    console.print(table)
    state = Table(title="BIRD", title_justify="left")
    state.add_column("what")
    state.add_column("state")
    for key, value in counts.items():
        state.add_row(key, str(value))
    console.print(state)
