"""The stepped apply of fs-fetch (fs_fetch/steps.py) and its system parts, without daemons.

The files are real fs-fetch output (the command in-process, --dry-run); BIRD and its counters
are a recorder that counts withdrawals the way BIRD 2.0.12 does. The wire sizes come from a
lab capture (tcpdump on the switch's interface, tshark's MP_UNREACH_NLRI lengths, 2026-12-03,
BIRD 2.0.12 to FRR 8.4.4): see test_nlri_size_is_never_below_the_wire.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowseg.errors import BirdRejected, ToolFailed
from flowseg.model import Family
from fs_fetch import steps, system
from fs_fetch.cli import main as fetch
from fs_fetch.steps import ChannelCounters

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TABLES = {Family.V4: "flowtab4", Family.V6: "flowtab6"}


def chain(n: int, v6: int = 0, port: int = 1000, drop_every: int = 0) -> str:
    """iptables-save (and ip6tables-save) text: n IPv4 and v6 IPv6 rules, policy DROP."""
    def rule(i: int, src: str, dst: str) -> str:
        verdict = "DROP" if drop_every and i % drop_every == 0 else "ACCEPT"
        return f"-A FORWARD -s {src} -d {dst} -p tcp -m tcp --dport {port + i} -j {verdict}"

    head = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]"]
    text = head + [rule(i, f"10.{i // 256}.{i % 256}.1/32", "198.51.100.10/32")
                   for i in range(n)] + ["COMMIT"]
    if v6:
        text += head + [rule(i, f"2001:db8:1::{i + 1:x}/128", "2001:db8:2::10/128")
                        for i in range(v6)] + ["COMMIT"]
    return "\n".join(text) + "\n"


def render(tmp_path: Path, text: str, old: bytes | None = None, *extra: str) -> bytes:
    """What fs-fetch writes for this chain when `old` is the file in force."""
    conf = tmp_path / "flowspec.conf"
    if old is not None:
        conf.write_bytes(old)
    elif conf.exists():
        conf.unlink()
    src = tmp_path / "chain.rules"
    src.write_text(text)
    res = CliRunner().invoke(fetch, ["--from-file", str(src), "--bird-conf", str(conf),
                                     "--dry-run", "-q", *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    return res.stdout.encode()


def nlris(data: bytes) -> set[tuple[Family, str]]:
    return {r.key for b in steps.parse(data.decode()) for r in b.routes}


def statements(data: bytes) -> list[str]:
    text = data.decode()
    return [text[r.start:r.end] for b in steps.parse(text) for r in b.routes]


def bird_parses(tmp_path: Path, data: bytes) -> None:
    include = tmp_path / "step.conf"
    include.write_bytes(data)
    main = tmp_path / "main.conf"
    main.write_text(f'flow4 table flowtab4;\nflow6 table flowtab6;\ninclude "{include}";\n')
    res = subprocess.run(["bird", "-p", "-c", str(main)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# -- reading BIRD files -----------------------------------------------------------------------


def test_parse_finds_every_route_of_an_fs_fetch_file():
    text = (FIX / "bird/components/expected-flowspec.conf").read_text()
    blocks = steps.parse(text)
    assert [b.name for b in blocks] == ["flowseg4", "flowseg6"]
    found = [r for b in blocks for r in b.routes]
    assert len(found) == text.count("\troute flow")
    for r in found:
        assert text[r.start:r.end].startswith(f"route {r.family.bird_word} {{ dst ")
        assert text[r.start:r.end].endswith("};")
    assert {r.family for r in blocks[1].routes} == {Family.V6}
    assert sum(r.drop for r in blocks[0].routes) == text.split("flowseg6")[0].count(
        "0x80060000")


def test_parse_is_not_fooled_by_comments_and_strings():
    text = (
        '# protocol static fake { route flow4 { dst 1.0.0.0/8; } };\n'
        'protocol static a {\n'
        '\tflow4 { table flowtab4; };\n'
        '\t/* } route flow4 { dst 2.0.0.0/8; }; */\n'
        '\troute flow4 { dst 3.0.0.0/8; } { bgp_path.prepend(1); }; # { ;\n'
        '\troute flow4 { dst 4.0.0.0/8; src 5.0.0.0/8; } { print "a;b{c"; };\n'
        '}\n'
    )
    [block] = steps.parse(text)
    assert [r.nlri for r in block.routes] == ["dst 3.0.0.0/8;", "dst 4.0.0.0/8; src 5.0.0.0/8;"]
    assert text[block.routes[1].start:block.routes[1].end].endswith('"a;b{c"; };')


@pytest.mark.parametrize("text", [
    "protocol static a { route flow4 { dst 1.0.0.0/8; };",
    "protocol static a { }\nprotocol static a { }\n",
    'protocol static a { route flow4 { dst 1.0.0.0/8; } { print "x; }; }',
    "protocol static a { route flow4 { dst 1.0.0.0/8; } }",
], ids=["open-brace", "same-name", "open-string", "no-semicolon"])
def test_an_unreadable_file_is_applied_in_one_step(text, caplog):
    with pytest.raises(steps.Unreadable):
        steps.parse(text)
    new = b"protocol static a { flow4 { table flowtab4; }; }\n"
    [step] = steps.plan(text.encode(), new)
    assert step.data == new
    assert "applying the change in one step" in caplog.text


# -- the size of a route on the wire ----------------------------------------------------------


@pytest.mark.parametrize("family, nlri, size", [
    (Family.V4, "dst 0.0.0.0/0; src 0.0.0.0/0;", 5),
    (Family.V6, "dst ::/0; src ::/0;", 7),
    # The lab's mass-withdrawal routes (tests/lab/test_fetch_faults.py): 17 and 46 bytes.
    (Family.V4, "dst 10.0.1.0/24; src 172.16.0.0/16; proto 6; dport 300;", 17),
    (Family.V4, "dst 10.0.1.0/24; src 172.16.0.0/16; proto 6; dport 255;", 16),
    (Family.V6, "dst 2001:db8:1::1/128; src 2001:db8:2::1/128; next header 6; dport 300;", 46),
    # A range is two terms; 70000 needs 4 bytes.
    (Family.V4, "dst 1.0.0.1/32; src 0.0.0.0/0; proto 6; dport 8000..8999;", 1 + 6 + 2 + 3 + 7),
    (Family.V4, "dst 1.0.0.1/32; src 0.0.0.0/0; length 70000;", 1 + 6 + 2 + 6),
    (Family.V6, "dst 2001:db8::/32 offset 8; src ::/0;", 1 + 3 + 3 + 3),
])
def test_nlri_size(family, nlri, size):
    assert steps.nlri_size(family, nlri) == size


def test_a_long_nlri_has_a_two_byte_length():
    nlri = "dst 1.0.0.1/32; src 2.0.0.1/32; " + "".join(
        f"dport {', '.join(str(1000 + 7 * i + j) for j in range(5))}; " for i in range(15))
    assert steps.nlri_size(Family.V4, nlri) == 2 + 12 + 15 * (1 + 5 * 3)


@pytest.mark.parametrize("name, wire", [
    ("components", {Family.V4: 335 - 3, Family.V6: 250 - 3}),
    ("rich", {Family.V4: 221 - 3, Family.V6: 80 - 3}),
])
def test_nlri_size_is_never_below_the_wire(name, wire):
    """Every route of the fixture withdrawn at once; the MP_UNREACH_NLRI lengths BIRD sent,
    minus its 3 bytes of AFI and SAFI, against the estimate (bitmasks are counted high)."""
    text = (FIX / f"bird/{name}/expected-flowspec.conf").read_text()
    for block in steps.parse(text):
        family = block.routes[0].family
        estimate = sum(r.size for r in block.routes)
        assert wire[family] <= estimate <= wire[family] * 1.06


# -- planning ---------------------------------------------------------------------------------


def test_a_change_within_the_budget_is_one_step(tmp_path):
    old = render(tmp_path, chain(40))
    new = render(tmp_path, chain(10), old)
    [step] = steps.plan(old, new)
    assert step.data == new
    assert step.withdraws == {Family.V4: 30}


def test_no_old_file_or_the_same_file_is_one_step(tmp_path):
    new = render(tmp_path, chain(300))
    assert [s.data for s in steps.plan(None, new)] == [new]
    assert [s.data for s in steps.plan(new, new)] == [new]


def test_steps_never_withdraw_more_than_the_budget_and_end_with_the_new_file(tmp_path):
    old = render(tmp_path, chain(400, v6=150, drop_every=3))
    new = render(tmp_path, chain(12, v6=5, port=1003), old)
    plan = steps.plan(old, new)
    assert len(plan) > 2
    assert plan[-1].data == new
    old_statements = set(statements(old))
    new_statements = statements(new)
    fresh = set(new_statements)
    gone = nlris(old) - nlris(new)
    previous = old
    for step in plan:
        data = step.data
        # Everything new is there from the first step on, verbatim and in its order.
        now = statements(data)
        assert [s for s in now if s in fresh] == new_statements
        # What else is there is old routes, untouched, still to be withdrawn.
        extra = [s for s in now if s not in fresh]
        assert set(extra) <= old_statements
        assert len(extra) == step.left
        here = nlris(data)
        assert here == nlris(new) | (gone & here)
        # What this step withdraws, measured on the files themselves.
        left_out = nlris(previous) - here
        withdrawn = [r for b in steps.parse(previous.decode()) for r in b.routes
                     if r.key in left_out]
        for family in (Family.V4, Family.V6):
            mine = [r for r in withdrawn if r.family is family]
            assert len(mine) == step.withdraws.get(family, 0)
            assert sum(r.size for r in mine) <= steps.WITHDRAW_BYTES
        previous = data
    assert sum(sum(s.withdraws.values()) for s in plan) == len(gone)


def test_accept_routes_are_withdrawn_before_drop_routes(tmp_path):
    old = render(tmp_path, chain(400, drop_every=2))
    new = render(tmp_path, chain(0), old)
    plan = steps.plan(old, new)
    drops = {r.key for b in steps.parse(old.decode()) for r in b.routes if r.drop}
    seen_drop = False
    previous = old
    for step in plan:
        gone = nlris(previous) - nlris(step.data)
        if gone & drops:
            seen_drop = True
        elif seen_drop:
            pytest.fail("an ACCEPT route was withdrawn after a DROP route")
        previous = step.data


def test_every_step_is_a_file_bird_reads(tmp_path):
    old = render(tmp_path, chain(300, v6=120))
    new = render(tmp_path, chain(3, v6=2), old)
    plan = steps.plan(old, new)
    for step in (plan[0], plan[len(plan) // 2], plan[-2]):
        bird_parses(tmp_path, step.data)


def test_a_block_the_new_file_no_longer_has_is_kept_until_its_routes_are_gone(tmp_path):
    old = render(tmp_path, chain(3, v6=200))
    new = render(tmp_path, chain(3), old, "--family", "ipv4")
    assert b"flowseg6" not in new
    plan = steps.plan(old, new)
    assert len(plan) > 2
    first = plan[0].data.decode()
    assert first.count("protocol static flowseg6 {") == 1
    assert "block of the previous file, withdrawn by the next steps" in first
    bird_parses(tmp_path, plan[0].data)
    assert plan[-1].data == new


# -- confirming a step in BIRD's counters -------------------------------------------------------


def counters(proto="switch1", table="flowtab4", up=True, ewr=0, ewa=0, iwr=0):
    return ChannelCounters(proto, table, up, 0, ewr, ewa, iwr)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def step_of(n: int) -> steps.Step:
    return steps.Step(lambda: b"", {Family.V4: n}, {Family.V4: 20 * n})


def test_confirm_waits_for_bird_and_for_the_switchs_answer():
    before = [counters(ewr=10, ewa=10, iwr=50)]
    readings = iter([
        [counters(ewr=40, ewa=40, iwr=50)],  # BIRD has processed 30 of 100
        [counters(ewr=110, ewa=110, iwr=90)],  # sent 100, FRR answered 40
        [counters(ewr=110, ewa=110, iwr=150)],  # answered all
    ])
    clock = Clock()
    last = steps.confirm(lambda: next(readings), before, step_of(100), TABLES, 30, clock,
                         clock.sleep)
    assert last == [counters(ewr=110, ewa=110, iwr=150)]
    assert clock.now == pytest.approx(2 * steps.POLL)


def test_confirm_does_not_wait_for_a_switch_that_never_answers():
    before = [counters(ewr=10, ewa=10, iwr=0)]
    after = [counters(ewr=110, ewa=110, iwr=0)]
    assert steps.confirm(lambda: after, before, step_of(100), TABLES) == after


@pytest.mark.parametrize("now", [
    counters(up=False, ewr=10, ewa=10, iwr=50),  # the session went down
    counters(ewr=0, ewa=0, iwr=0),  # it came back: counters start again
], ids=["down", "restarted"])
def test_confirm_skips_a_session_that_went_down(now):
    before = [counters(ewr=10, ewa=10, iwr=50), counters("other", up=False)]
    assert steps.confirm(lambda: [now], before, step_of(100), TABLES) == [now]


def test_confirm_gives_up_after_the_timeout():
    before = [counters(ewr=10, ewa=10, iwr=50)]
    clock = Clock()
    with pytest.raises(steps.StepTimeout, match=r"^switch1 \(flowtab4\): the switch has "
                       r"answered 0 of 100 withdrawals after 3 s$"):
        steps.confirm(lambda: [counters(ewr=110, ewa=110, iwr=50)], before, step_of(100),
                      TABLES, 3, clock, clock.sleep)


# BIRD 2.0.12, `birdc -v show protocols all` in the lab (flowseg.lab, 3 routes exported),
# shortened; edited by hand: switch1's export withdraws (7 received, 5 accepted), its flow6
# channel DOWN (a family the peer did not negotiate) and a second protocol switch2 not up.
PROTOCOLS_V = """\
0001 BIRD 2.0.12 ready.
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     11:42:21.384
1006-
1002-exp4       Static     flowtab4   up     11:42:21.663
1006-  Channel flow4
         State:          UP
         Table:          flowtab4
         Routes:         3 imported, 0 exported, 3 preferred
         Route change stats:     received   rejected   filtered    ignored   accepted
           Import updates:              3          0          0          0          3
           Import withdraws:            0          0        ---          0          0
           Export updates:              0          0          0        ---          0
           Export withdraws:            0        ---        ---        ---          0
