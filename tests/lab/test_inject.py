"""fs-inject as a switch agent, on real FRR and real iptables: faults, repair, daemon, stateful.

Every case checks the chain in force byte for byte (iptables-save without its date lines) and
the one-line message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from flowseg.scenario import (
    RICH_PROBES,
    command,
    fetch,
    inject,
    load_policy,
    reset_policy,
    wait_for,
)

pytestmark = pytest.mark.lab


def saved(lab, v6: bool = False) -> list[str]:
    return [ln for ln in lab.iptables_save(v6=v6).splitlines() if not ln.startswith("#")]


def flowspec(lab) -> list[str]:
    return [ln for ln in lab.run("sw", "iptables", "-S", "FLOWSPEC").stdout.splitlines()
            if ln.startswith("-A")]


def slides_installed(lab):
    load_policy(lab, "slides.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    inject(lab)
    return saved(lab)


@contextlib.contextmanager
def daemon_running(lab, interval: float):
    """The fs-inject daemon in the switch namespace, logging to a file; killed at the end."""
    argv = [*command("fs-inject"), "-v", "--interval", str(interval), "--pathspace",
            lab.pathspace, "--lock-file", str(lab.tmpdir / "fs-inject.lock")]
    path = lab.tmpdir / "daemon.log"
    with open(path, "w+") as log:
        daemon = subprocess.Popen(["ip", "netns", "exec", lab.sw, *argv], stdout=log,
                                  stderr=log)
        try:
            yield daemon, path
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def test_session_down_keeps_the_chain_unless_told_to_flush(lab):
    before = slides_installed(lab)
    lab.kill("bird")
    wait_for(lambda: lab.frr_session().state != "Established", what="session down")
    res = inject(lab)
    assert "no Established session" in res.stderr
    assert saved(lab) == before

    res = inject(lab, "--on-session-down", "flush")
    assert flowspec(lab) == []

    # BIRD back: the policy comes back by itself.
    lab.revive("bird")
    lab.wait_established()
    lab.wait_frr_routes(4, 2)
    inject(lab)
    assert saved(lab) == before


def test_established_session_with_no_routes_empties_the_chain(lab):
    slides_installed(lab)
    lab.iptables("ctl", "-F", "FORWARD")
    lab.iptables("ctl", "-P", "FORWARD", "ACCEPT")
    lab.iptables("ctl", "-P", "FORWARD", "ACCEPT", v6=True)
    lab.bird_conf.write_text("")
    lab.birdc("configure")
    lab.wait_frr_routes(4, 0)
    inject(lab)
    assert flowspec(lab) == []


def test_hand_edit_is_repaired_and_unchanged_poll_writes_nothing(lab):
    before = slides_installed(lab)
    lab.iptables("sw", "-I", "FLOWSPEC", "1", "-j", "ACCEPT")
    lab.iptables("sw", "-A", "FORWARD", "-j", "FLOWSPEC")
    res = inject(lab)
    assert "differed from the routes" in res.stderr
    assert saved(lab) == before
    res = inject(lab)
    assert "unchanged" in res.stderr and "applied" not in res.stderr


def test_bgpd_killed_leaves_the_chain_then_the_daemon_recovers(lab):
    before = slides_installed(lab)
    lab.kill("bgpd")
    res = inject(lab, check=False)
    assert res.returncode == 4
    assert res.stderr.strip().splitlines()[-1].startswith("fs-inject: vtysh -c ")
    assert res.stderr.strip().endswith("FLOWSPEC kept as it was.")
    assert saved(lab) == before

    with daemon_running(lab, 0.5) as (daemon, path):
        wait_for(lambda: "Retrying" in path.read_text(), what="the daemon's retry line")
        assert saved(lab) == before
        # While bgpd is away the controller's policy changes; once bgpd is back, the daemon
        # installs the new policy by itself.
        lab.iptables("ctl", "-A", "FORWARD", "-d", "198.51.100.10/32", "-j", "DROP")
        fetch(lab)
        lab.revive("bgpd")
        lab.wait_established()
        wait_for(lambda: len(flowspec(lab)) == 3, what="the new policy on the switch")
        # SIGHUP polls at once; SIGTERM stops between applies with exit 0.
        daemon.send_signal(signal.SIGHUP)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


def test_held_xtables_lock_fails_cleanly_and_keeps_the_chain(lab):
    load_policy(lab, "slides.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    lockfile = lab.tmpdir / "xtables.lock"
    env = {**os.environ, "XTABLES_LOCKFILE": str(lockfile)}
    base = ["ip", "netns", "exec", lab.sw, *command("fs-inject"), "--once", "--family", "ipv4",
            "--backend", "legacy", "--pathspace", lab.pathspace,
            "--lock-file", str(lab.tmpdir / "fs-inject.lock")]
    subprocess.run(base, env=env, check=True, capture_output=True)
    before = lab.run("sw", "iptables-legacy-save", "-t", "filter").stdout
    lab.iptables("ctl", "-A", "FORWARD", "-d", "198.51.100.10/32", "-j", "DROP")
    fetch(lab)
    lab.wait_frr_routes(4, 3)
    with open(lockfile, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 6
    assert "FLOWSPEC kept as it was." in res.stderr
    after = lab.run("sw", "iptables-legacy-save", "-t", "filter").stdout
    # Chain policy counters move with the BGP traffic; the rules must not.
    strip = lambda t: [re.sub(r" \[\d+:\d+\]$", "", ln) for ln in t.splitlines()  # noqa: E731
                       if not ln.startswith("#")]
    assert strip(after) == strip(before)


def test_stateful_lets_a_tcp_handshake_complete(lab):
    load_policy(lab, "rich.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 12)
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.h2, "python3", "-c",
         "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
         f"s.bind(('{lab.h2_v4}', 80)); s.listen(); print('ready', flush=True)\n"
         "while True:\n c, _ = s.accept(); c.sendall(b'hello'); c.close()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = ["python3", "-c",
                  "import socket; s=socket.create_connection"
                  f"(('{lab.h2_v4}', 80), timeout=2); print(s.recv(5).decode())"]
        inject(lab)
        assert lab.run("h1", *client, check=False).returncode != 0  # SYN-ACK dropped
        inject(lab, "--stateful")
        assert flowspec(lab)[0].startswith("-A FLOWSPEC -m conntrack --ctstate RELATED,ESTABLISHED")
        assert lab.run("h1", *client).stdout.strip() == "hello"
    finally:
        server.kill()
        server.wait()


def test_backend_follows_the_host_rules(lab):
    # The switch's own rules live in the legacy tables: fs-inject must write there too, or
    # packets would meet the host's legacy FORWARD rules and never our chain.
    lab.run("sw", "iptables-legacy", "-A", "INPUT", "-s", "192.0.2.99/32", "-j", "DROP")
    lab.run("sw", "iptables-legacy", "-A", "INPUT", "-s", "192.0.2.98/32", "-j", "DROP")
    load_policy(lab, "slides.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    res = inject(lab, "--family", "ipv4")
    assert "iptables backend: legacy" in res.stderr
    legacy = lab.run("sw", "iptables-legacy", "-S", "FLOWSPEC").stdout
    assert "-A FLOWSPEC -s 2.0.0.1/32 -d 1.0.0.1/32" in legacy
    assert lab.run("sw", "iptables-nft", "-S", "FLOWSPEC", check=False).returncode != 0


def test_sigkill_in_the_middle_of_an_apply_leaves_old_or_new_never_half(lab):
    # A 3,000-rule chain takes iptables-restore long enough to be caught in the act.
    rules = "".join(f"-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport {1000 + n} -j ACCEPT\n"
                    for n in range(1, 3001))
    lab.run("ctl", "iptables-restore", input=f"*filter\n:FORWARD DROP [0:0]\n{rules}COMMIT\n")
    fetch(lab)
    lab.wait_frr_routes(4, 3001, timeout=60)
    before = saved(lab)
    argv = ["ip", "netns", "exec", lab.sw, *command("fs-inject"), "--once", "--family", "ipv4",
            "--pathspace", lab.pathspace, "--lock-file", str(lab.tmpdir / "fs-inject.lock")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    caught = False
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            out = subprocess.run(["pgrep", "-f", "iptables-nft-restore --noflush"],
                                 capture_output=True, text=True).stdout
            if out.strip():
                os.killpg(proc.pid, signal.SIGKILL)
                caught = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert caught, "iptables-restore was never seen running"
    after = saved(lab)
    rules_after = [ln for ln in after if ln.startswith("-A FLOWSPEC")]
    # All or nothing: the old tables, or the complete new chain.
    assert after == before or len(rules_after) == 3001, (caught, len(rules_after))
    # The next run converges without help.
    inject(lab, "--family", "ipv4")
    assert len(flowspec(lab)) == 3001


def ip6_filter(lab) -> subprocess.CompletedProcess:
    return lab.run("sw", "nft", "list", "table", "ip6", "filter", check=False)


def test_a_family_the_kernel_refuses_puts_the_other_back(lab):
    # Another program owns the switch's IPv6 filter table (nftables' "flags owner": the kernel
    # lets only the netlink socket that made it change it), so the kernel refuses
    # ip6tables-restore's transaction (EPERM) after IPv4's new chain has gone in.
    load_policy(lab, "slides.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    owner = subprocess.Popen(["ip", "netns", "exec", lab.sw, "nft", "-i"], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        owner.stdin.write("add table ip6 filter { flags owner; }\n"
                          "add chain ip6 filter FORWARD { type filter hook forward priority 0; "
                          "policy accept; }\n")
        owner.stdin.flush()
        wait_for(lambda: "flags owner" in ip6_filter(lab).stdout, what="an owned ip6 table")
        inject(lab, "--family", "ipv4")
        before4, before6 = saved(lab), ip6_filter(lab).stdout

        # The new policy, both families: IPv4 goes in, then IPv6 is refused.
        reset_policy(lab)
        load_policy(lab, "rich.sh")
        load_policy(lab, "rich6.sh", v6=True)
        fetch(lab)
        lab.wait_frr_routes(4, 12)
        lab.wait_frr_routes(6, 4)
        res = inject(lab, check=False)
        assert res.returncode == 6, res.stderr
        errors = [ln for ln in res.stderr.splitlines()
                  if re.match(r"fs-inject: (?!(DEBUG|INFO|WARNING|ERROR) )", ln)]
        assert len(errors) == 1, res.stderr
        assert errors[0].startswith(
            "fs-inject: ip6tables-nft-restore refused line 2 (:FLOWSPEC - [0:0]): line 2: "
            "CHAIN_USER_ADD failed (Operation not permitted): chain FLOWSPEC (and 5 more "
            "errors); the kernel said no: another program may own the table"), errors
        assert errors[0].endswith("; IPv4 FLOWSPEC put back as it was. FLOWSPEC kept as it was.")
        assert "applied IPv4 FLOWSPEC: 12 rules" in res.stderr
        assert "put IPv4 FLOWSPEC back as it was (2 rules): IPv6 could not be applied" in res.stderr
        # Both families as they were: the old policy, enforced (rich.sh accepts this one).
        assert saved(lab) == before4
        assert ip6_filter(lab).stdout == before6
        assert not lab.probe("tcp", dport=8081)
    finally:
        owner.stdin.close()
        owner.wait(timeout=10)
    # The owner gone (its table goes with it), the next run installs both families.
    wait_for(lambda: ip6_filter(lab).returncode != 0, what="the owned table gone")
    inject(lab)
    got = lab.probe_many([p for p, _, _ in RICH_PROBES])
    assert [(why, g) for (_, _, why), g in zip(RICH_PROBES, got)] == [
        (why, want) for _, want, why in RICH_PROBES]



APPLY = """
import sys
from flowseg.errors import FlowsegError
from flowseg.model import Family
from fs_inject.system import Switch
try:
    Switch(None, "auto").iptables_restore(Family.V4, sys.stdin.read())
