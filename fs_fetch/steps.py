"""A change of the BIRD file that withdraws many Flow-Spec routes, applied in steps FRR survives.

Why (BIRD 2.0.12 to FRR 8.4.4, measured in the lab and read in both sources; the numbers are
in docs/reliability.md):

- FRR advertises every Flow-Spec route it learns from BIRD back to BIRD over the same eBGP
  session. BIRD drops each one (its own AS is in the path) and counts it as an import
  withdraw. When BIRD withdraws routes, FRR withdraws its copies towards BIRD, several to an
  UPDATE. It reckons the room each one takes with bgp_packet_mpattr_prefix_size(), which
  counts a Flow-Spec NLRI as 0 bytes (the size of a Flow-Spec prefix lives elsewhere), so it
  stops filling a message only once the message has passed about 4,093 bytes. When more than
  about 4,066 bytes of NLRI wait to be withdrawn at once, the message usually ends past the
  4,096-byte limit; BIRD refuses it (`Error: Bad message length`) and the session resets.
- With `enable extended messages on`, BIRD itself packs up to 65,535 bytes of withdrawals into
  one MP_UNREACH_NLRI, and FRR refuses any Flow-Spec NLRI block of 4,095 bytes or more
  (`flowspec nlri length maximum reached`, NOTIFICATION Optional Attribute Error).

BIRD's own sizing of MP_UNREACH_NLRI is right. Both limits are in bytes of NLRI, so the number
of routes that trips them depends on their size: about 250 IPv4 routes of 16 bytes, 88 IPv6
routes of 46 bytes. Announcements are safe: every route of fs-fetch carries its own rule
number, so BIRD and FRR send one announcement per UPDATE.

So a change is applied in steps that each withdraw at most WITHDRAW_BYTES of NLRI per family
(half of what one FRR withdrawal message holds, so that even two steps FRR happened to send
together fit), and each step is confirmed in BIRD's counters before the next: BIRD has
processed and sent the withdrawals on every Established session, and a switch that answers
withdrawals (FRR does) has answered them. Every intermediate file holds all the new routes plus
the old routes not yet withdrawn, ACCEPT routes withdrawn first; the last file is the one a
single step would write, byte for byte. A switch that installs only complete generations
(fs-inject with generation stamps) keeps its chain until the last step; one that follows the
routes as they come sees old routes beside the new ones for a few seconds, which is no more
than the old policy allowed.

This module reads the BIRD files fs-fetch writes (and ones of other origin, as long as they are
`protocol static NAME { ... route flow4|flow6 { ... } ... }` blocks); a file it cannot read
is applied in one step, as before.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flowseg.errors import FlowsegError, ToolFailed
from flowseg.model import Family

log = logging.getLogger(__name__)

# Bytes of Flow-Spec NLRI one step may withdraw per family. FRR 8.4.4's withdrawal message
# holds 4,096 - 30 = 4,066 bytes of NLRI; this is half of that, rounded down.
WITHDRAW_BYTES = 2000
# How long one step may take to be confirmed in BIRD's counters.
STEP_TIMEOUT = 30.0
POLL = 0.02
RATE_ZERO = re.compile(r"\(\s*generic\s*,\s*0x80060000\s*,")
FAMILY_WORDS = {"flow4": Family.V4, "flow6": Family.V6}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Unreadable(ValueError):
    """A BIRD file whose blocks and routes cannot be told apart for certain."""


class PartlyApplied(FlowsegError):
    """Some steps are in force, not all; the next run goes on from there."""

    partly = True

    def __init__(self, message: str, exit_code: int = 4) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- reading a BIRD file ----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteText:
    """One `route flow4|flow6 { match } { actions };` statement of a BIRD file."""

    family: Family
    nlri: str  # the match, whitespace collapsed: the route's identity in BGP
    start: int
    end: int  # just past the closing `;`
    size: int  # bytes of the NLRI on the wire
    drop: bool  # carries traffic-rate 0

    @property
    def key(self) -> tuple[Family, str]:
        return (self.family, self.nlri)


@dataclass(frozen=True)
class BlockText:
    """One `protocol static NAME { ... }` block."""

    name: str
    start: int
    close: int  # the index of its closing brace
    routes: tuple[RouteText, ...]


NOISE = re.compile(r'#[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"', re.S)
PROTOCOL = re.compile(r"\bprotocol\s+static\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:from\s+\w+\s*)?\{")
ROUTE = re.compile(r"\broute\s+(flow4|flow6)\s*\{")
PUNCT = re.compile(r"[{};]")


def _blank(text: str) -> str:
    """text with comments turned into spaces and strings into `x`s, at the same offsets.

    BIRD has `#` line comments, `/* */` comments and double-quoted strings; none of them can
    hold a brace or a semicolon that counts.
    """
    def hide(m: re.Match) -> str:
        piece = m.group(0)
        if piece[0] == '"':
            return "x" * len(piece)
        if piece[0] == "#":
            return " " * len(piece)
        return re.sub(r"[^\n]", " ", piece)

    clean = NOISE.sub(hide, text)
    if "/*" in clean or '"' in clean:
        raise Unreadable("a comment or a string is not closed")
    return clean


class _Structure:
    """Where the braces and semicolons of a cleaned file are, and which brace closes which."""

    def __init__(self, clean: str) -> None:
        self.pos: list[int] = []
        self.depth: list[int] = []  # the depth just after each mark
        self.match: dict[int, int] = {}
        stack: list[int] = []
        for m in PUNCT.finditer(clean):
            at, c = m.start(), m.group(0)
            if c == "{":
                stack.append(at)
            elif c == "}":
                if not stack:
                    raise Unreadable("a closing brace without an opening one")
                self.match[stack.pop()] = at
            self.pos.append(at)
            self.depth.append(len(stack))
        if stack:
            raise Unreadable("a brace is not closed")

    def depth_at(self, at: int) -> int:
        i = bisect.bisect_left(self.pos, at) - 1
        return self.depth[i] if i >= 0 else 0

    def statement_end(self, after: int, limit: int) -> int:
        """Just past the `;` that ends the statement going on after `after`, at its depth."""
        level = self.depth_at(after + 1)
        i = bisect.bisect_right(self.pos, after)
        while i < len(self.pos) and self.pos[i] < limit:
            at = self.pos[i]
            if self.depth[i] > level:
                i = bisect.bisect_right(self.pos, self.match[at])
                continue
            if self.depth[i] < level:
                break
            return at + 1
        raise Unreadable("a route statement does not end with ;")


def parse(text: str) -> list[BlockText]:
    """The static protocol blocks of a BIRD file and the Flow-Spec routes in each."""
    clean = _blank(text)
    marks = _Structure(clean)
    blocks = []
    for m in PROTOCOL.finditer(clean):
        if marks.depth_at(m.start()) != 0:
            continue
        open_at = m.end() - 1
        close = marks.match[open_at]
        blocks.append(BlockText(m.group(1), m.start(), close,
                                tuple(_routes(clean, marks, open_at, close))))
    names = [b.name for b in blocks]
    if len(names) != len(set(names)):
        raise Unreadable("two protocol blocks have the same name")
    return blocks


def _routes(clean: str, marks: _Structure, open_at: int, close: int):
    inside = marks.depth_at(open_at + 1)
    for m in ROUTE.finditer(clean, open_at + 1, close):
        if marks.depth_at(m.start()) != inside:
            continue
        family = FAMILY_WORDS[m.group(1)]
        nlri_open = m.end() - 1
        nlri_close = marks.match[nlri_open]
        end = marks.statement_end(nlri_close, close)
        nlri = " ".join(clean[nlri_open + 1 : nlri_close].split())
        actions = clean[nlri_close + 1 : end]
        yield RouteText(family, nlri, m.start(), end, nlri_size(family, nlri),
                        bool(RATE_ZERO.search(actions)))


# -- the size of a route on the wire (RFC 8955 4, RFC 8956 3) ------------------------------------

NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+")
PREFIX = re.compile(r"^(?:dst|src)\s+[0-9a-fA-F.:]+/(\d+)(?:\s+offset\s+(\d+))?$")
BITMASK_WORDS = ("tcp flags", "fragment")
NUMERIC_WORDS = ("proto", "next header", "port", "dport", "sport", "icmp type", "icmp code",
                 "length", "dscp", "label")
NUMERIC_TEXT = re.compile(r"[0-9a-fA-Fx\s.,|&<>=!]*")


def _value_bytes(value: int) -> int:
    return 1 if value <= 0xFF else 2 if value <= 0xFFFF else 4 if value <= 0xFFFFFFFF else 8


def nlri_size(family: Family, nlri: str) -> int:
    """Bytes of the route's NLRI on the wire, length field included; never less than BIRD's.

    Prefixes and numeric components are counted exactly (type byte, then per term an operator
    byte and the value in 1, 2 or 4 bytes); bitmask components as if every term needed two
    operators of two bytes; anything else as two bytes per character of its text.
    """
    body = 0
    for comp in (c.strip() for c in nlri.split(";")):
        if not comp:
            continue
        prefix = PREFIX.match(comp)
        if prefix:
            length, offset = int(prefix.group(1)), int(prefix.group(2) or 0)
            if family is Family.V4:
                body += 2 + math.ceil(min(length, 32) / 8)
            else:
                body += 3 + math.ceil(max(min(length, 128) - offset, 0) / 8)
        elif comp.startswith(BITMASK_WORDS):
            terms = max(len(re.findall(r"[,&|]+", comp)) + 1, 1)
            body += 1 + terms * 2 * 3
        else:
            word = next((w for w in NUMERIC_WORDS if comp.startswith(w + " ")), None)
            values = comp[len(word):] if word else ""
            numbers = NUMBER.findall(values)
            if numbers and NUMERIC_TEXT.fullmatch(values):
                body += 1 + sum(1 + _value_bytes(int(v, 0)) for v in numbers)
            else:
                body += 2 * len(comp)
    return body + (1 if body < 240 else 2)


# -- planning the steps -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One file to configure, and what it withdraws compared with the step before.

    The file is built when asked for (`data`), so that a plan of a hundred steps of a large
    policy does not hold a hundred files at once.
    """

    build: Callable[[], bytes] = field(repr=False)
    withdraws: dict[Family, int] = field(default_factory=dict)
    withdraw_bytes: dict[Family, int] = field(default_factory=dict)
    left: int = 0  # old routes the file still holds, to be withdrawn by later steps

    @property
    def data(self) -> bytes:
        return self.build()


