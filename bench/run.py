"""`make bench`: how fast flowseg moves a policy, measured against the floor the tools set.

For each policy size (10, 100, 1,000, 10,000 and 50,000 rules; `--quick` stops at 1,000,
`--sizes` picks) it builds fresh labs (flowseg.lab: real BIRD 2, real FRR bgpd -Z, network
namespaces) and measures, several repetitions each (one past 10,000 rules, `--big-reps`):

- the pipeline: fs-fetch in the controller, BGP until FRR holds every route, fs-inject --once
  in the switch (end to end, controller chain to switch chain), then an unchanged poll;
- the floors, in the same run: iptables-save, `birdc configure` of the same file (in a lab of
  its own, from an empty table, as fs-fetch's reload is), the vtysh dump, iptables-restore of
  the same chain and a naive loop of one `iptables -A` per rule;
- the in-process stages of both commands (parse, render, compare), with peak RSS of every
  command and the per-packet cost of a long FLOWSPEC chain (ping RTT through the switch).

Past 63 rules fs-fetch carries the rule number in route target 65535:N (issue 5) and runs as
installed. Should the installed fs-fetch refuse a size (its `--dry-run` is asked first), this
benchmark lifts the 63-rule marking limit in its own processes only and puts issue 5's route
targets on each route instead of the marking (WRAPPED_FETCH below), so the switch still gets
the controller's order. Every size gets fresh labs, so no step ever withdraws a large table
(withdrawing more than about 300 routes in one `birdc configure` can reset FRR's session,
wire facts 7).

Results: a table on the terminal, bench/results/<date>.json, .md and .png; `--publish` also
copies them to bench/latest.*. No test asserts a timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import ipaddress
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The in-process stages import the installed package, the very code the commands run (`make
# bench` has just installed it from this tree); only without an install, the source tree.
if importlib.util.find_spec("flowseg") is None:
    sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = str(ROOT)
sys.path.insert(0, str(HERE))

import measure  # noqa: E402
import policy  # noqa: E402
import report  # noqa: E402
from measure import clock, timed  # noqa: E402

from flowseg import iptables as fs_iptables  # noqa: E402
from flowseg.lab import CTL_V4, H1_V4, H2_V4, Lab, missing_requirements  # noqa: E402
from flowseg.model import Family  # noqa: E402
from fs_fetch import bird  # noqa: E402
from fs_inject import frr  # noqa: E402

DEFAULT_SIZES = (10, 100, 1000, 10000, 50000)
QUICK_SIZES = (10, 100, 1000)
PACKET_SIZES = (0, 1000, 10000)
CHAIN = "FLOWSPEC"
PARENT = "FORWARD"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}
SOURCE = "bench, table filter, chain FORWARD"

# fs-fetch for chains past its marking limit, while it refuses them (issue 5): the limit is
# lifted in this process only, and each rule's traffic-marking N is replaced by the issue 5
# encoding that fs-inject already reads (flowseg/encoding.py): route target (rt, 65535, N) for
# the sequence, (rt, 65534, G) for the generation on every route and (rt, 65533, C) with the
# route count on the catch-all. So the switch gets the controller's order, and every rule has
# an attribute set of its own, as it will with issue 5. (Wrapped markings instead would let
# ~170 routes share each attribute set: FRR 8.4.4 then sends BIRD UPDATEs of more than 4,096
# bytes and BIRD resets the session, over and over.)
WRAPPED_FETCH = """
import re, sys
import fs_fetch.bird as bird
try:
    from flowseg.encoding import COUNT_AS, GENERATION_AS, SEQUENCE_AS
except ImportError:
    SEQUENCE_AS, GENERATION_AS, COUNT_AS = 65535, 65534, 65533
bird.MARKING_MAX = 10 ** 9
GENERATION = 1
_render = bird.render
_MARK = re.compile(r"bgp_ext_community\\.add\\(\\(generic, 0x80090000, 0x([0-9a-f]+)\\)\\);")
def _rt(asn, value):
    return f"bgp_ext_community.add((rt, {asn}, {value}));"