except FlowsegError as exc:
    print(exc)
    sys.exit(exc.exit_code)
"""


def test_a_rule_the_kernel_refuses_mid_transaction_changes_nothing(lab):
    # iptables accepts a hashlimit of 2^35 B/s and the kernel refuses it (EINVAL, measured on
    # 6.18). fs-inject never writes one (it refuses rates above 4e9 B/s), so the rule is put
    # in the middle of a 3,001-rule transaction here, applied by fs-inject's own apply code.
    before = slides_installed(lab)
    rules = [f"-A FLOWSPEC -d 198.51.100.10/32 -p tcp -m tcp --dport {1000 + n} -j ACCEPT"
             for n in range(1, 3001)]
    rules.insert(1500, "-A FLOWSPEC -d 198.51.100.10/32 -m hashlimit --hashlimit-above "
                       "34359738368b/s --hashlimit-name fs4-kernel -m comment --comment "
                       '"flowseg 1501 rate 34359738368B/s" -j DROP')
    text = "*filter\n:FLOWSPEC - [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"
    res = lab.run("sw", sys.executable, "-c", APPLY, input=text, check=False)
    assert res.returncode == 6, (res.stdout, res.stderr)
    assert res.stdout.startswith("iptables-nft-restore refused line 1503 (flowseg 1501 rate "
                                 "34359738368B/s): line 1503: RULE_APPEND failed (Invalid "
                                 "argument)"), res.stdout
    # The transaction is refused whole: not one of the 1,500 rules in front of it went in.
    assert saved(lab) == before
    assert "unchanged" in inject(lab).stderr


def test_the_daemon_skips_unchanged_routes_but_still_repairs_the_chain(lab):
    before = slides_installed(lab)
    with daemon_running(lab, 0.3) as (daemon, path):
        # Unchanged routes (only their ages move): the chain is not made again, nor written.
        wait_for(lambda: path.read_text().count("as at the last poll") >= 4,
                 what="polls that found FRR's routes unchanged")
        assert saved(lab) == before
        # A hand edit is still put back: the chain in force is compared at every poll.
        lab.run("sw", "iptables", "-D", "FLOWSPEC", "1")
        wait_for(lambda: saved(lab) == before, what="the hand edit repaired")
        assert "rules differed from the routes" in path.read_text()
        # A new policy is a new dump: made and installed.
        lab.iptables("ctl", "-I", "FORWARD", "1", "-d", "198.51.100.10/32", "-j", "DROP")
        fetch(lab)
        wait_for(lambda: len(flowspec(lab)) == 3, what="the new policy on the switch")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
