"""`fs-inject --show` on a 100-rule policy with traffic: the counters of the rules that matched,
by controller rule number (issue 8, point 3). Past 63 rules fs-fetch numbers the rules with the
route target 65535:N, and fs-inject orders by it."""

from __future__ import annotations

import json

import pytest

from flowseg.scenario import command, fetch, inject

pytestmark = pytest.mark.lab


def test_show_counts_by_controller_rule_number(lab):
    rules = "".join(
        f"-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport {1000 + n} -j ACCEPT\n"
        for n in range(1, 101)
    )
    lab.run("ctl", "iptables-restore", input=f"*filter\n:FORWARD DROP [0:0]\n{rules}COMMIT\n")
    fetch(lab)
    lab.wait_frr_routes(4, 101)
    inject(lab, "--family", "ipv4")
    assert lab.probe_many([dict(proto="tcp", dport=1005), dict(proto="tcp", dport=1050),
                           dict(proto="tcp", dport=1100), dict(proto="tcp", dport=999)]) == [
        True, True, True, False]

    res = lab.run("sw", *command("fs-inject"), "--show", "--json", "--family", "ipv4")
    rows = {r["rule"]: r for r in json.loads(res.stdout)}
    assert len(rows) == 101
    hit = {rule for rule, r in rows.items() if r["packets"] > 0}
    assert {"5", "50", "100", "policy"} <= hit
    assert hit - {"5", "50", "100", "policy"} == set()
    assert rows["50"]["match"] == "-d 198.51.100.10/32 -p tcp -m tcp --dport 1050"
    assert rows["policy"]["generation"] is not None

    table = lab.run("sw", *command("fs-inject"), "--show", "--family", "ipv4").stdout
    assert "generation" in table and "--dport 1050" in table


def test_fetch_show_lists_the_routes_in_force_and_birds_state(lab):
    from flowseg.scenario import load_policy

    load_policy(lab, "rich.sh")
    fetch(lab)
    res = lab.run("ctl", *command("fs-fetch"), "--show", "--json", "--bird-conf",
                  str(lab.bird_conf), "--bird-socket", str(lab.bird_socket))
    state = json.loads(res.stdout)
    assert state["generation"] == 1
    rules = [r["rule"] for r in state["routes"] if r["family"] == 4]
    assert rules[:3] == ["1", "2", "3"] and rules[-1] == "policy"
    assert state["bird"]["IPv4 flowtab4"] == len(rules)
    assert "Established" in state["bird"]["BGP switch1"]
    table = lab.run("ctl", *command("fs-fetch"), "--show", "--bird-conf", str(lab.bird_conf),
                    "--bird-socket", str(lab.bird_socket)).stdout
    assert "generation 1" in table and "BIRD" in table
