"""Prometheus textfile-collector output: what fs-inject or fs-fetch did, for monitoring.

A pure module. `render(facts)` turns one `MetricFacts` into text in the Prometheus text
exposition format (version 0.0.4: `# HELP` and `# TYPE` lines, then one sample per line), and
`write_textfile(path, text)` puts that text in place atomically, so that node_exporter's
textfile collector (`--collector.textfile.directory`, files named `*.prom`) never reads a half
written file. The CLIs build the facts; this module only formats and writes them.

    facts = MetricFacts(
        program="fs-inject",
        rules_installed={Family.V4: 3, Family.V6: 1},
        last_apply_time=time.time(),
        last_apply_result="applied",
        session_established=True,
        counters=[RuleCounter(Family.V4, 1, packets=12, bytes=720),
                  RuleCounter(Family.V4, POLICY, packets=4, bytes=240)],
    )
    write_textfile("/var/lib/prometheus/node-exporter/fs-inject.prom", render(facts))

Metrics, all labelled program="fs-inject" or "fs-fetch" so that both commands can write into
the same collector directory on one host without their series colliding:

    flowseg_rules_installed{family}             gauge    rules in force per family
    flowseg_routes_refused                      gauge    routes of the last read that could
                                                         not be translated
    flowseg_last_apply_timestamp_seconds        gauge    unix time of the last run's end
    flowseg_last_apply_result{result}           gauge    1 for the last run's result, 0 for the
                                                         others (applied, unchanged, failed)
    flowseg_bgp_session_established             gauge    1 or 0; absent when not known
    flowseg_generation                          gauge    absent when not known
    flowseg_rule_packets_total{family,rule}     counter  packets matched by a rule
    flowseg_rule_bytes_total{family,rule}       counter  bytes matched by a rule

`rule` is the controller's rule number (the FORWARD position, carried as traffic-marking), or
"policy" for the chain policy. Packet and byte counters are iptables' own: they restart at 0
when the chain is rebuilt, which Prometheus' rate() reads as a counter reset.

Label values are escaped as the format requires: backslash, double quote and line feed become
`\\\\`, `\\"` and `\\n`; HELP text escapes backslash and line feed.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowseg.model import Family

PREFIX = "flowseg_"
# The results a run can end with, in the order they are printed.
RESULTS = ("applied", "unchanged", "failed")
# The `rule` label of the chain policy's counters (the catch-all last rule).
POLICY = "policy"


@dataclass(frozen=True)
class RuleCounter:
    """iptables' counters of one rule, keyed by the controller's rule number and family."""

    family: Family
    rule: int | str
    packets: int
    bytes: int

    def __post_init__(self) -> None:
        if not isinstance(self.family, Family):
            raise ValueError(f"family must be a Family, not {self.family!r}")
        if isinstance(self.rule, bool) or not (
            (isinstance(self.rule, int) and self.rule >= 1) or self.rule == POLICY
        ):
            raise ValueError(f"rule must be a rule number from 1 or {POLICY!r}, not {self.rule!r}")
        for name in ("packets", "bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"rule {self.rule}: {name} must be an integer >= 0, not {value!r}")


@dataclass(frozen=True)
class MetricFacts:
    """What one run of a flowseg command knows, ready to be rendered.

    program: "fs-inject" or "fs-fetch" (any name: it becomes the `program` label).
    rules_installed: rules in force per family; a family left out is not printed.
    routes_refused: routes of the last read that could not be translated.
    last_apply_time: unix time (seconds) of the last run's end; None if there was none yet.
    last_apply_result: one of RESULTS, or None if there was no run yet.
    session_established: the BGP session to the controller; None when not known.
    generation: a number that grows with every policy change; None when not known.
    counters: per-rule packet and byte counters.
    """

    program: str
    rules_installed: Mapping[Family, int] = field(default_factory=dict)
    routes_refused: int = 0
    last_apply_time: float | None = None
    last_apply_result: str | None = None
    session_established: bool | None = None
    generation: int | None = None
    counters: Sequence[RuleCounter] = ()

    def __post_init__(self) -> None:
        if self.last_apply_result is not None and self.last_apply_result not in RESULTS:
            raise ValueError(
                f"last_apply_result must be one of {', '.join(RESULTS)}, "
                f"not {self.last_apply_result!r}"
            )
        for family, count in self.rules_installed.items():
            if not isinstance(family, Family):
                raise ValueError(f"rules_installed is keyed by Family, not {family!r}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"rules_installed[{family.afi}] must be >= 0, not {count!r}")
        if self.routes_refused < 0:
            raise ValueError(f"routes_refused must be >= 0, not {self.routes_refused!r}")
        keys = [(c.family, c.rule) for c in self.counters]
        if len(keys) != len(set(keys)):
            raise ValueError("counters hold the same family and rule twice; add them up first")


def escape_label(value: str) -> str:
    """A label value as it goes between the double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _rule_sort_key(counter: RuleCounter) -> tuple:
    # Rule numbers in numeric order, the policy last: the order of the chain.
    is_policy = counter.rule == POLICY
    return (counter.family.value, is_policy, 0 if is_policy else counter.rule)


