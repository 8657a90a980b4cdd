"""flowseg.metrics: the Prometheus text it renders, label escaping, the atomic write."""

import os
import re
import stat

import pytest

from flowseg import metrics
from flowseg.metrics import POLICY, MetricFacts, RuleCounter, render, write_textfile
from flowseg.model import Family

# One sample line of the text exposition format: name, optional {labels}, value.
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})?'
    r' (?P<value>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|NaN|Inf))$'
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: str) -> dict[str, dict]:
    """A strict little reader: {family: {"type", "help", "samples": [(labels, value)]}}.

    Every family has HELP then TYPE, and its samples follow without another family between.
    """
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current, help_text = line[7:].split(" ", 1)
            assert current not in families, f"{current} described twice"
            families[current] = {"help": help_text, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and families[name]["type"] is None, line
            assert kind in ("gauge", "counter")
            families[name]["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert current and families[current]["type"], f"sample before TYPE: {line!r}"
            assert match.group("name") == current, f"{line!r} outside its family {current}"
            labels = {k: unescape(v) for k, v in LABEL.findall(match.group("labels") or "")}
            families[current]["samples"].append((labels, float(match.group("value"))))
    return families


FULL = MetricFacts(
    program="fs-inject",
    rules_installed={Family.V6: 2, Family.V4: 3},
    routes_refused=0,
    last_apply_time=1764759600.25,
    last_apply_result="applied",
    session_established=True,
    generation=7,
    counters=[
        RuleCounter(Family.V4, POLICY, packets=4, bytes=240),
        RuleCounter(Family.V4, 10, packets=1, bytes=60),
        RuleCounter(Family.V4, 2, packets=12, bytes=720),
        RuleCounter(Family.V6, 1, packets=0, bytes=0),
    ],
)


def test_full_facts_render_every_family():
    families = parse(render(FULL))
    assert list(families) == [
        "flowseg_rules_installed",
        "flowseg_routes_refused",
        "flowseg_last_apply_timestamp_seconds",
        "flowseg_last_apply_result",
        "flowseg_bgp_session_established",
        "flowseg_generation",
        "flowseg_rule_packets_total",
        "flowseg_rule_bytes_total",
    ]
    assert families["flowseg_rules_installed"]["samples"] == [
        ({"program": "fs-inject", "family": "ipv4"}, 3.0),
        ({"program": "fs-inject", "family": "ipv6"}, 2.0),
    ]
    assert families["flowseg_last_apply_timestamp_seconds"]["samples"] == [
        ({"program": "fs-inject"}, 1764759600.25)
    ]
    results = {lab["result"]: v for lab, v in families["flowseg_last_apply_result"]["samples"]}
    assert results == {"applied": 1.0, "unchanged": 0.0, "failed": 0.0}
    assert families["flowseg_bgp_session_established"]["samples"][0][1] == 1.0
    assert families["flowseg_generation"]["samples"][0][1] == 7.0
    assert families["flowseg_rule_packets_total"]["type"] == "counter"
    # Chain order: rule numbers ascending (numerically), the policy last, IPv4 before IPv6.
    samples = families["flowseg_rule_bytes_total"]["samples"]
    order = [(lab["family"], lab["rule"]) for lab, _ in samples]
    assert order == [("ipv4", "2"), ("ipv4", "10"), ("ipv4", "policy"), ("ipv6", "1")]
    packets = {lab["rule"]: v for lab, v in families["flowseg_rule_packets_total"]["samples"]
               if lab["family"] == "ipv4"}
    assert packets == {"2": 12.0, "10": 1.0, "policy": 4.0}


def test_exact_text_of_a_small_run():
    facts = MetricFacts(
        program="fs-fetch",
        rules_installed={Family.V4: 2},
        last_apply_time=100.5,
        last_apply_result="unchanged",
    )
    assert render(facts) == (
        "# HELP flowseg_rules_installed Rules in force in the chain, per address family.\n"
        "# TYPE flowseg_rules_installed gauge\n"
        'flowseg_rules_installed{program="fs-fetch",family="ipv4"} 2\n'
        "# HELP flowseg_routes_refused Flow-Spec routes or rules of the last read that could not"
        " be translated; while above 0 the chain in force is kept.\n"
        "# TYPE flowseg_routes_refused gauge\n"
        'flowseg_routes_refused{program="fs-fetch"} 0\n'
        "# HELP flowseg_last_apply_timestamp_seconds Unix time at which the last run ended.\n"
        "# TYPE flowseg_last_apply_timestamp_seconds gauge\n"
        'flowseg_last_apply_timestamp_seconds{program="fs-fetch"} 100.5\n'
        "# HELP flowseg_last_apply_result 1 for the result of the last run (applied, unchanged or"
        " failed), 0 for the others.\n"
        "# TYPE flowseg_last_apply_result gauge\n"
        'flowseg_last_apply_result{program="fs-fetch",result="applied"} 0\n'
        'flowseg_last_apply_result{program="fs-fetch",result="unchanged"} 1\n'
        'flowseg_last_apply_result{program="fs-fetch",result="failed"} 0\n'
    )


def test_unknown_facts_are_left_out():
    families = parse(render(MetricFacts(program="fs-inject")))
    # Only the refused count, which is always known.
    assert list(families) == ["flowseg_routes_refused"]


def test_session_down_is_zero_not_absent():
    facts = MetricFacts(program="fs-inject", session_established=False, last_apply_result="failed")
    families = parse(render(facts))
    assert families["flowseg_bgp_session_established"]["samples"] == [
        ({"program": "fs-inject"}, 0.0)
    ]
    results = {lab["result"]: v for lab, v in families["flowseg_last_apply_result"]["samples"]}
    assert results["failed"] == 1.0


@pytest.mark.parametrize(
    "raw, escaped",
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ('\\"\n', '\\\\\\"\\n'),
    ],
    ids=["plain", "quote", "backslash", "newline", "all-three"],
)
def test_label_escaping(raw, escaped):
    assert metrics.escape_label(raw) == escaped
    text = render(MetricFacts(program=raw))
    assert f'flowseg_routes_refused{{program="{escaped}"}} 0\n' in text
    # And it reads back as the original value.
    labels, _ = parse(text)["flowseg_routes_refused"]["samples"][0]
    assert labels["program"] == raw


def test_help_escaping():
    assert metrics.escape_help('a\\b\nc "d"') == 'a\\\\b\\nc "d"'


@pytest.mark.parametrize(
    "value, text",
    [(True, "1"), (False, "0"), (3, "3"), (0.5, "0.5"), (float("nan"), "NaN"),
     (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (1764759600.0, "1764759600.0")],
)
def test_values(value, text):
    assert metrics.format_value(value) == text


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(last_apply_result="done"), "last_apply_result must be one of"),
        (dict(rules_installed={4: 1}), "keyed by Family"),
        (dict(rules_installed={Family.V4: -1}), "must be >= 0"),
        (dict(routes_refused=-2), "routes_refused"),
        (
            dict(counters=[RuleCounter(Family.V4, 1, 1, 1), RuleCounter(Family.V4, 1, 2, 2)]),
            "same family and rule twice",
        ),
    ],
)
def test_bad_facts(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MetricFacts(program="fs-inject", **kwargs)


@pytest.mark.parametrize(
    "args, words",
    [
        ((Family.V4, 0, 1, 1), "rule number from 1"),
        ((Family.V4, "default", 1, 1), "rule number from 1"),
        ((Family.V4, True, 1, 1), "rule number from 1"),
        ((4, 1, 1, 1), "must be a Family"),
        ((Family.V4, 1, -1, 1), "packets must be"),
        ((Family.V4, 1, 1, 2.5), "bytes must be"),
    ],
)
def test_bad_counters(args, words):
    with pytest.raises(ValueError, match=words):
        RuleCounter(*args)


def test_write_textfile_new_file(tmp_path):
    path = tmp_path / "fs-inject.prom"
    write_textfile(path, "a 1\n")
    assert path.read_text() == "a 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["fs-inject.prom"]


def test_write_textfile_replaces_and_keeps_mode(tmp_path):
    path = tmp_path / "fs-inject.prom"
    path.write_text("old 1\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_textfile(str(path), render(FULL))
    assert parse(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # Renamed over, not rewritten in place: a reader holding the old file sees it whole.
    assert path.stat().st_ino != inode
    assert os.listdir(tmp_path) == ["fs-inject.prom"]


def test_write_textfile_is_renamed_over(tmp_path, monkeypatch):
    path = tmp_path / "m.prom"
    path.write_text("old 1\n")
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        # At the moment of the rename the new text is complete and synced beside the target,
        # under a name the collector ignores.
        name = os.path.basename(src)
        assert name.startswith(".m.prom.") and name.endswith(".tmp")
        assert os.path.dirname(src) == str(tmp_path)
        seen.append(open(src).read())
        real_replace(src, dst)

    monkeypatch.setattr(metrics.os, "replace", replace)
    write_textfile(path, "new 2\n")
    assert seen == ["new 2\n"]
    assert path.read_text() == "new 2\n"


def test_write_textfile_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.prom"
    path.write_text("old 1\n")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(metrics.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_textfile(path, "new 2\n")
    assert path.read_text() == "old 1\n"
    assert os.listdir(tmp_path) == ["m.prom"]


def test_write_textfile_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_textfile(tmp_path / "no-such-dir" / "m.prom", "a 1\n")
