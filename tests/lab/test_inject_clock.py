"""A wall-clock jump on the switch: the fs-inject daemon under libfaketime.

A real NTP step moves CLOCK_REALTIME and never CLOCK_MONOTONIC. libfaketime gives the daemon
(and the vtysh and iptables it runs, which inherit LD_PRELOAD) exactly that: the wall clock
read from a file the test rewrites while the daemon runs, the monotonic clock left alone
(FAKETIME_DONT_FAKE_MONOTONIC=1). The poll interval, the lock wait and --generation-timeout are
measured on the monotonic clock; only the metrics' timestamp follows the wall clock. BIRD,
bgpd and the kernel keep the real time: only fs-inject's side of the switch jumps.

libfaketime 0.9.10 (Debian 12) fakes clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) even with
FAKETIME_DONT_FAKE_MONOTONIC=1: it subtracts the fake wall clock from a monotonic deadline and
the kernel answers EINVAL (wolfcw/libfaketime#426, fixed after 0.9.10). Python 3.11's
time.sleep() makes exactly that call, so every time.sleep() in the faked process raises
OSError (subprocess.run's wait for vtysh among them). The daemon is therefore started through
LAUNCH, which only replaces time.sleep by a select() of the same relative length (the kernel
times it on the monotonic clock, as it does time.sleep's); everything else is fs-inject's own
code, its vtysh and its iptables.

The timings are checked by their lower bounds (a jump must not cut a wait short) and by loose
upper ones (nor stretch it to years): a loaded machine makes polls slower, never faster.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowseg.scenario import fetch, wait_for

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
YEAR = 365 * 86400
INTERVAL = 0.5
LOCK_TIMEOUT = 2.0
GENERATION_TIMEOUT = 3.0
WINDOW = 2.0  # seconds of real time in which the polls are counted
LAUNCH = (
    "import select, sys, time\n"
    "def sleep(seconds):\n"
    "    select.select([], [], [], seconds)\n"
    "time.sleep = sleep\n"
    "from fs_inject.cli import main\n"
    "sys.argv[0] = 'fs-inject'\n"
    "main()\n"
)
V4_POLICY = ("*filter\n:FORWARD DROP [0:0]\n"
             "-A FORWARD -s 192.0.2.10/32 -d 198.51.100.10/32 -p tcp -m tcp --dport 443 -j ACCEPT\n"
             "COMMIT\n")
V6_POLICY = ("*filter\n:FORWARD DROP [0:0]\n"
             "-A FORWARD -s 2001:db8:1::10/128 -d 2001:db8:2::10/128 -p tcp -m tcp --dport 443 "
             "-j ACCEPT\nCOMMIT\n")
DNS_RULE = ("FORWARD", "-s", "192.0.2.10/32", "-d", "198.51.100.10/32", "-p", "udp", "-m", "udp",
            "--dport", "53", "-j", "ACCEPT")
POLL = re.compile(r"INFO read \d+ flowspec routes for IPv4")
LOCK_ERROR = re.compile(rf"ERROR lock .* held by another fs-inject for {LOCK_TIMEOUT:g} s")
WAITING = re.compile(r"WARNING IPv4: waiting for a complete policy")
LATE = re.compile(r"ERROR a new policy has been arriving for \d+ s and is still incomplete")
# A poll whose JSON read and text read (--verify-text) fall on either side of a route change in
# bgpd reads both again; should the second pair be torn too (every route is announced again
# when the generation changes), the read is refused and the next poll reads it whole. Only
# while routes change.
TORN = re.compile(r"ERROR route '.*': FRR's text shows components its JSON leaves out")
INF = float("inf")


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        if os.environ.get("FLOWSEG_REQUIRE_LAB") == "1":
            pytest.fail("libfaketime missing: scripts/install-deps installs the faketime package")
        pytest.skip("needs libfaketime (Debian package faketime)")
    return found[0]


class Clock:
    """The wall clock of every process started with `env`: real time plus `shift` seconds."""

    def __init__(self, folder: Path, library: str) -> None:
        self.path = folder / "faketime"
        self.shift = 0
        self.set(0)
        self.env = {**os.environ, "LD_PRELOAD": library, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                    "FAKETIME_TIMESTAMP_FILE": str(self.path), "FAKETIME_NO_CACHE": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                os.environ.get("PYTHONPATH")]))}

    def set(self, shift: int) -> float:
        """Jump (rename over the file: libfaketime never reads half of it); when, monotonic."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{shift:+d}\n")
        os.replace(tmp, self.path)
        self.shift = shift
        return time.monotonic()


