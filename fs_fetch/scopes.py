"""Scopes: which switches a controller rule is meant for (issue 5, the seed talk's conclusion C).

A scope is a name for a group of switches (a rack, a pod, a tenant's leaves) and one BGP route
target. fs-fetch attaches the route targets of a rule's scopes to every route of that rule, and
renders one BIRD export filter per switch, so that a switch is only sent the routes of its own
scopes plus the unscoped ones (flowseg/encoding.py: every route target outside the reserved
AS numbers is a scope). fs-inject `--scope RT` on the switch checks the same thing again.

Where a rule's scopes come from, first match wins:

1. a tag in the rule's iptables comment, `-m comment --comment "scope=rack1,rack7"`, which may
   sit beside other comment text (`"web tier; scope=rack1"`); `scope=all` sends the rule to
   every switch even where a prefix below would scope it;
2. the `[prefixes]` section of the scopes file: the most specific prefix that contains the
   rule's destination prefix;
3. otherwise none: the rule goes to every switch. The chain's policy always does.

The scopes file (`--scopes FILE`, examples/scopes.conf), sections of `key = value` lines,
`#` starts a comment:

    [scopes]
    rack1 = 65000:101              # name = route target, ASN:N or IPv4:N
    [prefixes]
    198.51.100.0/26 = rack1        # destination prefix = scope, scope...
    [switches]
    switch1 = 203.0.113.2, rack1   # BIRD protocol name = neighbor address, scope, scope...

`--switch NAME=ADDRESS[,SCOPE...]` adds or replaces one switch. Anywhere a scope name is
expected, a route target written as ASN:N stands for itself, so a switch or a tag can do
without the file. Every name, prefix, address and route target is checked here, before it can
reach BIRD's configuration; route targets in BIRD's own words (RFC 4360 section 4, RFC 5668):
`(rt, ASN, N)` with a 2-octet ASN and a 4-octet N, or a 4-octet ASN and a 2-octet N, or
`(rt, a.b.c.d, N)` with a 2-octet N. The AS numbers of flowseg/encoding.py are never a scope.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from flowseg.encoding import RESERVED_AS, RT_VALUE_MAX
from flowseg.errors import BadInput, UnsupportedRule
from flowseg.model import FlowRule, IPNetwork

SCOPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
# A switch's name is its BGP protocol's name in bird.conf, and part of a BIRD filter's name.
SWITCH_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
TARGET = re.compile(r"^(\d{1,10}|\d{1,3}(?:\.\d{1,3}){3}):(\d{1,10})$")
# The tag in a rule's comment: `scope=` then names or route targets, separated by commas.
TAG = re.compile(r"(?:^|[\s;,])scope=([^\s;]*)")
ALL = "all"
SECTIONS = ("scopes", "prefixes", "switches")
TWO_OCTETS = 0xFFFF


@dataclass(frozen=True, order=True)
class Target:
    """One route target: (rt, admin, value); admin is an AS number or an IPv4 address."""

    kind: int  # 0: 2-octet AS, 1: IPv4 address, 2: 4-octet AS (RFC 4360, RFC 5668)
    admin: int
    value: int

    @property
    def admin_text(self) -> str:
        if self.kind == 1:
            return str(ipaddress.IPv4Address(self.admin))
        return str(self.admin)

    @property
    def bird(self) -> str:
        return f"(rt, {self.admin_text}, {self.value})"

    def __str__(self) -> str:
        """As FRR prints it in `ecomlist`, and as fs-inject --scope takes it."""
        return f"{self.admin_text}:{self.value}"


def parse_target(text: str, where: str) -> Target:
    m = TARGET.match(text.strip())
    if not m:
        raise BadInput(f"{where}: route target {text.strip()!r} is not ASN:N or IPv4:N")
    admin_text, value = m.group(1), int(m.group(2))
    if "." in admin_text:
        try:
            admin = int(ipaddress.IPv4Address(admin_text))
        except ValueError:
            raise BadInput(f"{where}: {admin_text!r} is not an IPv4 address") from None
        kind, top = 1, TWO_OCTETS
    else:
        admin = int(admin_text)
        if not 1 <= admin <= RT_VALUE_MAX:
            raise BadInput(f"{where}: AS number {admin} is not 1-{RT_VALUE_MAX}")
        if admin in RESERVED_AS:
            raise BadInput(f"{where}: AS {admin} is flowseg's own (rule number, generation, "
                           "count); give the scope another AS number")
        kind, top = (0, RT_VALUE_MAX) if admin <= TWO_OCTETS else (2, TWO_OCTETS)
    if value > top:
        raise BadInput(f"{where}: route target {text.strip()} takes values up to {top} with "
                       f"that administrator")
    return Target(kind, admin, value)


def looks_like_target(word: str) -> bool:
    return bool(TARGET.match(word))


@dataclass(frozen=True)
class Switch:
    """One BGP neighbor of the controller and the scopes it enforces."""

    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    scopes: tuple[str, ...]

    @property
    def filter_name(self) -> str:
        return f"flowseg_export_{self.name}"


@dataclass(frozen=True)
class Scoping:
    """Scope names to route targets, destination prefixes to scopes, and the switches."""

    targets: dict[str, Target] = field(default_factory=dict)
    prefixes: tuple[tuple[IPNetwork, tuple[str, ...]], ...] = ()
    switches: tuple[Switch, ...] = ()
    source: str = ""

    def target(self, name: str, where: str) -> Target:
        if name in self.targets:
            return self.targets[name]
        if looks_like_target(name):
            return parse_target(name, where)
        known = ", ".join(sorted(self.targets)) or "none defined"
        raise UnsupportedRule(f"{where}: scope {name!r} is unknown (scopes: {known}); add it "
                              "to the scopes file's [scopes] or write its route target, "
                              "e.g. 65000:101")

    def label(self, targets) -> str:
        """Route targets by scope name where the file names them: "rack1 (65000:101)"."""
        names = {t: n for n, t in self.targets.items()}
        return ", ".join(f"{names[t]} ({t})" if t in names else str(t) for t in sorted(targets))

    def switch_targets(self, switch: Switch) -> frozenset[Target]:
        return frozenset(self.target(s, f"switch {switch.name}") for s in switch.scopes)

    def scopes_of(self, rule: FlowRule, chain: str = "FORWARD") -> tuple[Target, ...]:
        """The route targets a rule's routes carry: from its comment tag, else its prefix."""
        if rule.is_policy:
            return ()
        where = f"{chain} rule {rule.number}"
        tagged = tag_scopes(rule.comment, where)
        if tagged is not None:
            names = tagged
        else:
            names = self.prefix_scopes(rule.dst)
        return tuple(sorted({self.target(n, where) for n in names}))

    def prefix_scopes(self, dst: IPNetwork) -> tuple[str, ...]:
        best: tuple[int, tuple[str, ...]] | None = None
        for net, names in self.prefixes:
            if net.version == dst.version and dst.subnet_of(net):
                if best is None or net.prefixlen > best[0]:
                    best = (net.prefixlen, names)
        return best[1] if best else ()

    def with_switches(self, extra: list[Switch]) -> Scoping:
        """The file's switches, with those of --switch added or replacing the same name."""
        by_name = {s.name: s for s in self.switches}
        for s in extra:
            by_name[s.name] = s
        out = Scoping(self.targets, self.prefixes, tuple(by_name.values()), self.source)
        out.check()
        return out

    def check(self) -> None:
        """Every switch's scopes resolve, and no two switches share a name or an address."""
        seen: dict[str, str] = {}
        for s in self.switches:
            self.switch_targets(s)
            if str(s.address) in seen:
                raise BadInput(f"switch {s.name}: address {s.address} is also switch "
                               f"{seen[str(s.address)]}'s; give each switch its own neighbor")
            seen[str(s.address)] = s.name


