"""Every match fs-inject installs, shown by real packets: TCP flags, length, DSCP, ICMP types,
a negated port; and rate 0 (DROP) in front of broader ACCEPTs. The policy is
examples/policies/components-packets.sh, through fs-fetch, real BIRD, real FRR and fs-inject.
"""

from __future__ import annotations

import pytest

from flowseg.scenario import fetch, inject, load_policy

pytestmark = pytest.mark.lab

PROBES = [
    (dict(proto="tcp", dport=7000), False, "--syn DROP (rule 1)"),
    (dict(proto="tcp", dport=7001), True, "SYN does not match --tcp-flags SYN,ACK ACK"),
    (dict(proto="udp", dport=7100), False, "length 0:200 DROP"),
    (dict(proto="udp", dport=7101), True, "length 1000: does not match a small datagram"),
    (dict(proto="udp", dport=7200), False, "DSCP 0 DROP"),
    (dict(proto="udp", dport=7201), True, "DSCP 46 does not match DSCP 0"),
    (dict(proto="icmp"), True, "echo request: ICMP ACCEPT"),
    (dict(proto="icmp", icmp_type=13), False, "timestamp request: type 13 DROP"),
    (dict(proto="udp", dport=7300), True, "! --dport 7300 DROP does not match 7300"),
    (dict(proto="udp", dport=7301), False, "! --dport 7300 DROP"),
]


def test_components_mean_on_the_switch_what_they_mean_on_the_controller(lab):
    load_policy(lab, "components-packets.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 13)
    session = lab.frr_session()
    res = inject(lab)
    assert "applied IPv4 FLOWSPEC" in res.stderr
    got = lab.probe_many([p for p, _, _ in PROBES])
    assert [(why, g) for (_, _, why), g in zip(PROBES, got)] == [
        (why, want) for _, want, why in PROBES
    ]
    # The chain reads back as what was applied: a second run writes nothing.
    assert "unchanged" in inject(lab).stderr
    now = lab.frr_session()
    assert (now.established, now.dropped) == (session.established, session.dropped)