class Daemon:
    """fs-inject without --once in the switch namespace; each stderr line with its arrival."""

    def __init__(self, lab, clock: Clock) -> None:
        self.metrics = lab.tmpdir / "fs-inject.prom"
        self.lock = lab.tmpdir / "fs-inject.lock"
        argv = ["ip", "netns", "exec", lab.sw, sys.executable, "-c", LAUNCH, "-v",
                "--interval", str(INTERVAL), "--pathspace", lab.pathspace,
                "--lock-file", str(self.lock), "--lock-timeout", str(LOCK_TIMEOUT),
                "--generation-timeout", str(GENERATION_TIMEOUT),
                "--metrics-file", str(self.metrics)]
        self.lines: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=clock.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def log(self) -> str:
        """The log so far, each line after its arrival in seconds since the daemon started."""
        return "\n".join(f"{t - self.started:7.2f} {line}" for t, line in list(self.lines))

    def between(self, start: float, end: float, pattern: re.Pattern) -> list[float]:
        return [t for t, line in list(self.lines) if start <= t < end and pattern.search(line)]

    def polls(self, start: float, end: float) -> list[float]:
        return self.between(start, end, POLL)

    def wait_polls(self, start: float, count: int, timeout: float = 20.0) -> list[float]:
        return wait_for(lambda: len(self.polls(start, INF)) >= count and self.polls(start, INF),
                        timeout=timeout, what=f"{count} polls\n{self.log()}", every=0.05)

    def stamp(self) -> float:
        text = self.metrics.read_text()
        return float(text.split("flowseg_last_apply_timestamp_seconds{")[1].split()[1])

    def asleep(self) -> None:
        """Return as the daemon writes its metrics file, the last step before its sleep."""
        old = self.stamp()
        wait_for(lambda: self.stamp() != old, timeout=20, every=0.005,
                 what=f"a metrics write\n{self.log()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)


def chain_with_counters(lab) -> list[str]:
    """Every FLOWSPEC line of both families, with iptables' packet and byte counters."""
    out = []
    for save in ("iptables-save", "ip6tables-save"):
        text = lab.run("sw", save, "-c", "-t", "filter").stdout
        out += [ln for ln in text.splitlines() if "FLOWSPEC" in ln and not ln.startswith("#")]
    return out


def rules(lab) -> list[str] | None:
    """The chain's IPv4 rules; None while iptables cannot list it (before the daemon's first
    apply iptables-nft 1.8.9 calls the missing chain "incompatible")."""
    res = lab.run("sw", "iptables", "-S", "FLOWSPEC", check=False)
    if res.returncode != 0:
        return None
    return [ln for ln in res.stdout.splitlines() if ln.startswith("-A")]


def strip_generation(lines: list[str] | None) -> list[str] | None:
    """The rules without the policy generation that the catch-all's comment carries."""
    return None if lines is None else [re.sub(r" g\d+ ", " ", ln) for ln in lines]


def traffic(lab, dns: bool = False) -> None:
    """Packets through every rule of the chain, so that a rewrite would show as reset counters.
    dns: DNS_RULE is in the policy too."""
    probes = [dict(proto="tcp", dport=443), dict(proto="tcp", dport=444),
              dict(proto="tcp", dport=443, family=6), dict(proto="tcp", dport=444, family=6),
              dict(proto="udp", dport=53)]
    assert lab.probe_many(probes) == [True, False, True, False, dns]


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in zip(times, times[1:])]


