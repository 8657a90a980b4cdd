"""A rogue BGP peer: ExaBGP takes BIRD's place and announces hostile Flow-Spec to the switch.

ExaBGP 4.2 (Debian 12) runs in the controller namespace with BIRD's address and AS, so FRR's
neighbor 203.0.113.1 (examples/frr.conf) peers with it instead of BIRD. ExaBGP encodes what
BIRD never sends: duplicate prefix components, raw extended communities (NaN and infinite
rates, several markings on one route), every redirect form, `!=` and `true` operators. Each
case states what fs-inject must do with what FRR 8.4.4 then shows, and checks it:

- installed: the exit status, and the FLOWSPEC chain line by line. Each installed rule's
  matches are compared with the matches the route says (written out below by hand), so a rule
  is never wider, nor narrower, than its route;
- refused: exit 3, the one line `fs-inject: route '...': .... FLOWSPEC kept as it was.`, and
  the filter tables of both families byte for byte as the good policy left them;
- kept: no Established session (FRR reset it) or an incomplete generation: exit 0, the
  warning, and the tables byte for byte.

ExaBGP re-reads its configuration on SIGUSR1 and sends only the difference, so one session
carries many rounds; a round is over when FRR holds exactly the destinations the round
announces. One refused route makes fs-inject keep the whole chain, so each refused route gets
a round of its own, next to the good policy. The cases at the end are fs-inject bugs this file
found, fixed since; their reasons say what fs-inject did.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowseg.lab import Lab, split_json_stream
from flowseg import scenario
from flowseg.scenario import inject

pytestmark = pytest.mark.lab

# ExaBGP 4.2 writes a traffic-rate community as text with "%d" while it reads its
# configuration, which raises for NaN and infinities; only that text is replaced, the community
# bytes on the wire stay what the test wrote.
EXABGP_MAIN = """\
import sys
from exabgp.bgp.message.update.attribute.community.extended.traffic import TrafficRate
TrafficRate.__repr__ = lambda self: "rate-limit:%r" % self.rate
from exabgp.application import run_exabgp
sys.argv = ["exabgp", sys.argv[1]]
sys.exit(run_exabgp())
"""
EXABGP_ENV = {
    "exabgp_daemon_user": "root",
    "exabgp_daemon_daemonize": "false",
    "exabgp_api_cli": "false",
    "exabgp_log_destination": "stdout",
}
LOADED = ("loaded new configuration successfully", "no change found in the configuration")
ROUND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Route:
    """One ExaBGP flow route: the destination (ExaBGP syntax), more match and the actions.

    `shown` is the destination as FRR's JSON shows it, which is how a round sees the route
    arrive; it differs from dst only for IPv6 (`/off N`) or when the match repeats the
    destination component.
    """

    dst: str
    match: str = ""
    then: str = "accept;"
    shown: str | None = None

    @property
    def family(self) -> int:
        return 6 if ":" in self.dst else 4

    @property
    def to(self) -> str:
        if self.shown:
            return self.shown
        if self.family == 4:
            return self.dst
        addr, length, *offset = self.dst.split("/")
        return f"{addr}/{length}/off {offset[0] if offset else 0}"

    def config(self, name: str) -> str:
        return (f"route {name} {{ match {{ destination {self.dst}; {self.match} }} "
                f"then {{ {self.then} }} }}")


def exabgp_config(routes: list[Route]) -> str:
    body = "\n".join(f"    {r.config(f'r{i}')}" for i, r in enumerate(routes))
    return (
        f"neighbor {Lab.sw_v4} {{\n"
        f"  router-id {Lab.ctl_v4};\n  local-address {Lab.ctl_v4};\n"
        f"  local-as {Lab.ctl_as};\n  peer-as {Lab.sw_as};\n"
        "  family { ipv4 flow; ipv6 flow; }\n"
        f"  flow {{\n{body}\n  }}\n}}\n"
    )


def frr_destinations(lab) -> dict[int, list[str]]:
    shown = {}
    for fam in (4, 6):
        out = lab.vtysh(f"show bgp ipv{fam} flowspec detail json").stdout
        shown[fam] = sorted(entry[0].get("to", "") for entry in split_json_stream(out))
    return shown


class Rogue:
    """ExaBGP in the controller namespace at BIRD's address, announcing what a round says."""

    def __init__(self, lab):
        self.lab = lab
        self.conf = lab.tmpdir / "exabgp.conf"
        self.logfile = lab.tmpdir / "exabgp.log"
        self.proc: subprocess.Popen | None = None
        # The interpreter ExaBGP is installed for (Debian's python3), not this test's venv.
        self.python = Path(shutil.which("exabgp")).read_text().splitlines()[0][2:].split()

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def loaded(self) -> int:
        text = self.log()
        return sum(text.count(word) for word in LOADED)

    def start(self) -> None:
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "ip", "netns", "exec", self.lab.ctl,
                 *self.python, "-c", EXABGP_MAIN, str(self.conf)],
                env={**os.environ, **EXABGP_ENV}, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def configure(self, routes: list[Route]) -> None:
        """Write the round's configuration and make ExaBGP read it; fail on a syntax error."""
        self.conf.write_text(exabgp_config(routes))
        before = self.loaded()
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        else:
            self.proc.send_signal(signal.SIGUSR1)
        self._wait(lambda: self.loaded() > before, "ExaBGP to read its configuration")

    def announce(self, routes: list[Route]) -> None:
        """One round: ExaBGP announces exactly `routes`, and FRR holds exactly them."""
        self.configure(routes)
        want = {fam: sorted(r.to for r in routes if r.family == fam) for fam in (4, 6)}
        self._wait(lambda: self.lab.frr_session().state == "Established"
                   and frr_destinations(self.lab) == want, f"FRR to hold {want}")

    def _wait(self, done, what: str, timeout: float = ROUND_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            text = self.log()
            if "problem parsing configuration" in text or "error message:" in text:
                raise AssertionError(f"ExaBGP refused its configuration:\n{text[-2000:]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"ExaBGP exited with {self.proc.returncode}:\n{text[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{text[-2000:]}\n"
                                     f"{self.lab.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)


@pytest.fixture
def rogue(lab):
    """The lab with BIRD killed and ExaBGP, not yet started, in its place."""
    if shutil.which("exabgp") is None:
        if os.environ.get("FLOWSEG_REQUIRE_LAB") == "1":
            pytest.fail("exabgp is missing: scripts/install-deps installs it")
        pytest.skip("the rogue peer needs exabgp (Debian package exabgp)")
    lab.kill("bird")
    peer = Rogue(lab)
    try:
        yield peer
    finally:
        peer.stop()


# -- reading the switch ----------------------------------------------------------------------

COUNTERS = re.compile(r" \[\d+:\d+\]$")
# A rate limit's bucket options (its name is a digest of the match and the rate, and its table
# holds one slot): no part of the match.
BUCKET = re.compile(r" --hashlimit-name \S+(?: --hashlimit-htable-(?:size|max) \d+)*")
RULE = re.compile(r'^-A FLOWSPEC (?:(?P<matches>.*?) )?-m comment --comment "?flowseg '
                  r'(?P<label>.*?) [0-9a-f]{12}"? -j (?P<verdict>ACCEPT|DROP)$')


def saved(lab) -> list[str]:
    """Both families' filter tables, without the date lines and the policy counters."""
    lines = []
    for v6 in (False, True):
        text = lab.run("sw", "ip6tables-save" if v6 else "iptables-save", "-t", "filter").stdout
        lines += [COUNTERS.sub("", ln) for ln in text.splitlines() if not ln.startswith("#")]
    return lines


def installed(lab, v6: bool = False) -> list[tuple[str, str, str]]:
    """FLOWSPEC as (rule label, matches, verdict) per rule, in chain order."""
    out = lab.run("sw", "ip6tables" if v6 else "iptables", "-S", "FLOWSPEC", check=False).stdout
    rules = []
    for line in out.splitlines():
        if line.startswith("-A "):
            m = RULE.match(line)
            assert m, f"not a flowseg rule: {line}"
            rules.append((m["label"], BUCKET.sub("", m["matches"] or ""), m["verdict"]))
    return rules


def by_rule(rules: list[tuple[str, str, str]]) -> list[tuple[str, list]]:
    """Consecutive rules of one rule number as one group, in any order inside it.

    The entries of one route (one per protocol, length or DSCP value) share a number and a
    verdict, so their order does not change what the chain does. A rate limit's DROP stays
    paired with the rule it guards, in front of it.
    """
    units = []
    rest = iter(rules)
    for rule in rest:
        units.append((rule, next(rest, None)) if " rate " in rule[0] else (rule,))
    groups: list[tuple[str, list]] = []
    for unit in units:
        number = unit[0][0].split()[0]
        if groups and groups[-1][0] == number:
            groups[-1][1].append(unit)
        else:
            groups.append((number, [unit]))
    return [(number, sorted(group)) for number, group in groups]


def last_line(res) -> str:
    return res.stderr.strip().splitlines()[-1]


# -- the good policy, installed before every hostile round -----------------------------------

H2 = "198.51.100.10/32"
H2_V6 = "2001:db8:2::10/128"
GOOD = [
    Route(H2, "source 192.0.2.10/32; protocol tcp; destination-port =80;", "mark 1;"),
    Route("0.0.0.0/0", "source 0.0.0.0/0;", "discard;"),
    Route(H2_V6, "next-header tcp; destination-port =22;", "mark 1;"),
    Route("::/0", "source ::/0;", "discard;"),
]
GOOD_V4 = [("1", "-s 192.0.2.10/32 -d 198.51.100.10/32 -p tcp -m tcp --dport 80", "ACCEPT"),
           ("policy", "", "DROP")]
GOOD_V6 = [("1", "-d 2001:db8:2::10/128 -p tcp -m tcp --dport 22", "ACCEPT"),
           ("policy", "", "DROP")]


def install_good(lab, rogue) -> list[str]:
    rogue.announce(GOOD)
    res = inject(lab)
    assert "applied IPv4 FLOWSPEC: 2 rules" in res.stderr
    assert installed(lab) == GOOD_V4 and installed(lab, v6=True) == GOOD_V6
    return saved(lab)


# -- installed exactly --------------------------------------------------------------------------

# (route, what the switch installs for it): every component type fs-inject carries, values at
# their edges, and the actions that change no match. The expected matches are what the route
# says, in iptables' own words (`iptables -S`).
EXACT_V4 = [
    (Route(H2, "source 192.0.2.10/32; protocol tcp; destination-port =80;", "mark 1;"),
     [("1", "-s 192.0.2.10/32 -d 198.51.100.10/32 -p tcp -m tcp --dport 80", "ACCEPT")]),
    (Route("198.51.100.0/24", "protocol [ =6 =17 ];", "mark 2;"),
     [("2", "-d 198.51.100.0/24 -p tcp", "ACCEPT"), ("2", "-d 198.51.100.0/24 -p udp", "ACCEPT")]),
    (Route("198.51.100.11/32", "protocol [ <6 >6 ];", "mark 3;"),
     [("3", "-d 198.51.100.11/32 ! -p tcp", "ACCEPT")]),
    (Route("198.51.100.12/32", "protocol tcp; destination-port >8080&<8088;", "mark 4;"),
     [("4", "-d 198.51.100.12/32 -p tcp -m tcp --dport 8081:8087", "ACCEPT")]),
    # Five operator pairs, the most FRR 8.4.4 (Debian) accepts in one component; 0 and 65535.
    (Route("198.51.100.13/32", "protocol udp; destination-port [ =0 =7 =9 =13 =65535 ];",
           "mark 5;"),
     [("5", "-d 198.51.100.13/32 -p udp -m multiport --dports 0,7,9,13,65535", "ACCEPT")]),
    (Route("198.51.100.14/32", "protocol tcp; destination-port [ <=1023 >=49152 ];", "mark 6;"),
     [("6", "-d 198.51.100.14/32 -p tcp -m multiport --dports 0:1023,49152:65535", "ACCEPT")]),
    (Route("198.51.100.15/32", "protocol udp; source-port <1024;", "mark 7;"),
     [("7", "-d 198.51.100.15/32 -p udp -m udp --sport 0:1023", "ACCEPT")]),
    (Route("198.51.100.16/32", "protocol udp; port [ =53 =5353 ];", "mark 8;"),
     [("8", "-d 198.51.100.16/32 -p udp -m multiport --ports 53,5353", "ACCEPT")]),
    # ICMP type and code without a protocol: the route matches ICMP only, and so does the rule.
    (Route("198.51.100.17/32", "icmp-type =8; icmp-code =0;", "mark 9;"),
     [("9", "-d 198.51.100.17/32 -p icmp -m icmp --icmp-type 8/0", "ACCEPT")]),
    (Route("198.51.100.18/32", "protocol icmp; icmp-type =3; icmp-code [ >=0&<=1 ];", "mark 10;"),
     [("10", "-d 198.51.100.18/32 -p icmp -m icmp --icmp-type 3/0", "ACCEPT"),
      ("10", "-d 198.51.100.18/32 -p icmp -m icmp --icmp-type 3/1", "ACCEPT")]),
    # TCP flags without a protocol match TCP only.
    (Route("198.51.100.19/32", "tcp-flags [ syn&!ack ];", "mark 11;"),
     [("11", "-d 198.51.100.19/32 -p tcp -m tcp --tcp-flags SYN,ACK SYN", "ACCEPT")]),
    (Route("198.51.100.20/32", "tcp-flags [ =0x12 ];", "mark 12;"),
     [("12", "-d 198.51.100.20/32 -p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK", "ACCEPT")]),
    (Route("198.51.100.21/32", "tcp-flags [ !rst ];", "mark 13;"),
     [("13", "-d 198.51.100.21/32 -p tcp -m tcp --tcp-flags RST NONE", "ACCEPT")]),
    (Route("198.51.100.22/32", "packet-length [ >=100&<=200 ];", "mark 14;"),
     [("14", "-d 198.51.100.22/32 -m length --length 100:200", "ACCEPT")]),
    (Route("198.51.100.23/32", "packet-length [ <64 >9000 ];", "mark 15;"),
     [("15", "-d 198.51.100.23/32 -m length --length 0:63", "ACCEPT"),
      ("15", "-d 198.51.100.23/32 -m length --length 9001:65535", "ACCEPT")]),
    (Route("198.51.100.24/32", "dscp [ =0 =63 ];", "mark 16;"),
     [("16", "-d 198.51.100.24/32 -m dscp --dscp 0x00", "ACCEPT"),
      ("16", "-d 198.51.100.24/32 -m dscp --dscp 0x3f", "ACCEPT")]),
    (Route("198.51.100.25/32", "fragment [ is-fragment ];", "mark 17;"),
     [("17", "-d 198.51.100.25/32 -f", "ACCEPT")]),
    (Route("198.51.100.26/32", "fragment [ !is-fragment ];", "mark 18;"),
     [("18", "-d 198.51.100.26/32 ! -f", "ACCEPT")]),
    # Prefix edges: /0 on one side is no match on that side; /1 and /32 are kept as they are.
    (Route("0.0.0.0/0", "source 192.0.2.10/32; protocol udp; destination-port =19;", "mark 19;"),
     [("19", "-s 192.0.2.10/32 -p udp -m udp --dport 19", "ACCEPT")]),
    (Route("128.0.0.0/1", "source 0.0.0.0/0; protocol udp; destination-port =20;", "mark 20;"),
     [("20", "-d 128.0.0.0/1 -p udp -m udp --dport 20", "ACCEPT")]),
    # Rates (RFC 8955 section 7.3, an IEEE float): -0, a negative rate and a rate under
    # 0.0000005 (FRR prints "0.000000") are DROP; a positive one a hashlimit DROP above it.
    (Route("198.51.100.27/32", "", "mark 21; extended-community [ 0x8006000080000000 ];"),
     [("21", "-d 198.51.100.27/32", "DROP")]),
    (Route("198.51.100.28/32", "", "mark 22; extended-community [ 0x80060000bf800000 ];"),
     [("22", "-d 198.51.100.28/32", "DROP")]),
    (Route("198.51.100.29/32", "", "mark 23; extended-community [ 0x8006000000000001 ];"),
     [("23", "-d 198.51.100.29/32", "DROP")]),
    (Route("198.51.100.30/32", "", "mark 24; rate-limit 0;"),
     [("24", "-d 198.51.100.30/32", "DROP")]),
    # 1000.0 with AS 65000 in the community: FRR does not show the AS, the rate stands.
    (Route("198.51.100.31/32", "", "mark 25; extended-community [ 0x8006fde8447a0000 ];"),
     # iptables keeps byte rates in its own steps: 1000 B/s reads back as 992 B/s.
     [("25 rate 1000B/s", "-d 198.51.100.31/32 -m hashlimit --hashlimit-above 992b/s",
       "DROP"),
      ("25", "-d 198.51.100.31/32", "ACCEPT")]),
    # Actions that change no match and no verdict: standard and large communities (FRR shows neither), route targets of any scope, a
    # site-of-origin and the experimental 0x8002 (shown like route targets).
    (Route("198.51.100.34/32", "",
           "mark 28; community [ 65000:1 ]; large-community [ 65000:1:2 ];"),
     [("28", "-d 198.51.100.34/32", "ACCEPT")]),
    (Route("198.51.100.35/32", "", "mark 29; extended-community [ target:65000:7 target:70000:7 "
           "origin:65000:9 0x8002fde800000005 ];"),
     [("29", "-d 198.51.100.35/32", "ACCEPT")]),
    # Two routes with one rule number, a DROP and an ACCEPT for different hosts: both stand.
    (Route("198.51.100.39/32", "protocol tcp;", "mark 30; discard;"),
     [("30", "-d 198.51.100.39/32 -p tcp", "DROP")]),
    (Route("198.51.100.38/32", "protocol tcp;", "mark 30;"),
     [("30", "-d 198.51.100.38/32 -p tcp", "ACCEPT")]),
    # traffic-marking as FRR shows it: one octet, so 300 is rule 44 and 255 is rule 255.
    (Route("198.51.100.37/32", "", "extended-community [ 0x800900000000012c ];"),
     [("44", "-d 198.51.100.37/32", "ACCEPT")]),
    (Route("198.51.100.36/32", "", "extended-community [ 0x80090000000000ff ];"),
     [("255", "-d 198.51.100.36/32", "ACCEPT")]),
    (Route("0.0.0.0/0", "source 0.0.0.0/0;", "discard;"), [("policy", "", "DROP")]),
]
EXACT_V6 = [
    (Route(H2_V6, "source ::/0; next-header tcp; destination-port =22;", "mark 1;"),
     [("1", "-d 2001:db8:2::10/128 -p tcp -m tcp --dport 22", "ACCEPT")]),
    (Route("2001:db8:2::/48", "source 2001:db8:1::10/128; icmp-type =128;", "mark 2;"),
     [("2", "-s 2001:db8:1::10/128 -d 2001:db8:2::/48 -p ipv6-icmp -m icmp6 --icmpv6-type 128",
       "ACCEPT")]),
    (Route("2001:db8:2::11/128", "fragment [ first-fragment ];", "mark 3;"),
     [("3", "-d 2001:db8:2::11/128 -m frag --fragfirst --fragmore", "ACCEPT")]),
    (Route("2001:db8:2::12/128", "dscp [ =10 ];", "mark 4;"),
     [("4", "-d 2001:db8:2::12/128 -m dscp --dscp 0x0a", "ACCEPT")]),
    (Route("::/0", "source ::/0;", "discard;"), [("policy", "", "DROP")]),
]


def test_every_component_at_its_edges_is_installed_exactly(lab, rogue):
    rogue.announce([route for route, _ in EXACT_V4 + EXACT_V6])
    res = inject(lab)
    assert res.returncode == 0
    assert by_rule(installed(lab)) == by_rule([rule for _, rules in EXACT_V4 for rule in rules])
    assert by_rule(installed(lab, v6=True)) == by_rule(
        [rule for _, rules in EXACT_V6 for rule in rules])
    assert "applied IPv4 FLOWSPEC: 37 rules" in res.stderr
    assert "rule 30 arrives as both ACCEPT and DROP" in res.stderr
    # What was installed reads back as the routes: the next run writes nothing.
    again = inject(lab)
    assert "unchanged" in again.stderr and "applied" not in again.stderr


# -- refused, loudly, and nothing changes -----------------------------------------------------

def bad(host: int | str, match: str, then: str = "mark 9;") -> Route:
    """A hostile route to a destination of its own (198.51.100.<host>/32 or an IPv6 prefix),
    so that its round can see it arrive."""
    return Route(host if isinstance(host, str) else f"198.51.100.{host}/32", match, then)


# (case, route, the one line fs-inject prints). Each is sent next to the good policy, which
# must stay in force byte for byte.
KEPT = " FLOWSPEC kept as it was."
REFUSED = [
    ("rate NaN", bad(100, "", "mark 9; extended-community [ 0x800600007fc00000 ];"),
     "route 'to 198.51.100.100/32': traffic-rate 'FS:rate nan' is not a number."),
    ("rate +inf", bad(101, "", "mark 9; extended-community [ 0x800600007f800000 ];"),
     "route 'to 198.51.100.101/32': traffic-rate 'FS:rate inf' is not a number."),
    ("rate -inf", bad(102, "", "mark 9; extended-community [ 0x80060000ff800000 ];"),
     "route 'to 198.51.100.102/32': traffic-rate 'FS:rate -inf' is not a number."),
    ("two markings", bad(137, "", "extended-community [ 0x8009000000000001 0x8009000000000002 ];"),
     "route 'to 198.51.100.137/32': two traffic-markings (1, 2): its place in the chain is "
     "ambiguous."),
    ("discard and a rate", bad(138, "", "mark 9; discard; rate-limit 1000;"),
     "route 'to 198.51.100.138/32': two traffic-rates: which one applies is ambiguous."),
    ("redirect AS:N", bad(103, "", "mark 9; redirect 65000:100;"),
     "route 'to 198.51.100.103/32': redirect action 'FS:redirect VRF RT:65000:100' is not "
     "carried by flowseg; not installed (it would widen into ACCEPT)."),
    # FRR cuts the redirect text to 15 characters (wire facts 3.2): the route is named anyway.
    ("redirect 4-octet AS", bad(104, "", "mark 9; redirect 4200000000:100;"),
     "route 'to 198.51.100.104/32': redirect action 'FS:redirect VRF RT:4200000000:1' is not "
     "carried by flowseg; not installed (it would widen into ACCEPT)."),
    ("redirect to IP", bad(105, "", "mark 9; redirect 192.0.2.1;"),
     "route 'to 198.51.100.105/32': redirect action 'FS:redirect IP 0x0' is not carried by "
     "flowseg; not installed (it would widen into ACCEPT)."),
    ("redirect to next hop", bad(106, "", "mark 9; redirect-to-nexthop;"),
     "route 'to 198.51.100.106/32': redirect action 'FS:redirect IP 0x0' is not carried by "
     "flowseg; not installed (it would widen into ACCEPT)."),
    ("redirect to IP (IETF)", bad(107, "", "mark 9; redirect-to-nexthop-ietf 192.0.2.1;"),
     "route 'to 198.51.100.107/32': redirect action 'NH:192.0.2.1:0' is not carried by "
     "flowseg; not installed (it would widen into ACCEPT)."),
    ("copy", bad(108, "", "mark 9; copy 192.0.2.1;"),
     "route 'to 198.51.100.108/32': redirect action 'FS:redirect IP 0x1' is not carried by "
     "flowseg; not installed (it would widen into ACCEPT)."),
    ("0x800b", bad(109, "", "mark 9; extended-community [ 0x800bfde8ffffffff ];"),
     "route 'to 198.51.100.109/32': redirect action 'FS:redirect VRF RT:65000:4294967295' is "
     "not carried by flowseg; not installed (it would widen into ACCEPT)."),
    ("traffic-rate-packets", bad(110, "", "mark 9; extended-community [ 0x800c000000000000 ];"),
     "route 'to 198.51.100.110/32': action 'UNK:128, 12' is not carried by flowseg; not "
     "installed."),
    ("link bandwidth", bad(111, "", "mark 9; extended-community [ 0x0004fde84f800000 ];"),
     "route 'to 198.51.100.111/32': action 'LB:65000:0 (0 bps)' is not carried by flowseg; not "
     "installed."),
    ("opaque", bad(112, "", "mark 9; extended-community [ 0x0303000000000001 ];"),
     "route 'to 198.51.100.112/32': action 'UNK:3, 0' is not carried by flowseg; not installed."),
    ("no marking", bad(113, "protocol tcp;", "accept;"),
     "route 'to 198.51.100.113/32 proto = 6': no traffic-marking or sequence number, so its "
     "place in the chain is unknown."),
    ("marking 0", bad(114, "", "extended-community [ 0x8009000000000000 ];"),
     "route 'to 198.51.100.114/32': rule number 0 is no rule number."),
    ("two sequence numbers", bad(115, "", "extended-community [ target:65535:1 target:65535:2 ];"),
     "route 'to 198.51.100.115/32': 2 different 65535:N route targets."),
    ("two generations",
     bad(116, "", "mark 9; extended-community [ target:65534:1 target:65534:2 ];"),
     "route 'to 198.51.100.116/32': 2 different 65534:N route targets."),
    # The good policy's rules carry traffic-marking only.
    ("sequence among markings", bad(117, "", "extended-community [ target:65535:9 ];"),
     "1 of 2 routes carry a sequence number and the others only traffic-marking: their order "
     "is unknown."),
    ("flow label", bad("2001:db8:2::100/128", "flow-label [ =100 ];"),
     "route 'to 2001:db8:2::100/128/off 0 flwlbl = 100': component 'flwlbl' is not carried by "
     "flowseg; not installed."),
    ("IPv6 offset 4", bad("2001:db8:2::/48/4", ""),
     "route 'to 2001:db8:2::/48/off 4': IPv6 prefix offset 4 is not supported."),
    ("IPv6 offset 8", bad("2001:db8:2::/64/8", ""),
     "route 'to 2001:db8:2::/64/off 8': IPv6 prefix offset 8 is not supported."),
    ("IPv6 traffic class 200", bad("2001:db8:2::101/128", "traffic-class [ =200 ];"),
     "route 'to 2001:db8:2::101/128/off 0 dscp = 200': value 200 out of range 0-63."),
    ("TCP flag CWR", bad(118, "tcp-flags [ cwr ];"),
     "route 'to 198.51.100.118/32 tcp \u220b 128': TCP flags mask 0x80 has bits iptables "
     "cannot name (above URG); not installed."),
    ("TCP flags OR", bad(119, "tcp-flags [ syn ack ];"),
     "route 'to 198.51.100.119/32 tcp \u220b 2,|\u220b 16': bitmask OR "
     "'\u220b 2,|\u220b 16' is not carried."),
    ("TCP flags any of two", bad(120, "tcp-flags [ 0x12 ];"),
     "route 'to 198.51.100.120/32 tcp \u220b 18': bitmask term '\u220b 18' is no exact match."),
    ("port without protocol", bad(121, "port =53;"),
     "route 'to 198.51.100.121/32 port = 53': ports need protocol tcp, udp, sctp or dccp; not "
     "installed."),
    ("operator false", bad(122, "protocol tcp; destination-port false0;"),
     "route 'to 198.51.100.122/32 proto = 6 dstp 0': operator 'false' matches nothing; not "
     "installed."),
    ("port < 0", bad(123, "protocol tcp; destination-port <0;"),
     "route 'to 198.51.100.123/32 proto = 6 dstp < 0': '< 0' matches nothing."),
    ("port > 65535", bad(124, "protocol tcp; destination-port >65535;"),
     "route 'to 198.51.100.124/32 proto = 6 dstp > 65535': '> 65535' matches nothing."),
    ("empty range", bad(125, "protocol tcp; destination-port >8088&<8080;"),
     "route 'to 198.51.100.125/32 proto = 6 dstp > 8088 , < 8080': range '> 8088 , < 8080' is "
     "empty."),
    ("fragment DF", bad(126, "fragment [ dont-fragment ];"),
     "route 'to 198.51.100.126/32 pktfrag \u220b 1': fragment match mask 0x1 value 0x1 has no "
     "exact iptables form; not installed."),
    ("fragment OR", bad(127, "fragment [ first-fragment last-fragment ];"),
     "route 'to 198.51.100.127/32 pktfrag \u220b 4,|\u220b 8': bitmask OR "
     "'\u220b 4,|\u220b 8' is not carried."),
    ("fragment value 0", bad(128, "fragment [ not-a-fragment ];"),
     "route 'to 198.51.100.128/32 pktfrag \u220b 0': bitmask value 0 out of range 1-15."),
    ("ICMP type with TCP", bad(129, "protocol tcp; icmp-type =8;"),
     "route 'to 198.51.100.129/32 proto = 6 type = 8': its protocol contradicts its TCP flags "
     "or ICMP match."),
    ("ICMP type and TCP flags", bad(130, "icmp-type =8; tcp-flags [ syn ];"),
     "route 'to 198.51.100.130/32 type = 8 tcp \u220b 2': TCP flags and ICMP in one route "
     "match nothing."),
    ("ICMP code without type", bad(131, "protocol icmp; icmp-code =1;"),
     "route 'to 198.51.100.131/32 proto = 1 code = 1': an ICMP code needs an ICMP type for "
     "iptables; not installed."),
    ("20 protocols", bad(132, "protocol >=1&<=20;"),
     "route 'to 198.51.100.132/32 proto >= 1 , <= 20': 20 protocols are too many iptables "
     "rules."),
    # traffic-action: FRR misprints its bits, and its terminal bit would decide whether later
    # rules still apply (RFC 8955 7.3); refused since it cannot be read.
    ("traffic-action sample-terminal", bad(139, "", "mark 26; action sample-terminal;"),
     "route 'to 198.51.100.139/32': traffic-action 'FS:action eval stops' cannot be read "
     "exactly from FRR; not installed."),
    ("traffic-action terminal", bad(140, "", "mark 27; action terminal;"),
     "route 'to 198.51.100.140/32': traffic-action 'FS:action eval stops' cannot be read "
     "exactly from FRR; not installed."),
    ("port with ICMP", bad(133, "protocol icmp; destination-port =80;"),
     "route 'to 198.51.100.133/32 proto = 1 dstp = 80': ports need protocol tcp, udp, sctp or "
     "dccp; not installed."),
]


def test_hostile_routes_are_refused_and_every_chain_kept(lab, rogue):
    before = install_good(lab, rogue)
    failures = []
    for case, route, line in REFUSED:
        rogue.announce(GOOD + [route])
        res = inject(lab, check=False)
        got = (res.returncode, last_line(res), saved(lab) == before)
        if got != (3, f"fs-inject: {line}{KEPT}", True):
            failures.append(f"{case}: exit {got[0]}, {got[1]!r}, tables kept: {got[2]}")
    assert not failures, "\n".join(failures)
    # The rogue gone quiet, the good policy alone is back: nothing to write.
    rogue.announce(GOOD)
    assert "unchanged" in inject(lab).stderr and saved(lab) == before


# -- routes FRR answers with a session reset ----------------------------------------------------

# FRR 8.4.4 (Debian) sends a NOTIFICATION and drops the whole session for these (wire facts
# 2.5): six operator pairs in one component (five pass, see EXACT_V4), `!=` and `true`. Every
# route of the session goes with it. (An IPv6 offset of 8 resets it only when the sender sizes
# the pattern by length minus offset, as BIRD 2.0.12 does; ExaBGP, like FRR, ignores the
# offset there, so FRR reads the route: see REFUSED.)
RESETS = [
    ("six operator pairs", bad(140, "protocol udp; destination-port [ =1 =2 =3 =4 =5 =6 ];")),
    ("operator !=", bad(141, "protocol tcp; destination-port !=80;")),
    ("operator true", bad(142, "protocol tcp; destination-port true0;")),
]


def wait_for(predicate, what: str, timeout: float = ROUND_TIMEOUT) -> None:
    scenario.wait_for(predicate, timeout, what, every=0.05)


def test_route_that_resets_the_session_leaves_the_chain_in_force(lab, rogue):
    before = install_good(lab, rogue)
    for case, route in RESETS:
        dropped = lab.frr_session().dropped
        rogue.configure(GOOD + [route])
        wait_for(lambda: lab.frr_session().dropped > dropped, f"FRR to reset the session ({case})")
        # Stopped, the rogue cannot bring the session back between the checks below.
        rogue.stop()
        wait_for(lambda: lab.frr_session().state != "Established", "the session to stay down")
        wait_for(lambda: frr_destinations(lab) == {4: [], 6: []}, "FRR to flush the routes")
        res = inject(lab)
        # --on-session-down keep, the default: nothing is read, nothing is written.
        assert "no Established session" in res.stderr, case
        assert "IPv4 FLOWSPEC kept as it was until a session is back" in res.stderr, case
        assert saved(lab) == before, case
        rogue.announce(GOOD)
        assert "unchanged" in inject(lab).stderr, case
    assert "Optional Attribute Error" in lab.bgpd_log.read_text()


# -- sequence numbers, thousands of routes ------------------------------------------------------

MANY = 2000


def test_thousands_of_routes_with_sequence_numbers_and_duplicates(lab, rogue):
    routes = [Route(H2, f"protocol tcp; destination-port ={n};",
                    f"extended-community [ target:65535:{n} ];") for n in range(1, MANY + 1)]
    routes += [
        # One sequence number on two routes, DROP and ACCEPT, for different hosts.
        Route("198.51.100.40/32", "protocol tcp;",
              f"discard; extended-community [ target:65535:{MANY + 1} ];"),
        Route("198.51.100.41/32", "protocol tcp;",
              f"extended-community [ target:65535:{MANY + 1} ];"),
        # A sequence number and a marking: the sequence number places the rule.
        Route("198.51.100.42/32", "", f"mark 7; extended-community [ target:65535:{MANY + 2} ];"),
        Route("0.0.0.0/0", "source 0.0.0.0/0;", "discard;"),
    ]
    rogue.announce(routes)
    begin = time.monotonic()
    res = inject(lab, "--family", "ipv4")
    took = time.monotonic() - begin
    assert res.returncode == 0 and f"applied IPv4 FLOWSPEC: {MANY + 4} rules" in res.stderr
    assert took < 20, f"fs-inject took {took:.1f} s for {MANY + 4} routes"
    want = [(str(n), f"-d {H2} -p tcp -m tcp --dport {n}", "ACCEPT") for n in range(1, MANY + 1)]
    want += [(str(MANY + 1), "-d 198.51.100.40/32 -p tcp", "DROP"),
             (str(MANY + 1), "-d 198.51.100.41/32 -p tcp", "ACCEPT"),
             (str(MANY + 2), "-d 198.51.100.42/32", "ACCEPT"),
             ("policy", "", "DROP")]
    assert by_rule(installed(lab)) == by_rule(want)

    begin = time.monotonic()
    assert "unchanged" in inject(lab, "--family", "ipv4").stderr
    assert time.monotonic() - begin < 20

    # ExaBGP withdraws 1,994 routes at once: FRR keeps the session (BIRD 2.0.12's mass
    # withdrawals reset it, wire facts 7), and the chain follows.
    session = lab.frr_session()
    rogue.announce(routes[:10] + routes[-1:])
    assert lab.frr_session().established == session.established
    inject(lab, "--family", "ipv4")
    assert installed(lab) == want[:10] + want[-1:]


# -- scopes and generations ---------------------------------------------------------------------

def test_routes_of_other_scopes_stay_off_the_switch(lab, rogue):
    rogue.announce([
        Route("198.51.100.51/32", "", "mark 1; extended-community [ target:65000:1 ];"),
        Route("198.51.100.52/32", "", "mark 2; extended-community [ target:65000:2 ];"),
        Route("198.51.100.53/32", "", "mark 3;"),
        Route("198.51.100.54/32", "",
              "mark 4; extended-community [ target:65000:2 target:65000:1 ];"),
        Route("198.51.100.55/32", "", "mark 5; discard; extended-community [ target:65000:2 ];"),
        Route("198.51.100.56/32", "", "mark 6; extended-community [ target:70000:1 ];"),
        Route("0.0.0.0/0", "source 0.0.0.0/0;", "discard;"),
    ])
    res = inject(lab, "--family", "ipv4", "--scope", "65000:1")
    assert "read 7 flowspec routes for IPv4, 3 out of scope" in res.stderr
    assert installed(lab) == [("1", "-d 198.51.100.51/32", "ACCEPT"),
                              ("3", "-d 198.51.100.53/32", "ACCEPT"),
                              ("4", "-d 198.51.100.54/32", "ACCEPT"),
                              ("policy", "", "DROP")]


def stamped(generation: int, count: int | None = None) -> list[Route]:
    """The good IPv4 policy as one generation; the catch-all carries the count."""
    total = f" target:65533:{count}" if count is not None else ""
    return [
        Route(H2, "source 192.0.2.10/32; protocol tcp; destination-port =80;",
              f"mark 1; extended-community [ target:65534:{generation} ];"),
        Route("0.0.0.0/0", "source 0.0.0.0/0;",
              f"discard; extended-community [ target:65534:{generation}{total} ];"),
    ]


WAITING = [
    ("one route stamped", GOOD + [bad(61, "", "mark 9; extended-community [ target:65534:8 ];")],
     "routes with and without a generation stamp are mixed"),
    ("no count", stamped(9) + GOOD[2:], "the policy route of generation 9 (with the route count) "
     "is missing"),
    ("too few routes", stamped(9, 3) + GOOD[2:], "2 of the 3 routes of generation 9 are here"),
    ("two generations", stamped(9, 2)[:1] + stamped(10, 2)[1:] + GOOD[2:],
     "generations 9, 10 are mixed"),
]


def test_incomplete_generations_wait_and_keep_the_chain(lab, rogue):
    before = install_good(lab, rogue)
    for case, routes, why in WAITING:
        rogue.announce(routes)
        res = inject(lab)
        assert res.returncode == 0, case
        assert (f"IPv4: waiting for a complete policy ({why}); FLOWSPEC kept as it was"
                in res.stderr), case
        assert saved(lab) == before, case
    # Route counts that contradict each other: on one route, and on two.
    counted = Route(H2, "source 192.0.2.10/32; protocol tcp; destination-port =80;",
                    "mark 1; extended-community [ target:65534:9 target:65533:3 ];")
    for routes, line in [
        (stamped(9, 2)[:1] + [Route("0.0.0.0/0", "source 0.0.0.0/0;", "discard; "
         "extended-community [ target:65534:9 target:65533:2 target:65533:3 ];")],
         "route 'to 0.0.0.0/0 from 0.0.0.0/0': 2 different 65533:N route targets."),
        ([counted] + stamped(9, 2)[1:], "generation 9 names 2 different route counts."),
    ]:
        rogue.announce(routes + GOOD[2:])
        res = inject(lab, check=False)
        assert (res.returncode, last_line(res)) == (3, f"fs-inject: {line}{KEPT}")
        assert saved(lab) == before
    rogue.announce(stamped(11, 2) + GOOD[2:])
    inject(lab)
    assert installed(lab) == [GOOD_V4[0], ("policy g11", "", "DROP")]


# -- fs-inject bugs found here, fixed since: regression tests -----------------------------------

def hostile_round(lab, rogue, *routes: Route):
    """The good policy in force, then the hostile routes next to it; fs-inject's answer."""
    before = install_good(lab, rogue)
    rogue.announce(GOOD + list(routes))
    return before, inject(lab, check=False)


# The routes of the cases below (tests/fixtures/capture_rogue.py captures them too).
FULL_RANGE = [
    ("dport>=0", Route(H2, "destination-port >=0;", "mark 5;"), dict(proto="icmp")),
    ("port>=0", Route(H2, "port >=0;", "mark 5;"), dict(proto="icmp")),
    ("icmp-type>=0", Route(H2, "icmp-type >=0;", "mark 5;"), dict(proto="tcp", dport=9)),
]
EVERY_PROTOCOL = Route(H2, "protocol >=0;", "mark 5;")
# FRR's JSON shows the last of the two destinations: h2's.
REPEATED_DESTINATION = Route("198.51.100.20/32", f"destination {H2}; protocol tcp;", "mark 5;",
                             shown=H2)
HUGE_RATES = [
    ("2^32", bad(150, "", "mark 9; extended-community [ 0x800600004f800000 ];")),
    ("max-float", bad(152, "", "mark 9; extended-community [ 0x800600007f7fffff ];")),
    ("1e12", bad(153, "", "mark 9; rate-limit 1000000000000;")),
]
SAME_NUMBER = [
    Route(H2, "protocol tcp; destination-port >=99&<=100;", "mark 5; discard;"),
    Route(H2, "protocol tcp; destination-port =100;", "mark 5;"),
]
SUSPECT = ([route for _, route, _ in FULL_RANGE] + [EVERY_PROTOCOL, REPEATED_DESTINATION]
           + [route for _, route in HUGE_RATES] + SAME_NUMBER)


@pytest.mark.parametrize("route, probe", [case[1:] for case in FULL_RANGE],
                         ids=[case[0] for case in FULL_RANGE])
def test_component_covering_every_value_still_needs_its_protocol(lab, rogue, route, probe):
    _, res = hostile_round(lab, rogue, route)
    assert res.returncode in (0, 3)
    # Refused (the good chain stays) or installed exactly: either way the policy drops it.
    assert not lab.probe(**probe)


def test_protocol_covering_every_value_is_no_crash(lab, rogue):
    before, res = hostile_round(lab, rogue, EVERY_PROTOCOL)
    assert "Traceback" not in res.stderr
    assert res.returncode in (0, 3) and last_line(res).startswith("fs-inject: ")
    if res.returncode == 3:
        assert saved(lab) == before
    else:
        assert (("5", f"-d {H2}", "ACCEPT")) in installed(lab)


def test_repeated_destination_component_is_not_widened(lab, rogue):
    _, res = hostile_round(lab, rogue, REPEATED_DESTINATION)
    assert res.returncode in (0, 3)
    assert not lab.probe("tcp", dport=9)


@pytest.mark.parametrize("route", [route for _, route in HUGE_RATES],
                         ids=[case for case, _ in HUGE_RATES])
def test_rate_hashlimit_cannot_hold_is_refused(lab, rogue, route):
    before, res = hostile_round(lab, rogue, route)
    assert res.returncode in (3, 6) and "Traceback" not in res.stderr
    assert last_line(res).startswith(f"fs-inject: route 'to {route.to}'")
    assert last_line(res).endswith(KEPT)
    assert saved(lab) == before


def test_one_rule_number_two_verdicts_go_in_rfc_order(lab, rogue):
    _, res = hostile_round(lab, rogue, *SAME_NUMBER)
    assert res.returncode in (0, 3)
    assert lab.probe_many([dict(proto="tcp", dport=100), dict(proto="tcp", dport=99)]) == [
        False, False]