def withdrawn(old: list[BlockText], new: list[BlockText]) -> list[RouteText]:
    """The old routes whose match is in no new route: those BGP withdraws, ACCEPT ones first."""
    keep = {r.key for b in new for r in b.routes}
    seen = set()
    gone = []
    for b in old:
        for r in b.routes:
            if r.key not in keep and r.key not in seen:
                seen.add(r.key)
                gone.append(r)
    return sorted(gone, key=lambda r: r.drop)


def batches(routes: list[RouteText], budget: int) -> list[list[RouteText]]:
    """Cut the routes into steps of at most `budget` NLRI bytes per family (one route at least).

    The families travel in separate UPDATEs, so a step may withdraw up to the budget of each.
    """
    per_family: dict[Family, list[list[RouteText]]] = {}
    used: dict[Family, int] = {}
    for r in routes:
        cuts = per_family.setdefault(r.family, [[]])
        if cuts[-1] and used[r.family] + r.size > budget:
            cuts.append([])
            used[r.family] = 0
        cuts[-1].append(r)
        used[r.family] = used.get(r.family, 0) + r.size
    count = max((len(c) for c in per_family.values()), default=0)
    out = []
    for i in range(count):
        step = []
        for cuts in per_family.values():
            if i < len(cuts):
                step += cuts[i]
        out.append(step)
    return out