1002-switch1    BGP        ---        up     11:42:21.530  Established
1006-  BGP state:          Established
         Neighbor address: 203.0.113.2
         Hold timer:       8.428/9
       Channel flow4
         State:          UP
         Table:          flowtab4
         Routes:         0 imported, 3 exported, 0 preferred
         Route change stats:     received   rejected   filtered    ignored   accepted
           Import updates:              0          0          0          0          0
           Import withdraws:            3          0        ---          3          0
           Export updates:              3          0          0        ---          3
           Export withdraws:            7        ---        ---        ---          5
         BGP Next hop:   203.0.113.1
       Channel flow6
         State:          DOWN
         Table:          flowtab6
         Routes:         0 imported, 0 exported, 0 preferred
         Route change stats:     received   rejected   filtered    ignored   accepted
           Import updates:              0          0          0          0          0
           Import withdraws:            0          0        ---          0          0
           Export updates:              0          0          0        ---          0
           Export withdraws:            0        ---        ---        ---          0
1002-switch2    BGP        ---        start  11:42:21.530  Active
1006-  BGP state:          Active
       Channel flow4
         Table:          flowtab4
0000 
"""


def test_parse_protocols_reads_bgp_channels_in_both_formats():
    want = [
        ChannelCounters("switch1", "flowtab4", True, 3, 7, 5, 3),
        ChannelCounters("switch1", "flowtab6", False, 0, 0, 0, 0),  # not negotiated
        ChannelCounters("switch2", "flowtab4", False),
    ]
    verbose = [ln for ln in PROTOCOLS_V.splitlines() if ln.strip()]
    assert system.parse_protocols(verbose) == want
    # Without -v: no codes, continuation lines without their leading space.
    plain = [ln[5:] if ln[:4].isdigit() else ln[1:] for ln in verbose]
    assert system.parse_protocols(plain) == want


# -- applying ---------------------------------------------------------------------------------


class FakeBird:
    """BIRD as the stepped apply sees it: reads the file on configure and counts withdrawals
    per BGP channel, which an echoing switch answers at once."""

    def __init__(self, path: Path, refuse_at: int | None = None, echo: bool = True) -> None:
        self.path = path
        self.held = path.read_bytes() if path.exists() else b""
        self.configures = 0
        self.refuse_at = refuse_at
        self.echo = echo
        self.ew = {t: 0 for t in TABLES.values()}
        self.iw = {t: (1 if echo else 0) for t in TABLES.values()}
        self.files: list[bytes] = []

    def session(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def configure(self) -> str:
        self.configures += 1
        data = self.path.read_bytes()
        if self.configures == self.refuse_at:
            raise BirdRejected("BIRD refused the configuration: flowspec.conf:9:1 syntax error")
        for family, table in TABLES.items():
            gone = {k for k in nlris(self.held) - nlris(data) if k[0] is family}
            self.ew[table] += len(gone)
            if self.echo:
                self.iw[table] += len(gone)
        self.held = data
        self.files.append(data)
        return "Reconfigured"

    def bgp_channels(self) -> list[ChannelCounters]:
        return [ChannelCounters("switch1", t, True, 0, self.ew[t], self.ew[t], self.iw[t])
                for t in TABLES.values()]


def prepared(tmp_path: Path, n: int = 400, m: int = 3):
    old = render(tmp_path, chain(n))
    new = render(tmp_path, chain(m), old)
    conf = tmp_path / "flowspec.conf"
    conf.write_bytes(old)
    return conf, old, new


def test_apply_configures_every_step_and_ends_with_the_new_file(tmp_path):
    conf, old, new = prepared(tmp_path)
    bird = FakeBird(conf)
    pending = system.Pending(conf)
    out = steps.apply(bird, conf, old, new, TABLES, system.write_atomic, pending=pending)
    assert out.steps == len(steps.plan(old, new)) > 2
    assert bird.files == [s.data for s in steps.plan(old, new)]
    assert conf.read_bytes() == new
    assert not pending.exists()


def test_apply_puts_back_the_step_bird_holds_when_a_later_step_is_refused(tmp_path):
    conf, old, new = prepared(tmp_path)
    plan = steps.plan(old, new)
    bird = FakeBird(conf, refuse_at=2)
    with pytest.raises(steps.PartlyApplied) as caught:
        steps.apply(bird, conf, old, new, TABLES, system.write_atomic,
                    pending=system.Pending(conf))
    assert caught.value.exit_code == 5
    assert str(caught.value) == (
        "BIRD refused the configuration: flowspec.conf:9:1 syntax error; BIRD holds step 1 of "
        f"{len(plan)}, with {plan[0].left} old routes still to withdraw; the next run goes on"
    )
    assert conf.read_bytes() == plan[0].data
    assert not system.Pending(conf).exists()


def test_apply_refused_at_the_first_step_is_the_plain_error(tmp_path):
    conf, old, new = prepared(tmp_path)
    with pytest.raises(BirdRejected):
        steps.apply(FakeBird(conf, refuse_at=1), conf, old, new, TABLES, system.write_atomic)
    assert conf.read_bytes() == old


def test_apply_waits_for_nothing_when_the_switch_never_answers(tmp_path):
    conf, old, new = prepared(tmp_path)
    bird = FakeBird(conf, echo=False)
    steps.apply(bird, conf, old, new, TABLES, system.write_atomic, timeout=0.5)
    assert conf.read_bytes() == new


def test_apply_stops_after_the_step_going_on_when_asked_to(tmp_path):
    conf, old, new = prepared(tmp_path)
    plan = steps.plan(old, new)
    stop = steps.StopRequest()

    class StopsAtOnce(FakeBird):
        def configure(self) -> str:
            stop.signum = 15
            return super().configure()

    with pytest.raises(steps.PartlyApplied) as caught:
        steps.apply(StopsAtOnce(conf), conf, old, new, TABLES, system.write_atomic, stop=stop)
    assert caught.value.exit_code == 143
    assert str(caught.value).startswith(f"stopped by SIGTERM after step 1 of {len(plan)}: ")
    assert conf.read_bytes() == plan[0].data


def test_apply_says_which_step_is_in_force_when_one_is_not_confirmed(tmp_path):
    conf, old, new = prepared(tmp_path)

    class Silent(FakeBird):
        def bgp_channels(self):
            return [ChannelCounters("switch1", t, True, 0, 0, 0, 1) for t in TABLES.values()]

    with pytest.raises(steps.PartlyApplied, match=r"^step 1 of \d+ not confirmed: switch1 "
                       r"\(flowtab4\): BIRD has processed 0 of \d+ withdrawals after 0 s; BIRD "
                       r"holds it"):
        steps.apply(Silent(conf), conf, old, new, TABLES, system.write_atomic, timeout=0)
    assert conf.read_bytes() == steps.plan(old, new)[0].data


# -- the files beside the BIRD file, the lock, the disk -----------------------------------------


def test_clean_stale_removes_only_the_temporary_files_of_killed_runs(tmp_path):
    conf = tmp_path / "flowspec.conf"
    names = [".flowspec.conf.ab12_x9z", ".flowspec.conf.pending", ".flowspec.conf.lock",
             ".flowspec.conf.orig", "flowspec.conf", ".other.conf.ab12_x9z"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert system.clean_stale(conf) == [tmp_path / ".flowspec.conf.ab12_x9z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_the_lock_waits_then_gives_up_with_one_line(tmp_path):
    path = tmp_path / "fs-fetch.lock"
    with system.Lock(path, timeout=1):
        with pytest.raises(ToolFailed, match=r"^lock .*fs-fetch\.lock held by another fs-fetch "
                           r"run for 0\.2 s; try again when it is done$"):
            with system.Lock(path, timeout=0.2):
                pass
    with system.Lock(path, timeout=0):
        pass


def test_a_lock_file_that_cannot_be_made_says_what_to_do(tmp_path):
    with pytest.raises(ToolFailed, match="give --lock-file a path it can write"):
        with system.Lock(tmp_path / "missing" / "x.lock"):
            pass


@pytest.mark.parametrize("err, hint", [
    (errno.ENOSPC, "No space left on device; make room there"),
    (errno.EROFS, "Read-only file system; mount it read-write"),
])
def test_a_failed_write_leaves_the_file_and_no_temporary_file(tmp_path, monkeypatch, err, hint):
    conf = tmp_path / "flowspec.conf"
    conf.write_bytes(b"old\n")

    def fail(fd):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(system.WriteFailed, match=f"^cannot write {conf}: {hint}$"):
        system.write_atomic(conf, b"new\n")
    assert conf.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flowspec.conf"]


def test_pending_mark(tmp_path):
    mark = system.Pending(tmp_path / "flowspec.conf")
    assert not mark.exists()
    mark.set()
    assert (tmp_path / ".flowspec.conf.pending").exists()
    mark.clear()
    mark.clear()
    assert not mark.exists()


# -- BIRD's control socket ----------------------------------------------------------------------


@pytest.fixture
def fake_bird_socket(tmp_path):
    """A unix socket that answers like BIRD: greeting, then canned replies per command."""
    path = str(tmp_path / "bird.ctl")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    replies = {
        b"show protocols all": PROTOCOLS_V.split("\n", 1)[1].encode(),
        b"configure": b"0002-Reading configuration from /etc/bird/bird.conf\n"
                      b"+0000 log line in between\n0003 Reconfigured\n",
        b"configure bad": b"0002-Reading configuration from /etc/bird/bird.conf\n"
                          b"8002 /etc/bird/flowspec.conf:3:1 syntax error\n",
    }

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
            buffer = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line == b"quit":
                        return
                    conn.sendall(replies[line])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    server.close()


def test_the_control_socket_speaks_birds_protocol(fake_bird_socket):
    with system.ControlSocket(fake_bird_socket, timeout=5) as bird:
        assert bird.configure() == "Reconfigured"
        assert bird.bgp_channels()[0] == ChannelCounters("switch1", "flowtab4", True, 3, 7, 5, 3)
        with pytest.raises(BirdRejected, match="flowspec.conf:3:1 syntax error"):
            bird.request("configure bad")
        with pytest.raises(ValueError):
            bird.request("show status\nconfigure")


def test_an_unreachable_control_socket_is_one_line(tmp_path):
    with pytest.raises(ToolFailed, match=r"^cannot reach BIRD's control socket .*nowhere\.ctl: "
                       r"No such file or directory; start BIRD or give --bird-socket$"):
        with system.ControlSocket(str(tmp_path / "nowhere.ctl")):
            pass


# -- the command: metrics, lock, clock ----------------------------------------------------------


def run_fetch(tmp_path: Path, text: str, *extra: str):
    src = tmp_path / "chain.rules"
    src.write_text(text)
    return CliRunner().invoke(fetch, ["--from-file", str(src), "--bird-conf",
                                      str(tmp_path / "flowspec.conf"), "--no-reload", *extra],
                              catch_exceptions=False)


def test_metrics_file_after_every_run(tmp_path):
    prom = tmp_path / "fs-fetch.prom"
    res = run_fetch(tmp_path, chain(3, v6=2), "--metrics-file", str(prom))
    assert res.exit_code == 0, res.stderr
    text = prom.read_text()
    assert 'flowseg_rules_installed{program="fs-fetch",family="ipv4"} 3' in text
    assert 'flowseg_rules_installed{program="fs-fetch",family="ipv6"} 2' in text
    assert 'flowseg_routes_refused{program="fs-fetch"} 0' in text
    assert 'flowseg_last_apply_result{program="fs-fetch",result="applied"} 1' in text
    assert 'flowseg_generation{program="fs-fetch"} 1' in text

    run_fetch(tmp_path, chain(3, v6=2), "--metrics-file", str(prom))
    assert 'result="unchanged"} 1' in prom.read_text()

    bad = chain(3).replace("-j ACCEPT\nCOMMIT", "-j LOG\nCOMMIT")
    res = run_fetch(tmp_path, bad, "--metrics-file", str(prom))
    assert res.exit_code == 3
    text = prom.read_text()
    assert 'result="failed"} 1' in text
    assert 'flowseg_routes_refused{program="fs-fetch"} 1' in text
    assert "flowseg_rules_installed" not in text


def test_a_run_takes_its_lock_beside_the_file_by_default(tmp_path):
    with system.Lock(tmp_path / ".flowspec.conf.lock"):
        res = run_fetch(tmp_path, chain(3), "--lock-timeout", "0.1")
    assert res.exit_code == 4
    assert res.stderr.endswith("held by another fs-fetch run for 0.1 s; try again when it is "
                               "done. Nothing changed.\n")
    assert not (tmp_path / "flowspec.conf").exists()


@pytest.mark.parametrize("shift", [10 * 365 * 86400, -10 * 365 * 86400])
def test_the_wall_clock_does_not_change_the_file(tmp_path, monkeypatch, shift):
    first = run_fetch(tmp_path, chain(5))
    assert first.exit_code == 0
    data = (tmp_path / "flowspec.conf").read_bytes()
    real = __import__("time").time
    monkeypatch.setattr("time.time", lambda: real() + shift)
    os.utime(tmp_path / "flowspec.conf", (real() + shift, real() + shift))
    res = run_fetch(tmp_path, chain(5), "-v")
    assert "unchanged" in res.stderr
    assert (tmp_path / "flowspec.conf").read_bytes() == data


def test_bytes_that_are_not_utf8_stay_inert_or_are_refused(tmp_path):
    """A comment with Latin-1 bytes stays a comment; a prefix with them is refused (exit 3)."""
    src = tmp_path / "chain.rules"
    conf = tmp_path / "flowspec.conf"
    src.write_bytes(b'*filter\n:FORWARD DROP [0:0]\n-A FORWARD -s 1.0.0.1/32 -m comment '
                    b'--comment "caf\xe9 \xff\\"; include \\"/etc/passwd" -j ACCEPT\nCOMMIT\n')
    res = CliRunner().invoke(fetch, ["--from-file", str(src), "--bird-conf", str(conf),
                                     "--dry-run", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "include" in ln]
    assert lines == ['\t# FORWARD 1: -A FORWARD -s 1.0.0.1/32 -m comment --comment '
                     '"caf\ufffd \ufffd\\"; include \\"/etc/passwd" -j ACCEPT']
    src.write_bytes(b"*filter\n:FORWARD DROP [0:0]\n-A FORWARD -s 1.0.0.\xff/32 -j ACCEPT\n"
                    b"COMMIT\n")
    res = CliRunner().invoke(fetch, ["--from-file", str(src), "--bird-conf", str(conf),
                                     "--dry-run"], catch_exceptions=False)
    assert res.exit_code == 3
    assert res.stderr == ("fs-fetch: FORWARD rule 1 (-s 1.0.0.\ufffd/32): not an address or "
                          "prefix. Nothing changed.\n")
