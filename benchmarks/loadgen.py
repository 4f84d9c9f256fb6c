"""The load generator: many chat clients in one process, standard library only.

`benchmarks/run.py` starts one generator process per run, with the run's
settings as a JSON object in argv[1]. The generator connects its clients,
runs one scenario, prints one JSON object of figures on standard output and
then keeps its connections open until standard input closes, so that the
server is stopped before its clients go (otherwise a big run would end with
the server announcing thousands of leaves).

Every socket is non-blocking, in one `selectors` loop. Clients are parsed
line by line only while they register and join; after that an ordinary
client counts the chat lines and presence notices it receives in bulk
(`bytes.count` on whole receive buffers), and only the probe clients parse
every line, for latency and for the order of each sender's lines. The bulk
clients are read in sweeps (every few milliseconds, from a second selector)
so that each read takes many lines: a system call costs tens of
microseconds on a small virtual machine, and one read per line would make
the generator, not the server, the bottleneck.

Two dialects speak the same scenarios: trio-chat's line protocol
(docs/PROTOCOL.md) and IRC (RFC 2812, as ngircd speaks it). In a burst the
bulk clients also count the further lines of multi-line messages (`MORE`)
and keep the last bytes of their stream, so that a connection the server
ends is noted with its goodbye instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import resource
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, Final

#: The clock for every duration and latency: monotonic, sub-microsecond.
clock: Final = time.perf_counter

#: Largest read from one socket.
RECV_SIZE: Final = 256 * 1024
#: Bytes of the stream kept to find a marker split across two reads.
TAIL: Final = 16
#: Filler after the sender and sequence numbers: a short chat line.
PAD: Final = "x" * 24
#: Seconds between two reads of the clients that count in bulk: long enough
#: for many lines to gather in each socket, short next to any figure (the
#: one-line-to-all phase sweeps every `SWEEP_FINE` instead).
SWEEP: Final = 0.01
SWEEP_FINE: Final = 0.0005
#: Bulk reads between two looks at the fast selector during a sweep.
SWEEP_SLICE: Final = 8
#: Failures kept word for word in the result (the rest are only counted).
MAX_FAILURES_KEPT: Final = 10
#: How long the generator waits for its standard input to close at the end.
EXIT_WAIT: Final = 120.0
#: The IRC channel every IRC client joins.
IRC_CHANNEL: Final = "#bench"
#: Longest IRC line, CRLF included (RFC 2812; ngircd drops a client that
#: sends a longer one, and cuts relayed lines to it).
IRC_MAX_LINE: Final = 512
#: Bytes a server's relay of a line puts before it: `:nick!user@host `
#: (trio-chat: `:name!name@trio-chat `; ngircd: `:nick!~user@localhost `).
IRC_MAX_SOURCE: Final = 80
#: Bytes of the end of each client's stream kept, to find the server's
#: goodbye when it closes a connection.
LAST_BYTES: Final = 1024
#: Seconds between two samples of the server's RSS during a burst: a burst
#: into a small room is over in a few milliseconds.
RSS_SAMPLE: Final = 0.0005
#: A member that stopped reading is read again at the end: this long
#: without data (and without the connection closing) means it was not dropped.
DRAIN_QUIET: Final = 2.0
#: The kinds of burst: one paste, one longest line, one longest line of
#: invalid UTF-8, from each sender.
BURST_KINDS: Final = ("paste", "line", "invalid")

_CONNECTING, _HANDSHAKE, _REGISTERING, _JOINED, _CLOSED = range(5)


class Dialect:
    """How one protocol registers, joins, speaks and is counted."""

    name = ""
    #: Counted in bulk: the bytes that start a presence (join) notice.
    join_marker = b""
    #: Counted in bulk: the bytes that start a chat line from someone else.
    msg_marker = b""
    #: Counted in bulk: the bytes that start a further line of a multi-line
    #: message (none in dialects without them).
    more_marker = b""

    def greeting(self, nick: str) -> bytes:
        """What a client sends once connected: its name, and joining the room."""
        raise NotImplementedError

    def is_joined(self, line: bytes) -> bool:
        """True for the line that says this client is now in the room."""
        raise NotImplementedError

    def joins_in(self, line: bytes) -> int:
        """How many others a (parsed) line says joined the room: 0 if none."""
        raise NotImplementedError

    def count_joins(self, client: Client, data: bytes) -> int:
        """Joins announced in `data`, counted in bulk (`client.tail` before it)."""
        return _count_marker(self.join_marker, client.tail, data)

    def leaves_in(self, line: bytes) -> int:
        """How many others a (parsed) line says left the server: 0 if none."""
        raise NotImplementedError

    def say(self, text: str) -> bytes:
        """The bytes that send `text` to the room."""
        return self.say_bytes(text.encode())

    def say_bytes(self, text: bytes) -> bytes:
        """The bytes that send `text` (any bytes but line ends) to the room."""
        raise NotImplementedError

    def paste(self, lines: list[bytes]) -> bytes:
        """The bytes that send `lines` as one multi-line message.

        Raises ValueError in a dialect without multi-line messages.
        """
        raise ValueError(f"{self.name} has no multi-line messages")

    def chat_text(self, line: bytes) -> bytes | None:
        """The text of a chat line received from the room, or None."""
        raise NotImplementedError

    def chat_line(self, line: bytes) -> tuple[bool, bytes, bytes] | None:
        """(a further line of a multi-line message?, sender, text), or None.

        For every chat line received from the room (the first line of a
        multi-line message is an ordinary chat line).
        """
        raise NotImplementedError

    def is_more(self, line: bytes) -> bool:
        """True for a further line of a multi-line message (parsed)."""
        return False

    def leavers(self, line: bytes) -> tuple[list[bytes], bytes]:
        """Who a (parsed) line says left the server, and the reason given."""
        raise NotImplementedError

    def server_limits(self, line: bytes) -> dict[str, int] | None:
        """The limits a greeting line announces (`max-line`...), or None."""
        return None

    def max_text(self, limits: dict[str, int]) -> int:
        """The longest text one line may carry, in bytes, given `limits`."""
        raise NotImplementedError

    def answer(self, line: bytes) -> bytes | None:
        """What to send back to `line`, if anything (a PONG to a PING)."""
        return None

    def next_step(self, line: bytes, nick: str) -> bytes | None:
        """While registering: what to send next once `line` has arrived."""
        return None

    def failure(self, line: bytes) -> str | None:
        """Why the server gave up on this client, if `line` says it did."""
        raise NotImplementedError


class TrioChatDialect(Dialect):
    """trio-chat's line protocol: everyone is in #lobby once named."""

    name = "trio-chat"
    join_marker = b"\nJOIN "
    msg_marker = b"\nMSG "
    more_marker = b"\nMORE "

    def greeting(self, nick: str) -> bytes:
        """The name, sent at once: the server takes it as the first answer."""
        return f"{nick}\n".encode()

    def is_joined(self, line: bytes) -> bool:
        """`WELCOME`: named and in #lobby."""
        return line.startswith(b"WELCOME ")

    def joins_in(self, line: bytes) -> int:
        """`JOIN <ts> <room> <name>`, or `JOINS <ts> <room> <name>...`.

        (A replayed `HIST JOIN` is not a join.)
        """
        if line.startswith(b"JOIN "):
            return 1
        if line.startswith(b"JOINS "):
            return line.count(b" ") - 2
        return 0

    def leaves_in(self, line: bytes) -> int:
        """`LEAVE <ts> <room> <name> quit|disconnected...`, or `LEAVES ...`."""
        if line.startswith(b"LEAVE "):
            fields = line.split(b" ", 5)  # LEAVE ts room name how [(reason)]
            return 1 if len(fields) > 4 and fields[4] != b"parted" else 0
        if line.startswith(b"LEAVES "):
            return line.split(b" (", 1)[0].count(b" ") - 3
        return 0

    def count_joins(self, client: Client, data: bytes) -> int:
        """`JOIN` lines by their marker, and the names on each `JOINS` line.

        A `JOINS` line split between receives is finished from the next
        one (`client.joins_carry` holds its start).
        """
        joins = _count_marker(self.join_marker, client.tail, data)
        count, client.joins_carry = _joins_names(client.tail, data, client.joins_carry)
        return joins + count

    def say_bytes(self, text: bytes) -> bytes:
        """A plain line goes to the current room."""
        return text + b"\n"

    def paste(self, lines: list[bytes]) -> bytes:
        """`/paste N`, then the N lines (docs/PROTOCOL.md, section 4)."""
        return b"".join([b"/paste %d\n" % len(lines), *(t + b"\n" for t in lines)])

    def chat_text(self, line: bytes) -> bytes | None:
        """`MSG <ts> <room> <<sender>> <text>`."""
        if not line.startswith(b"MSG "):
            return None
        fields = line.split(b" ", 4)
        return fields[4] if len(fields) == 5 else b""

    def chat_line(self, line: bytes) -> tuple[bool, bytes, bytes] | None:
        """`MSG` or `MORE <ts> <room> <<sender>> <text>`."""
        more = line.startswith(b"MORE ")
        if not more and not line.startswith(b"MSG "):
            return None
        fields = line.split(b" ", 4)
        if len(fields) < 4:
            return None
        return more, fields[3][1:-1], fields[4] if len(fields) == 5 else b""

    def is_more(self, line: bytes) -> bool:
        """`MORE <ts> <room> <<sender>> <text>`."""
        return line.startswith(b"MORE ")

    def leavers(self, line: bytes) -> tuple[list[bytes], bytes]:
        """`LEAVE <ts> <room> <name> <how> [(<reason>)]`, or `LEAVES ...`."""
        if line.startswith(b"LEAVE "):
            fields = line.split(b" ", 4)
            if len(fields) == 5 and not fields[4].startswith(b"parted"):
                return [fields[3]], fields[4]
        elif line.startswith(b"LEAVES "):
            body, paren, reason = line.partition(b" (")
            fields = body.split(b" ")
            return fields[4:], fields[3] + paren + reason
        return [], b""

    def server_limits(self, line: bytes) -> dict[str, int] | None:
        """`HELLO trio-chat/1 <server> max-line=4096 ... paste-bytes=16384`."""
        if not line.startswith(b"HELLO "):
            return None
        limits = {}
        for field in line.split(b" ")[3:]:
            key, equals, value = field.partition(b"=")
            if equals and value.isdigit():
                limits[key.decode()] = int(value)
        return limits

    def max_text(self, limits: dict[str, int]) -> int:
        """The whole line is text: `max-line` from `HELLO`."""
        return limits["max-line"]

    def failure(self, line: bytes) -> str | None:
        """`BYE` ends a connection; `ERR name-...` means the name was refused."""
        if line.startswith((b"BYE ", b"ERR name")):
            return line.decode(errors="replace")
        return None