def compose(new_text: str, new_blocks: list[BlockText], old_text: str,
            old_blocks: list[BlockText], pending: set[int]) -> str:
    """The new file plus the pending old routes (by start offset), each in its own block.

    A route stays in its own protocol, so BIRD sees it neither withdrawn nor announced again.
    A block of the old file that the new one no longer has is kept with its pending routes only.
    """
    if not pending:
        return new_text
    by_name = {b.name: b for b in new_blocks}
    inserts: list[tuple[int, str]] = []
    appended = []
    for block in old_blocks:
        mine = [r for r in block.routes if r.start in pending]
        if not mine:
            continue
        if block.name in by_name:
            lines = "".join(f"\t{old_text[r.start:r.end]}\n" for r in mine)
            note = (f"\t# fs-fetch: {len(mine)} route{'s' if len(mine) != 1 else ''} of the "
                    "previous file, withdrawn by the next steps\n")
            inserts.append((by_name[block.name].close, note + lines))
        else:
            pieces, at = [], block.start
            for r in block.routes:
                if r.start not in pending:
                    pieces.append(old_text[at : r.start])
                    at = r.end
            pieces.append(old_text[at : block.close + 1])
            cut = "\n".join(ln for ln in "".join(pieces).splitlines() if ln.strip())
            appended.append(f"\n# fs-fetch: block of the previous file, withdrawn by the next "
                            f"steps\n{cut}\n")
    parts, at = [], 0
    for where, piece in sorted(inserts):
        parts += [new_text[at:where], piece]
        at = where
    parts.append(new_text[at:])
    text = "".join(parts)
    if appended and not text.endswith("\n"):
        text += "\n"
    return text + "".join(appended)


