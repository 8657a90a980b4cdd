"""Operations on real daemons: fs-inject started the way its systemd unit starts it, and the
examples (bird-multi.conf, the FRR daemons file) being what the lab runs.

systemd is not PID 1 here, so the test plays systemd's part for fs-inject.service: it takes
ExecStart from the unit file, expands $FS_INJECT_OPTS from the example EnvironmentFile (plus
the lab's pathspace and a short interval), applies the unit's CapabilityBoundingSet and
NoNewPrivileges with setpriv, runs it in the switch namespace and stops it with SIGTERM, as
`systemctl stop` does.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flowseg.lab import EXAMPLES_DIR, Lab
from flowseg.scenario import command, fetch, load_policy, reset_policy

pytestmark = pytest.mark.lab

SYSTEMD = EXAMPLES_DIR / "systemd"


def unit_settings(path: Path, section: str) -> list[tuple[str, str]]:
    settings, current = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line[1:-1]
        elif line and line[0] not in "#;" and current == section:
            key, _, value = line.partition("=")
            settings.append((key, value))
    return settings


def unit_value(path: Path, key: str) -> str:
    (value,) = [v for k, v in unit_settings(path, "Service") if k == key]
    return value


def env_file_options(path: Path, variable: str) -> list[str]:
    for line in path.read_text().splitlines():
        if line.startswith(f"{variable}="):
            return line.split("=", 1)[1].strip('"').split()
    raise AssertionError(f"{path} does not set {variable}")


def unit_argv(unit: Path, env: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it: $VAR split at whitespace, the program from this venv."""
    argv = []
    for word in shlex.split(unit_value(unit, "ExecStart")):
        if word.startswith("$"):
            argv += env[word[1:]].split()
        else:
            argv.append(word)
    program = argv[0]
    assert program == f"/usr/local/bin/{Path(program).name}"
    return command(Path(program).name) + argv[1:]


def setpriv_for(unit: Path) -> list[str]:
    """The unit's capability bounding set and no-new-privileges, as a setpriv prefix."""
    caps = unit_value(unit, "CapabilityBoundingSet").split()
    bounding = ",".join(["-all"] + ["+" + c.removeprefix("CAP_").lower() for c in caps])
    prefix = ["setpriv", "--bounding-set", bounding]
    if unit_value(unit, "NoNewPrivileges") == "yes":
        prefix.append("--no-new-privs")
    return prefix


def rules(lab, v6: bool = False) -> list[str]:
    out = lab.run("sw", "ip6tables" if v6 else "iptables", "-S", "FLOWSPEC", check=False).stdout
    return [re.sub(r' -m comment --comment "[^"]*"', "", ln)
            for ln in out.splitlines() if ln.startswith("-A")]


def jumps(lab, v6: bool) -> bool:
    out = lab.run("sw", "ip6tables" if v6 else "iptables", "-S", "FORWARD").stdout
    return "-A FORWARD -j FLOWSPEC" in out.splitlines()