def test_a_clock_jump_on_the_switch_changes_nothing(lab):
    """The wall clock ten years ahead, then ten years behind the real time, several times:
    in the daemon's sleep, while it waits for an incomplete policy and while it waits for a
    held lock. It polls at its interval, writes nothing while the policy is unchanged,
    installs a change at its next poll, warns about the incomplete policy after
    --generation-timeout of real time, gives up on the lock after --lock-timeout, logs no
    other error, stamps its metrics with the faked time and stops on SIGTERM with exit 0."""
    library = libfaketime()
    lab.run("ctl", "iptables-restore", input=V4_POLICY)
    lab.run("ctl", "ip6tables-restore", input=V6_POLICY)
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    lab.wait_frr_routes(6, 2)
    clock = Clock(lab.tmpdir, library)
    measured: dict[str, object] = {}
    changing: list[tuple[float, float]] = []  # while the routes in bgpd change
    daemon = Daemon(lab, clock)
    try:
        start = time.monotonic()
        wait_for(lambda: len(rules(lab) or ()) == 2 and "unchanged" in daemon.log(),
                 what=f"the policy on the switch\n{daemon.log()}")
        traffic(lab)
        installed = rules(lab)
        # The real clock first: how many polls fit in WINDOW seconds here.
        base = time.monotonic()
        time.sleep(WINDOW)
        baseline = daemon.wait_polls(base, 2)
        measured["real clock: polls in window, gaps (s)"] = (
            len(daemon.polls(base, base + WINDOW)), gaps(baseline))
        assert min(gaps(baseline)) >= INTERVAL - 0.05, gaps(baseline)

        # -- in the daemon's sleep ---------------------------------------------------------
        for name, shift, change in (("+10 years", 10 * YEAR, "-A"),
                                    ("-10 years", -10 * YEAR, "-D")):
            before = chain_with_counters(lab)
            assert all(not ln.startswith("[0:0] -A FLOWSPEC") for ln in before), before
            daemon.asleep()
            jumped = clock.set(shift)
            time.sleep(WINDOW)
            # At least 3 polls after the jump (under load they come later, never not at all).
            after = daemon.wait_polls(jumped, 3)
            measured[f"{name}: polls in window, first poll after (s), gaps (s)"] = (
                len(daemon.polls(jumped, jumped + WINDOW)), round(after[0] - jumped, 2),
                gaps(after))
            # The jump fell into the daemon's sleep: that sleep lasts its interval (a wall-clock
            # one would end at once ahead, or in ten years behind), and so do the next ones.
            assert after[0] - jumped >= INTERVAL - 0.05, (name, after[0] - jumped)
            assert min(gaps(after)) >= INTERVAL - 0.05, (name, gaps(after))
            assert max(gaps([jumped, *after])) < 10, (name, gaps([jumped, *after]))
            assert len(daemon.polls(jumped, jumped + WINDOW)) <= WINDOW / INTERVAL + 1
            # Nothing written: the same rules, their counters not reset.
            assert chain_with_counters(lab) == before, name
            assert abs(daemon.stamp() - (time.time() + shift)) < 60, (name, daemon.stamp())
            assert 'result="unchanged"} 1' in daemon.metrics.read_text()

            # A change made on the controller after the jump reaches the chain by itself.
            lab.iptables("ctl", change, *DNS_RULE)
            began = time.monotonic()
            fetch(lab)
            want = 3 if change == "-A" else 2
            fetched = time.monotonic()
            lab.wait_frr_routes(4, want)
            routed = time.monotonic()
            done = re.compile(f"WARNING applied IPv4 FLOWSPEC: {want} rules")
            applied = wait_for(lambda: daemon.between(routed, INF, done), timeout=20,
                               every=0.05, what=f"the new policy after {name}\n{daemon.log()}")
            changing.append((began, applied[0]))
            assert len(rules(lab)) == want
            # Installed by the first poll that started after bgpd had the routes, or the next
            # one if a poll was reading just then.
            polls_until = daemon.polls(routed, applied[0])
            measured[f"{name}: change in bgpd, then in the chain (s), polls"] = (
                round(routed - fetched, 2), round(applied[0] - routed, 2), len(polls_until))
            assert 1 <= len(polls_until) <= 2, (name, polls_until)
            assert abs(daemon.stamp() - (time.time() + shift)) < 60
            traffic(lab, dns=change == "-A")
        assert strip_generation(rules(lab)) == strip_generation(installed)

        # -- while a policy arrives ----------------------------------------------------------
        # The IPv4 route of rule 1 withdrawn while the policy route still counts it: the
        # daemon waits, keeps the chain, and says so loudly after --generation-timeout of
        # real time. Ten years ahead must not make that sooner, ten years back not later.
        whole = lab.bird_conf.read_text()
        before = chain_with_counters(lab)
        began = time.monotonic()
        lab.load_flowspec("".join(ln for ln in whole.splitlines(keepends=True)
                                  if not ("route flow4" in ln and "dport 443;" in ln)))
        marked = time.monotonic()
        lab.wait_frr_routes(4, 1)
        waiting = wait_for(lambda: daemon.between(marked, INF, WAITING), timeout=20,
                           every=0.05, what=f"the daemon waiting\n{daemon.log()}")[0]
        changing.append((began, waiting))
        time.sleep(0.5)
        clock.set(10 * YEAR)
        time.sleep(1.0)
        clock.set(-10 * YEAR)
        late = wait_for(lambda: daemon.between(waiting, INF, LATE), timeout=20, every=0.05,
                        what=f"the generation timeout\n{daemon.log()}")[0]
        measured["incomplete policy: error after (s)"] = round(late - waiting, 2)
        assert GENERATION_TIMEOUT - 0.1 <= late - waiting <= GENERATION_TIMEOUT + 8
        assert chain_with_counters(lab) == before
        began = time.monotonic()
        lab.load_flowspec(whole)
        lab.wait_frr_routes(4, 2)
        # The first poll that reads IPv4 whole again (a waiting one logs no "read" line), then
        # one more: no waiting since, nothing written.
        complete = daemon.wait_polls(time.monotonic(), 2)[0]
        changing.append((began, complete))
        assert not daemon.between(complete, INF, WAITING), daemon.log()
        assert chain_with_counters(lab) == before

        # -- while the lock is held -----------------------------------------------------------
        # Taken as the daemon goes to sleep: its wait starts INTERVAL later. Ten years ahead in
        # the middle of its first wait (it must not give up at once), ten years back in the
        # middle of its second (it must not wait for ever).
        with open(daemon.lock, "w") as held:
            daemon.asleep()
            fcntl.flock(held, fcntl.LOCK_EX)
            taken = time.monotonic()
            time.sleep(INTERVAL + 0.7)
            clock.set(10 * YEAR)
            first = wait_for(lambda: daemon.between(taken, INF, LOCK_ERROR), timeout=20,
                             every=0.05, what=f"a lock error\n{daemon.log()}")[0]
            # The second wait starts INTERVAL after the first error (and the metrics write).
            time.sleep(INTERVAL + 0.5)
            clock.set(-10 * YEAR)
            second = wait_for(lambda: daemon.between(first + 0.01, INF, LOCK_ERROR),
                              timeout=20, every=0.05,
                              what=f"a second lock error\n{daemon.log()}")[0]
            released = time.monotonic()
        measured["lock: first error after, second error after the first (s)"] = (
            round(first - taken, 2), round(second - first, 2))
        assert INTERVAL + LOCK_TIMEOUT - 0.1 <= first - taken <= LOCK_TIMEOUT + 8
        assert LOCK_TIMEOUT + INTERVAL - 0.05 <= second - first <= LOCK_TIMEOUT + INTERVAL + 8
        daemon.wait_polls(released, 1)
        assert chain_with_counters(lab) == before
        assert abs(daemon.stamp() - (time.time() - 10 * YEAR)) < 60

        # SIGTERM as the daemon goes to sleep, ten years behind: it stops at once, exit 0.
        # (A SIGTERM in the middle of a poll is the signal tests' matter, not the clock's.)
        daemon.asleep()
        stopping = time.monotonic()
        code = daemon.stop()
        measured["SIGTERM to exit (s)"] = round(time.monotonic() - stopping, 2)
        measured["daemon ran (s)"] = round(time.monotonic() - start, 1)
        log = daemon.log()
        assert code == 0, log
        assert time.monotonic() - stopping < 5
        assert re.search(r"INFO stopping on", log), log
        # The only errors: the two of the held lock, the incomplete policy's from
        # --generation-timeout on, and a torn read while routes changed; no traceback.
        errors = [(t, ln) for t, ln in daemon.lines if "ERROR" in ln or "Traceback" in ln]
        torn = [t for t, ln in errors if TORN.search(ln)]
        measured["torn reads while routes changed"] = len(torn)
        assert [ln for _, ln in errors if not (LOCK_ERROR.search(ln) or LATE.search(ln)
                                               or TORN.search(ln))] == []
        assert len([ln for _, ln in errors if LOCK_ERROR.search(ln)]) == 2
        assert all(t >= waiting + GENERATION_TIMEOUT - 0.1 for t, ln in errors if LATE.search(ln))
        assert all(any(a <= t <= b + 0.1 for a, b in changing) for t in torn), (torn, changing)
    finally:
        daemon.kill()
        print(measured, "\n" + daemon.log())  # shown when the test fails
