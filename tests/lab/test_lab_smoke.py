"""The lab itself: BGP session, Flow-Spec reaching FRR, probes, and complete cleanup."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import netns

import flowseg
from flowseg.lab import (
    BIRD_INCLUDE_LINE,
    BIRD_LOG_LINE,
    EXAMPLES_DIR,
    Lab,
    LabError,
    Probe,
    cleanup_stale,
)

pytestmark = pytest.mark.lab

TWO_ROUTES = """\
protocol static flowseg4 {
	flow4 { table flowtab4; };
	route flow4 { dst 0.0.0.0/0; src 0.0.0.0/0; } {
		bgp_ext_community.add((generic, 0x80060000, 0x0));
	};
	route flow4 { dst 1.0.0.1/32; src 2.0.0.1/32; } {
		bgp_ext_community.add((generic, 0x80090000, 0x1));
	};
}
"""


def leftovers(names):
    """What is left of a closed lab: namespaces, processes, FRR run dir, temp dir."""
    found = [ns for ns in netns.listnetns() if ns in names["namespaces"]]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if any(names["tmpdir"] in arg for arg in argv) or names["pathspace"] in argv:
            found.append(f"pid {entry}: {' '.join(argv)}")
    for path in (names["frr_run_dir"], names["tmpdir"]):
        if Path(path).exists():
            found.append(path)
    return found


def names_of(lab):
    return {
        "namespaces": set(lab.namespaces.values()),
        "tmpdir": str(lab.tmpdir),
        "pathspace": lab.pathspace,
        "frr_run_dir": str(lab.frr_run_dir),
    }


def test_session_established_for_both_families(lab):
    session = lab.frr_session()
    assert session.state == "Established"
    assert {"ipv4Flowspec", "ipv6Flowspec"} <= session.families
    assert lab.bird_bgp_state() == "Established"
    bird = lab.birdc("show", "protocols", "all", "switch1").stdout
    for channel in ("flow4", "flow6"):
        assert f"Channel {channel}\n    State:          UP" in bird
    assert lab.frr_routes(4) == []
    assert lab.frr_routes(6) == []
    vtysh = lab.vtysh("show bgp ipv4 flowspec detail json")
    assert vtysh.stdout == ""
    # The missing /etc/frr/<pathspace>/vtysh.conf is reported on stderr, and only there.
    assert "vtysh.conf" in vtysh.stderr


def test_flowspec_routes_reach_frr_without_reset(lab):
    before = lab.frr_session()
    assert "Reconfigured" in lab.load_flowspec(TWO_ROUTES).stdout
    routes = lab.wait_frr_routes(4, 2)
    by_match = {(r[0]["to"], r[0]["from"]): r[1]["ecomlist"] for r in routes}
    assert by_match == {
        ("0.0.0.0/0", "0.0.0.0/0"): "FS:rate 0.000000",
        ("1.0.0.1/32", "2.0.0.1/32"): "FS:marking 1",
    }
    assert lab.frr_routes(6) == []
    after = lab.frr_session()
    assert (after.established, after.dropped) == (before.established, before.dropped)
    # Emptying the file withdraws both routes.
    lab.load_flowspec("")
    lab.wait_frr_routes(4, 0)


def test_bird_config_error_is_reported(lab):
    with pytest.raises(subprocess.CalledProcessError) as failed:
        lab.load_flowspec("protocol static broken { flow4 { table nosuch; }; }\n")
    assert str(lab.bird_conf) in failed.value.stdout + failed.value.stderr
    assert lab.bird_bgp_state() == "Established"


def test_probes_pass_with_empty_forward(lab):
    assert "-A FORWARD" not in lab.iptables_save()
    assert "-A FORWARD" not in lab.iptables_save(v6=True)
    specs = [
        Probe("tcp", dport=80),
        Probe("udp", dport=53),
        Probe("icmp"),
        Probe("tcp", dport=80, family=6),
        Probe("udp", dport=53, family=6),
        Probe("icmp6", family=6),
        Probe("tcp", src="h2", dst="h1", dport=22),
        Probe("icmp", src="h2", dst="h1", family=6),
    ]
    assert lab.probe_many(specs) == [True] * len(specs)


def test_probe_sees_a_forward_drop(lab):
    host_rules = subprocess.run(
        ["iptables-save"], check=True, capture_output=True, text=True
    ).stdout
    lab.iptables("sw", "-A", "FORWARD", "-p", "tcp", "--dport", "80", "-j", "DROP")
    assert "-A FORWARD -p tcp -m tcp --dport 80 -j DROP" in lab.iptables_save()
    assert not lab.probe("tcp", dport=80)
    assert lab.probe("tcp", dport=81)
    assert lab.probe("udp", dport=80)
    # The IPv6 table of sw and the host's own rules are separate and untouched.
    assert lab.probe("tcp", dport=80, family=6)
    assert (
        subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
        == host_rules
    )


def test_probe_many_is_fast_and_keeps_probes_apart(lab):
    lab.iptables("sw", "-A", "FORWARD", "-p", "tcp", "--dport", "1000:1009", "-j", "DROP")
    echo_request = ("-p", "icmpv6", "--icmpv6-type", "echo-request")
    lab.iptables("sw", "-A", "FORWARD", *echo_request, "-j", "DROP", v6=True)
    specs = [Probe("tcp", dport=port) for port in range(1000, 1020)]
    specs += [{"proto": "icmp6"}, {"proto": "icmp", "family": 4}]
    started = time.monotonic()
    results = lab.probe_many(specs)
    elapsed = time.monotonic() - started
    assert results == [False] * 10 + [True] * 10 + [False, True]
    assert elapsed < 3


def test_probe_rejects_bad_specs(lab):
    with pytest.raises(ValueError):
        lab.probe("tcp")
    with pytest.raises(ValueError):
        lab.probe("sctp", dport=1)
    with pytest.raises(ValueError):
        lab.probe("icmp", src="h1", dst="h1")


def test_close_removes_everything():
    lab = Lab().start()
    names = names_of(lab)
    assert leftovers(names)
    lab.close()
    lab.close()
    assert leftovers(names) == []
    assert lab.teardown_seconds is not None


def test_cleanup_runs_when_the_block_raises():
    with pytest.raises(RuntimeError, match="test failure"):
        with Lab() as lab:
            names = names_of(lab)
            raise RuntimeError("test failure")
    assert leftovers(names) == []


def test_failed_start_cleans_up(tmp_path):
    # Both lines the lab replaces are there, so BIRD itself starts and refuses the file.
    (tmp_path / "bird.conf").write_text(f"{BIRD_INCLUDE_LINE}\n{BIRD_LOG_LINE}\nnonsense;\n")
    (tmp_path / "frr.conf").write_text((EXAMPLES_DIR / "frr.conf").read_text())
    lab = Lab(examples_dir=tmp_path)
    names = names_of(lab)
    with pytest.raises(LabError):
        lab.start()
    assert leftovers(names) == []


def test_killed_test_process_leaves_nothing_after_cleanup_stale():
    script = (
        "import json, time\n"
        "from flowseg.lab import Lab\n"
        "lab = Lab().start()\n"
        "names = {'namespaces': sorted(lab.namespaces.values()), 'tmpdir': str(lab.tmpdir),\n"
        "         'pathspace': lab.pathspace, 'frr_run_dir': str(lab.frr_run_dir),\n"
        "         'pids': sorted(lab.processes())}\n"
        "print(json.dumps(names), flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(flowseg.__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        names = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    names["namespaces"] = set(names["namespaces"])
    assert len(names["pids"]) >= 2
    # The daemons die with the test process (parent-death signal). Wait until init has also
    # reaped them, so that not even a zombie is left for pgrep to find.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in names["pids"]):
        assert time.monotonic() < deadline, leftovers(names)
        time.sleep(0.05)
    # What is left (namespaces, FRR run dir, temp dir) is stale: its owner is dead. A lab that
    # another test run starts meanwhile may clean it up first, so only the end state counts.
    cleanup_stale()
    assert leftovers(names) == []