_BENCH: Final = IRC_CHANNEL.encode()
#: How a join of the benchmark's channel ends, as servers write it.
_IRC_JOIN_MARKS: Final = (b" JOIN :%s\r\n" % _BENCH, b" JOIN %s\r\n" % _BENCH)


class IRCDialect(Dialect):
    """IRC: NICK and USER, optionally OPER and user mode +F, then JOIN."""

    name = "irc"
    join_marker = b" JOIN "
    msg_marker = b" PRIVMSG "

    def __init__(self, oper_name: str, oper_password: str) -> None:
        self.oper_name = oper_name
        self.oper_password = oper_password

    def greeting(self, nick: str) -> bytes:
        """Register; the rest follows the welcome (see `next_step`)."""
        return f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode()

    def next_step(self, line: bytes, nick: str) -> bytes | None:
        """After RPL_WELCOME (001): become an operator, set +F, join.

        Sent as a second step, and as three commands, because ngircd handles
        at most three commands of a client per read (ten with +F) and would
        leave the rest waiting for its next one-second tick.
        """
        if self._command(line) != b"001":
            return None
        lines = []
        if self.oper_name:
            lines += [f"OPER {self.oper_name} {self.oper_password}", f"MODE {nick} +F"]
        lines.append(f"JOIN {IRC_CHANNEL}")
        return "".join(line + "\r\n" for line in lines).encode()

    @staticmethod
    def _command(line: bytes) -> bytes:
        if line.startswith(b":"):
            fields = line.split(b" ", 2)
            return fields[1] if len(fields) > 1 else b""
        return line.split(b" ", 1)[0]

    def is_joined(self, line: bytes) -> bool:
        """RPL_ENDOFNAMES (366) for our channel ends the reply to our JOIN."""
        fields = line.split(b" ", 4)
        return len(fields) > 3 and fields[1] == b"366" and fields[3] == _BENCH

    def joins_in(self, line: bytes) -> int:
        """`:nick!user@host JOIN :#channel` (or `JOIN #channel`) of ours.

        A server may put its users in a channel of its own first (trio-chat
        joins IRC clients to `#lobby` on registration): those joins are not
        the benchmark's.
        """
        if self._command(line) != b"JOIN":
            return 0
        return 1 if line.rstrip().rsplit(b" ", 1)[-1].lstrip(b":") == _BENCH else 0

    def count_joins(self, client: Client, data: bytes) -> int:
        """Joins of the benchmark's channel, with or without the colon."""
        tail = client.tail
        return sum(_count_marker(marker, tail, data) for marker in _IRC_JOIN_MARKS)

    def leaves_in(self, line: bytes) -> int:
        """`:nick!user@host QUIT :reason`."""
        return 1 if self._command(line) == b"QUIT" else 0

    def say_bytes(self, text: bytes) -> bytes:
        """PRIVMSG to the channel."""
        return b"PRIVMSG %s :%s\r\n" % (IRC_CHANNEL.encode(), text)

    def chat_text(self, line: bytes) -> bytes | None:
        """`:nick!user@host PRIVMSG #channel :text`."""
        fields = line.split(b" ", 3)
        if len(fields) < 4 or fields[1] != b"PRIVMSG":
            return None
        text = fields[3]
        return text[1:] if text.startswith(b":") else text

    def chat_line(self, line: bytes) -> tuple[bool, bytes, bytes] | None:
        """`:nick!user@host PRIVMSG #channel :text` (IRC has no `MORE`)."""
        text = self.chat_text(line)
        if text is None:
            return None
        return False, line[1:].split(b"!", 1)[0], text

    def leavers(self, line: bytes) -> tuple[list[bytes], bytes]:
        """`:nick!user@host QUIT :reason`."""
        if self._command(line) != b"QUIT":
            return [], b""
        reason = line.split(b" ", 2)[2] if line.count(b" ") >= 2 else b""
        return [line[1:].split(b"!", 1)[0]], reason.removeprefix(b":")

    def max_text(self, limits: dict[str, int]) -> int:
        """What fits in `IRC_MAX_LINE` once relayed: after the sender's
        source (`:nick!user@host `, at most `IRC_MAX_SOURCE` bytes),
        `PRIVMSG #bench :` and CRLF.

        A longer line fits what a client may send, but not what a server
        may send on: a server that keeps to the limit splits it (trio-chat)
        or cuts it, and the readers would not get the line that was sent.
        """
        return IRC_MAX_LINE - IRC_MAX_SOURCE - len(self.say_bytes(b""))

    def answer(self, line: bytes) -> bytes | None:
        """PONG to the server's PING."""
        if line.startswith(b"PING "):
            return b"PONG " + line[5:] + b"\r\n"
        return None

    def failure(self, line: bytes) -> str | None:
        """ERROR, a refused nick, or a refused OPER or MODE."""
        command = self._command(line)
        refusals = {b"ERROR", b"432", b"433", b"464", b"481", b"491", b"501"}
        if command in refusals or line.startswith(b"ERROR "):
            return line.decode(errors="replace")
        return None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """One run, as `run.py` describes it."""

    scenario: str
    dialect: str
    host: str
    port: int
    server_pid: int
    tls: bool = False
    cafile: str = ""
    oper_name: str = ""
    oper_password: str = ""
    clients: int = 100
    lines: int = 50
    window: int = 32
    rate: float = 200.0
    duration: float = 10.0
    drain: float = 10.0
    connections: int = 2000
    members: int = 20
    senders: int = 6
    burst_kind: str = "paste"
    stall: bool = False
    stall_max_bytes: int = 32 * 1024 * 1024
    connect_inflight: int = 8
    setup_timeout: float = 120.0
    run_timeout: float = 120.0