NO_SCOPING = Scoping()


def tag_scopes(comment: str, where: str) -> tuple[str, ...] | None:
    """The scope names of `scope=...` tags in a comment; None when it has no tag."""
    tags = TAG.findall(comment)
    if not tags:
        return None
    names: list[str] = []
    for tag in tags:
        words = [w.strip() for w in tag.split(",")]
        if not tag or not all(words):
            raise UnsupportedRule(f"{where} (--comment): empty scope in {'scope=' + tag!r}; "
                                  "write scope=NAME[,NAME...]")
        for word in words:
            if not (SCOPE_NAME.match(word) or looks_like_target(word)):
                raise UnsupportedRule(f"{where} (--comment): {word!r} is not a scope name "
                                      "(letters, digits, _ . -) or a route target ASN:N")
            names.append(word)
    if ALL in names:
        if len(set(names)) > 1:
            raise UnsupportedRule(f"{where} (--comment): scope=all goes with no other scope")
        return ()
    return tuple(dict.fromkeys(names))


def check_scope_name(name: str, where: str) -> str:
    if name == ALL:
        raise BadInput(f"{where}: 'all' means every switch and cannot name a scope")
    if not SCOPE_NAME.match(name):
        raise BadInput(f"{where}: scope name {name!r}: use letters, digits, _ . - (at most 32, "
                       "starting with a letter)")
    return name


