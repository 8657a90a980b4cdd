"""The words both commands use: a flow rule, its matches and its verdict.

A FlowRule is one rule of an ordered first-match allow/deny list. On the controller it comes
from a FORWARD rule (iptables-save); on the switch it comes from a Flow-Spec route (vtysh JSON).
Numeric matches (protocol, ports) are kept as sorted, disjoint, inclusive intervals: that is the
meaning both iptables and RFC 8955 section 4.2.1.1 numeric operators express, so translation in
either direction goes through the same canonical form.

Values are validated once, here, when the object is built; everything downstream trusts them.
"""

from __future__ import annotations

import enum
import ipaddress
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
        return ipaddress.ip_network("0.0.0.0/0" if self is Family.V4 else "::/0")

    @property
    def bird_word(self) -> str:
        return "flow4" if self is Family.V4 else "flow6"

    @property
    def afi(self) -> str:
        return "ipv4" if self is Family.V4 else "ipv6"


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


@dataclass(frozen=True)
class FlowRule:
    """One rule of the ordered policy.

    number is the rule's FORWARD position (from 1); the chain's policy has number 0 and sorts
    last. protocol is None for "any protocol". Empty port tuples mean "any port".
    """

    number: int
    family: Family
    verdict: Verdict
    src: IPNetwork
    dst: IPNetwork
    protocol: int | None = None
    sport: Intervals = ()
    dport: Intervals = ()
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
        for ports in (self.sport, self.dport):
            if normalize(ports, PORT_MAX) != ports:
                raise InvalidValue(f"port list {ports} is not in canonical form")
        if (self.sport or self.dport) and self.protocol not in PORT_PROTOCOLS:
            raise InvalidValue("ports need protocol tcp, udp, sctp or dccp")
        if any(ch in self.comment for ch in "\n\r\0"):
            raise InvalidValue("comment holds a control character")

    @property
    def is_policy(self) -> bool:
        return self.number == 0

    @property
    def is_catch_all(self) -> bool:
        any_net = self.family.any_net
        return (
            self.src == any_net
            and self.dst == any_net
            and self.protocol is None
            and not self.sport
            and not self.dport
        )

    def matches_key(self) -> tuple:
        """What identifies the traffic a rule matches, as BGP identifies an NLRI."""
        return (self.family, self.src, self.dst, self.protocol, self.sport, self.dport)

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
}
PROTOCOL_BY_NUMBER = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp"}


def protocol_number(word: str) -> int:
    """A protocol as iptables writes it (name or number) to its IANA number."""
    if word.isdigit():
        value = int(word)
        if value > PROTO_MAX:
            raise InvalidValue(f"protocol {value} out of range 0-255")
        return value
    try:
        return PROTOCOL_NAMES[word.lower()]
    except KeyError:
        raise InvalidValue(f"unknown protocol name {word!r}") from None


@dataclass(frozen=True)
class Policy:
    """A chain read from one family's filter table: its rules in order and its policy."""

    family: Family
    chain: str
    default: Verdict
    rules: tuple[FlowRule, ...]
    skipped: tuple[str, ...] = ()

    def policy_rule(self) -> FlowRule:
        any_net = self.family.any_net
        return FlowRule(0, self.family, self.default, any_net, any_net, comment="chain policy")
