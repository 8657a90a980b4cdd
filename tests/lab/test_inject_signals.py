"""fs-inject stopped by a signal in the middle of an apply (issue 7), on real FRR and iptables-nft.

What must hold: the chain in force stays byte for byte until a complete replacement goes in, in
one iptables-restore transaction per family, and the next run converges.

A 3,000-rule chain per family keeps iptables-nft-restore busy for about 0.1 s, long enough to be
caught: pgrep watches for fs-inject's own IPv4 iptables-nft-restore child (IPv4 is applied
first, IPv6 right after) and the signal goes out as soon as it is seen. On a loaded machine the
signal can come too late, the child having just exited: such an attempt must still end cleanly
with the complete new chains, and the test tries again from the old tables, at most ATTEMPTS
times. At least one attempt must hit the apply in its middle, as fs-inject's own line shows
(for a signal to fs-inject alone: before IPv6's apply started, so that IPv6 is seen to go
through all the same).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowseg.scenario import command, fetch, inject, wait_for

pytestmark = pytest.mark.lab

N = 3000  # rules per family in the new policy; with the policy's DROP route, N + 1 routes
OLD = 5  # rules per family in the policy in force before
ATTEMPTS = 8
DST = {4: "198.51.100.10/32", 6: "2001:db8:2::10/128"}  # h2, documentation addresses
V4_RESTORE = "^iptables-nft-restore --noflush"
COUNTERS = re.compile(r" \[\d+:\d+\]$")

FINISHED = ("got SIGTERM while applying IPv4 FLOWSPEC: finished the apply first "
            "(IPv4 and IPv6 FLOWSPEC complete); stopping now")


def cut_line(name: str) -> str:
    return (f"stopped by {name} in the middle of the IPv4 apply (iptables-nft-restore was killed "
            f"by {name}): IPv4 FLOWSPEC is the old chain or the complete new one, never half; "
            "IPv6 FLOWSPEC not touched. The next run checks FLOWSPEC and repairs it.")


def policy(n: int, base: int, family: int) -> str:
    rules = "".join(f"-A FORWARD -d {DST[family]} -p tcp -m tcp --dport {base + i} -j ACCEPT\n"
                    for i in range(1, n + 1))
    return f"*filter\n:FORWARD DROP [0:0]\n{rules}COMMIT\n"


def publish(lab, n: int, base: int) -> None:
    """n rules per family on the controller, through fs-fetch and BIRD to the switch's bgpd."""
    lab.run("ctl", "iptables-restore", input=policy(n, base, 4))
    lab.run("ctl", "ip6tables-restore", input=policy(n, base, 6))
    fetch(lab)
    lab.wait_frr_routes(4, n + 1, timeout=60)
    lab.wait_frr_routes(6, n + 1, timeout=60)


def tables(lab, family: int) -> list[str]:
    """The switch's filter table, without the date lines and the counters (BGP and probes move
    the built-in chains' counters; the rules are what counts)."""
    return [COUNTERS.sub("", ln) for ln in lab.iptables_save(v6=family == 6).splitlines()
            if not ln.startswith("#")]


def flowspec_rules(lines: list[str]) -> int:
    return sum(1 for ln in lines if ln.startswith("-A FLOWSPEC "))


@dataclass
class States:
    old_saved: dict[int, str]  # iptables-save text of the old tables, to put back
    old: dict[int, list[str]]
    new: dict[int, list[str]]


def prepare(lab) -> States:
    """The old policy (5 rules per family) installed on the switch, the new one (3,000) in
    bgpd; the new tables as an undisturbed run installs them, then the old ones back."""
    publish(lab, OLD, 1000)
    inject(lab)
    old_saved = {f: lab.iptables_save(v6=f == 6) for f in (4, 6)}
    old = {f: tables(lab, f) for f in (4, 6)}
    assert [flowspec_rules(old[f]) for f in (4, 6)] == [OLD + 1, OLD + 1]
    publish(lab, N, 2000)
    inject(lab)
    new = {f: tables(lab, f) for f in (4, 6)}
    assert [flowspec_rules(new[f]) for f in (4, 6)] == [N + 1, N + 1]
    states = States(old_saved, old, new)
    put_old_back(lab, states)
    return states


def put_old_back(lab, states: States) -> None:
    for f in (4, 6):
        lab.run("sw", "ip6tables-restore" if f == 6 else "iptables-restore",
                input=states.old_saved[f])
        assert tables(lab, f) == states.old[f]


def start(lab, argv: list[str], log: Path) -> subprocess.Popen:
    """fs-inject in the switch namespace (`ip netns exec` execs it: the pid is fs-inject's),
    in a process group of its own, its output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", lab.sw, *argv], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def catch_ipv4_apply(proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> bool:
    """True as soon as fs-inject's IPv4 iptables-nft-restore is seen running; False when the
    IPv4 apply went by unseen (fs-inject ended, or logged it as applied)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        seen = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", V4_RESTORE],
                              stdout=subprocess.DEVNULL).returncode == 0
        if seen:
            return True
        if "applied IPv4 FLOWSPEC" in log.read_text():
            return False
        time.sleep(0.005)
    raise AssertionError(f"fs-inject never started its IPv4 apply:\n{log.read_text()}")


