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
(docs/PROTOCOL.md) and IRC (RFC 2812, as ngircd speaks it).
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

_CONNECTING, _HANDSHAKE, _REGISTERING, _JOINED, _CLOSED = range(5)


class Dialect:
    """How one protocol registers, joins, speaks and is counted."""

    name = ""
    #: Counted in bulk: the bytes that start a presence (join) notice.
    join_marker = b""
    #: Counted in bulk: the bytes that start a chat line from someone else.
    msg_marker = b""

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
        raise NotImplementedError

    def chat_text(self, line: bytes) -> bytes | None:
        """The text of a chat line received from the room, or None."""
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

    def say(self, text: str) -> bytes:
        """A plain line goes to the current room."""
        return f"{text}\n".encode()

    def chat_text(self, line: bytes) -> bytes | None:
        """`MSG <ts> <room> <<sender>> <text>`."""
        if not line.startswith(b"MSG "):
            return None
        fields = line.split(b" ", 4)
        return fields[4] if len(fields) == 5 else b""

    def failure(self, line: bytes) -> str | None:
        """`BYE` ends a connection; `ERR name-...` means the name was refused."""
        if line.startswith((b"BYE ", b"ERR name")):
            return line.decode(errors="replace")
        return None


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
        """RPL_ENDOFNAMES (366) ends the reply to our JOIN."""
        return self._command(line) == b"366"

    def joins_in(self, line: bytes) -> int:
        """`:nick!user@host JOIN :#channel`."""
        return 1 if self._command(line) == b"JOIN" else 0

    def leaves_in(self, line: bytes) -> int:
        """`:nick!user@host QUIT :reason`."""
        return 1 if self._command(line) == b"QUIT" else 0

    def say(self, text: str) -> bytes:
        """PRIVMSG to the channel."""
        return f"PRIVMSG {IRC_CHANNEL} :{text}\r\n".encode()

    def chat_text(self, line: bytes) -> bytes | None:
        """`:nick!user@host PRIVMSG #channel :text`."""
        fields = line.split(b" ", 3)
        if len(fields) < 4 or fields[1] != b"PRIVMSG":
            return None
        text = fields[3]
        return text[1:] if text.startswith(b":") else text

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
    connect_inflight: int = 8
    setup_timeout: float = 120.0
    run_timeout: float = 120.0


def proc_rss_kib(pid: int) -> int | None:
    """The resident set size of process `pid` in KiB (VmRSS), if readable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


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
        self.first_msg_at: float | None = None
        self.tail = b""
        self.joins_carry: bytes | None = None  # see `TrioChatDialect.count_joins`

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
        reads = 0 if self.bulk else selectors.EVENT_READ
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
                self.fail(f"receive: {exc}")
                return
            if not size:
                self.fail("connection closed by the server")
                return
            data = self.gen.receive_view[:size].tobytes()
            if self.parsing:
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
                self.fail(problem)
                return
            reply = dialect.answer(line)
            if reply is not None:
                self.send(reply)
                continue
            if self.state == _REGISTERING:
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
        self.inbuf = buf[start:]

    def _count(self, data: bytes, now: float) -> None:
        dialect = self.gen.dialect
        tail = self.tail
        joins = dialect.count_joins(self, data) if self.gen.counting_joins else 0
        msgs = _count_marker(dialect.msg_marker, tail, data)
        self.tail = data[-TAIL:] if len(data) >= TAIL else (tail + data)[-TAIL:]
        if joins:
            self.joins += joins
            self.gen.total_joins += joins
        if msgs:
            self._got_msgs(msgs, now)

    def _got_msgs(self, count: int, now: float) -> None:
        if self.first_msg_at is None:
            self.first_msg_at = now
            self.gen.reached += 1
        self.msgs += count
        self.gen.total_msgs += count


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
    """The selector loop, the clients, and the three scenarios."""

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
        self.reached = 0
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