def plan(old: bytes | None, new: bytes, budget: int = WITHDRAW_BYTES) -> list[Step]:
    """The files to configure one after the other; the last one is `new` itself."""
    def whole() -> bytes:
        return new

    if old is None or old == new:
        return [Step(whole)]
    try:
        old_text, new_text = old.decode(), new.decode()
        old_blocks, new_blocks = parse(old_text), parse(new_text)
    except (UnicodeDecodeError, Unreadable) as exc:
        log.warning("cannot tell the routes of the file in force apart (%s); applying the "
                    "change in one step", exc)
        return [Step(whole)]
    gone = withdrawn(old_blocks, new_blocks)
    cuts = batches(gone, budget)
    if len(cuts) <= 1:
        return [Step(whole, *_tally(cuts[0] if cuts else []))]
    steps = []
    done = 0
    for i, cut in enumerate(cuts):
        done += len(cut)
        later = [r.start for c in cuts[i + 1 :] for r in c]

        def build(later=later) -> bytes:
            return compose(new_text, new_blocks, old_text, old_blocks, set(later)).encode()

        steps.append(Step(build if later else whole, *_tally(cut), left=len(gone) - done))
    return steps


def _tally(routes: list[RouteText]) -> tuple[dict[Family, int], dict[Family, int]]:
    count: dict[Family, int] = {}
    size: dict[Family, int] = {}
    for r in routes:
        count[r.family] = count.get(r.family, 0) + 1
        size[r.family] = size.get(r.family, 0) + r.size
    return count, size


# -- confirming a step in BIRD's counters -------------------------------------------------------


@dataclass(frozen=True)
class ChannelCounters:
    """One channel of one BGP protocol, from `birdc show protocols all`."""

    protocol: str
    table: str
    established: bool
    exported: int = 0
    export_withdraws_received: int = 0
    export_withdraws_accepted: int = 0
    import_withdraws_received: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.protocol, self.table)


class StepTimeout(ToolFailed):
    pass


def confirm(
    read: Callable[[], list[ChannelCounters]],
    before: list[ChannelCounters],
    step: Step,
    tables: dict[Family, str],
    timeout: float = STEP_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ChannelCounters]:
    """Wait until every Established session has sent the step's withdrawals and had them answered.

    Returns the last reading, which is where the next step starts from.

    A session that is down, or went down and came back, gets the whole table when it comes up
    and has no withdrawals to wait for. A switch that has never sent BIRD a withdrawal (FRR
    with an outbound policy that sends the controller nothing) has none to answer with.
    """
    want = {tables[f]: n for f, n in step.withdraws.items() if n and f in tables}
    deadline = clock() + timeout
    while True:
        reading = read()
        now = {c.key: c for c in reading}
        waiting = []
        for b in before:
            if b.table not in want or not b.established:
                continue
            c = now.get(b.key)
            if c is None or not c.established or (
                c.export_withdraws_received < b.export_withdraws_received
            ):
                continue
            processed = c.export_withdraws_received - b.export_withdraws_received
            if processed < want[b.table]:
                waiting.append(f"{b.protocol} ({b.table}): BIRD has processed {processed} of "
                               f"{want[b.table]} withdrawals")
                continue
            sent = c.export_withdraws_accepted - b.export_withdraws_accepted
            answered = c.import_withdraws_received - b.import_withdraws_received
            if b.import_withdraws_received > 0 and answered < sent:
                waiting.append(f"{b.protocol} ({b.table}): the switch has answered {answered} "
                               f"of {sent} withdrawals")
        if not waiting:
            return reading
        if clock() > deadline:
            raise StepTimeout(f"{waiting[0]} after {timeout:.0f} s")
        sleep(POLL)


# -- applying ---------------------------------------------------------------------------------