class _Text:
    def __init__(self, program: str) -> None:
        self.lines: list[str] = []
        self.program = program

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value, **labels: str) -> None:
        pairs = {"program": self.program, **labels}
        text = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in pairs.items())
        self.lines.append(f"{PREFIX}{name}{{{text}}} {format_value(value)}")


def render(facts: MetricFacts) -> str:
    """The facts as Prometheus text exposition format; ends with a line feed."""
    out = _Text(facts.program)

    if facts.rules_installed:
        out.family("rules_installed", "gauge", "Rules in force in the chain, per address family.")
        for family in sorted(facts.rules_installed, key=lambda f: f.value):
            out.sample("rules_installed", facts.rules_installed[family], family=family.afi)

    out.family(
        "routes_refused", "gauge", "Flow-Spec routes or rules of the last read that could not be "
        "translated; while above 0 the chain in force is kept."
    )
    out.sample("routes_refused", facts.routes_refused)

    if facts.last_apply_time is not None:
        out.family(
            "last_apply_timestamp_seconds", "gauge", "Unix time at which the last run ended."
        )
        out.sample("last_apply_timestamp_seconds", float(facts.last_apply_time))

    if facts.last_apply_result is not None:
        out.family(
            "last_apply_result", "gauge", "1 for the result of the last run (applied, unchanged "
            "or failed), 0 for the others."
        )
        for result in RESULTS:
            out.sample("last_apply_result", result == facts.last_apply_result, result=result)

    if facts.session_established is not None:
        out.family(
            "bgp_session_established", "gauge", "1 while the BGP session to the controller is "
            "Established, else 0."
        )
        out.sample("bgp_session_established", facts.session_established)

    if facts.generation is not None:
        out.family("generation", "gauge", "Generation of the policy in force.")
        out.sample("generation", facts.generation)

    if facts.counters:
        counters = sorted(facts.counters, key=_rule_sort_key)
        for name, attr, what in (
            ("rule_packets_total", "packets", "Packets"),
            ("rule_bytes_total", "bytes", "Bytes"),
        ):
            out.family(
                name, "counter", f"{what} matched by a rule, by the controller's rule number "
                "(\"policy\" for the chain policy); reset when the chain is rebuilt."
            )
            for c in counters:
                out.sample(name, getattr(c, attr), family=c.family.afi, rule=str(c.rule))

    return "\n".join(out.lines) + "\n"


def write_textfile(path: str | os.PathLike, text: str) -> None:
    """Put text at path atomically: write beside it, fsync, rename over it, fsync the folder.

    The temporary file starts with a dot and does not end in .prom, so the textfile collector
    never picks it up. The result is mode 0644 (the collector usually runs as another user),
    or the mode of the file it replaces. The folder must exist. An OSError leaves the previous
    file in place and no temporary file behind.
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dirfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