def _wrapped(*args, **kwargs):
    lines = _render(*args, **kwargs).splitlines(keepends=True)
    out, block = [], []
    for line in lines + [""]:
        if line.startswith("protocol static") or line == "":
            routes = sum(1 for ln in block if ln.lstrip().startswith("route "))
            for ln in block:
                if ln.lstrip().startswith("route "):
                    m = _MARK.search(ln)
                    if m:
                        ln = ln[:m.start()] + _rt(SEQUENCE_AS, int(m.group(1), 16)) + " " + \\
                            _rt(GENERATION_AS, GENERATION) + ln[m.end():]
                    else:
                        head, sep, tail = ln.rpartition(" };")
                        ln = f"{head} {_rt(GENERATION_AS, GENERATION)} " \\
                            f"{_rt(COUNT_AS, routes)}{sep}{tail}"
                out.append(ln)
            block = []
        block.append(line)
    return "".join(out)
bird.render = _wrapped
from fs_fetch.cli import main
sys.argv[0] = "fs-fetch"
main()
"""

# One `iptables` process per line of stdin: the way a shell script would build the chain.
NAIVE_LOOP = """
import shlex, subprocess, sys
for line in sys.stdin:
    if line.strip():
        subprocess.run(["iptables", "-w", "10", *shlex.split(line)], check=True)
"""


def command(name: str) -> list[str]:
    """The installed console script beside this Python, else the module from the source tree."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", {"fs-fetch": "fs_fetch.cli", "fs-inject": "fs_inject.cli"}[name]]


@contextmanager
def marking_limit_lifted():
    """fs-fetch's 63-rule limit out of the way, in this process only, while it exists."""
    saved = getattr(bird, "MARKING_MAX", None)
    if saved is not None:
        bird.MARKING_MAX = 10**9
    try:
        yield
    finally:
        if saved is not None:
            bird.MARKING_MAX = saved


def fetch_refuses(text: str) -> bool:
    """Whether the fs-fetch command refuses this policy (the 63-rule marking limit, issue 5)."""
    run = timed(command("fs-fetch") + ["-q", "--dry-run", "--family", "ipv4", "--from-file", "-"],
                input=text)
    if run.returncode not in (0, 3):
        raise RuntimeError(f"fs-fetch --dry-run failed: {run.stderr.strip()[-300:]}")
    return run.returncode == 3


def fetch_render(policies: list) -> str:
    """The BIRD file as the fs-fetch command renders it (its default encoding), in-process."""
    if hasattr(bird, "render_stamped") and hasattr(bird, "Encoding"):
        try:
            encoding = bird.Encoding("auto", True)
            receiver = bird.RECEIVERS["frr"]
            plans = [bird.plan(p, receiver, encoding) for p in policies]
            return bird.render_stamped(policies, TABLES, SOURCE, None, receiver, plans,
                                       encoding, None)[0]
        except (TypeError, ValueError, KeyError):
            # Another signature than the one this was written against: the plain render.
            pass
    with marking_limit_lifted():
        return bird.render(policies, TABLES, SOURCE)


class Results:
    """Samples by stage and size, in seconds (and peak RSS in kB by command)."""

    def __init__(self) -> None:
        self.times: dict[str, dict[int, list[float]]] = {}
        self.rss: dict[str, dict[int, list[int]]] = {}
        self.cpu: dict[str, dict[int, list[float]]] = {}
        self.load: dict[str, list[float]] = {}
        self.counts: dict[int, dict[str, int]] = {}
        self.packets: dict[int, list[dict]] = {}
        self.notes: list[str] = []
        self.skipped: dict[str, dict[int, str]] = {}

    def add(self, stage: str, size: int, seconds: float) -> None:
        self.times.setdefault(stage, {}).setdefault(size, []).append(seconds)

    def add_run(self, stage: str, size: int, run: measure.Run) -> measure.Run:
        self.add(stage, size, run.seconds)
        self.cpu.setdefault(stage, {}).setdefault(size, []).append(run.cpu_seconds)
        if run.rss_own_kb:
            self.rss.setdefault(stage, {}).setdefault(size, []).append(run.rss_own_kb)
        return run

    def snapshot(self) -> tuple:
        copy = lambda d: {k: {s: list(v) for s, v in by.items()} for k, by in d.items()}  # noqa: E731
        return copy(self.times), copy(self.rss), copy(self.cpu), len(self.notes)

    def restore(self, saved: tuple) -> None:
        self.times, self.rss, self.cpu, notes = saved
        del self.notes[notes:]

    def skip(self, stage: str, size: int, why: str) -> None:
        self.skipped.setdefault(stage, {})[size] = why

    def median(self, stage: str, size: int) -> float | None:
        samples = self.times.get(stage, {}).get(size)
        return measure.Summary.of(samples).median if samples else None


