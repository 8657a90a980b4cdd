"""fs-inject with zebra running beside bgpd, and zebra dying (FRR 8.4.4's zebra crashes when
flowspec drop routes are withdrawn or replaced: shared/docs/flowspec-wire-facts.md 5).

bgpd keeps serving the flowspec table without zebra, so the switch keeps enforcing and keeps
following the controller; only zebra-owned vtysh commands fail.
"""

from __future__ import annotations

import pytest

from flowseg.lab import Lab, missing_requirements
from flowseg.scenario import fetch, inject, load_policy

pytestmark = pytest.mark.lab


@pytest.fixture
def zlab(request):
    if missing_requirements():
        pytest.skip("lab needs " + ", ".join(missing_requirements()))
    with Lab(zebra=True) as lab:
        request.addfinalizer(lab.close)
        yield lab


def chain(lab) -> list[str]:
    return [ln for ln in lab.run("sw", "iptables", "-S", "FLOWSPEC").stdout.splitlines()
            if ln.startswith("-A")]


def test_zebra_killed_changes_nothing_and_policy_changes_still_arrive(zlab):
    lab = zlab
    load_policy(lab, "slides.sh")
    fetch(lab)
    lab.wait_frr_routes(4, 2)
    inject(lab)
    before = chain(lab)
    assert len(before) == 2

    lab.kill("zebra")
    assert "zebra is not running" in lab.vtysh("show interface", check=False).stderr + \
        lab.vtysh("show interface", check=False).stdout
    res = inject(lab)
    assert "unchanged" in res.stderr
    assert chain(lab) == before

    # Drop routes withdrawn and replaced (what crashed zebra 8.4.4) reach the switch all the same.
    lab.iptables("ctl", "-I", "FORWARD", "1", "-d", "198.51.100.10/32", "-j", "DROP")
    fetch(lab)
    lab.wait_frr_routes(4, 3)
    inject(lab)
    assert len(chain(lab)) == 3

    lab.revive("zebra")
    assert "unchanged" in inject(lab).stderr
