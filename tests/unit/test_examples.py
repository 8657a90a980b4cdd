"""The operator's examples: systemd units, the cron file, BIRD and FRR configurations.

Each is checked by the tool that will read it where one is installed (systemd-analyze verify,
bird -p, bgpd -C), and always against the options fs-inject and fs-fetch really have, so that
an example cannot drift from the commands or from the daemons' grammar.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from flowseg.lab import BGPD, BIRD_INCLUDE_LINE, BIRD_LOG_LINE, BIRD_PROTOCOL, SW_V4
from fs_fetch.cli import main as fetch_main
from fs_inject.cli import main as inject_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SYSTEMD = EXAMPLES / "systemd"
BIN_DIR = "/usr/local/bin/"
COMMANDS = {"fs-inject": inject_main, "fs-fetch": fetch_main}
UNITS = sorted(p for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer", ".path"))
SERVICES = [p for p in UNITS if p.suffix == ".service"]
BIRD_CONFS = ["bird.conf", "bird-multi.conf"]
SECTIONS = {".service": "Service", ".timer": "Timer", ".path": "Path"}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: keep each setting on one line"
        if line.startswith("["):
            assert re.fullmatch(r"\[[A-Za-z]+\]", line), f"{path.name}:{number}: {raw!r}"
            current = line[1:-1]
            assert current not in sections, f"{path.name}:{number}: section {current} twice"
            sections[current] = []
            continue
        assert current, f"{path.name}:{number}: setting before any section"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key), f"{path.name}:{number}: {raw!r}"
        sections[current].append((key, value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def check_args(name: str, args: list[str]) -> dict:
    """Parse args exactly as the command would; returns the parameter values."""
    command = COMMANDS[name]
    try:
        ctx = command.make_context(name, list(args))
    except click.exceptions.Exit:
        pytest.fail(f"{name} {shlex.join(args)}: exits before running (--help or --version?)")
    except click.ClickException as exc:
        pytest.fail(f"{name} {shlex.join(args)}: {exc.format_message()}")
    with ctx:
        return dict(ctx.params)


def env_file_value(path: Path, variable: str) -> str:
    """The value an EnvironmentFile gives variable (one assignment, optional double quotes)."""
    found = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert key == variable, f"{path.name}: only {variable} belongs here, not {line!r}"
            found.append(value)
    assert len(found) == 1, f"{path.name} must set {variable} once"
    value = found[0]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    assert '"' not in value and "'" not in value, f"{path.name}: no quotes inside the value"
    return value


def exec_start(path: Path) -> tuple[str, list[str], str | None]:
    """(command name, fixed options, the $VARIABLE that carries the operator's options)."""
    unit = parse_unit(path)
    lines = values(unit, "Service", "ExecStart")
    assert len(lines) == 1, f"{path.name}: one ExecStart"
    argv = shlex.split(lines[0])
    binary, args = argv[0], argv[1:]
    assert binary.startswith(BIN_DIR), f"{path.name}: ExecStart should name {BIN_DIR}fs-*"
    name = binary[len(BIN_DIR):]
    assert name in COMMANDS, f"{path.name}: unknown command {name}"
    variables = [a for a in args if a.startswith("$")]
    fixed = [a for a in args if not a.startswith("$")]
    assert len(variables) <= 1 and (not variables or args[-1] == variables[0])
    return name, fixed, variables[0][1:] if variables else None


# -- systemd --------------------------------------------------------------------------------


def triggered() -> set[str]:
    """The services that a timer or path unit starts."""
    names = set()
    for path in UNITS:
        if path.suffix != ".service":
            names.update(values(parse_unit(path), SECTIONS[path.suffix], "Unit"))
    return names


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_file_parses(path):
    unit = parse_unit(path)
    assert values(unit, "Unit", "Description"), f"{path.name} needs a Description"
    assert SECTIONS[path.suffix] in unit
    if path.name in triggered():
        # Started by its timer or path unit only; an [Install] would let it start at boot too.
        assert "Install" not in unit, path.name
    else:
        assert values(unit, "Install", "WantedBy"), f"{path.name}: say where enable hooks it"


@pytest.mark.parametrize("path", [p for p in UNITS if p.suffix != ".service"], ids=lambda p: p.name)
def test_timer_and_path_start_an_example_service(path):
    unit = parse_unit(path)
    (target,) = values(unit, SECTIONS[path.suffix], "Unit")
    assert (SYSTEMD / target).is_file(), f"{path.name} starts {target}, which is not in examples"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_exec_start_options_exist(path):
    name, fixed, variable = exec_start(path)
    check_args(name, fixed)
    unit = parse_unit(path)
    assert variable, f"{path.name}: let the operator pass options through a variable"
    # The variable is always defined (empty), so an absent EnvironmentFile is no error...
    assert f"{variable}=" in values(unit, "Service", "Environment")
    (env_file,) = values(unit, "Service", "EnvironmentFile")
    assert env_file == f"-/etc/default/{name}"
    # ...and the example EnvironmentFile holds options the command accepts.
    opts = env_file_value(SYSTEMD / f"{name}.default", variable)
    params = check_args(name, fixed + opts.split())
    if "once" in params:
        assert params["once"] == (path.name == "fs-inject-once.service")


def test_daemon_and_timer_variant_share_their_hardening():
    def hardening(name):
        unit = parse_unit(SYSTEMD / name)
        # What differs between a daemon and a oneshot; everything else is the sandbox.
        skip = {"Type", "ExecStart", "ExecReload", "Restart", "RestartSec",
                "RestartPreventExitStatus", "KillMode", "TimeoutStopSec", "TimeoutStartSec",
                "Environment", "EnvironmentFile"}
        return [(k, v) for k, v in unit["Service"] if k not in skip]

    assert hardening("fs-inject.service") == hardening("fs-inject-once.service")


def test_fs_inject_keeps_the_capabilities_iptables_needs():
    unit = parse_unit(SYSTEMD / "fs-inject.service")
    (caps,) = values(unit, "Service", "CapabilityBoundingSet")
    assert set(caps.split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(values(unit, "Service", "SupplementaryGroups")[0].split()) >= {"frrvty"}
    assert "/run" in values(unit, "Service", "ReadWritePaths")
    (families,) = values(unit, "Service", "RestrictAddressFamilies")
    assert set(families.split()) == {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}


def systemd_analyze_verify(tmp_path: Path, units: list[Path]) -> subprocess.CompletedProcess:
    """verify on copies of the units whose /usr/local/bin/fs-* point at stand-ins.

    verify insists that ExecStart's program exists and is executable; the copies differ
    from the examples in that path alone.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in COMMANDS:
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    folder = tmp_path / "units"
    folder.mkdir()
    copies = []
    for path in units:
        text = path.read_text()
        copy = text.replace(BIN_DIR + "fs-", f"{bin_dir}/fs-")
        assert copy.count(str(bin_dir)) == text.count(BIN_DIR)
        (folder / path.name).write_text(copy)
        copies.append(str(folder / path.name))
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *copies],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package systemd)")
def test_systemd_analyze_verify(tmp_path):
    res = systemd_analyze_verify(tmp_path, UNITS)
    # verify exits 0 on an unknown key or a bad value and only prints a warning, so any
    # output at all is a failure.
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (
        res.stdout + res.stderr
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package systemd)")
def test_systemd_analyze_verify_catches_a_typo(tmp_path):
    bad = tmp_path / "typo.service"
    text = (SYSTEMD / "fs-inject.service").read_text()
    bad.write_text(text.replace("PrivateTmp=yes", "PrivateTemp=yes"))
    res = systemd_analyze_verify(tmp_path, [bad])
    assert "PrivateTemp" in res.stderr


# -- cron -----------------------------------------------------------------------------------

CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_field_ok(field: str, lo: int, hi: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        first, _, last = base.partition("-")
        bounds = [first, last] if last else [first]
        if not all(b.isdigit() and lo <= int(b) <= hi for b in bounds):
            return False
    return True


def test_cron_file_is_well_formed():
    jobs = []
    env = {}
    for number, line in enumerate((EXAMPLES / "cron").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
        if assignment:
            env[assignment.group(1)] = assignment.group(2)
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, f"cron:{number}: five times, a user and a command: {line!r}"
        for field, (lo, hi) in zip(fields[:5], CRON_FIELDS):
            assert cron_field_ok(field, lo, hi), f"cron:{number}: bad time field {field!r}"
        assert fields[5] == "root", f"cron:{number}: fs-inject and fs-fetch need root"
        jobs.append(shlex.split(fields[6]))
    # cron's own PATH lacks /usr/sbin, where the iptables and BIRD tools are.
    assert "/usr/sbin" in env["PATH"].split(":")
    names = []
    for argv in jobs:
        if argv[0] == "flock":
            assert argv[1] == "-n" and argv[2].startswith("/run/")
            argv = argv[3:]
        assert argv[0].startswith(BIN_DIR)
        name = argv[0][len(BIN_DIR):]
        params = check_args(name, argv[1:])
        assert params["quiet"], "cron mails whatever a job prints: -q keeps it to errors"
        if name == "fs-inject":
            assert params["once"], "fs-inject without --once would never exit"
        names.append(name)
    assert sorted(names) == ["fs-fetch", "fs-inject"]


# -- BIRD -----------------------------------------------------------------------------------


def bird_parse(conf: Path, included: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    text = conf.read_text()
    # The lab swaps exactly these two lines; each must be there once.
    assert text.count(BIRD_INCLUDE_LINE) == 1 and text.count(BIRD_LOG_LINE) == 1
    main = tmp_path / conf.name
    main.write_text(text.replace(BIRD_INCLUDE_LINE, f'include "{included}";'))
    return subprocess.run(["bird", "-p", "-c", str(main)], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed (bird2)")
@pytest.mark.parametrize("name", BIRD_CONFS)
@pytest.mark.parametrize("included", ["empty", "rich"])
def test_bird_conf_parses(name, included, tmp_path):
    # The include empty, as before fs-fetch's first run, and with a policy in it.
    if included == "empty":
        include = tmp_path / "flowspec.conf"
        include.write_text("")
    else:
        include = ROOT / "tests/fixtures/bird/rich/expected-flowspec.conf"
    if name == "bird-multi.conf":
        # Its sessions export through the filters fs-fetch --scopes writes into the include.
        include = ROOT / f"tests/fixtures/bird/scopes/{included}-flowspec.conf"
    res = bird_parse(EXAMPLES / name, include, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed (bird2)")
def test_bird_parse_catches_an_error(tmp_path):
    include = tmp_path / "flowspec.conf"
    include.write_text("route flow4 { dst 1.0.0.1/33; };\n")
    res = bird_parse(EXAMPLES / "bird.conf", include, tmp_path)
    assert res.returncode != 0


def test_bird_multi_keeps_the_lab_protocol_name():
    text = (EXAMPLES / "bird-multi.conf").read_text()
    block = re.search(rf"protocol bgp {BIRD_PROTOCOL} from \w+ \{{(.*?)\n\}}", text, re.S)
    assert block and f"neighbor {SW_V4} as" in block.group(1)


# -- FRR ------------------------------------------------------------------------------------

DAEMONS = ("zebra bgpd ripd ripngd ospfd ospf6d isisd babeld pimd pim6d ldpd nhrpd eigrpd "
           "sharpd pbrd staticd bfdd fabricd vrrpd pathd").split()


def daemons_settings() -> dict[str, str]:
    """examples/daemons sourced by bash, as frrinit.sh does; the variables it sets."""
    names = DAEMONS + [f"{d}_options" for d in DAEMONS] + ["vtysh_enable", "frr_profile"]
    script = 'set -eu; . "$1"; shift; for n in "$@"; do printf "%s=%s\\0" "$n" "${!n-}"; done'
    res = subprocess.run(["bash", "-c", script, "bash", str(EXAMPLES / "daemons"), *names],
                         capture_output=True, text=True, check=True, timeout=10)
    assert not res.stderr, res.stderr
    pairs = [item.split("=", 1) for item in res.stdout.split("\0") if item]
    return {k: v for k, v in pairs}


def test_daemons_file_starts_bgpd_alone_without_zebra():
    settings = daemons_settings()
    enabled = [d for d in DAEMONS if settings[d] not in ("", "no", "0")]
    # zebra and staticd are started whatever the file says; bgpd is the one we ask for.
    assert enabled == ["bgpd"]
    assert "-Z" in settings["bgpd_options"].split()
    assert settings["vtysh_enable"] == "yes"
    frr_conf = (EXAMPLES / "frr.conf").read_text()
    profile = re.search(r"^frr defaults (\S+)$", frr_conf, re.M).group(1)
    assert settings["frr_profile"] == profile


def bgpd_check(conf: Path, tmp_path: Path) -> str:
    """`bgpd -C` (read the config and exit) with the daemons file's options; the log text.

    bgpd -C exits 0 even when it rejects a line, but logs `... on config line N: ...`, which
    is what the lab checks as well (flowseg.lab, _check_frr_config).
    """
    settings = daemons_settings()
    argv = [BGPD, "-C", "-f", str(conf), "-F", settings["frr_profile"],
            *shlex.split(settings["bgpd_options"]),
            # Keep the check to itself: stay root, no BGP port, vty socket and pid file in tmp.
            "-S", "-p", "0", "--vty_socket", str(tmp_path), "-i", str(tmp_path / "bgpd.pid"),
            "--log", "stdout"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Every bgpd makes /var/tmp/frr/bgpd.<pid> for crash logs; a clean exit leaves it empty.
        shutil.rmtree(f"/var/tmp/frr/bgpd.{proc.pid}", ignore_errors=True)
    assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}:\n{out}"
    return out


needs_bgpd = pytest.mark.skipif(
    not os.access(BGPD, os.X_OK) or os.geteuid() != 0,
    reason=f"bgpd -C needs {BGPD} and root (it checks /var/run/frr)",
)


@needs_bgpd
def test_frr_conf_passes_bgpd_check(tmp_path):
    out = bgpd_check(EXAMPLES / "frr.conf", tmp_path)
    assert not re.findall(r".* on config line \d+:.*", out), out


@needs_bgpd
def test_bgpd_check_catches_a_bad_line(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text((EXAMPLES / "frr.conf").read_text().replace(
        " no bgp default ipv4-unicast\n", " no bgp default ipv4-unicast\n bgp flowseg nonsense\n"
    ))
    out = bgpd_check(bad, tmp_path)
    assert re.search(r"on config line \d+:\s+bgp flowseg nonsense", out), out
