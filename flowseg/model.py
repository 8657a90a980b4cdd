"""The words both commands use: a flow rule, its matches and its verdict.

A FlowRule is one rule of an ordered first-match allow/deny list. On the controller it comes
from a FORWARD rule (iptables-save); on the switch it comes from a Flow-Spec route (vtysh JSON).
Numeric matches (protocol, ports, ICMP type and code, length, DSCP) are kept as sorted,
disjoint, inclusive intervals: that is the meaning both iptables and RFC 8955 section 4.2.1.1
numeric operators express, so translation in either direction goes through the same canonical
form. TCP flags and fragment matches are one Bitmask each, (bits & mask) == want, which is
what iptables says and what RFC 8955 section 4.2.1.2 bitmask operators can say exactly.
Each FlowRule field names the RFC 8955 / RFC 8956 component type it becomes.

Values are validated once, here, when the object is built; everything downstream trusts them.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass, field, replace
from typing import Iterable, Union

from flowseg.errors import InvalidValue

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

PORT_MAX = 65535
PROTO_MAX = 255


class Family(enum.Enum):
    V4 = 4
    V6 = 6

    @property
    def any_net(self) -> IPNetwork:
        # A shared constant: this is asked for every route, and parsing it each time showed
        # in the profile (make bench).
        return _ANY_NET[self]

    @property
    def bird_word(self) -> str:
        return "flow4" if self is Family.V4 else "flow6"

    @property
    def afi(self) -> str:
        return "ipv4" if self is Family.V4 else "ipv6"


_ANY_NET = {Family.V4: ipaddress.ip_network("0.0.0.0/0"), Family.V6: ipaddress.ip_network("::/0")}


class Verdict(enum.Enum):
    ACCEPT = "ACCEPT"
    DROP = "DROP"


@dataclass(frozen=True, order=True)
class Interval:
    """An inclusive range lo..hi of a numeric field."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not (0 <= self.lo <= self.hi):
            raise InvalidValue(f"bad range {self.lo}..{self.hi}")

    def iptables(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"


Intervals = tuple[Interval, ...]


def normalize(intervals: Iterable[Interval], top: int) -> Intervals:
    """Sort and merge intervals; the empty tuple means "any value" (no match at all)."""
    out: list[Interval] = []
    for iv in sorted(intervals):
        if iv.hi > top:
            raise InvalidValue(f"value {iv.hi} out of range 0-{top}")
        if out and iv.lo <= out[-1].hi + 1:
            out[-1] = Interval(out[-1].lo, max(out[-1].hi, iv.hi))
        else:
            out.append(iv)
    if out == [Interval(0, top)]:
        return ()
    return tuple(out)


def complement(intervals: Intervals, top: int) -> Intervals:
    """Every value of 0..top not in intervals (for a negated iptables match)."""
    out: list[Interval] = []
    nxt = 0
    for iv in intervals:
        if iv.lo > nxt:
            out.append(Interval(nxt, iv.lo - 1))
        nxt = iv.hi + 1
    if nxt <= top:
        out.append(Interval(nxt, top))
    if not out:
        raise InvalidValue("the negation matches nothing")
    return normalize(out, top)


def intersect(a: Intervals, b: Intervals, top: int) -> Intervals:
    """Values in both a and b (two iptables matches on one field must both hold).

    The empty tuple means "any value" on either side; an empty intersection is an error.
    """
    if not a:
        return b
    if not b:
        return a
    out = [
        Interval(max(x.lo, y.lo), min(x.hi, y.hi))
        for x in a
        for y in b
        if max(x.lo, y.lo) <= min(x.hi, y.hi)
    ]
    if not out:
        raise InvalidValue("the matches on one field exclude each other: it matches nothing")
    return normalize(out, top)


@dataclass(frozen=True, order=True)
class Bitmask:
    """One conjunctive bitmask match: the packet's bits under `mask` equal `want`.

    (value & mask) == want. Bits of mask set in want must be set in the packet, bits of mask
    clear in want must be clear; bits outside mask do not matter. iptables' --tcp-flags MASK
    COMP is exactly this, and so are -f / ! -f. In RFC 8955 bitmask operators (section 4.2.1.2)
    it is "match all of want" AND "match none of mask & ~want".
    """

    mask: int
    want: int

    def __post_init__(self) -> None:
        if self.mask <= 0:
            raise InvalidValue("a bitmask match needs at least one bit in its mask")
        if self.want & ~self.mask or self.want < 0:
            raise InvalidValue(f"bitmask value 0x{self.want:x} has bits outside mask "
                               f"0x{self.mask:x}")

    @property
    def clear(self) -> int:
        """The bits that must be clear."""
        return self.mask & ~self.want


# TCP flag bits as the TCP header's flags octet holds them (RFC 9293; RFC 8955 section 4.2.2.9).
TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20,
             "ECE": 0x40, "CWR": 0x80}
