"""The benchmark generator counts what it receives right.

It counts in bulk, over whatever pieces the kernel hands it: a line (or a
marker) split between two reads must count once, and only once. In a
burst, a paste is one item whatever the reads, and a reader the server
drops is noticed, not taken for a failure of the generator.
"""

from __future__ import annotations

import importlib.util
import itertools
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st


def _load() -> ModuleType:
    path = Path(__file__).parent.parent / "benchmarks" / "loadgen.py"
    spec = importlib.util.spec_from_file_location("loadgen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = module
    spec.loader.exec_module(module)
    return module


loadgen = _load()

TS = "2026-11-24T05:12:40Z"
STREAM = (
    f"HELLO trio-chat/1 x\r\nJOIN {TS} #lobby a\r\nJOINS {TS} #lobby b c d\r\n"
    f"MSG {TS} #lobby <a> JOINS {TS} #lobby not a join\r\n"
    f"JOINS {TS} #lobby e f\r\nHIST JOIN {TS} #lobby old\r\n"
    f"JOINS {TS} #lobby g h i j\r\n"
).encode()
JOINS_IN_STREAM = 1 + 3 + 2 + 4


class _Counting:
    """What `TrioChatDialect.count_joins` keeps per client."""

    def __init__(self) -> None:
        self.tail = b"\n"
        self.joins_carry: bytes | None = None


@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12, unique=True))
def test_joins_are_counted_once_however_the_stream_is_cut(cuts: list[int]) -> None:
    dialect = loadgen.TrioChatDialect()
    client = _Counting()
    edges = [0, *sorted(cuts), len(STREAM)]
    total = 0
    for start, end in itertools.pairwise(edges):
        data = STREAM[start:end]
        total += dialect.count_joins(client, data)
        tail = client.tail + data
        client.tail = tail[-loadgen.TAIL :]
    assert total == JOINS_IN_STREAM


def test_parsed_lines_count_joins_and_leaves() -> None:
    dialect = loadgen.TrioChatDialect()
    assert dialect.joins_in(f"JOINS {TS} #lobby a b c".encode()) == 3
    assert dialect.joins_in(f"JOIN {TS} #lobby a".encode()) == 1
    assert dialect.joins_in(f"HIST JOIN {TS} #lobby a".encode()) == 0
    assert dialect.leaves_in(f"LEAVE {TS} #lobby a quit".encode()) == 1
    assert dialect.leaves_in(f"LEAVE {TS} #lobby a parted (lunch)".encode()) == 0
    leaves = f"LEAVES {TS} #lobby disconnected a b c (connection (closed))"
    assert dialect.leaves_in(leaves.encode()) == 3
    irc = loadgen.IRCDialect("bench", "bench")
    assert irc.leaves_in(b":u1!~u1@127.0.0.1 QUIT :Client closed connection") == 1
    assert irc.joins_in(b":u1!~u1@127.0.0.1 JOIN :#bench") == 1


# -- bursts -------------------------------------------------------------------

LIMITS = {"max-line": 4096, "paste-lines": 50, "paste-bytes": 16384}


def _generator(**settings: object) -> object:
    """A generator with no connections (its bookkeeping only)."""
    values: dict[str, object] = {
        "scenario": "burst",
        "dialect": "trio-chat",
        "host": "127.0.0.1",
        "port": 0,
        "server_pid": 0,
    }
    values.update(settings)
    return loadgen.Generator(loadgen.Settings(**values))


def _relayed(sender: str, wire: bytes) -> bytes:
    """What the server sends the others for what `sender` sent (`wire`).

    A paste's lines become a `MSG` line and `MORE` lines; a line, a `MSG`.
    """
    lines = wire.split(b"\n")[:-1]
    if lines[0].startswith(b"/paste "):
        lines = lines[1:]
    head = f" {TS} #lobby <{sender}> ".encode()
    kinds = [b"MSG"] + [b"MORE"] * (len(lines) - 1)
    return b"".join(k + head + t + b"\r\n" for k, t in zip(kinds, lines, strict=True))


