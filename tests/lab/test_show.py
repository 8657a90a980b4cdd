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