def proc_rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """The resident set size of process `pid` in KiB (VmRSS), if readable.

    `field` "VmHWM" gives its peak so far instead.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def proc_rss_sample_kib(pid: int, page_kib: int) -> int:
    """The resident set size of `pid` in KiB, cheaply (`statm`), 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * page_kib
    except (OSError, ValueError, IndexError):
        return 0


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process `pid`, if readable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 14 and 15 of stat(5) (utime, stime); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted `ordered` (0.99 for p99)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def burst_item(
    dialect: Dialect, kind: str, seq: int, limits: dict[str, int]
) -> tuple[bytes, int, int]:
    """What a sender sends for item `seq` of a burst: (bytes, lines, text bytes).

    `kind` is one of `BURST_KINDS`: a paste of `paste-lines` lines holding
    `paste-bytes` bytes of text in all; a line of the longest text
    (`max_text`); or a line of that length of which all but the sequence
    number is invalid UTF-8 (0xFF bytes). Each line starts with the item's
    sequence number (and, in a paste, the line's number). `limits` are what
    the server announced. Raises ValueError for a kind the dialect (or the
    server) cannot carry.
    """
    longest = dialect.max_text(limits)
    if kind == "paste":
        count, total = limits.get("paste-lines", 0), limits.get("paste-bytes", 0)
        if not count or not total:
            raise ValueError(f"{dialect.name}: the server takes no multi-line messages")
        base, extra = divmod(total, count)
        lines = []
        for index in range(count):
            prefix = b"%d %d " % (seq, index)
            size = min(longest, max(len(prefix) + 1, base + (index < extra)))
            lines.append(prefix + b"x" * (size - len(prefix)))
        return dialect.paste(lines), count, sum(map(len, lines))
    prefix = b"%d " % seq
    if kind == "line":
        text = prefix + b"y" * (longest - len(prefix))
    elif kind == "invalid":
        if not isinstance(dialect, TrioChatDialect):
            raise ValueError(f"{dialect.name}: relays bytes as they are")
        text = prefix + b"\xff" * (longest - len(prefix))
    else:
        raise ValueError(f"unknown burst kind {kind!r}")
    return dialect.say_bytes(text), 1, len(text)


class BurstCheck:
    """What one probe saw of a burst: each item whole, once, in sender order.

    Fed every chat line the probe receives (`line`), in order. An item is a
    multi-line message of `lines_per_item` lines (the first a chat line, the
    rest further lines, nothing between them) or a single line; its lines
    start with the sender's sequence number (and the line's number, for a
    paste), as `burst_item` makes them. Sans-IO.
    """

    def __init__(self, lines_per_item: int) -> None:
        self.lines_per_item = lines_per_item
        self.next_seq: dict[bytes, int] = {}  # per sender: the next item due
        self._open: tuple[bytes, int, int] | None = None  # sender, seq, next line
        self.items = 0  # whole items received
        self.missing = 0  # items skipped over
        self.duplicated_or_reordered = 0
        self.broken = 0  # items cut, interleaved or out of line order
        self.longest_line = 0  # bytes, as received (line end excluded)

    def line(self, more: bool, sender: bytes, text: bytes, size: int) -> None:
        """One chat line: `more` if it continues a multi-line message."""
        self.longest_line = max(self.longest_line, size)
        fields = text.split(b" ", 2)
        try:
            seq = int(fields[0])
            index = int(fields[1]) if self.lines_per_item > 1 else 0
        except (ValueError, IndexError):
            self.broken += 1
            return
        if not more:
            if self._open is not None:  # the last item is cut short
                self.broken += 1
            self._open = None
            if index != 0:
                self.broken += 1
                return
            self._open = (sender, seq, 1)
        else:
            opened = self._open
            if opened is None or opened[:2] != (sender, seq) or opened[2] != index:
                self.broken += 1
                self._open = None
                return
            self._open = (sender, seq, index + 1)
        if self._open[2] == self.lines_per_item:
            self._open = None
            self._whole(sender, seq)

    def _whole(self, sender: bytes, seq: int) -> None:
        self.items += 1
        due = self.next_seq.get(sender, 0)
        if seq == due:
            self.next_seq[sender] = seq + 1
        elif seq > due:
            self.missing += seq - due
            self.next_seq[sender] = seq + 1
        else:
            self.duplicated_or_reordered += 1

    def finish(self, senders: list[bytes], items_each: int) -> None:
        """The burst is over: count what each sender's `items_each` lacks."""
        if self._open is not None:
            self.broken += 1
            self._open = None
        for sender in senders:
            self.missing += max(0, items_each - self.next_seq.get(sender, 0))