# What BIRD and RFC 8955 allow in the TCP flags component (a 2-octet operand, 12 bits used).
TCP_FLAGS_MAX = 0xFFF
# `--syn`: SYN set, RST, ACK and FIN clear.
TCP_SYN = Bitmask(0x17, 0x02)
# RFC 8955 section 4.2.2.12 fragment bits. IPv6 has no DF (RFC 8956 section 3.6).
FRAG_DF = 0x01  # don't fragment (IPv4 only)
FRAG_ISF = 0x02  # a fragment other than the first: fragment offset is not 0
FRAG_FF = 0x04  # first fragment: offset 0 and more-fragments set
FRAG_LF = 0x08  # last fragment: offset not 0 and more-fragments clear
FRAG_BITS = {Family.V4: 0x0F, Family.V6: 0x0E}

DSCP_MAX = 63
LENGTH_MAX = 65535
ICMP_MAX = 255
ICMP_PROTOCOLS = {Family.V4: 1, Family.V6: 58}


@dataclass(frozen=True)
class FlowRule:
    """One rule of the ordered policy.

    number is the rule's FORWARD position (from 1); the chain's policy has number 0 and sorts
    last. protocol is None for "any protocol". Empty interval tuples mean "any value" and None
    bitmasks "no condition": a field left at its default puts no component in the route.
    """

    number: int
    family: Family
    verdict: Verdict
    src: IPNetwork  # type 2, source prefix
    dst: IPNetwork  # type 1, destination prefix
    protocol: int | None = None  # type 3, IP protocol (IPv4) / next header (IPv6)
    sport: Intervals = ()  # type 6, source port
    dport: Intervals = ()  # type 5, destination port
    # type 4, port: the source OR the destination port is in the list (multiport --ports).
    port: Intervals = ()
    # type 7 / type 8, ICMP type and code (ICMPv6 in IPv6, RFC 8956 sections 3.3 and 3.4);
    # need protocol 1 (IPv4) or 58 (IPv6).
    icmp_type: Intervals = ()
    icmp_code: Intervals = ()
    tcp_flags: Bitmask | None = None  # type 9, TCP flags; needs protocol 6
    # type 10, packet length: the whole IP packet, IP header included, in both families
    # (iptables -m length counts the same way).
    length: Intervals = ()
    dscp: Intervals = ()  # type 11, DSCP, 0-63
    # type 12, fragment: Bitmask over FRAG_DF, FRAG_ISF, FRAG_FF, FRAG_LF (no DF in IPv6).
    fragment: Bitmask | None = None
    # `! -p X`: any protocol but `protocol` (type 3 as the two ranges around it).
    protocol_negated: bool = False
    comment: str = ""
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.number < 0:
            raise InvalidValue(f"rule number {self.number} is negative")
        for net in (self.src, self.dst):
            if net.version != self.family.value:
                raise InvalidValue(f"{net} is not an IPv{self.family.value} prefix")
        if self.protocol is not None and not 0 <= self.protocol <= PROTO_MAX:
            raise InvalidValue(f"protocol {self.protocol} out of range 0-255")
        if self.protocol_negated and self.protocol is None:
            raise InvalidValue("a negated protocol needs a protocol")
        # The protocol a port, ICMP or TCP flags match depends on; None when it is not one.
        proto = None if self.protocol_negated else self.protocol
        for name, values, top in (
            ("port", self.sport, PORT_MAX),
            ("port", self.dport, PORT_MAX),
            ("port", self.port, PORT_MAX),
            ("ICMP type", self.icmp_type, ICMP_MAX),
            ("ICMP code", self.icmp_code, ICMP_MAX),
            ("length", self.length, LENGTH_MAX),
            ("DSCP", self.dscp, DSCP_MAX),
        ):
            if normalize(values, top) != values:
                raise InvalidValue(f"{name} list {values} is not in canonical form")
        if (self.sport or self.dport or self.port) and proto not in PORT_PROTOCOLS:
            raise InvalidValue("ports need protocol tcp, udp, sctp or dccp")
        if (self.icmp_type or self.icmp_code) and proto != ICMP_PROTOCOLS[self.family]:
            want = "icmp (1)" if self.family is Family.V4 else "ipv6-icmp (58)"
            raise InvalidValue(f"ICMP type and code need protocol {want}")
        if self.tcp_flags is not None:
            if proto != 6:
                raise InvalidValue("TCP flags need protocol tcp")
            if self.tcp_flags.mask > TCP_FLAGS_MAX:
                raise InvalidValue(f"TCP flags mask 0x{self.tcp_flags.mask:x} is wider than "
                                   f"12 bits")
        if self.fragment is not None and self.fragment.mask & ~FRAG_BITS[self.family]:
            raise InvalidValue(f"fragment bits 0x{self.fragment.mask:x} are not all defined "
                               f"for IPv{self.family.value}")
        if any(ch in self.comment for ch in "\n\r\0"):
            raise InvalidValue("comment holds a control character")

    @property
    def is_policy(self) -> bool:
        return self.number == 0

    @property
    def is_catch_all(self) -> bool:
        any_net = self.family.any_net
        bare = FlowRule(self.number, self.family, self.verdict, any_net, any_net)
        return self.matches_key() == bare.matches_key()

    def matches_key(self) -> tuple:
        """What identifies the traffic a rule matches, as BGP identifies an NLRI."""
        return (
            self.family,
            self.src,
            self.dst,
            self.protocol,
            self.sport,
            self.dport,
            self.port,
            self.icmp_type,
            self.icmp_code,
            self.tcp_flags,
            self.length,
            self.dscp,
            self.fragment,
            self.protocol_negated,
        )

    def with_ports(self, sport: Intervals, dport: Intervals) -> FlowRule:
        return replace(self, sport=sport, dport=dport)