class StopRequest:
    """SIGTERM, SIGINT and SIGHUP noted instead of obeyed while a change is being applied.

    A file BIRD has not yet read, or a step not yet confirmed, is never left behind by a stop
    request: the step going on is finished first.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        try:
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._note)
        except ValueError:
            # Not the main thread (tests in a thread): signals cannot be caught here.
            pass
        return self

    def _note(self, signum, frame) -> None:
        if self.signum is None:
            log.warning("%s during the apply: finishing the step going on first",
                        signal.Signals(signum).name)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class Applied:
    reply: str = ""
    steps: int = 1


def apply(
    controller,
    path: Path,
    old: bytes | None,
    new: bytes,
    tables: dict[Family, str],
    write: Callable[[Path, bytes], None],
    budget: int = WITHDRAW_BYTES,
    timeout: float = STEP_TIMEOUT,
    stop: StopRequest | None = None,
    pending=None,
) -> Applied:
    """Write and configure the steps from `old` to `new`; see the module docstring.

    When BIRD refuses a step or cannot be reached, the file BIRD holds is put back and the
    error raised (PartlyApplied once a step is in force). When a step is not confirmed in
    time, or a stop request came, the file of the last confirmed step stays in force and
    PartlyApplied says so; the next run goes on from it.

    `pending` (system.Pending) marks the time between writing a file and BIRD taking it, so
    that a run killed in between leaves a mark and the next run reloads BIRD even though the
    file already has the right bytes.
    """
    steps = plan(old, new, budget)
    if len(steps) > 1:
        total = sum(sum(s.withdraws.values()) for s in steps)
        log.info("%s: %d old routes to withdraw, in %d steps of at most %d bytes per family",
                 path, total, len(steps), budget)
    with stop or StopRequest() as stop:
        if len(steps) == 1:
            return _apply(controller, path, old, steps, tables, write, timeout, stop,
                          pending or _NoMark())
        # Hundreds of requests: one connection to BIRD's control socket for all of them.
        with controller.session() as bird:
            return _apply(bird, path, old, steps, tables, write, timeout, stop,
                          pending or _NoMark())


class _NoMark:
    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


def _apply(controller, path: Path, old: bytes | None, steps: list[Step],
           tables: dict[Family, str], write: Callable[[Path, bytes], None], timeout: float,
           stop: StopRequest, pending) -> Applied:
    before = controller.bgp_channels() if len(steps) > 1 else []
    pending.set()
    in_force = old
    out = Applied(steps=len(steps))
    for i, step in enumerate(steps, 1):
        data = step.data
        try:
            # A write that fails leaves the file as it was, which is the one BIRD holds.
            write(path, data)
        except FlowsegError as exc:
            pending.clear()
            if i == 1:
                raise
            raise _partly(exc, i, steps) from exc
        try:
            out.reply = controller.configure()
        except FlowsegError as exc:
            # If putting the file back fails too, the pending mark stays for the next run.
            _put_back(path, in_force, write)
            pending.clear()
            if i == 1:
                raise
            raise _partly(exc, i, steps) from exc
        in_force = data
        if len(steps) > 1:
            try:
                before = confirm(controller.bgp_channels, before, step, tables, timeout)
            except FlowsegError as exc:
                pending.clear()
                raise PartlyApplied(f"step {i} of {len(steps)} not confirmed: {exc}; BIRD holds "
                                    f"it, with {step.left} old routes still to withdraw; the "
                                    "next run goes on", exc.exit_code) from exc
            log.info("step %d of %d: %s withdrawn, %d old routes left", i, len(steps),
                     _describe(step), step.left)
        if stop.signum is not None and i < len(steps):
            pending.clear()
            name = signal.Signals(stop.signum).name
            raise PartlyApplied(f"stopped by {name} after step {i} of {len(steps)}: BIRD holds "
                                f"the new routes and {step.left} old ones still to withdraw; "
                                "the next run goes on", 128 + stop.signum)
    pending.clear()
    if stop.signum is not None:
        log.info("%s came during the apply; it is complete, stopping now",
                 signal.Signals(stop.signum).name)
    return out


def _partly(exc: FlowsegError, i: int, steps: list[Step]) -> PartlyApplied:
    """Step i (not the first) failed: say which step BIRD holds."""
    return PartlyApplied(f"{exc}; BIRD holds step {i - 1} of {len(steps)}, with "
                         f"{steps[i - 2].left} old routes still to withdraw; the next run goes "
                         "on", exc.exit_code)


def _describe(step: Step) -> str:
    return ", ".join(f"{n} IPv{f.value} routes ({step.withdraw_bytes[f]} bytes)"
                     for f, n in sorted(step.withdraws.items(), key=lambda x: x[0].value))


def _put_back(path: Path, data: bytes | None, write: Callable[[Path, bytes], None]) -> None:
    if data is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    else:
        write(path, data)
    log.info("put the file BIRD holds back in %s", path)
