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


def test_fetch_json_lists_the_routes_for_scripts(tmp_path):
    import json

    conf = tmp_path / "flowspec.conf"
    res = run(fetch, "--from-file", str(FIX / "iptables/components/iptables-save.txt"),
              "--dry-run", "--json", "--bird-conf", str(conf))
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    v4, v6 = data["families"]
    assert (v4["family"], v4["rules_carried"], len(v4["routes"])) == ("ipv4", 20, 21)
    assert v4["left_out"][0].startswith("FORWARD rule 1 (-m conntrack")
    assert v4["routes"][-1]["policy"] and v4["routes"][-1]["rule"] is None
    assert v6["routes"][0]["frr"]["tcp"] == "= 2,&∋ ! 21"
    assert data["changed"] and not data["written"] and not conf.exists()


def test_fetch_summary_is_plain_lines_in_a_pipe(tmp_path):
    conf = tmp_path / "flowspec.conf"
    src = str(FIX / "iptables/rich/iptables-save.txt")
    res = run(fetch, "--from-file", src, "--no-reload", "--bird-conf", str(conf))
    assert res.exit_code == 0
    assert res.stderr.splitlines() == [
        "fs-fetch: IPv4 FORWARD: 10 rules read, 10 carried, 0 left out, 12 routes, policy DROP",
        "fs-fetch: IPv6 FORWARD: 3 rules read, 3 carried, 0 left out, 4 routes, policy DROP",
        f"fs-fetch: {conf}: written, BIRD not reloaded (--no-reload)",
    ]
    res = run(fetch, "-q", "--from-file", src, "--no-reload", "--bird-conf", str(conf))
    assert res.exit_code == 0 and res.stderr == ""


def test_fetch_receiver_rfc_does_not_split(tmp_path):
    src = str(FIX / "iptables/rich/iptables-save.txt")
    frr = run(fetch, "--from-file", src, "--dry-run", "--bird-conf", str(tmp_path / "f"))
    rfc = run(fetch, "--from-file", src, "--dry-run", "--receiver", "rfc",
              "--bird-conf", str(tmp_path / "f"))
    assert "dport 1001, 1003, 1005, 1007, 1009, 1011, 1013;" in rfc.stdout
    assert "dport 1001, 1003, 1005, 1007, 1009;" in frr.stdout
    assert "# Receiver profile: rfc" in rfc.stdout


def test_fetch_skip_unsupported_warns_and_writes_the_rest(tmp_path):
    conf = tmp_path / "flowspec.conf"
    policy = tmp_path / "save.txt"
    policy.write_text(
        "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -i eth0 -j LOG\n"
        "-A FORWARD -d 198.51.100.10/32 -j ACCEPT\nCOMMIT\n"
    )
    res = run(fetch, "--from-file", str(policy), "--no-reload", "--bird-conf", str(conf))
    assert res.exit_code == 3 and not conf.exists()
    res = run(fetch, "--from-file", str(policy), "--no-reload", "--skip-unsupported",
              "--bird-conf", str(conf))
    assert res.exit_code == 0
    assert "fs-fetch: WARNING FORWARD rule 1 (-i): flowseg does not carry" in res.stderr
    text = conf.read_text()
    assert "# FORWARD rule 1 (-i)" in text and "(generic, 0x80090000, 0x2)" in text


def test_fetch_skip_unsupported_refuses_to_widen_without_force(tmp_path):
    conf = tmp_path / "flowspec.conf"
    conf.write_text("previous\n")
    policy = tmp_path / "save.txt"
    policy.write_text(
        "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m ttl --ttl-lt 5 -j DROP\n"
        "-A FORWARD -d 198.51.100.10/32 -j ACCEPT\nCOMMIT\n"
    )
    args = ["--from-file", str(policy), "--no-reload", "--skip-unsupported",
            "--bird-conf", str(conf)]
    res = run(fetch, *args)
    assert res.exit_code == 3
    assert res.stderr.splitlines()[-1].startswith(
        "fs-fetch: FORWARD rule 1: leaving it out would let rule 2 accept traffic it stops")
    assert conf.read_text() == "previous\n"
    assert run(fetch, *args, "--force").exit_code == 0
    assert "0x80090000, 0x2" in conf.read_text()
    assert run(fetch, "--force", "--from-file", str(policy), "--dry-run").exit_code == 2


def test_fetch_rule_fs_fetch_cannot_split_enough_is_one_line(tmp_path):
    ports = ",".join(str(p) for p in range(1000, 1100, 2))
    policy = tmp_path / "save.txt"
    policy.write_text(
        "*filter\n:FORWARD DROP [0:0]\n"
        f"-A FORWARD -p tcp -m multiport --sports {ports} --dports {ports} -j ACCEPT\nCOMMIT\n"
    )
    res = run(fetch, "--from-file", str(policy), "--dry-run")
    assert res.exit_code == 3
    assert res.stderr.splitlines() == [
        "fs-fetch: FORWARD rule 1: its lists need 100 routes with receiver profile frr (at most 64); "
        "split the rule or shorten its lists. Nothing changed."
    ]