# Protocols whose header has the 16-bit ports that Flow-Spec port components match.
PORT_PROTOCOLS = {6, 17, 33, 132}

PROTOCOL_NAMES = {
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "dccp": 33,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "sctp": 132,
    "ipv6-mh": 135,
    "mh": 135,
    "udplite": 136,
}
PROTOCOL_BY_NUMBER = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp"}


def protocol_number(word: str) -> int:
    """A protocol as iptables writes it (name or number) to its IANA number."""
    if word.isdigit():
        value = int(word)
        if value > PROTO_MAX:
            raise InvalidValue(f"protocol {value} out of range 0-255")
        return value
    if word.lower() in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[word.lower()]
    # iptables-save prints other protocols by the name /etc/protocols gives them on that host.
    try:
        return socket.getprotobyname(word)
    except OSError:
        raise InvalidValue(f"unknown protocol name {word!r}; give its number") from None


@dataclass(frozen=True)
class Policy:
    """A chain read from one family's filter table: its rules in order and its policy.

    skipped holds one line per rule that is not carried (the stateful return-traffic rule, or
    what --skip-unsupported left out), naming the rule and why.
    """

    family: Family
    chain: str
    default: Verdict
    rules: tuple[FlowRule, ...]
    skipped: tuple[str, ...] = ()

    def policy_rule(self) -> FlowRule:
        any_net = self.family.any_net
        return FlowRule(0, self.family, self.default, any_net, any_net, comment="chain policy")