def _burst_stream() -> tuple[bytes, int, int]:
    """Two senders' pastes (items 0 and 1) between other lines; (bytes, MSG, MORE)."""
    dialect = loadgen.TrioChatDialect()
    parts = [f"JOIN {TS} #lobby u9\r\n".encode()]
    for seq in (0, 1):
        for sender in ("u2", "u3"):
            wire, _, _ = loadgen.burst_item(dialect, "paste", seq, LIMITS)
            parts.append(_relayed(sender, wire))
    parts.append(f"LEAVE {TS} #lobby u9 quit\r\n".encode())
    return b"".join(parts), 4, 4 * 49


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_a_burst_item_is_the_largest_the_server_announced() -> None:
    dialect = loadgen.TrioChatDialect()
    wire, lines, text = loadgen.burst_item(dialect, "paste", 7, LIMITS)
    assert (lines, text) == (50, 16384)
    paste = wire.split(b"\n")
    assert paste[0] == b"/paste 50" and len(paste) == 52 and paste[-1] == b""
    assert paste[1].startswith(b"7 0 ") and paste[50].startswith(b"7 49 ")
    wire, lines, text = loadgen.burst_item(dialect, "line", 3, LIMITS)
    assert (len(wire), lines, text) == (4097, 1, 4096)
    wire, _, _ = loadgen.burst_item(dialect, "invalid", 3, LIMITS)
    assert wire.startswith(b"3 \xff") and len(wire) == 4097
    irc = loadgen.IRCDialect("bench", "bench")
    wire, _, _ = loadgen.burst_item(irc, "line", 3, {})
    # Room for the source a server puts before the line it relays.
    assert len(wire) == loadgen.IRC_MAX_LINE - loadgen.IRC_MAX_SOURCE
    assert wire.startswith(b"PRIVMSG #bench :3 ")
    with pytest.raises(ValueError, match="no multi-line"):
        loadgen.burst_item(irc, "paste", 0, {})
    with pytest.raises(ValueError, match="no multi-line"):
        loadgen.burst_item(dialect, "paste", 0, {"max-line": 4096})


@given(st.lists(st.integers(1, 60_000), max_size=12, unique=True))
def test_a_paste_split_across_reads_is_counted_once(cuts: list[int]) -> None:
    stream, msgs, more = _burst_stream()
    gen: Any = _generator()
    gen.counting_joins = False
    gen.counting_more = True
    client = loadgen.Client(gen, 5, probe=False)
    client.parsing = False
    client.tail = b"\n"
    client.target = msgs + more
    gen.readers_pending = 1
    for data in _cut(stream, [c for c in cuts if c < len(stream)]):
        client._count(data, 1.0)
    assert (client.msgs, client.more) == (msgs, more)
    assert gen.readers_pending == 0 and client.done_at == 1.0


@given(st.lists(st.integers(1, 60_000), max_size=12, unique=True))
def test_the_probe_sees_each_paste_whole_once_and_in_order(cuts: list[int]) -> None:
    stream, msgs, more = _burst_stream()
    gen: Any = _generator()
    client = loadgen.Client(gen, 0, probe=True)
    client.state = loadgen._JOINED
    check = loadgen.BurstCheck(50)
    dialect = gen.dialect

    def on_line(_: object, line: bytes, now: float) -> None:
        parts = dialect.chat_line(line)
        if parts is not None:
            check.line(*parts, len(line))

    gen.on_line = on_line
    for data in _cut(stream, [c for c in cuts if c < len(stream)]):
        client._parse(data, 1.0)
    check.finish([b"u2", b"u3"], 2)
    assert (client.msgs, client.more) == (msgs, more)
    assert check.items == 4
    assert (check.missing, check.duplicated_or_reordered, check.broken) == (0, 0, 0)