def end(proc: subprocess.Popen) -> None:
    """Whatever the test did, nothing of fs-inject's is left running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def once_argv(lab, *extra: str) -> list[str]:
    return [*command("fs-inject"), "--once", "--pathspace", lab.pathspace,
            "--lock-file", str(lab.tmpdir / "fs-inject.lock"), *extra]


def daemon_argv(lab, *extra: str) -> list[str]:
    # As test_inject.py's daemon test starts it; no --once.
    return [*command("fs-inject"), "--interval", "0.5", "--pathspace", lab.pathspace,
            "--lock-file", str(lab.tmpdir / "fs-inject.lock"), *extra]


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def attempts(lab, states: States, argv: list[str], send, check_one) -> int:
    """Run fs-inject from the old tables until an attempt hits the apply; returns the number
    of attempts. `send(proc)` delivers the signal; `check_one(code, log)` checks an
    attempt's outcome and returns whether it hit the apply in its middle."""
    for n in range(1, ATTEMPTS + 1):
        put_old_back(lab, states)
        log = lab.tmpdir / f"fs-inject-{n}.log"
        proc = start(lab, argv, log)
        try:
            seen = catch_ipv4_apply(proc, log)
            if proc.poll() is None:
                send(proc)
            code = proc.wait(timeout=60)
        finally:
            end(proc)
        hit = check_one(code, log.read_text())
        print(f"attempt {n}: iptables-nft-restore seen {seen}, apply hit {hit}, exit {code}")
        if hit:
            assert seen
            return n
    raise AssertionError(f"no attempt in {ATTEMPTS} caught iptables-nft-restore in the act")


# -- 1. the daemon, SIGTERM to its pid alone (systemd's KillMode=mixed) --------------------------


def test_sigterm_to_the_daemon_alone_mid_apply_finishes_both_families_then_exits_0(lab):
    """KillMode=mixed: SIGTERM to fs-inject alone while its IPv4 iptables-nft-restore runs. The
    child is left to finish, IPv6 is applied after it all the same, the daemon logs that it got
    SIGTERM during the apply and finished it, and exits 0 without polling again."""
    states = prepare(lab)

    def check_one(code: int, log: str) -> bool:
        assert code == 0, log
        # Caught or not: the complete new chains, as an undisturbed run leaves them.
        assert tables(lab, 4) == states.new[4]
        assert tables(lab, 6) == states.new[6]
        assert log.count("applied IPv4 FLOWSPEC: 3001 rules") == 1, log
        assert log.count("applied IPv6 FLOWSPEC: 3001 rules") == 1, log
        # The daemon stopped without applying again (a late signal may find it in its next
        # poll, which it leaves at once: it has written nothing yet).
        assert log.rstrip().endswith(("stopping on signal", "FLOWSPEC kept as it was")), log
        if f"WARNING {FINISHED}" not in log:
            return False
        # The stop came while IPv4 was applied, before IPv6's apply started (the line says so);
        # IPv6 went in all the same, and only then did the daemon stop.
        assert log.index("applied IPv6") < log.index(FINISHED) < log.index("stopping on signal")
        return True

    tries = attempts(lab, states, daemon_argv(lab, "-v"),
                     lambda proc: os.kill(proc.pid, signal.SIGTERM), check_one)
    print(f"daemon, SIGTERM to its pid: hit after {tries} attempts")


# -- 2. --once (cron), SIGTERM to its pid alone ---------------------------------------------------


def test_sigterm_to_a_once_run_alone_mid_apply_finishes_it_then_exits_0(lab):
    """`fs-inject --once` gets SIGTERM while its IPv4 iptables-nft-restore runs: as fs-fetch, it
    finishes the apply (IPv6 too), says so in one line and exits 0: the run did its whole job,
    so neither cron nor systemd should report it failed."""
    states = prepare(lab)

    def check_one(code: int, log: str) -> bool:
        assert code == 0, log
        assert tables(lab, 4) == states.new[4]
        assert tables(lab, 6) == states.new[6]
        # "applied IPv4 FLOWSPEC: 3001 rules (3007 rules differed from the routes, ...)"
        assert [ln.split(" (")[0] for ln in lines(log)[:2]] == [
            "fs-inject: WARNING applied IPv4 FLOWSPEC: 3001 rules",
            "fs-inject: WARNING applied IPv6 FLOWSPEC: 3001 rules"], log
        if len(lines(log)) == 2:
            return False  # the signal came after the run: a plain run
        assert len(lines(log)) == 3, log
        if lines(log)[2] == f"fs-inject: WARNING {FINISHED.replace('IPv4', 'IPv6', 1)}":
            return False  # it came once IPv4 was in: proves less, try again
        assert lines(log)[2] == f"fs-inject: WARNING {FINISHED}", log
        return True

    tries = attempts(lab, states, once_argv(lab), lambda proc: os.kill(proc.pid, signal.SIGTERM),
                     check_one)
    print(f"--once, SIGTERM to its pid: hit after {tries} attempts")


