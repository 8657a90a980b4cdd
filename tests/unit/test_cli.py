"""Both commands in-process through click's CliRunner, on captured input (no root needed)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fs_fetch.cli import main as fetch
from fs_inject.cli import main as inject

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def run(cmd, *args):
    return CliRunner().invoke(cmd, list(args), catch_exceptions=False)


def test_fetch_dry_run_prints_the_file_and_touches_nothing(tmp_path):
    conf = tmp_path / "flowspec.conf"
    res = run(fetch, "--from-file", str(FIX / "iptables/slides/iptables-save.txt"), "--dry-run",
              "--bird-conf", str(conf))
    assert res.exit_code == 0
    assert "route flow4 { dst 1.0.0.1/32; src 2.0.0.1/32; }" in res.stdout
    assert not conf.exists()


def test_fetch_no_reload_writes_once_then_leaves_the_file_alone(tmp_path):
    conf = tmp_path / "flowspec.conf"
    src = str(FIX / "iptables/rich/iptables-save.txt")
    assert run(fetch, "--from-file", src, "--no-reload", "--bird-conf", str(conf)).exit_code == 0
    mtime = conf.stat().st_mtime_ns
    res = run(fetch, "-v", "--from-file", src, "--no-reload", "--bird-conf", str(conf))
    assert res.exit_code == 0
    assert "unchanged" in res.stderr
    assert conf.stat().st_mtime_ns == mtime


def test_fetch_unsupported_rule_is_one_line_and_exit_3(tmp_path):
    conf = tmp_path / "flowspec.conf"
    conf.write_text("previous\n")
    res = run(fetch, "--from-file", str(FIX / "iptables/unsupported-2/iptables-save.txt"),
              "--bird-conf", str(conf))
    assert res.exit_code == 3
    assert res.stderr.splitlines() == [
        "fs-fetch: FORWARD rule 1 (-j LOG): flowspec carries only ACCEPT and DROP; use one of "
        "them. Nothing changed."
    ]
    assert conf.read_text() == "previous\n"


def test_fetch_refuses_a_path_that_could_break_the_bird_include(tmp_path):
    res = run(fetch, "--from-file", str(FIX / "iptables/slides/iptables-save.txt"),
              "--bird-conf", str(tmp_path / 'a";include "x'))
    assert res.exit_code == 3


def test_inject_dry_run_prints_the_restore_input():
    res = run(inject, "--from-file", str(FIX / "frr/slides/vtysh-flowspec-v4.json"),
              "--family", "ipv4", "--dry-run")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[:3] == ["# IPv4", "*filter", ":FLOWSPEC - [0:0]"]
    assert lines[3].startswith("-A FLOWSPEC -s 2.0.0.1/32 -d 1.0.0.1/32 -m comment")
    assert lines[3].endswith("-j ACCEPT")
    assert lines[4].startswith("-A FLOWSPEC -m comment") and lines[4].endswith("-j DROP")
    assert lines[5:] == ["-I FORWARD 1 -j FLOWSPEC", "COMMIT"]


def test_inject_bad_json_is_one_line_and_exit_3(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text((FIX / "frr/rich/vtysh-flowspec-v4.json").read_text()[:-30])
    res = run(inject, "--from-file", str(bad), "--dry-run")
    assert res.exit_code == 3
    assert len(res.stderr.splitlines()) == 1
    assert res.stderr.endswith("FLOWSPEC kept as it was.\n")


def test_inject_bad_chain_name_is_a_usage_error():
    res = run(inject, "--chain", "bad name", "--from-file", "-", "--dry-run")
    assert res.exit_code == 2