def parse_switch(text: str, where: str = "--switch") -> Switch:
    """`NAME=ADDRESS[,SCOPE...]` (the option) or `ADDRESS, SCOPE...` after `NAME =` (the file)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep:
        raise BadInput(f"{where} {text!r}: write NAME=ADDRESS[,SCOPE...]")
    if not SWITCH_NAME.match(name):
        raise BadInput(f"{where} {text!r}: switch name {name!r} must be its BGP protocol's "
                       "name in bird.conf: letters, digits and _, starting with a letter, at "
                       "most 40")
    words = [w.strip() for w in rest.split(",")]
    try:
        address = ipaddress.ip_address(words[0])
    except ValueError:
        raise BadInput(f"{where} {text!r}: {words[0]!r} is not an IP address") from None
    scopes = []
    for word in words[1:]:
        if not word:
            raise BadInput(f"{where} {text!r}: empty scope")
        if not looks_like_target(word):
            check_scope_name(word, f"{where} {text!r}")
        scopes.append(word)
    return Switch(name, address, tuple(dict.fromkeys(scopes)))


def parse_scopes(text: str, source: str = "scopes file") -> Scoping:
    """The scopes file (format in the module docstring); errors name the file and line."""
    section = None
    targets: dict[str, Target] = {}
    prefixes: dict[IPNetwork, tuple[str, ...]] = {}
    switches: dict[str, Switch] = {}
    pending: list[tuple[str, tuple[str, ...]]] = []
    switch_lines: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{source} line {number}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or line[1:-1].strip() not in SECTIONS:
                raise BadInput(f"{where}: {line!r} is no section; use [scopes], [prefixes] "
                               "or [switches]")
            section = line[1:-1].strip()
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key or not value:
            raise BadInput(f"{where}: {line!r} is not `key = value`")
        if section is None:
            raise BadInput(f"{where}: {line!r} comes before any [section]")
        if section == "scopes":
            check_scope_name(key, where)
            if key in targets:
                raise BadInput(f"{where}: scope {key} is defined twice")
            target = parse_target(value, where)
            other = next((n for n, t in targets.items() if t == target), None)
            if other:
                raise BadInput(f"{where}: {target} is already scope {other}'s route target")
            targets[key] = target
        elif section == "prefixes":
            try:
                net = ipaddress.ip_network(key, strict=True)
            except ValueError:
                raise BadInput(f"{where}: {key!r} is not a prefix (host bits must be 0)") from None
            if net.prefixlen == 0:
                raise BadInput(f"{where}: {net} would scope every rule, the policy's route "
                               "too; scope rules by narrower prefixes or by tags")
            if net in prefixes:
                raise BadInput(f"{where}: prefix {net} is listed twice")
            names = tuple(n.strip() for n in value.split(","))
            prefixes[net] = names
            pending.append((where, names))
        else:
            switch = parse_switch(f"{key}={value}", where)
            if switch.name in switches:
                raise BadInput(f"{where}: switch {switch.name} is listed twice")
            switches[switch.name] = switch
            switch_lines[switch.name] = where
    scoping = Scoping(targets, tuple(sorted(prefixes.items(), key=lambda kv: (kv[0].version,
                                                                              kv[0]))),
                      tuple(switches.values()), source)
    for where, names in pending:
        for name in names:
            if not name or (name not in targets and not looks_like_target(name)):
                raise BadInput(f"{where}: scope {name!r} is not in [scopes]")
            if looks_like_target(name):
                parse_target(name, where)
    # Checked one switch at a time, in file order, so that the error names the line.
    listed = list(switches.values())
    for i, switch in enumerate(listed):
        try:
            Scoping(targets, (), tuple(listed[: i + 1])).check()
        except (UnsupportedRule, BadInput) as exc:
            raise BadInput(f"{switch_lines[switch.name]}: {exc}") from None
    return scoping


def read_scopes(path: Path) -> Scoping:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"scopes file {path}: {exc}") from None
    return parse_scopes(text, str(path))