# -- the lab ------------------------------------------------------------------------------------


def in_ns(lab: Lab, role: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", lab.namespaces[role], *argv]


def frr_count(lab: Lab) -> int:
    out = lab.vtysh("show bgp ipv4 flowspec summary json", check=False).stdout
    try:
        return json.loads(out)["peers"][CTL_V4]["pfxRcd"]
    except (ValueError, KeyError, TypeError):
        return -1


def bird_exported(lab: Lab) -> int:
    out = lab.birdc("show", "protocols", "all", "switch1", check=False).stdout
    match = re.search(r"Channel flow4.*?Routes:\s+\d+ imported, (\d+) exported", out, re.DOTALL)
    return int(match.group(1)) if match else -1


def wait_routes(lab: Lab, routes: int, begin: float, timeout: float) -> dict[str, float]:
    """Seconds from `begin` until BIRD has exported and FRR holds every route of the table."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < 2:
        if "bird" not in seen and bird_exported(lab) >= routes:
            seen["bird"] = time.perf_counter() - begin
        if "frr" not in seen and frr_count(lab) >= routes:
            seen["frr"] = time.perf_counter() - begin
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"FRR holds {frr_count(lab)} of {routes} routes after {timeout:.0f} s; "
                f"BIRD exported {bird_exported(lab)}\n{lab.log_tail()}"
            )
        time.sleep(0.01)
    return seen


def session_resets(lab: Lab) -> int:
    return lab.frr_session().dropped


def reset_switch_chain(lab: Lab) -> None:
    lab.iptables("sw", "-F", PARENT)
    lab.iptables("sw", "-F", CHAIN, check=False)
    lab.iptables("sw", "-X", CHAIN, check=False)


def restore_text(rules: list, chain_exists: bool = False) -> str:
    """What fs-inject writes for these rules onto a switch without the chain."""
    lines = fs_iptables.render_chain(rules, CHAIN)
    state = fs_iptables.ChainState(chain_exists, (), ())
    return fs_iptables.render_restore(lines, state, CHAIN, PARENT, Family.V4)


def bird_check_conf(lab: Lab) -> Path:
    """The minimal main config fs-fetch wraps its file in for `bird -p`."""
    main = lab.tmpdir / "bench-check.conf"
    decls = "".join(f"{f.bird_word} table {t};\n" for f, t in TABLES.items())
    main.write_text(f'{decls}include "{lab.bird_conf}";\n')
    return main


# A polling fs-inject's poll when FRR's routes have not changed: the daemon's loop body
# (fs_inject.apply.run_once with its cache), timed in the process after a first poll.
DAEMON_POLL = """
import sys, time
from flowseg.model import Family
from fs_inject import apply, system
opts = apply.Options((Family.V4,), "FLOWSPEC", "FORWARD", False, "keep", False)
switch, cache = system.Switch(sys.argv[1], "auto"), {}
apply.run_once(switch, opts, None, None, cache)
begin = time.perf_counter()
outcome = apply.run_once(switch, opts, None, None, cache)
print(time.perf_counter() - begin, outcome.value)
"""


def pipeline_rep(
    res: Results, size: int, text: str, rep: int, naive_max: int, wrapped: bool
) -> dict:
    """One fresh lab: fs-fetch, BGP, fs-inject, unchanged poll, then the floors beside them."""
    out: dict = {}
    with Lab(examples_dir=ROOT / "examples") as lab:
        timed(in_ns(lab, "ctl", "iptables-restore"), input=text).check()
        fetch = [sys.executable, "-c", WRAPPED_FETCH] if wrapped else command("fs-fetch")
        fetch += ["-q", "--family", "ipv4", "--bird-conf", str(lab.bird_conf),
                  "--bird-socket", str(lab.bird_socket)]
        inject = command("fs-inject") + ["-q", "--once", "--family", "ipv4",
                                         "--pathspace", lab.pathspace]
        dropped = session_resets(lab)
        res.add("ip netns exec true", 0, timed(in_ns(lab, "sw", "true")).check().seconds)

        begin = time.perf_counter()
        res.add_run("fs-fetch", size, timed(in_ns(lab, "ctl", *fetch)).check())
        conf = lab.bird_conf.read_text()
        routes = conf.count("route flow4")
        seen = wait_routes(lab, routes, begin, timeout=60 + size / 500)
        res.add_run("fs-inject", size, timed(in_ns(lab, "sw", *inject)).check())
        res.add("end to end", size, time.perf_counter() - begin)
        res.add("BGP after fs-fetch", size, seen["frr"] - res.times["fs-fetch"][size][-1])

        before = lab.iptables_save("sw")
        res.add_run("fs-inject unchanged", size, timed(in_ns(lab, "sw", *inject)).check())
        poll = timed(in_ns(lab, "sw", sys.executable, "-c", DAEMON_POLL, lab.pathspace)).check()
        seconds, outcome = poll.stdout.split()
        res.add("daemon unchanged poll", size, float(seconds))
        if outcome != "unchanged":
            res.notes.append(f"{size} rules: the daemon's second poll was {outcome}")
        after = lab.iptables_save("sw")
        strip = lambda t: [ln for ln in t.splitlines() if not ln.startswith("#")]  # noqa: E731
        if strip(before) != strip(after):
            res.notes.append(f"{size} rules: the second fs-inject --once rewrote the chain")
        chain_lines = sum(1 for ln in after.splitlines() if ln.startswith(f"-A {CHAIN} "))

        # Floors, in the same lab and the same state.
        res.add_run("iptables-save (ctl)", size,
                    timed(in_ns(lab, "ctl", "iptables-save", "-t", "filter")).check())
        dump = timed(in_ns(lab, "sw", "vtysh", "-N", lab.pathspace, "-c",
                           "show bgp ipv4 flowspec detail json")).check()
        res.add_run("vtysh dump", size, dump)
        res.add_run("iptables-save (sw)", size,
                    timed(in_ns(lab, "sw", "iptables-save", "-t", "filter")).check())
        res.add_run("bird -p", size,
                    timed(in_ns(lab, "ctl", "bird", "-p", "-c", str(bird_check_conf(lab)))).check())
        res.add_run("birdc configure (unchanged)", size,
                    timed(["birdc", "-s", str(lab.bird_socket), "configure"]).check())

        rules = frr.rules_from_vtysh(dump.stdout, Family.V4)
        text_in = restore_text(rules)
        reset_switch_chain(lab)
        res.add_run("iptables-restore", size,
                    timed(in_ns(lab, "sw", "iptables-restore", "--noflush", "--wait", "10"),
                          input=text_in).check())
        if size <= naive_max:
            reset_switch_chain(lab)
            script = [f"-N {CHAIN}"]
            script += fs_iptables.render_chain(rules, CHAIN)
            script.append(f"-I {PARENT} 1 -j {CHAIN}")
            res.add_run("naive iptables -A loop", size,
                        timed(in_ns(lab, "sw", sys.executable, "-I", "-c", NAIVE_LOOP),
                              input="\n".join(script) + "\n").check())
        elif rep == 0:
            res.skip("naive iptables -A loop", size, f"not run (over --naive-max {naive_max})")

        if session_resets(lab) != dropped:
            lines = [ln for ln in lab.log_tail(200).splitlines()
                     if "NOTIFICATION" in ln or "Error" in ln and "table manager" not in ln]
            res.notes.append(f"{size} rules, rep {rep + 1}: FRR's session was reset "
                             f"({lines[0].strip() if lines else 'no log line'})")
        out.update(conf=conf, routes=routes, dump=dump.stdout, saved=after,
                   chain_lines=chain_lines, wrapped=wrapped, bird_exported=seen["bird"])
    return out


def bird_rep(res: Results, size: int, conf: str, routes: int) -> None:
    """A fresh lab whose BIRD loads the same file from an empty table: the floor of the reload."""
    with Lab(examples_dir=ROOT / "examples") as lab:
        lab.bird_conf.write_text(conf)
        begin = time.perf_counter()
        res.add_run("birdc configure", size,
                    timed(["birdc", "-s", str(lab.bird_socket), "configure"]).check())
        seen = wait_routes(lab, routes, begin, timeout=60 + size / 500)
        res.add("BIRD exported all", size, seen["bird"])
        res.add("propagation", size, seen["frr"])


# -- in-process stages --------------------------------------------------------------------------


def pure_fetch(res: Results, size: int, text: str, reps: int) -> None:
    for _ in range(reps):
        seconds, policies = clock(
            lambda: [fs_iptables.parse_policy(t, "FORWARD")
                     for t in fs_iptables.split_families(text)]
        )
        res.add("fetch: parse", size, seconds)
        res.add("fetch: render", size, clock(fetch_render, policies)[0])


def pure_inject(res: Results, size: int, dump: str, saved: str, reps: int) -> None:
    for _ in range(reps):
        seconds, rules = clock(frr.rules_from_vtysh, dump, Family.V4)
        res.add("inject: parse", size, seconds)
        res.add("inject: render", size, clock(fs_iptables.render_chain, rules, CHAIN)[0])
        # The chain in force against itself: the compare of an unchanged poll, whatever
        # fs-inject puts in its comments.
        wanted = list(fs_iptables.read_state(saved, Family.V4, CHAIN, PARENT).rules)

        def compare():
            state = fs_iptables.read_state(saved, Family.V4, CHAIN, PARENT)
            return fs_iptables.render_restore(wanted, state, CHAIN, PARENT, Family.V4)

        seconds, restore = clock(compare)
        res.add("inject: compare", size, seconds)
        if restore is not None:
            res.notes.append(f"{size} rules: the in-process compare found the chain changed")


def profile(out: Path, size: int, text: str, dump: str, saved: str) -> list[tuple[str, str]]:
    """cProfile of each in-process stage at one size: the top functions by own time."""
    import cProfile
    import io
    import pstats

    policies = [fs_iptables.parse_policy(t, "FORWARD") for t in fs_iptables.split_families(text)]
    rules = frr.rules_from_vtysh(dump, Family.V4)
    wanted = list(fs_iptables.read_state(saved, Family.V4, CHAIN, PARENT).rules)
    stages = {
        "fetch-parse": lambda: [fs_iptables.parse_policy(t, "FORWARD")
                                for t in fs_iptables.split_families(text)],
        "fetch-render": lambda: fetch_render(policies),
        "inject-parse": lambda: frr.rules_from_vtysh(dump, Family.V4),
        "inject-render": lambda: fs_iptables.render_chain(rules, CHAIN),
        "inject-compare": lambda: fs_iptables.render_restore(
            wanted, fs_iptables.read_state(saved, Family.V4, CHAIN, PARENT), CHAIN, PARENT,
            Family.V4),
    }
    written = []
    for name, fn in stages.items():
        prof = cProfile.Profile()
        with marking_limit_lifted():
            prof.runcall(fn)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        path = out / f"profile-{size}-{name}.txt"
        path.write_text(buf.getvalue())
        written.append((name, str(path)))
    return written


def startup(res: Results, reps: int) -> None:
    """Interpreter start and imports of each command: a fixed cost of every run."""
    for _ in range(reps):
        res.add("python start + imports (fs-fetch)", 0,
                timed([sys.executable, "-c", "import fs_fetch.cli"]).check().seconds)
        res.add("python start + imports (fs-inject)", 0,
                timed([sys.executable, "-c", "import fs_inject.cli"]).check().seconds)


# -- packets ------------------------------------------------------------------------------------


def _matches_ping(rule) -> bool:
    """Whether a rule could match an echo h1 -> h2 or its reply h2 -> h1."""
    if rule.protocol not in (None, 1):
        return False
    for src, dst in ((H1_V4, H2_V4), (H2_V4, H1_V4)):
        if ipaddress.ip_address(src) in rule.src and ipaddress.ip_address(dst) in rule.dst:
            return True
    return False


def packet_chain(size: int, lines: list[str]) -> str:
    body = lines[:size]
    out = ["*filter", f":{CHAIN} - [0:0]", *body, f"-A {CHAIN} -p icmp -j ACCEPT",
           f"-A {CHAIN} -j DROP", f"-I {PARENT} 1 -j {CHAIN}", "COMMIT"]
    return "\n".join(out) + "\n"


def ping_rtt(lab: Lab, count: int, interval: float) -> dict:
    out = lab.run("h1", "ping", "-n", "-q", "-c", str(count), "-i", f"{interval}", "-W", "1",
                  H2_V4, check=False, timeout=count * interval + 30).stdout
    loss = re.search(r"(\d+(?:\.\d+)?)% packet loss", out)
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    if not rtt:
        raise RuntimeError(f"ping through the switch failed:\n{out}")
    lo, avg, hi, mdev = (float(x) for x in rtt.groups())
    return {"min_ms": lo, "avg_ms": avg, "max_ms": hi, "mdev_ms": mdev,
            "loss_pct": float(loss.group(1)) if loss else None, "count": count}


def packets(res: Results, sizes: list[int], reps: int, count: int) -> None:
    """ICMP echo h1 -> h2 through the switch, answered by the last rule of the chain."""
    # A few more rules than the longest chain: those that the echo would match are left out.
    biggest = max(sizes) * 11 // 10 + 10
    rules = fs_iptables.parse_policy(
        fs_iptables.split_families(policy.iptables_save(policy.generate(biggest)))[0]).rules
    lines = fs_iptables.render_chain([r for r in rules if not _matches_ping(r)], CHAIN)
    with Lab(examples_dir=ROOT / "examples") as lab:
        for size in sizes:
            if size > len(lines):
                res.notes.append(f"packets: only {len(lines)} non-ICMP rules for {size}")
                continue
            reset_switch_chain(lab)
            timed(in_ns(lab, "sw", "iptables-restore", "--noflush"),
                  input=packet_chain(size, lines)).check()
            ping_rtt(lab, 20, 0.01)
            for _ in range(reps):
                res.packets.setdefault(size, []).append(ping_rtt(lab, count, 0.005))


# -- machine ------------------------------------------------------------------------------------


def _out(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def machine_info() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    debian = Path("/etc/debian_version")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": f"Debian {debian.read_text().strip()}" if debian.exists() else platform.platform(),
    }


def tool_versions(frr_show_version: str) -> dict:
    import matplotlib

    return {
        "bird": _out(["bird", "--version"]),
        "frr": frr_show_version.splitlines()[0] if frr_show_version else "",
        "frr_package": _out(["dpkg-query", "-W", "-f", "${Version}", "frr"]),
        "iptables": _out(["iptables", "--version"]),
        "python": platform.python_version(),
        "matplotlib": matplotlib.__version__,
        "flowseg": _out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
    }


def frr_version() -> str:
    with Lab(examples_dir=ROOT / "examples") as lab:
        return lab.vtysh("show version").stdout.strip()


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 10, 100, 1000 only")
    ap.add_argument("--sizes", help="comma-separated rule counts (default 10,100,1000,10000,"
                    "50000)")
    ap.add_argument("--pure-sizes", default="",
                    help="extra sizes for the in-process fs-fetch stages only")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    ap.add_argument("--big", type=int, default=10000,
                    help="sizes above this get --big-reps repetitions (default 10000)")
    ap.add_argument("--big-reps", type=int, default=1,
                    help="repetitions for sizes above --big (default 1: 50,000 rules take "
                    "about three minutes a repetition)")
    ap.add_argument("--naive-max", type=int, default=1000,
                    help="largest size for the one-iptables-per-rule loop")
    ap.add_argument("--ping-count", type=int, default=300, help="echoes per packet measurement")
    ap.add_argument("--no-packets", action="store_true", help="skip the per-packet cost")
    ap.add_argument("--publish", action="store_true",
                    help="also write bench/latest.json, .md and .png (the run the README shows)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the in-process stages at the largest size (results folder)")
    ap.add_argument("--report", type=Path, metavar="JSON",
                    help="only print the tables and redraw the plot of an earlier run")
    ap.add_argument("--keep-inputs", action="store_true",
                    help="also save each size's policy, BIRD file and vtysh dump there")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        report.show(report.console(), data)
        paths = report.write(data, args.report.with_suffix(""))
        print(f"bench: wrote {', '.join(str(p) for p in paths[1:])}")
        return 0
    missing = missing_requirements()
    if missing:
        print(f"bench: the lab needs {', '.join(missing)}; run `make bench` as root",
              file=sys.stderr)
        return 2
    if args.sizes:
        sizes = sorted({int(s) for s in args.sizes.split(",")})
    else:
        sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    pure_extra = sorted({int(s) for s in args.pure_sizes.split(",") if s})
    # The in-process stages log what the commands would (a shadowed rule, say): not wanted here.
    logging.getLogger().setLevel(logging.ERROR)
    console = report.console()
    args.out.mkdir(parents=True, exist_ok=True)
    res = Results()
    last: dict = {}
    started = dt.datetime.now(dt.timezone.utc)
    wall = time.perf_counter()

    res.load["start"] = measure.loadavg()
    if res.load["start"][0] > 0.5:
        console.log(f"load average {res.load['start'][0]:.2f}: other work on this machine "
                    "will show in the numbers")
    show_version = frr_version()
    startup(res, args.reps)
    for size in sizes + [s for s in pure_extra if s not in sizes]:
        text = policy.iptables_save(policy.generate(size))
        reps = args.big_reps if size > args.big else args.reps
        console.log(f"{size} rules: in-process fs-fetch stages")
        pure_fetch(res, size, text, reps)
        if size not in sizes:
            continue
        wrapped = fetch_refuses(text)
        got: dict = {}
        for rep in range(reps):
            console.log(f"{size} rules: pipeline, repetition {rep + 1} of {reps}")
            for attempt in (1, 2):
                # A repetition that fails (a daemon died, or a concurrent lab run removed this
                # lab's files) is run once more in new labs; its partial samples are dropped.
                saved = res.snapshot()
                try:
                    this = pipeline_rep(res, size, text, rep, args.naive_max, wrapped)
                    bird_rep(res, size, this["conf"], this["routes"])
                    got = this
                    break
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    res.restore(saved)
                    first = str(exc).strip().splitlines()[-1][:200]
                    res.notes.append(f"{size} rules, rep {rep + 1}, attempt {attempt} failed: "
                                     f"{first}")
                    console.log(f"{size} rules: repetition {rep + 1} failed ({first})")
        if not got:
            console.log(f"{size} rules: no complete repetition; skipping the rest of this size")
            continue
        res.counts[size] = {
            "rules": size, "routes": got["routes"], "switch_rules": got["chain_lines"],
            "fs_fetch_limit_lifted": got["wrapped"],
            "vtysh_bytes": len(got["dump"].encode()),
            "bird_file_bytes": len(got["conf"].encode()),
        }
        console.log(f"{size} rules: in-process fs-inject stages")
        pure_inject(res, size, got["dump"], got["saved"], reps)
        if args.keep_inputs:
            for name, body in (("policy.txt", text), ("flowspec.conf", got["conf"]),
                               ("vtysh.json", got["dump"]), ("sw-iptables-save.txt", got["saved"])):
                (args.out / f"input-{size}-{name}").write_text(body)
        if not last or size <= report.TARGET_SIZE:
            # Profiled at 10,000 rules (or the largest size below): cProfile is slow.
            last = {"size": size, "text": text, "dump": got["dump"], "saved": got["saved"]}
    if args.profile and last:
        console.log(f"{last['size']} rules: profiling the in-process stages")
        for name, path in profile(args.out, **last):
            console.log(f"profile {name}: {path}")
    if not args.no_packets:
        psizes = [s for s in PACKET_SIZES if s <= max(sizes)] or [0]
        console.log(f"per-packet cost: chains of {', '.join(map(str, psizes))} rules")
        packets(res, psizes, args.reps, args.ping_count)

    res.load["end"] = measure.loadavg()
    data = report.assemble(
        res, sizes, pure_extra, args, started, time.perf_counter() - wall,
        machine_info(), tool_versions(show_version),
    )
    stamp = started.strftime("%Y%m%d-%H%M%S")
    paths = report.write(data, args.out / f"bench-{stamp}")
    report.show(console, data)
    if args.publish:
        for path in paths:
            shutil.copyfile(path, HERE / f"latest{path.suffix}")
        console.log("published bench/latest.json, bench/latest.md, bench/latest.png")
    console.log(f"results: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
