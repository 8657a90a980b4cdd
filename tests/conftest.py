"""Shared pytest setup: the `lab` marker and the `lab` fixture (flowseg.lab.Lab).

Tests marked `lab` build network namespaces and run BIRD and FRR bgpd, so they need root and
both daemons; elsewhere they are skipped with the reason, and the unit tests still run.
"""

import os

import pytest

from flowseg import lab as flowseg_lab


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs root, bird/birdc and FRR bgpd/vtysh; builds network namespaces"
    )


def pytest_collection_modifyitems(config, items):
    missing = flowseg_lab.missing_requirements()
    if not missing:
        return
    if os.environ.get("FLOWSEG_REQUIRE_LAB") == "1":
        # CI sets this: a lab test skipped there would hide a missing install step.
        raise pytest.UsageError("lab tests required but cannot run: " + ", ".join(missing))
    skip = pytest.mark.skip(reason="lab test needs " + ", ".join(missing))
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab(request):
    """A started lab: BIRD and bgpd running, session Established, an empty flowspec.conf."""
    missing = flowseg_lab.missing_requirements()
    if missing:
        pytest.skip("lab needs " + ", ".join(missing))
    with flowseg_lab.Lab() as started:
        # close() is idempotent; this finalizer still runs if the with block's exit does not.
        request.addfinalizer(started.close)
        yield started
