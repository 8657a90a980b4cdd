"""Logging destinations and shell completion, for both commands (issue 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from fs_inject.cli import main as inject

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def test_journal_stream_gets_priority_prefixes(tmp_path):
    # systemd sets JOURNAL_STREAM to the device:inode of the stderr it gives the service.
    err = tmp_path / "stderr"
    code = (
        "import os, sys, logging\n"
        "st = os.fstat(2); os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "from flowseg.logs import setup_logging\n"
        "setup_logging('fs-inject', 1, False)\n"
        "logging.getLogger('x').info('read 2 routes'); logging.getLogger('x').warning('kept')\n"
    )
    with open(err, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stderr=fh, check=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert err.read_text().splitlines() == ["<6>read 2 routes", "<4>kept"]


def test_plain_lines_in_a_pipe():
    res = CliRunner().invoke(inject, ["-v", "--family", "ipv4", "--dry-run", "--from-file",
                                      str(FIX / "frr/slides/vtysh-flowspec-v4.json")])
    assert res.exit_code == 0
    assert "fs-inject: INFO read 2 flowspec routes for IPv4" in res.stderr
    assert "\x1b[" not in res.stderr + res.stdout


def test_bash_completion_lists_options():
    env = {**os.environ, "_FS_INJECT_COMPLETE": "bash_complete", "COMP_WORDS": "fs-inject --on",
           "COMP_CWORD": "1"}
    res = CliRunner().invoke(inject, [], env=env, prog_name="fs-inject")
    assert "--once" in res.output and "--on-session-down" in res.output


def test_vtysh_missing_from_path_is_one_line_and_exit_4(tmp_path):
    res = CliRunner().invoke(inject, ["--once", "--lock-file", str(tmp_path / "lock")],
                             env={"PATH": str(tmp_path)})
    assert res.exit_code == 4
    assert res.stderr.splitlines() == [
        "fs-inject: vtysh not found in PATH; install it or fix PATH. FLOWSPEC kept as it was."]


def test_second_fs_inject_waits_for_the_lock_then_gives_up(tmp_path):
    import fcntl

    lock = tmp_path / "fs-inject.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = CliRunner().invoke(inject, ["--once", "--lock-file", str(lock),
                                          "--lock-timeout", "0.5"])
    assert res.exit_code == 4
    assert "held by another fs-inject" in res.stderr
    assert len(res.stderr.splitlines()) == 1