def test_the_burst_check_finds_broken_missing_and_repeated_items() -> None:
    def run(lines: list[tuple[bool, bytes, bytes]], items_each: int = 2) -> object:
        check = loadgen.BurstCheck(3)
        for more, sender, text in lines:
            check.line(more, sender, text, len(text))
        check.finish([b"u2", b"u3"], items_each)
        return (check.items, check.missing, check.duplicated_or_reordered, check.broken)

    def paste(sender: bytes, seq: int) -> list[tuple[bool, bytes, bytes]]:
        return [(i > 0, sender, b"%d %d x" % (seq, i)) for i in range(3)]

    whole = paste(b"u2", 0) + paste(b"u3", 0) + paste(b"u2", 1) + paste(b"u3", 1)
    assert run(whole) == (4, 0, 0, 0)
    # Another sender's line in the middle of a paste: that paste is broken.
    interleaved = paste(b"u2", 0)[:2] + paste(b"u3", 0) + paste(b"u2", 0)[2:]
    assert run(interleaved, 1) == (1, 1, 0, 2)
    # A paste's last line lost: broken, and that item missing.
    assert run(paste(b"u2", 0)[:2] + paste(b"u3", 0), 1) == (1, 1, 0, 1)
    # An item twice, an item skipped.
    assert run(paste(b"u2", 0) * 2 + paste(b"u3", 1), 2) == (3, 2, 1, 0)


def test_a_dropped_reader_is_detected_with_its_goodbye() -> None:
    gen: Any = _generator()
    gen.keep_last = True
    departures = loadgen.Departures(gen.dialect, b"u9")
    noted: list[str] = []

    def on_server_close(client: Any, reason: str, now: float) -> None:
        departures.closed(client.nick.encode(), reason, client.last)
        noted.append(client.nick)

    gen.on_server_close = on_server_close
    server, ours = socket.socketpair()
    with server, ours:
        ours.setblocking(False)
        client = loadgen.Client(gen, 5, probe=False)
        client.sock, client.fd, client.state = ours, ours.fileno(), loadgen._JOINED
        client.parsing = False
        client.tail = b"\n"
        server.sendall(
            f"MSG {TS} #lobby <u2> 0 x\r\n".encode()
            + b"BYE send-queue-exceeded Disconnected: send queue exceeded.\r\n"
        )
        server.shutdown(socket.SHUT_WR)
        client._read(1.0)  # the lines
        client._read(1.0)  # the end
    assert noted == ["u5"] and gen.failure_count == 0
    assert departures.dropped == {
        b"u5": "BYE send-queue-exceeded Disconnected: send queue exceeded."
    }
    # The others hear who left: the stalled member is expected to go.
    leaves = f"LEAVES {TS} #lobby disconnected u7 u9 (send queue exceeded)"
    assert departures.left(leaves.encode())
    assert not departures.left(f"LEAVE {TS} #lobby u9 disconnected (x)".encode())
    assert departures.stalled_leave == "disconnected (send queue exceeded)"
    assert departures.dropped[b"u7"] == "left: disconnected (send queue exceeded)"
    assert not departures.left(f"LEAVE {TS} #lobby u8 parted".encode())
    assert b"u8" not in departures.dropped
    irc = loadgen.Departures(loadgen.IRCDialect("bench", "bench"), b"u9")
    assert irc.left(b":u9!~u9@127.0.0.1 QUIT :u9")


def test_without_a_burst_a_server_close_is_a_failure() -> None:
    gen: Any = _generator(scenario="fanout")
    server, ours = socket.socketpair()
    with server, ours:
        ours.setblocking(False)
        client = loadgen.Client(gen, 5, probe=False)
        client.sock, client.fd, client.state = ours, ours.fileno(), loadgen._JOINED
        client.parsing = False
        server.shutdown(socket.SHUT_WR)
        client._read(1.0)
    assert gen.failure_count == 1
    assert gen.failures == ["u5: connection closed by the server"]


def test_a_stalled_client_is_not_read_until_it_is_drained() -> None:
    gen: Any = _generator()
    server, ours = socket.socketpair()
    with server, ours:
        ours.setblocking(False)
        client = loadgen.Client(gen, 9, probe=False)
        client.sock, client.fd, client.state = ours, ours.fileno(), loadgen._JOINED
        client.parsing = False
        client._to_bulk()  # as a joined member that keeps reading
        server.sendall(b"MSG x\r\n")
        assert [k.data for k, _ in gen.bulk.select(0)] == [client]
        client.stall()
        assert not gen.bulk.get_map() and not gen.selector.get_map()
        client.send(b"")  # a flush must not start reading it again
        assert not gen.selector.get_map()
        client.drain()
        ready = [k.data for k, _ in gen.selector.select(0)]
        assert ready == [client]
        client._read(1.0)
    assert client.drained == len(b"MSG x\r\n") and client.msgs == 0