class Departures:
    """Who the server dropped during a burst, from what the clients saw.

    Readers that keep reading must stay: each one the probes hear leave
    (`left`) or whose connection the server ends (`closed`) is in
    `dropped`, with the first reason seen. The member that stopped reading
    (`stalled`, a name) is expected to go: its leave is kept apart. Sans-IO.
    """

    def __init__(self, dialect: Dialect, stalled: bytes | None) -> None:
        self.dialect = dialect
        self.stalled = stalled
        self.dropped: dict[bytes, str] = {}
        self.stalled_leave: str | None = None  # the reason its leave gave

    def left(self, line: bytes) -> bool:
        """A line a probe parsed: True if it is the stalled member's first leave."""
        names, reason = self.dialect.leavers(line)
        first = False
        for name in names:
            text = reason.decode(errors="replace")
            if name == self.stalled:
                first = self.stalled_leave is None
                if first:
                    self.stalled_leave = text
            else:
                self.dropped.setdefault(name, f"left: {text}")
        return first

    def closed(self, nick: bytes, reason: str, last: bytes) -> None:
        """The server ended the connection of reader `nick` (`last`: its end)."""
        self.dropped.setdefault(nick, goodbye(self.dialect, last) or reason)


class Client:
    """One connection: connects, registers, then parses or counts."""

    def __init__(self, gen: Generator, index: int, *, probe: bool) -> None:
        self.gen = gen
        self.index = index
        self.nick = f"u{index}"
        self.probe = probe
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = _CONNECTING
        self.parsing = True
        self.inbuf = b""
        self.outbuf = bytearray()
        self.mask = 0  # what the fast selector watches
        self.bulk = False  # read in the bulk selector's sweeps instead
        self.joins = 0
        self.leaves = 0  # parsed clients only
        self.msgs = 0
        self.more = 0  # further lines of multi-line messages (bursts only)
        self.first_msg_at: float | None = None
        self.tail = b""
        self.joins_carry: bytes | None = None  # see `TrioChatDialect.count_joins`
        self.received = 0  # bytes, ever
        self.drained = 0  # bytes read after stalling
        self.last_read_at = 0.0
        self.last = b""  # the last `LAST_BYTES` received (bursts only)
        #: Lines (chat and further) that make this client done, 0 if none due.
        self.target = 0
        self.done_at: float | None = None
        self.stalled = False  # stopped reading once the room was set up (bursts)
        self.draining = False  # read again after stalling: nothing counted

    # -- connection ---------------------------------------------------------

    def start(self) -> None:
        """Begin a non-blocking connect."""
        settings = self.gen.settings
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.fail(f"socket: {exc}")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.fd = sock.fileno()
        code = sock.connect_ex((settings.host, settings.port))
        if code not in (0, errno.EINPROGRESS):
            self.fail(f"connect: {os.strerror(code)}")
            return
        self._set_mask(selectors.EVENT_WRITE)

    def _set_mask(self, mask: int) -> None:
        if mask == self.mask or self.state == _CLOSED:
            return
        selector = self.gen.selector
        if self.mask == 0:
            selector.register(self.fd, mask, self)
        elif mask == 0:
            selector.unregister(self.fd)
        else:
            selector.modify(self.fd, mask, self)
        self.mask = mask

    def _to_bulk(self) -> None:
        """From now on, read in the bulk sweeps (writes stay on the fast loop)."""
        self.bulk = True
        self.gen.bulk.register(self.fd, selectors.EVENT_READ, self)
        self._set_mask(selectors.EVENT_WRITE if self.outbuf else 0)

    def _connected(self) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(f"connect: {os.strerror(code)}")
            return
        context = self.gen.tls_context
        if context is None:
            self._registering()
            return
        self.sock = context.wrap_socket(
            self.sock,
            server_hostname=self.gen.settings.host,
            do_handshake_on_connect=False,
        )
        self.state = _HANDSHAKE
        self._handshake()

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_mask(selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_mask(selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except OSError as exc:
            self.fail(f"TLS handshake: {exc}")
            return
        self._registering()

    def _registering(self) -> None:
        self.state = _REGISTERING
        self._set_mask(selectors.EVENT_READ)
        self.send(self.gen.dialect.greeting(self.nick))

    def hang_up(self) -> None:
        """Close the socket now, as a client that goes away does."""
        sock = self.sock
        self.close()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Forget the socket (the process exit closes it)."""
        if self.state != _CLOSED:
            self._set_mask(0)
            if self.bulk:
                self.gen.bulk.unregister(self.fd)
            self.state = _CLOSED

    def fail(self, reason: str) -> None:
        """This client is out: record why, stop watching its socket."""
        if self.state == _CLOSED:
            return
        self.close()
        self.gen.failed(self, reason)

    def _closed_by_server(self, reason: str, now: float) -> None:
        """The server ended this connection: a failure, unless a scenario
        that expects it (a burst) takes note of it instead."""
        handler = self.gen.on_server_close
        if handler is None or self.state != _JOINED:
            self.fail(reason)
            return
        self.close()
        handler(self, reason, now)

    def stall(self) -> None:
        """Stop reading: what the server sends waits in the kernel, then in it."""
        if self.state == _CLOSED:
            return
        self.stalled = True
        if self.bulk:
            self.gen.bulk.unregister(self.fd)
            self.bulk = False
        self._set_mask(selectors.EVENT_WRITE if self.outbuf else 0)

    def drain(self) -> None:
        """Read a stalled client again, to its end; nothing is counted."""
        if self.state == _CLOSED or not self.stalled:
            return
        self.draining = True
        self._set_mask(selectors.EVENT_READ)

    # -- events -------------------------------------------------------------

    def on_event(self, mask: int, now: float) -> None:
        """Handle readiness of the socket."""
        if self.state == _CONNECTING:
            self._connected()
            return
        if self.state == _HANDSHAKE:
            self._handshake()
            return
        if mask & selectors.EVENT_READ:
            self._read(now)
        if mask & selectors.EVENT_WRITE and self.state != _CLOSED:
            self.flush()

    def send(self, data: bytes) -> None:
        """Queue `data` and write as much as the socket takes now."""
        self.outbuf += data
        if self.state in (_REGISTERING, _JOINED):
            self.flush()

    def flush(self) -> None:
        """Write what is queued; watch for writability while some is left."""
        sock = self.sock
        assert sock is not None
        outbuf = self.outbuf
        while outbuf:
            try:
                sent = sock.send(outbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self.fail(f"send: {exc}")
                return
            del outbuf[:sent]
        quiet = self.bulk or (self.stalled and not self.draining)
        reads = 0 if quiet else selectors.EVENT_READ
        self._set_mask(reads | (selectors.EVENT_WRITE if outbuf else 0))

    def _read(self, now: float) -> None:
        sock = self.sock
        assert sock is not None
        tls = self.gen.tls_context is not None
        while True:
            try:
                size = sock.recv_into(self.gen.receive_view)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                self._closed_by_server(f"receive: {exc}", now)
                return
            if not size:
                self._closed_by_server("connection closed by the server", now)
                return
            data = self.gen.receive_view[:size].tobytes()
            self.received += size
            if self.gen.keep_last:
                self.last = (
                    data[-LAST_BYTES:]
                    if size >= LAST_BYTES
                    else (self.last + data)[-LAST_BYTES:]
                )
            if self.draining:
                self.drained += size  # only its end matters
                self.last_read_at = now
            elif self.parsing:
                self._parse(data, now)
            else:
                self._count(data, now)
            if not tls or self.state == _CLOSED:
                # Plain sockets: epoll says again if more is waiting. TLS
                # ones are drained, since OpenSSL may hold decrypted bytes.
                return

    # -- what arrives ---------------------------------------------------------

    def _parse(self, data: bytes, now: float) -> None:
        dialect = self.gen.dialect
        buf = self.inbuf + data if self.inbuf else data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end].rstrip(b"\r")
            start = end + 1
            problem = dialect.failure(line)
            if problem is not None:
                self._closed_by_server(problem, now)
                return
            reply = dialect.answer(line)
            if reply is not None:
                self.send(reply)
                continue
            if self.state == _REGISTERING:
                limits = dialect.server_limits(line)
                if limits is not None:
                    self.gen.server_limits = limits
                step = dialect.next_step(line, self.nick)
                if step is not None:
                    self.send(step)
                elif dialect.is_joined(line):
                    self.state = _JOINED
                    self.gen.joined += 1
                    if not self.probe:
                        # From here on, count in bulk; `start` is a line start.
                        self.parsing = False
                        self.inbuf = b""
                        self.tail = b"\n"
                        self._to_bulk()
                        if start < len(buf):
                            self._count(buf[start:], now)
                        return
                continue
            on_line = self.gen.on_line
            if on_line is not None:
                on_line(self, line, now)
            joins = dialect.joins_in(line)
            if joins:
                self.joins += joins
                self.gen.total_joins += joins
                continue
            leaves = dialect.leaves_in(line)
            if leaves:
                self.leaves += leaves
                continue
            text = dialect.chat_text(line)
            if text is not None:
                self._got_msgs(1, now)
                self.gen.on_chat(self, text, now)
            elif dialect.is_more(line):
                self._got_more(1, now)
        self.inbuf = buf[start:]

    def _count(self, data: bytes, now: float) -> None:
        gen = self.gen
        dialect = gen.dialect
        tail = self.tail
        joins = dialect.count_joins(self, data) if gen.counting_joins else 0
        msgs = _count_marker(dialect.msg_marker, tail, data)
        more_marker = dialect.more_marker if gen.counting_more else b""
        more = _count_marker(more_marker, tail, data) if more_marker else 0
        self.tail = data[-TAIL:] if len(data) >= TAIL else (tail + data)[-TAIL:]
        if joins:
            self.joins += joins
            gen.total_joins += joins
        if msgs:
            self._got_msgs(msgs, now)
        if more:
            self._got_more(more, now)

    def _got_msgs(self, count: int, now: float) -> None:
        if self.first_msg_at is None:
            self.first_msg_at = now
            self.gen.reached += 1
        self.msgs += count
        self.gen.total_msgs += count
        if self.target and self.msgs + self.more >= self.target:
            self._done(now)

    def _got_more(self, count: int, now: float) -> None:
        self.more += count
        self.gen.total_more += count
        if self.target and self.msgs + self.more >= self.target:
            self._done(now)

    def _done(self, now: float) -> None:
        """Everything due has arrived (`target` lines)."""
        self.target = 0
        self.done_at = now
        self.gen.readers_pending -= 1


def _count_marker(marker: bytes, tail: bytes, data: bytes) -> int:
    """Occurrences of `marker` that end in `data`, given the stream's `tail`."""
    overlap = len(marker) - 1
    across = (tail[-overlap:] + data[:overlap]).count(marker) if tail else 0
    return data.count(marker) + across


#: What starts a trio-chat line announcing several joins.
_JOINS_MARK: Final = b"\nJOINS "


def _joins_names(
    tail: bytes, data: bytes, carry: bytes | None
) -> tuple[int, bytes | None]:
    """Names on the `JOINS` lines that end in `data`, and what to carry on.

    `tail` is the stream just before `data`; `carry` the part received so
    far of a `JOINS` line that `data` continues (after its marker), or None.
    Returns the names counted and the new carry.
    """
    count = 0
    pos = 0
    if carry is None:
        overlap = tail[-(len(_JOINS_MARK) - 1) :]
        start = (overlap + data[: len(_JOINS_MARK) - 1]).find(_JOINS_MARK)
        if 0 <= start < len(overlap):  # the marker began in the last receive
            carry = b""
            pos = start + len(_JOINS_MARK) - len(overlap)
    if carry is not None:
        end = data.find(b"\n", pos)
        if end < 0:
            return 0, carry + data[pos:]
        count += (carry + data[pos:end]).count(b" ") - 1
        pos = end
    while True:
        start = data.find(_JOINS_MARK, pos)
        if start < 0:
            return count, None
        start += len(_JOINS_MARK)
        end = data.find(b"\n", start)
        if end < 0:
            return count, data[start:]
        count += data.count(b" ", start, end) - 1
        pos = end


class Generator:
    """The selector loop, the clients, and the four scenarios."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counting_joins = True  # until setup is done
        # Every read lands here first: recv() would allocate (and, at this
        # size, map and unmap) a fresh RECV_SIZE buffer each time.
        self.receive_view = memoryview(bytearray(RECV_SIZE))
        self.dialect: Dialect = (
            TrioChatDialect()
            if settings.dialect == "trio-chat"
            else IRCDialect(settings.oper_name, settings.oper_password)
        )
        self.tls_context: ssl.SSLContext | None = None
        if settings.tls:
            context = ssl.create_default_context(cafile=settings.cafile or None)
            self.tls_context = context
        # Probes, and clients connecting or with output waiting, are served
        # as soon as their sockets are ready; the other joined clients are
        # read in sweeps of the bulk selector every `sweep` seconds, so that
        # each read takes many lines (and the generator keeps up).
        self.selector = selectors.DefaultSelector()
        self.bulk = selectors.DefaultSelector()
        self.sweep = SWEEP
        self.clients: list[Client] = []
        self.started = 0
        self.joined = 0
        self.total_joins = 0
        self.total_msgs = 0
        self.total_more = 0
        self.reached = 0
        # Bursts: further lines counted too, the stream's end kept, and
        # clients the server closes noted (`on_server_close`) rather than
        # failed.
        self.counting_more = False
        self.keep_last = False
        self.readers_pending = 0  # clients with a `target` not yet reached
        self.server_limits: dict[str, int] = {}
        self.on_line: Callable[[Client, bytes, float], None] | None = None
        self.on_server_close: Callable[[Client, str, float], None] | None = None
        self.failures: list[str] = []
        self.failure_count = 0
        self.setup_cpu: tuple[float | None, float] = (None, 0.0)
        self.on_chat: Callable[[Client, bytes, float], None] = _ignore_chat

    def failed(self, client: Client, reason: str) -> None:
        """Note that `client` failed; the current phase stops."""
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(f"{client.nick}: {reason}")

    def pump(
        self,
        done: Callable[[], bool],
        deadline: float,
        tick: Callable[[float], float | None] | None = None,
    ) -> bool:
        """Run the loop until `done()` (True), a failure or `deadline` (False).

        `tick(now)` runs before each wait and returns when it next wants to
        run (None: only after the next event).
        """
        next_sweep = clock()
        while not done():
            if self.failure_count:
                return False
            now = clock()
            if now >= deadline:
                return False
            if now >= next_sweep:
                self._sweep(tick)
                next_sweep = clock() + self.sweep
                continue
            timeout = min(deadline, next_sweep) - now
            if tick is not None:
                wake = tick(now)
                if wake is not None:
                    timeout = min(timeout, wake - now)
            self._serve(max(0.0, timeout))
        return True

    def _serve(self, timeout: float) -> None:
        """Handle the fast selector's ready sockets, waiting up to `timeout`."""
        for key, mask in self.selector.select(timeout):
            key.data.on_event(mask, clock())

    def _sweep(self, tick: Callable[[float], float | None] | None) -> None:
        """Read every bulk client that has data, serving the fast ones between.

        A read costs tens of microseconds on a slow machine, so a sweep of
        many sockets would otherwise delay the probes and paced sends.
        """
        for index, (key, mask) in enumerate(self.bulk.select(0)):
            key.data.on_event(mask, clock())
            if index % SWEEP_SLICE == SWEEP_SLICE - 1:
                if tick is not None:
                    tick(clock())
                self._serve(0.0)

    def setup(self, count: int, probes: frozenset[int]) -> tuple[bool, float]:
        """Connect `count` clients, all joined with every join announced.

        Returns (done, seconds). At most `connect_inflight` clients are
        between connecting and joined at once.
        """
        settings = self.settings
        self.clients = [
            Client(self, index, probe=index in probes) for index in range(count)
        ]
        expected_joins = count * (count - 1) // 2

        def tick(now: float) -> float | None:
            clients, inflight = self.clients, settings.connect_inflight
            while self.started < count and self.started - self.joined < inflight:
                clients[self.started].start()
                self.started += 1
            return None

        def done() -> bool:
            return self.joined == count and self.total_joins >= expected_joins

        begin = clock()
        cpu0 = proc_cpu_seconds(settings.server_pid)
        gen_cpu0 = time.process_time()
        ok = self.pump(done, begin + settings.setup_timeout, tick)
        self.counting_joins = False  # all are in: the rest is chat
        self.setup_cpu = (
            _delta(cpu0, proc_cpu_seconds(settings.server_pid)),
            round(time.process_time() - gen_cpu0, 3),
        )
        return ok, clock() - begin

    def _setup_figures(self, ok: bool, seconds: float) -> dict[str, Any]:
        count = len(self.clients)
        return {
            "setup_complete": ok,
            "setup_s": round(seconds, 4),
            "setup_server_cpu_s": self.setup_cpu[0],
            "setup_generator_cpu_s": self.setup_cpu[1],
            "connected": self.started,
            "joined": self.joined,
            "join_notices": self.total_joins,
            "join_notices_expected": count * (count - 1) // 2,
        }

    # -- scenarios ------------------------------------------------------------

    def fanout(self) -> dict[str, Any]:
        """N clients each send M lines as fast as the window allows."""
        settings = self.settings
        count, lines, window = settings.clients, settings.lines, settings.window
        ok, seconds = self.setup(count, frozenset({0, 1}))
        figures = self._setup_figures(ok, seconds)
        if not ok:
            return figures
        sent = [0] * count
        acked = [0] * count
        # Per probe: the next sequence number expected from each sender.
        expect: dict[int, list[int]] = {0: [0] * count, 1: [0] * count}
        anomalies = {"missing": 0, "duplicated_or_reordered": 0}
        say = self.dialect.say
        clients = self.clients

        def refill(sender: int) -> None:
            limit = lines if window == 0 else min(lines, acked[sender] + window)
            first = sent[sender]
            if first >= limit:
                return
            payload = b"".join(
                say(f"{sender} {seq} {PAD}") for seq in range(first, limit)
            )
            sent[sender] = limit
            clients[sender].send(payload)

        def on_chat(client: Client, text: bytes, now: float) -> None:
            fields = text.split(b" ", 2)
            sender, seq = int(fields[0]), int(fields[1])
            nexts = expect[client.index]
            if seq == nexts[sender]:
                nexts[sender] = seq + 1
            elif seq > nexts[sender]:
                anomalies["missing"] += seq - nexts[sender]
                nexts[sender] = seq + 1
            else:
                anomalies["duplicated_or_reordered"] += 1
            # Probe 0 acknowledges everyone's lines but its own; probe 1, those.
            if (client.index == 0) != (sender == 0) and seq + 1 > acked[sender]:
                acked[sender] = seq + 1
                refill(sender)

        self.on_chat = on_chat
        self.sweep = SWEEP / 2  # busy sockets: short sweeps still batch
        expected = count * (count - 1) * lines
        cpu0 = proc_cpu_seconds(settings.server_pid)
        gen_cpu0 = time.process_time()
        begin = clock()
        for sender in range(count):
            refill(sender)
        complete = self.pump(
            lambda: self.total_msgs >= expected, begin + settings.run_timeout
        )
        wall = clock() - begin
        cpu1 = proc_cpu_seconds(settings.server_pid)
        gen_cpu = time.process_time() - gen_cpu0
        delivered = self.total_msgs
        # A short look for deliveries beyond the expected (duplicates).
        self.pump(lambda: False, clock() + 0.3)
        for probe in (0, 1):
            for sender in range(count):
                if sender != probe:
                    anomalies["missing"] += lines - expect[probe][sender]
        figures.update(
            {
                "complete": complete,
                "lines_sent": sum(sent),
                "deliveries": delivered,
                "deliveries_expected": expected,
                "extra_deliveries": max(0, self.total_msgs - expected),
                "wall_s": round(wall, 4),
                "deliveries_per_s": round(delivered / wall, 1),
                "probe_missing": anomalies["missing"],
                "probe_duplicated_or_reordered": anomalies["duplicated_or_reordered"],
                "server_cpu_s": _delta(cpu0, cpu1),
                "generator_cpu_s": round(gen_cpu, 3),
            }
        )
        return figures

    def paced(self) -> dict[str, Any]:
        """R lines a second into the room for D seconds, latency per line."""
        settings = self.settings
        count, rate, duration = settings.clients, settings.rate, settings.duration
        ok, seconds = self.setup(count, frozenset({0}))
        figures = self._setup_figures(ok, seconds)
        if not ok:
            return figures
        total = int(rate * duration)
        senders = count - 1
        latencies: list[float] = []
        last_seen = [-1] * count
        disorder = [0]
        say = self.dialect.say
        clients = self.clients
        begin = clock() + 0.05
        next_line = 0

        def tick(now: float) -> float | None:
            nonlocal next_line
            while next_line < total:
                due = begin + next_line / rate
                if due > now:
                    return due
                sender = 1 + next_line % senders
                clients[sender].send(say(f"{next_line} {sender} {PAD}"))
                next_line += 1
            return None

        def on_chat(client: Client, text: bytes, now: float) -> None:
            fields = text.split(b" ", 2)
            line, sender = int(fields[0]), int(fields[1])
            latencies.append(now - (begin + line / rate))
            if line < last_seen[sender]:
                disorder[0] += 1
            last_seen[sender] = line

        self.on_chat = on_chat
        # Few lines a socket at low rates: sweep rarely, so that each read
        # takes several. Only delivery counts wait for sweeps, not latency.
        self.sweep = SWEEP * 5
        expected = total * senders
        cpu0 = proc_cpu_seconds(settings.server_pid)
        gen_cpu0 = time.process_time()
        complete = self.pump(
            lambda: next_line >= total and self.total_msgs >= expected,
            begin + duration + settings.drain,
            tick,
        )
        cpu1 = proc_cpu_seconds(settings.server_pid)
        latencies.sort()
        figures.update(
            {
                "complete": complete,
                "lines_scheduled": total,
                "lines_sent": next_line,
                "deliveries": self.total_msgs,
                "deliveries_expected": expected,
                "delivered_pct": round(100.0 * self.total_msgs / expected, 3),
                "probe_received": len(latencies),
                "probe_missing": total - len(latencies),
                "probe_reordered": disorder[0],
                "server_cpu_s": _delta(cpu0, cpu1),
                "generator_cpu_s": round(time.process_time() - gen_cpu0, 3),
            }
        )
        if latencies:
            figures.update(
                {
                    f"latency_{name}_ms": round(1000 * percentile(latencies, q), 3)
                    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
                }
            )
            figures["latency_max_ms"] = round(1000 * latencies[-1], 3)
        return figures

    def connections(self) -> dict[str, Any]:
        """C idle members: memory per connection, setup, one line to all."""
        settings = self.settings
        count = settings.connections
        pid = settings.server_pid
        rss0 = proc_rss_kib(pid)
        # The last to join hears no joins: it parses every line, and says
        # the one line, then hears everyone else leave.
        ok, seconds = self.setup(count, frozenset({count - 1}))
        figures = self._setup_figures(ok, seconds)
        rss1 = proc_rss_kib(pid)
        figures["server_rss_before_kib"] = rss0
        figures["server_rss_after_kib"] = rss1
        if rss0 is not None and rss1 is not None and self.started:
            # Per connection open (all C, unless setup ran out of time).
            per = (rss1 - rss0) / self.started
            figures["rss_per_connection_kib"] = round(per, 3)
        if not ok:
            return figures
        self.sweep = SWEEP_FINE  # one line each: timing, not throughput
        begin = clock()
        self.clients[-1].send(self.dialect.say(f"0 0 {PAD}"))
        complete = self.pump(
            lambda: self.reached >= count - 1, begin + settings.run_timeout
        )
        arrivals = sorted(
            c.first_msg_at - begin for c in self.clients if c.first_msg_at is not None
        )
        figures.update(
            {
                "complete": complete,
                "reached": self.reached,
                "one_line_to_all_ms": (
                    round(1000 * arrivals[-1], 3) if complete else None
                ),
                "one_line_median_ms": (
                    round(1000 * percentile(arrivals, 0.5), 3) if arrivals else None
                ),
            }
        )
        if complete:
            figures.update(self._everyone_leaves())
        return figures

    def burst(self) -> dict[str, Any]:
        """K senders each send one largest item at once into a room of R.

        Clients 0 and 1 are the probes, 2 to K+1 the senders, and with
        `stall` the last to join stops reading once the room is set up
        (it must hear the joins of those who came in after it, since
        several join at once); everyone else keeps reading. Figures: members
        dropped, deliveries (each item whole, once, in each sender's order,
        at the probes), the server's RSS peak, and the time until every
        reader has everything. With `stall` the burst is sent again, each
        time once every reader has the last one, until the server has
        dropped the member that stopped reading (or `stall_max_bytes`
        reached each member): the kernel's buffers may take several bursts
        for it. That member is then read to its end.
        """
        settings = self.settings
        count, kind, stall = settings.members, settings.burst_kind, settings.stall
        senders = list(range(2, 2 + settings.senders))
        stalled = count - 1 if stall else -1
        if count < 2 + len(senders) + stall:
            needed = f"two probes and {len(senders)} senders"
            needed += " and one that stops reading" if stall else ""
            return {"problems": [f"{count} members are too few for {needed}"]}
        self.keep_last = True
        self.counting_more = True
        ok, seconds = self.setup(count, frozenset({0, 1}))
        figures = self._setup_figures(ok, seconds)
        if not ok:
            return figures
        dialect = self.dialect
        clients = self.clients
        if stall:
            clients[stalled].stall()
        pid = settings.server_pid
        try:
            first, item_lines, item_text = burst_item(
                dialect, kind, 0, self.server_limits
            )
        except ValueError as exc:
            figures["problems"] = [str(exc)]
            return figures
        figures.update(
            {
                "item_lines": item_lines,
                "item_text_bytes": item_text,
                "item_wire_bytes": len(first),
                "server_limits": self.server_limits,
            }
        )
        checks = {probe: BurstCheck(item_lines) for probe in (0, 1)}
        live = [c for c in clients if c.index != stalled]
        # Lines each reader gets per round: every sender's item but its own.
        per_round = {
            c.index: item_lines * (len(senders) - (c.index in senders)) for c in live
        }
        departures = Departures(dialect, f"u{stalled}".encode() if stall else None)
        dropped = departures.dropped
        stall_state: dict[str, Any] = {}
        rss0 = proc_rss_kib(pid)
        peaks = {"burst": rss0 or 0, "all": rss0 or 0}
        rounds = 0
        sent_at: list[float] = []
        burst_done: list[float] = []  # round 1's readers, when each had all
        probe = clients[0]

        def on_line(client: Client, line: bytes, now: float) -> None:
            parts = dialect.chat_line(line)
            if parts is not None:
                checks[client.index].line(*parts, len(line))
                return
            if departures.left(line):
                stall_state["left_at"] = now
                stall_state["bytes"] = probe.received - stall_state["base"]

        def on_server_close(client: Client, reason: str, now: float) -> None:
            if client.stalled:
                stall_state["end"] = "reset" if "reset" in reason else "closed"
                stall_state["goodbye"] = goodbye(dialect, client.last)
                return
            departures.closed(client.nick.encode(), reason, client.last)
            if client.target:
                client.target = 0
                self.readers_pending -= 1

        def send_round() -> None:
            nonlocal rounds
            payload = (
                first
                if rounds == 0
                else burst_item(dialect, kind, rounds, self.server_limits)[0]
            )
            rounds += 1
            pending = 0
            for client in live:
                if client.state != _CLOSED:
                    client.target = rounds * per_round[client.index]
                    client.done_at = None
                    pending += 1
            self.readers_pending = pending
            begin = clock()
            for sender in senders:  # all at once: each takes one write
                clients[sender].send(payload)
            sent_at.append(begin)
            sent_at.append(clock())

        next_sample = 0.0
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024

        def tick(now: float) -> float | None:
            nonlocal next_sample
            if now >= next_sample:
                rss = proc_rss_sample_kib(pid, page_kib)
                peaks["all"] = max(peaks["all"], rss)
                if not burst_done:
                    peaks["burst"] = max(peaks["burst"], rss)
                next_sample = now + RSS_SAMPLE
            if self.readers_pending == 0 and "drain_at" not in stall_state:
                if not burst_done:
                    burst_done.extend(c.done_at for c in live if c.done_at is not None)
                    stall_state["in_burst"] = "left_at" in stall_state
                if stall:
                    sent = probe.received - stall_state["base"]
                    if "left_at" not in stall_state and sent < settings.stall_max_bytes:
                        send_round()
                        return now
                    # Dropped (or given up on): read what the kernel held.
                    stall_state["drain_at"] = now
                    clients[stalled].drain()
            drain_at = stall_state.get("drain_at")
            if drain_at is not None and "end" not in stall_state:
                quiet_since = max(drain_at, clients[stalled].last_read_at)
                if now - quiet_since > DRAIN_QUIET:
                    stall_state["end"] = "still connected"
            return next_sample

        def done() -> bool:
            if self.readers_pending or not rounds:
                return False
            return not stall or "end" in stall_state

        self.on_line = on_line
        self.on_server_close = on_server_close
        self.sweep = SWEEP_FINE * 2
        cpu0 = proc_cpu_seconds(pid)
        gen_cpu0 = time.process_time()
        stall_state["base"] = probe.received
        begin = clock()
        send_round()
        complete = self.pump(done, begin + settings.run_timeout, tick)
        cpu1 = proc_cpu_seconds(pid)
        gen_cpu = time.process_time() - gen_cpu0
        delivered = self.total_msgs + self.total_more
        expected = sum(rounds * per_round[c.index] for c in live)
        self.pump(lambda: False, clock() + 0.3, tick)  # a look for extra lines
        sender_nicks = [clients[s].nick.encode() for s in senders]
        for check in checks.values():
            check.finish(sender_nicks, rounds)
        items = sum(rounds * per_round[c.index] // item_lines for c in live)
        arrivals = sorted(t - begin for t in burst_done)
        figures.update(
            {
                "complete": complete,
                "rounds": rounds,
                "deliveries": delivered,
                "deliveries_expected": expected,
                "extra_deliveries": max(
                    0, self.total_msgs + self.total_more - expected
                ),
                "items_delivered": self.total_msgs,
                "items_expected": items,
                "members_dropped": len(dropped),
                "dropped_examples": [
                    f"{name.decode()}: {why}"
                    for name, why in list(dropped.items())[:MAX_FAILURES_KEPT]
                ],
                "probe_items": [checks[0].items, checks[1].items],
                "probe_missing": checks[0].missing + checks[1].missing,
                "probe_duplicated_or_reordered": (
                    checks[0].duplicated_or_reordered
                    + checks[1].duplicated_or_reordered
                ),
                "probe_broken": checks[0].broken + checks[1].broken,
                "longest_line_bytes": max(c.longest_line for c in checks.values()),
                "send_spread_ms": round(1000 * (sent_at[1] - sent_at[0]), 3),
                "all_delivered_ms": (
                    round(1000 * arrivals[-1], 3)
                    if arrivals and len(arrivals) == len(live) - len(dropped)
                    else None
                ),
                "reader_done_median_ms": (
                    round(1000 * percentile(arrivals, 0.5), 3) if arrivals else None
                ),
                "server_rss_before_kib": rss0,
                "server_rss_peak_kib": peaks["burst"],
                "server_rss_peak_delta_kib": (
                    peaks["burst"] - rss0 if rss0 is not None else None
                ),
                "server_hwm_kib": proc_rss_kib(pid, "VmHWM"),
                "server_cpu_s": _delta(cpu0, cpu1),
                "generator_cpu_s": round(gen_cpu, 3),
            }
        )
        if stall:
            left_at = stall_state.get("left_at")
            figures.update(
                {
                    "stalled_dropped_in_burst": stall_state.get("in_burst", False),
                    "stalled_dropped": stall_state.get("end") in ("closed", "reset"),
                    "stalled_end": stall_state.get("end"),
                    "stalled_leave": departures.stalled_leave,
                    "stalled_goodbye": stall_state.get("goodbye"),
                    "stalled_dropped_ms": (
                        round(1000 * (left_at - begin), 3) if left_at else None
                    ),
                    "stall_bytes_per_member": stall_state.get("bytes"),
                    "stalled_drained_bytes": clients[stalled].drained,
                    "stall_rss_peak_kib": peaks["all"],
                }
            )
        figures["problems"] = _burst_problems(figures, stall)
        return figures

    def _everyone_leaves(self) -> dict[str, Any]:
        """All but the last client hang up at once: until it has heard them all."""
        stays = self.clients[-1]
        begin = clock()
        for client in self.clients[:-1]:
            client.hang_up()
        hung_up = clock() - begin
        expected = len(self.clients) - 1
        done = self.pump(
            lambda: stays.leaves >= expected, begin + self.settings.run_timeout
        )
        return {
            "all_left_complete": done,
            "leaves_heard": stays.leaves,
            "hang_up_ms": round(1000 * hung_up, 3),
            "all_left_heard_ms": round(1000 * (clock() - begin), 3) if done else None,
        }


def _ignore_chat(client: Client, text: bytes, now: float) -> None:
    """No scenario is listening yet."""


def goodbye(dialect: Dialect, last: bytes) -> str | None:
    """The server's goodbye (`BYE`, IRC `ERROR`) among the last bytes, if any."""
    for line in reversed(last.split(b"\n")):
        problem = dialect.failure(line.rstrip(b"\r"))
        if problem is not None:
            return problem
    return None


def _burst_problems(figures: dict[str, Any], stall: bool) -> list[str]:
    """What makes a burst run a failed one, in words (empty: none)."""
    problems = []
    if figures["members_dropped"]:
        problems.append(
            f"{figures['members_dropped']} members that kept reading were dropped"
        )
    lost = figures["deliveries_expected"] - figures["deliveries"]
    if lost > 0:
        problems.append(f"{lost} lines did not reach members that kept reading")
    if figures["extra_deliveries"]:
        problems.append(f"{figures['extra_deliveries']} lines more than sent")
    anomalies = (
        figures["probe_missing"]
        + figures["probe_duplicated_or_reordered"]
        + figures["probe_broken"]
    )
    if anomalies:
        problems.append(
            f"the probes saw {figures['probe_missing']} items missing,"
            f" {figures['probe_duplicated_or_reordered']} duplicated or"
            f" reordered, {figures['probe_broken']} broken"
        )
    if stall and not figures["stalled_dropped"]:
        problems.append(
            "the member that stopped reading was not dropped"
            f" ({figures['stalled_end']}) after {figures['rounds']} bursts"
        )
    return problems


def _delta(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return round(after - before, 3)


def _wait_for_stdin_close(deadline: float) -> None:
    """Block until standard input closes (the runner stopped the server)."""
    with selectors.DefaultSelector() as selector:
        selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
        while clock() < deadline:
            ready = selector.select(deadline - clock())
            if ready and not os.read(sys.stdin.fileno(), 4096):
                return


def main(argv: list[str]) -> int:
    """Run the scenario described by the JSON in argv[1]; print the figures."""
    settings = Settings(**json.loads(argv[1]))
    open_files = raise_open_files_limit()
    gen = Generator(settings)
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "fanout": gen.fanout,
        "paced": gen.paced,
        "connections": gen.connections,
        "burst": gen.burst,
    }
    started = clock()
    figures = scenarios[settings.scenario]()
    result = {
        "figures": figures,
        "failures": gen.failure_count,
        "failure_examples": gen.failures,
        "generator": {
            "open_files_limit": open_files,
            "elapsed_s": round(clock() - started, 3),
            "cpu_affinity": sorted(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
        },
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    _wait_for_stdin_close(clock() + EXIT_WAIT)
    os._exit(0)  # thousands of sockets: let the kernel close them


if __name__ == "__main__":
    sys.exit(main(sys.argv))