# -- 3. the whole process group (Ctrl-C, KillMode=control-group) ----------------------------------


@pytest.mark.parametrize("mode, sig", [("once", signal.SIGTERM), ("once", signal.SIGINT),
                                       ("daemon", signal.SIGTERM)],
                         ids=["once-SIGTERM", "once-SIGINT", "daemon-SIGTERM"])
def test_a_signal_to_the_whole_group_mid_apply_leaves_old_or_new_then_the_next_run_repairs(
        lab, mode, sig):
    """The signal reaches fs-inject and its IPv4 iptables-nft-restore, which dies of it. The
    kernel took that transaction whole or not at all: IPv4 holds the old tables or the complete
    new chain, IPv6 the old tables; fs-inject exits 128 + the signal with one line saying so (not
    that iptables-restore refused the rules), and the next run converges. When the signal comes
    just as the IPv4 child ends, it kills IPv6's instead: the same holds for IPv6."""
    states = prepare(lab)
    name = signal.Signals(sig).name
    # Errors only for --once (cron's -q); the daemon at its default level: warnings and errors.
    argv = once_argv(lab, "-q") if mode == "once" else daemon_argv(lab)

    def check_one(code: int, log: str) -> bool:
        if code == 0:
            # Too late for the child: the apply went through whole, and nothing more is said
            # (with -q nothing at all).
            assert tables(lab, 4) == states.new[4]
            assert tables(lab, 6) == states.new[6]
            assert "ERROR" not in log and "stopped by" not in log, log
            if mode == "once":
                assert log == "", log
            return False
        assert code == 128 + sig, log
        prefix = "fs-inject: " if mode == "once" else "fs-inject: ERROR "
        # One line says what happened; the daemon's other lines are its usual warnings.
        said = [ln for ln in lines(log) if mode == "once" or " ERROR " in ln]
        assert len(said) == 1, log
        now = {f: tables(lab, f) for f in (4, 6)}
        if said[0] == prefix + cut_line(name):
            # The IPv4 child killed: IPv6 not touched.
            assert now[4] in (states.old[4], states.new[4])
            assert now[6] == states.old[6]
            print(f"IPv4 apply cut: IPv4 {'new' if now[4] == states.new[4] else 'old'}")
            return True
        # The signal came as IPv4's child ended and IPv6's had started: that one was killed.
        # IPv4 may be put back by then (run_once does that when a later family fails).
        assert said[0].startswith(f"{prefix}stopped by {name} in the middle of the IPv6 apply "
                                  f"(ip6tables-nft-restore was killed by {name}"), log
        assert said[0].endswith("): IPv6 FLOWSPEC is the old chain or the complete new one, "
                                "never half. The next run checks FLOWSPEC and repairs it."), log
        assert now[4] in (states.old[4], states.new[4])
        assert now[6] in (states.old[6], states.new[6])
        print(f"IPv6 apply cut: IPv4 {'new' if now[4] == states.new[4] else 'old'}, "
              f"IPv6 {'new' if now[6] == states.new[6] else 'old'}")
        return True

    def send(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, sig)

    tries = attempts(lab, states, argv, send, check_one)
    print(f"{mode}, {name} to the group: hit after {tries} attempts")
    # The next run checks and repairs, with no help.
    res = inject(lab)
    assert res.returncode == 0, res.stderr
    assert tables(lab, 4) == states.new[4]
    assert tables(lab, 6) == states.new[6]
    assert "unchanged" in inject(lab).stderr


# -- before the apply: nothing written yet, so a stop request stops at once -----------------------


def test_sigterm_before_the_apply_stops_before_writing_anything(lab):
    """SIGTERM to `fs-inject --once` while it reads bgpd's 3,001 routes (vtysh runs): it ends
    the reads under way, stops just before its first iptables-restore, says in one line that
    it applied nothing, and exits 143 (as fs-fetch, killed by SIGTERM before its apply); both
    chains stay byte for byte."""
    states = prepare(lab)
    log = lab.tmpdir / "fs-inject-read.log"
    proc = start(lab, once_argv(lab), log)
    # IPv4's routes: IPv6's are still to be read after them, so the signal cannot come late.
    reading = "^vtysh -N .* -c show bgp ipv4 flowspec detail"
    try:
        wait_for(lambda: proc.poll() is not None or subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", reading], stdout=subprocess.DEVNULL
        ).returncode == 0, every=0.005, what="fs-inject to read the routes")
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        end(proc)
    assert code == 128 + signal.SIGTERM, log.read_text()
    assert lines(log.read_text()) == [
        "fs-inject: stopped by SIGTERM before applying anything. FLOWSPEC kept as it was."]
    assert tables(lab, 4) == states.old[4]
    assert tables(lab, 6) == states.old[6]
    # No vtysh is left behind.
    assert subprocess.run(["pgrep", "-f", f"^vtysh -N {lab.pathspace} "],
                          stdout=subprocess.DEVNULL).returncode == 1