def wait_rules(lab, want: list[str], proc: subprocess.Popen, log: Path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = rules(lab)
        if got == want:
            return
        if proc.poll() is not None:
            pytest.fail(f"fs-inject exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"FLOWSPEC is {got}, expected {want}\n{log.read_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def unit_daemon(lab, interval: float):
    """fs-inject.service's ExecStart in the switch namespace; yields (process, log path).

    Killed at the end whatever happens; a clean stop is the test's to check.
    """
    unit = SYSTEMD / "fs-inject.service"
    opts = env_file_options(SYSTEMD / "fs-inject.default", "FS_INJECT_OPTS")
    # Later options win in click, so the lab's interval replaces the example's. The lock file
    # goes into the lab's folder: /run/fs-inject.lock is shared with every other lab.
    opts += ["--pathspace", lab.pathspace, "--interval", str(interval), "-v",
             "--lock-file", str(lab.tmpdir / "fs-inject.lock"),
             "--metrics-file", str(lab.tmpdir / "fs-inject.prom")]
    argv = ["ip", "netns", "exec", lab.sw, *setpriv_for(unit),
            *unit_argv(unit, {"FS_INJECT_OPTS": " ".join(opts)})]
    log = lab.tmpdir / "fs-inject.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_cleanly(proc: subprocess.Popen, log: Path) -> str:
    """`systemctl stop`: SIGTERM, then a clean exit 0 between two polls; returns the log."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, log.read_text()
    text = log.read_text()
    assert "stopping" in text
    assert "Traceback" not in text
    return text


SLIDES_CHAIN = ["-A FLOWSPEC -s 2.0.0.1/32 -d 1.0.0.1/32 -j ACCEPT", "-A FLOWSPEC -j DROP"]


def test_fs_inject_runs_from_its_unit_file(lab):
    with unit_daemon(lab, interval=0.5) as (proc, log):
        load_policy(lab, "slides.sh")
        fetch(lab)
        wait_rules(lab, SLIDES_CHAIN, proc, log)
        forward = lab.run("sw", "iptables", "-S", "FORWARD").stdout.splitlines()
        assert forward[1:] == ["-A FORWARD -j FLOWSPEC"]
        # It did so with the unit's capabilities only (CAP_NET_ADMIN 12, CAP_NET_RAW 13).
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":\t" in line)
        assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) == 1 << 12 | 1 << 13
        assert status["NoNewPrivs"].strip() == "1"

        # A policy change reaches the chain with nobody running fs-inject by hand.
        reset_policy(lab)
        load_policy(lab, "rich.sh")
        fetch(lab)
        deadline = time.monotonic() + 20
        while len(rules(lab)) != 12 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert len(rules(lab)) == 12, log.read_text()
        assert lab.probe("tcp", dport=22)
        assert not lab.probe("tcp", dport=23)

        # The metrics file shows the applied rules and the counters of the rules that matched.
        def prom() -> str:
            path = lab.tmpdir / "fs-inject.prom"
            return path.read_text() if path.exists() else ""

        deadline = time.monotonic() + 10
        while 'flowseg_rule_packets_total{program="fs-inject",family="ipv4",rule="3"} 1' \
                not in prom() and time.monotonic() < deadline:
            time.sleep(0.2)
        text = prom()
        assert 'flowseg_rules_installed{program="fs-inject",family="ipv4"} 12' in text, text
        assert 'flowseg_rule_packets_total{program="fs-inject",family="ipv4",rule="3"} 1' in text
        assert 'flowseg_bgp_session_established{program="fs-inject"} 1' in text

        assert "polling FRR every 0.5 s" in stop_cleanly(proc, log)


def test_unit_reload_polls_now(lab):
    unit = SYSTEMD / "fs-inject.service"
    with unit_daemon(lab, interval=3600) as (proc, log):
        # The first poll happens at start (it sets up both chains, empty); after it, only a
        # reload can bring a change in before the hour is up.
        deadline = time.monotonic() + 10
        while not all(jumps(lab, v6) for v6 in (False, True)):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        load_policy(lab, "slides.sh")
        fetch(lab)
        lab.wait_frr_routes(4, 2)
        reload = shlex.split(unit_value(unit, "ExecReload").replace("$MAINPID", str(proc.pid)))
        subprocess.run(reload, check=True, timeout=10)
        wait_rules(lab, SLIDES_CHAIN, proc, log, timeout=10)
        stop_cleanly(proc, log)


def bgpd_options() -> list[list[str]]:
    """examples/daemons' bgpd_options as groups: a flag and the values after it."""
    script = '. "$1"; printf "%s" "$bgpd_options"'
    text = subprocess.run(["bash", "-c", script, "bash", str(EXAMPLES_DIR / "daemons")],
                          capture_output=True, text=True, check=True).stdout
    groups: list[list[str]] = []
    for word in shlex.split(text):
        if word.startswith("-") or not groups:
            groups.append([word])
        else:
            groups[-1].append(word)
    return groups


def test_lab_bgpd_runs_with_the_daemons_file_options(lab):
    # The lab's bgpd is the process the lab spawned: setpriv and `ip netns exec` exec into it.
    pid = lab._daemons["bgpd"].pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert Path(argv[0]).name == "bgpd"
    for group in bgpd_options():
        n = len(group)
        assert any(argv[i:i + n] == group for i in range(len(argv))), (
            f"examples/daemons gives bgpd {' '.join(group)}; the lab runs {shlex.join(argv)}"
        )


def test_bird_multi_conf_serves_the_lab_switch(tmp_path, request):
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copyfile(EXAMPLES_DIR / "bird-multi.conf", examples / "bird.conf")
    shutil.copyfile(EXAMPLES_DIR / "frr.conf", examples / "frr.conf")
    # Its sessions export through fs-fetch's filters, which must exist before BIRD starts.
    initial = (Path(__file__).parents[1] / "fixtures/bird/scopes/empty-flowspec.conf").read_text()
    with Lab(examples_dir=examples, flowspec=initial) as multi:
        request.addfinalizer(multi.close)
        load_policy(multi, "slides.sh")
        fetch(multi, "--scopes", str(EXAMPLES_DIR / "scopes.conf"))
        multi.wait_frr_routes(4, 2)
        # The two switches that do not exist in the lab stay down, and harm nothing.
        out = multi.birdc("show", "protocols").stdout
        states = {ln.split()[0]: ln.split()[3] for ln in out.splitlines()[1:]
                  if ln.startswith("switch")}
        assert states == {"switch1": "up", "switch2": "start", "switch3": "start"}, out
        # Negotiated hold time: the lower of BIRD's 30 s and FRR's 9 s.
        assert multi.frr_neighbor()["bgpTimerHoldTimeMsecs"] == 9000
