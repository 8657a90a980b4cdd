"""fs-inject as a switch agent, on real FRR and real iptables: faults, repair, daemon, stateful.

Every case checks the chain in force byte for byte (iptables-save without its date lines) and
the one-line message.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import time

import pytest

from flowseg.scenario import command, fetch, inject, load_policy, wait_for

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

    argv = [*command("fs-inject"), "-v", "--interval", "0.5", "--pathspace", lab.pathspace,
            "--lock-file", str(lab.tmpdir / "fs-inject.lock")]
    log = open(lab.tmpdir / "daemon.log", "w+")
    daemon = subprocess.Popen(["ip", "netns", "exec", lab.sw, *argv], stdout=log, stderr=log)
    try:
        wait_for(lambda: "Retrying" in (lab.tmpdir / "daemon.log").read_text(),
                 what="the daemon's retry line")
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
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log.close()


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
