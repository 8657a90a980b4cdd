"""`fs-inject --show`: the installed FLOWSPEC rules with their counters, by controller rule.

Reads `iptables-save -c -t filter` (counters as `[packets:bytes]` in front of each rule) and
finds each rule's controller number in the comment fs-inject gave it (`flowseg N <id>`).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass

from flowseg.model import Family

COUNTED = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")
LABEL = re.compile(r'--comment "?flowseg (\S+)(?: g(\d+))?(?: rate (\S+))? ([0-9a-f]{12})"?')


@dataclass(frozen=True)
class Installed:
    family: int
    position: int
    rule: str  # controller rule number, "policy" or "stateful"
    verdict: str
    match: str
    packets: int
    bytes: int
    rule_id: str
    generation: int | None = None


def installed(saved: str, family: Family, chain: str) -> list[Installed]:
    out = []
    generation = None
    for line in saved.splitlines():
        m = COUNTED.match(line.strip())
        if not m or m.group(3) != chain:
            continue
        packets, nbytes, body = int(m.group(1)), int(m.group(2)), m.group(4)
        label = LABEL.search(body)
        verdict = body.rsplit("-j ", 1)[-1].strip()
        match = re.sub(r' ?-m comment --comment ("[^"]*"|\S+)', "", body)
        match = match.rsplit(" -j ", 1)[0].strip() or "(everything)"
        if label:
            name, rid = label.group(1), label.group(4)
            if label.group(2):
                generation = int(label.group(2))
        else:
            name, rid = "stateful" if "ctstate" in body else "?", ""
        out.append(Installed(family.value, len(out) + 1, name, verdict, match, packets,
                             nbytes, rid))
    if generation is not None:
        out = [Installed(**{**asdict(r), "generation": generation}) for r in out]
    return out


def show(switch, families, chain: str, as_json: bool) -> None:
    rows: list[Installed] = []
    for family in families:
        rows.extend(installed(switch.iptables_save(family, counters=True), family, chain))
    if as_json:
        json.dump([asdict(r) for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    gens = sorted({f"IPv{r.family} generation {r.generation}" for r in rows if r.generation})
    title = f"{chain}: installed rules and counters" + (f" ({', '.join(gens)})" if gens else "")
    table = Table(title=title, title_justify="left")
    for col, justify in (("family", "left"), ("#", "right"), ("rule", "right"),
                         ("verdict", "left"), ("match", "left"), ("packets", "right"),
                         ("bytes", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(f"IPv{r.family}", str(r.position), r.rule, r.verdict, r.match,
                      str(r.packets), str(r.bytes))
    Console(width=None if sys.stdout.isatty() else 120).print(table)
