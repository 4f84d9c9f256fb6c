"""The sans-IO line protocol: framing, user requests and server lines.

Framing tables are fed whole, byte by byte, split at every position and with
trailing data after them (the way h11's test_io.py does it); Hypothesis
covers arbitrary chunkings and garbage.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.limits import MAX_LINE_BYTES, MAX_SERVER_LINE_BYTES
from trio_chat.names import InvalidName, validate_name
from trio_chat.protocol import (
    LINE_END,
    NEED_DATA,
    EndOfStream,
    FramingEvent,
    Line,
    LineReader,
    LineTooLong,
    LocalProtocolError,
    ReadQueueExceeded,
    ServerProtocolError,
    decode_event,
    encode_event,
    encode_request,
    format_timestamp,
    looks_like_http,
    looks_like_tls,
    parse_duration,
    parse_request,
    parse_timestamp,
)
from trio_chat.sanitize import sanitize_text

#: A small line limit, so overlong lines are short enough to read in a table.
LIMIT = 8
#: 2026-11-23T23:10:28Z as a POSIX time.
TS = 1795475428.0
TS_TEXT = "2026-11-23T23:10:28Z"

# --------------------------------------------------------------------------
# Framing helpers


def drain(reader: LineReader) -> list[FramingEvent]:
    """Every event the reader can produce from what it was fed so far."""
    events: list[FramingEvent] = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
        # A reader that never asks for more data would hang the test.
        assert len(events) < 100_000, "next_event never returned NEED_DATA"
    return events


def feed_chunks(
    reader: LineReader, chunks: Iterable[bytes], *, eof: bool = False
) -> list[FramingEvent]:
    """Feed each chunk (skipping empty ones: `b""` means EOF) and drain."""
    events: list[FramingEvent] = []
    for chunk in chunks:
        if chunk:
            reader.feed(chunk)
            events.extend(drain(reader))
    if eof:
        reader.feed(b"")
        events.extend(drain(reader))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and split in two at every position."""
    yield [data]
    yield bytewise(data)
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def frame(
    data: bytes, *, max_line_bytes: int = LIMIT, **kwargs: int
) -> list[list[FramingEvent]]:
    """The events `data` yields under each chunking of `chunkings`."""
    return [
        feed_chunks(LineReader(max_line_bytes=max_line_bytes, **kwargs), chunks)
        for chunks in chunkings(data)
    ]


# --------------------------------------------------------------------------
# Framing tables

FRAMING_TABLE: list[tuple[bytes, list[FramingEvent]]] = [
    (b"hello\n", [Line("hello")]),
    (b"hello\r\n", [Line("hello")]),
    (b"a\nb\r\nc\n", [Line("a"), Line("b"), Line("c")]),
    (b"\n", [Line("")]),
    (b"\r\n", [Line("")]),
    (b"\r\n\n\r\n", [Line(""), Line(""), Line("")]),
    # Only the CR of a CRLF is framing; any other CR is text (for the
    # sanitiser to deal with).
    (b"a\rb\n", [Line("a\rb")]),
    (b"a\r\r\n", [Line("a\r")]),
    # Exactly LIMIT bytes is a line; LIMIT + 1 is not, whatever the ending.
    (b"12345678\n", [Line("12345678")]),
    (b"12345678\r\n", [Line("12345678")]),
    (b"1234567\r\r\n", [Line("1234567\r")]),
    (b"123456789\n", [LineTooLong(LIMIT)]),
    (b"123456789\r\n", [LineTooLong(LIMIT)]),
    (b"1234567\r\r\r\n", [LineTooLong(LIMIT)]),
    # The limit counts bytes, not characters: 4 x 2-byte "å" fit, 5 do not.
    ("åååå\n".encode(), [Line("åååå")]),
    ("ååååå\n".encode(), [LineTooLong(LIMIT)]),
    # The rest of an overlong line is discarded; the next line is intact.
    (
        b"0123456789abcdefghijklmnopqrstuvwxyz\nnext\n",
        [LineTooLong(LIMIT), Line("next")],
    ),
    (
        b"ok\r\n0123456789abcdefghijklmnopqrstuvwxyz\r\nnext\r\n",
        [Line("ok"), LineTooLong(LIMIT), Line("next")],
    ),
    (b"123456789\n123456789\n1\n", [LineTooLong(LIMIT), LineTooLong(LIMIT), Line("1")]),
    # Invalid UTF-8 becomes U+FFFD.
    (b"\x80\n", [Line("\ufffd")]),  # lone continuation byte
    (b"a\xe2\x82\n", [Line("a\ufffd")]),  # truncated 3-byte sequence (of "€")
    (b"\xe2\x82b\n", [Line("\ufffdb")]),  # truncated, then a valid character
    (b"\xc0\xaf\n", [Line("\ufffd\ufffd")]),  # overlong encoding of "/"
    (b"\xed\xa0\x80\n", [Line("\ufffd\ufffd\ufffd")]),  # encoded surrogate D800
    (b"\xf4\x90\x80\x80\n", [Line("\ufffd" * 4)]),  # beyond U+10FFFF
    (b"\xff\n", [Line("\ufffd")]),
    # Valid multi-byte characters survive being split between chunks.
    ("€😀\n".encode(), [Line("€😀")]),
]


@pytest.mark.parametrize(("data", "expected"), FRAMING_TABLE)
def test_framing_table_under_every_chunking(
    data: bytes, expected: list[FramingEvent]
) -> None:
    for events in frame(data):
        assert events == expected


@pytest.mark.parametrize(("data", "expected"), FRAMING_TABLE)
def test_framing_table_with_trailing_data(
    data: bytes, expected: list[FramingEvent]
) -> None:
    # A partial line after the table's input is held, not reported, until
    # its newline comes; at EOF it is discarded and counted.
    for chunks in (
        [data + b"tail"],
        bytewise(data + b"tail"),
        [data, b"ta", b"il"],
    ):
        reader = LineReader(max_line_bytes=LIMIT)
        assert feed_chunks(reader, chunks) == expected
        assert reader.buffered_bytes == len(b"tail")
        assert feed_chunks(reader, [b"\n"]) == [Line("tail")]

        reader = LineReader(max_line_bytes=LIMIT)
        assert feed_chunks(reader, chunks, eof=True) == [*expected, EndOfStream(4)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_default_limit_is_byte_exact(ending: bytes) -> None:
    exact = b"x" * MAX_LINE_BYTES + ending
    over = b"x" * (MAX_LINE_BYTES + 1) + ending
    for chunks in ([exact], bytewise(exact)):
        assert feed_chunks(LineReader(), chunks) == [Line("x" * MAX_LINE_BYTES)]
    for chunks in ([over], bytewise(over)):
        assert feed_chunks(LineReader(), [*chunks, b"next\n"]) == [
            LineTooLong(MAX_LINE_BYTES),
            Line("next"),
        ]


def test_overlong_remainder_spread_over_many_chunks_is_one_error() -> None:
    reader = LineReader(max_line_bytes=LIMIT)
    chunks = [b"0123456789"] * 50 + [b"still the same line\r", b"\nnext\r\n"]
    assert feed_chunks(reader, chunks) == [LineTooLong(LIMIT), Line("next")]


@pytest.mark.parametrize(
    ("chunk_size", "total"),
    [
        (1, 3 * MAX_LINE_BYTES),
        (3, 16 * MAX_LINE_BYTES),
        (997, 1024 * 1024),
        (4097, 1024 * 1024),
        (65536, 1024 * 1024),
    ],
)
def test_buffer_stays_bounded_without_newline(chunk_size: int, total: int) -> None:
    reader = LineReader()
    events: list[FramingEvent] = []
    held: list[int] = []
    for start in range(0, total, chunk_size):
        reader.feed(b"x" * min(chunk_size, total - start))
        events.extend(drain(reader))
        held.append(reader.buffered_bytes)
    assert max(held) <= MAX_LINE_BYTES + 1
    assert events == [LineTooLong(MAX_LINE_BYTES)]
    # The stream recovers at the next newline.
    assert feed_chunks(reader, [b"\nhello\n"]) == [Line("hello")]


def test_buffered_bytes_counts_the_partial_line() -> None:
    reader = LineReader(max_line_bytes=LIMIT)
    assert feed_chunks(reader, [b"ab\ncde"]) == [Line("ab")]
    assert reader.buffered_bytes == 3
    assert feed_chunks(reader, [b"\n"]) == [Line("cde")]
    assert reader.buffered_bytes == 0


@pytest.mark.parametrize("chunk", [1, 5, 11])
def test_unterminated_stream_is_reported_once_then_silence(chunk: int) -> None:
    reader = LineReader(max_line_bytes=LIMIT, max_unterminated_bytes=32)
    data = b"y" * 100
    events = feed_chunks(reader, [data[i : i + chunk] for i in range(0, 100, chunk)])
    assert events == [LineTooLong(LIMIT), ReadQueueExceeded(32)]
    # Nothing more is ever reported: not lines, not even the end of stream.
    assert feed_chunks(reader, [b"\nhello\n", b"more\n"], eof=True) == []
    assert reader.next_event() is NEED_DATA


def test_unterminated_limit_is_byte_exact() -> None:
    at_limit = LineReader(max_line_bytes=LIMIT, max_unterminated_bytes=32)
    assert feed_chunks(at_limit, [*bytewise(b"y" * 32), b"\nok\n"]) == [
        LineTooLong(LIMIT),
        Line("ok"),
    ]
    over = LineReader(max_line_bytes=LIMIT, max_unterminated_bytes=32)
    assert feed_chunks(over, bytewise(b"y" * 33)) == [
        LineTooLong(LIMIT),
        ReadQueueExceeded(32),
    ]


def test_unterminated_limit_is_reset_by_each_newline() -> None:
    reader = LineReader(max_line_bytes=LIMIT, max_unterminated_bytes=32)
    chunks = bytewise(b"1234567\n" * 20)
    assert feed_chunks(reader, chunks) == [Line("1234567")] * 20


def test_unterminated_limit_does_not_depend_on_chunking() -> None:
    data = b"y" * 33 + b"\n"
    byte_by_byte = feed_chunks(
        LineReader(max_line_bytes=LIMIT, max_unterminated_bytes=32), bytewise(data)
    )
    assert byte_by_byte == [LineTooLong(LIMIT), ReadQueueExceeded(32)]
    whole = feed_chunks(
        LineReader(max_line_bytes=LIMIT, max_unterminated_bytes=32), [data]
    )
    assert whole == byte_by_byte


def test_end_of_stream_discards_the_partial_line() -> None:
    reader = LineReader(max_line_bytes=LIMIT)
    assert feed_chunks(reader, [b"a\nhalf a"], eof=True) == [
        Line("a"),
        EndOfStream(6),
    ]
    assert reader.next_event() is NEED_DATA
    assert reader.next_event() is NEED_DATA


def test_end_of_stream_on_a_line_boundary() -> None:
    reader = LineReader(max_line_bytes=LIMIT)
    assert feed_chunks(reader, [b"a\r\n"], eof=True) == [Line("a"), EndOfStream(0)]


def test_end_of_stream_before_anything_was_drained() -> None:
    reader = LineReader(max_line_bytes=LIMIT)
    reader.feed(b"one\ntwo")
    reader.feed(b"")
    assert drain(reader) == [Line("one"), EndOfStream(3)]


def test_feeding_after_end_of_stream_is_a_local_error() -> None:
    reader = LineReader(max_line_bytes=LIMIT)
    reader.feed(b"")
    with pytest.raises(LocalProtocolError):
        reader.feed(b"late")
    assert drain(reader) == [EndOfStream(0)]


def test_line_limit_must_be_positive() -> None:
    with pytest.raises(LocalProtocolError):
        LineReader(max_line_bytes=0)


# --------------------------------------------------------------------------
# Framing properties

HYPOTHESIS_LIMIT = 16


def expected_framing(content: bytes) -> FramingEvent:
    """What one line (its LF removed) must become: the reference model."""
    if content.endswith(b"\r"):
        content = content[:-1]
    if len(content) > HYPOTHESIS_LIMIT:
        return LineTooLong(HYPOTHESIS_LIMIT)
    return Line(content.decode("utf-8", errors="replace"))


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = draw(st.lists(st.integers(0, len(data)), unique=True).map(sorted))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(
    lines=st.lists(
        st.tuples(
            st.binary(max_size=3 * HYPOTHESIS_LIMIT).map(
                lambda b: b.replace(b"\n", b"")
            ),
            st.sampled_from([b"\n", b"\r\n"]),
        ),
        max_size=12,
    ),
    data=st.data(),
)
def test_any_chunking_frames_like_whole(
    lines: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(content + ending for content, ending in lines)
    chunks = data.draw(split(stream))
    whole = feed_chunks(LineReader(max_line_bytes=HYPOTHESIS_LIMIT), [stream])
    chunked = feed_chunks(LineReader(max_line_bytes=HYPOTHESIS_LIMIT), chunks)
    assert chunked == whole
    assert whole == [
        expected_framing(content + ending[:-1]) for content, ending in lines
    ]


@given(garbage=st.binary(max_size=400), data=st.data())
def test_garbage_frames_the_same_in_any_chunking(
    garbage: bytes, data: st.DataObject
) -> None:
    chunks = data.draw(split(garbage))
    reader = LineReader(max_line_bytes=HYPOTHESIS_LIMIT)
    events: list[FramingEvent] = []
    for chunk in chunks:
        if chunk:
            reader.feed(chunk)
            events.extend(drain(reader))
            assert reader.buffered_bytes <= HYPOTHESIS_LIMIT + 1
    events.extend(feed_chunks(reader, [], eof=True))
    assert events == feed_chunks(
        LineReader(max_line_bytes=HYPOTHESIS_LIMIT), [garbage], eof=True
    )
    assert isinstance(events[-1], EndOfStream)
    assert all(isinstance(e, Line | LineTooLong) for e in events[:-1])
    for event in events:
        if isinstance(event, Line):
            assert "\n" not in event.text


# --------------------------------------------------------------------------
# Wrong-protocol detection


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", True),  # ClientHello
        (b"\x16\x03", True),
        (bytearray(b"\x16\x03\x03"), True),
        (b"\x16", False),  # too short to tell
        (b"", False),
        (b"\x16\x02\x00", False),
        (b"hello\n", False),
        (b"GET / HTTP/1.1\r\n", False),
    ],
)
def test_looks_like_tls(data: bytes, expected: bool) -> None:
    assert looks_like_tls(data) is expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET / HTTP/1.1", True),
        ("GET /favicon.ico HTTP/1.0", True),
        ("POST /login HTTP/1.1", True),
        ("HEAD / HTTP/1.1", True),
        ("CONNECT example.com:443 HTTP/1.1", True),
        ("GET /", False),
        ("GET / HTTP/1.1 and more", False),
        ("I GET / HTTP/1.1", False),
        ("GET it?", False),
        ("hello", False),
        ("", False),
    ],
)
def test_looks_like_http(line: str, expected: bool) -> None:
    assert looks_like_http(line) is expected


# --------------------------------------------------------------------------
# User input -> requests

ME_USAGE = ev.BadCommand("usage", "Usage: /me ACTION")
MSG_USAGE = ev.BadCommand("usage", "Usage: /msg NAME TEXT")
NICK_USAGE = ev.BadCommand("usage", "Usage: /nick NEW")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", ev.Say("hello")),
        ("  indented", ev.Say("  indented")),
        ("a / b", ev.Say("a / b")),
        ("//x", ev.Say("/x")),
        ("//me waves", ev.Say("/me waves")),
        ("//", ev.Say("/")),
        ("/me waves", ev.Me("waves")),
        ("/ME waves", ev.Me("waves")),
        ("/me  waves at you  ", ev.Me("waves at you")),
        ("/me", ME_USAGE),
        ("/me   ", ME_USAGE),
        ("/who", ev.Who()),
        ("/WHO", ev.Who()),
        ("/names", ev.Who()),
        ("/Names", ev.Who()),
        ("/help", ev.Help()),
        ("/HeLp", ev.Help()),
        ("/quit", ev.Quit("")),
        ("/quit gotta go", ev.Quit("gotta go")),
        ("/QUIT", ev.Quit("")),
        ("/nick Åsa", ev.Nick("Åsa")),
        ("/NICK bob", ev.Nick("bob")),
        ("/nick", NICK_USAGE),
        ("/nick two words", NICK_USAGE),
        ("/msg bob hi there", ev.PrivateMsg("bob", "hi there")),
        ("/MSG bob hi", ev.PrivateMsg("bob", "hi")),
        ("/m bob hi", ev.PrivateMsg("bob", "hi")),
        ("/M bob  spaced ", ev.PrivateMsg("bob", "spaced")),
        ("/msg bob", MSG_USAGE),
        ("/msg bob   ", MSG_USAGE),
        ("/msg", MSG_USAGE),
        ("/m bob", MSG_USAGE),
        ("/since 2026-11-23T23:10:28Z", ev.Since(1_795_475_428.0)),
        (
            "/since yesterday",
            ev.BadCommand(
                "usage",
                "Usage: /since TIMESTAMP (as on MSG lines: 2026-11-23T23:10:28Z)",
            ),
        ),
        ("", None),
        (" ", None),
        ("     ", None),
    ],
)
def test_parse_request(text: str, expected: ev.Request | None) -> None:
    assert parse_request(text) == expected


@pytest.mark.parametrize("text", ["/frobnicate", "/FROB now", "/", "/ hello"])
def test_unknown_command_points_to_help(text: str) -> None:
    request = parse_request(text)
    assert isinstance(request, ev.BadCommand)
    assert request.code == "unknown-command"
    assert "/help" in request.text
    command = text[1:].partition(" ")[0].lower()
    assert f"/{command}" in request.text


@pytest.mark.parametrize(
    ("request_", "line"),
    [
        (ev.Say("hello"), b"hello\r\n"),
        (ev.Say("/not a command"), b"//not a command\r\n"),
        (ev.Me("waves"), b"/me waves\r\n"),
        (ev.Nick("Åsa"), "/nick Åsa\r\n".encode()),
        (ev.PrivateMsg("bob", "hi there"), b"/msg bob hi there\r\n"),
    ],
)
def test_encode_request_round_trips_through_parse(
    request_: ev.Say | ev.Me | ev.Nick | ev.PrivateMsg, line: bytes
) -> None:
    assert encode_request(request_) == line
    assert parse_request(line.removesuffix(LINE_END).decode()) == request_


# --------------------------------------------------------------------------
# Server events <-> lines

MSG = ev.Message(TS, "#lobby", "bob", "hi there")
ACTION = ev.Action(TS, "#lobby", "bob", "waves")
JOIN = ev.Joined(TS, "#lobby", "Åsa")
QUIT = ev.Left(TS, "#lobby", "bob", "quit", "")
RENAME = ev.Renamed(TS, "#lobby", "bob", "robert")

ENCODE_TABLE: list[tuple[ev.ServerEvent, bytes]] = [
    (MSG, f"MSG {TS_TEXT} #lobby <bob> hi there\r\n".encode()),
    (ev.Message(TS, "#lobby", "bob", ""), f"MSG {TS_TEXT} #lobby <bob> \r\n".encode()),
    (ACTION, f"ACTION {TS_TEXT} #lobby bob waves\r\n".encode()),
    (
        ev.Private(TS, "bob", "alice", "psst"),
        f"PRIV {TS_TEXT} @alice <bob> psst\r\n".encode(),
    ),
    (JOIN, f"JOIN {TS_TEXT} #lobby Åsa\r\n".encode()),
    (
        ev.JoinedMany(TS, "#lobby", ("Åsa", "bob", "carol")),
        f"JOINS {TS_TEXT} #lobby Åsa bob carol\r\n".encode(),
    ),
    (
        ev.LeftMany(TS, "#lobby", ("Åsa", "bob"), "quit", ""),
        f"LEAVES {TS_TEXT} #lobby quit Åsa bob\r\n".encode(),
    ),
    (
        ev.LeftMany(TS, "#lobby", ("a", "b"), "disconnected", "connection (closed)"),
        f"LEAVES {TS_TEXT} #lobby disconnected a b (connection (closed))\r\n".encode(),
    ),
    (QUIT, f"LEAVE {TS_TEXT} #lobby bob quit\r\n".encode()),
    (
        ev.Left(TS, "#lobby", "bob", "quit", "gotta go"),
        f"LEAVE {TS_TEXT} #lobby bob quit (gotta go)\r\n".encode(),
    ),
    (
        ev.Left(TS, "#lobby", "bob", "disconnected", "send queue exceeded"),
        f"LEAVE {TS_TEXT} #lobby bob disconnected (send queue exceeded)\r\n".encode(),
    ),
    (RENAME, f"NICK {TS_TEXT} #lobby bob -> robert\r\n".encode()),
    (
        ev.Hello("trio-chat/1", "trio-chat/0.1.0", 4096),
        b"HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096\r\n",
    ),
    (ev.Banner(" | |_ _ __"), b"BANNER  | |_ _ __\r\n"),
    (ev.Banner(""), b"BANNER \r\n"),
    (ev.Info("3 users online."), b"INFO 3 users online.\r\n"),
    (ev.NamePrompt("Choose a name:"), b"NAME Choose a name:\r\n"),
    (
        ev.Welcome("bob", "You are in #lobby as bob."),
        b"WELCOME bob You are in #lobby as bob.\r\n",
    ),
    (ev.WhoList("#lobby", ("alice", "bob")), b"WHO #lobby alice bob\r\n"),
    (
        ev.TopicIs(TS, "#rust", "alice", "borrow checking"),
        f"TOPIC {TS_TEXT} #rust alice borrow checking\r\n".encode(),
    ),
    (
        ev.TopicIs(TS, "#rust", "alice", ""),
        f"TOPIC {TS_TEXT} #rust alice \r\n".encode(),
    ),
    (
        ev.RoomInfo("#rust", 3, "borrow checking"),
        b"ROOM #rust 3 open borrow checking\r\n",
    ),
    (ev.RoomInfo("#ops", 2, "[key] x", keyed=True), b"ROOM #ops 2 key [key] x\r\n"),
    (ev.RoomInfo("#ops", 2, "", keyed=True), b"ROOM #ops 2 key \r\n"),
    (ev.RoomInfo("#empty", 0, ""), b"ROOM #empty 0 open \r\n"),
    (ev.Switched("#rust"), b"SWITCH #rust\r\n"),
    (
        ev.PasswordPrompt("alice", "This name is registered."),
        b"PASSWORD alice This name is registered.\r\n",
    ),
    (
        ev.Left(TS, "#rust", "bob", "parted", "lunch"),
        f"LEAVE {TS_TEXT} #rust bob parted (lunch)\r\n".encode(),
    ),
    # A part whose reason reads like a kick is still a part, and a kick is a
    # line of its own kind: no free text can pass for the other.
    (
        ev.Left(TS, "#rust", "bob", "parted", "kicked by alice: for no reason at all"),
        f"LEAVE {TS_TEXT} #rust bob parted".encode()
        + b" (kicked by alice: for no reason at all)\r\n",
    ),
    (
        ev.Kicked(TS, "#rust", "bob", "alice", "for no reason at all"),
        f"KICK {TS_TEXT} #rust bob alice for no reason at all\r\n".encode(),
    ),
    (
        ev.Kicked(TS, "#rust", "bob", "alice", ""),
        f"KICK {TS_TEXT} #rust bob alice \r\n".encode(),
    ),
    (
        ev.Replayed(ev.Kicked(TS, "#rust", "bob", "alice", " (x) ")),
        f"HIST KICK {TS_TEXT} #rust bob alice  (x) \r\n".encode(),
    ),
    (
        ev.RoomInfo("#rust", 3, "ends like a keyed one [key]"),
        b"ROOM #rust 3 open ends like a keyed one [key]\r\n",
    ),
    (ev.WhoList("#lobby", ()), b"WHO #lobby \r\n"),
    (ev.HelpLine("/help   this list"), b"HELP /help   this list\r\n"),
    (ev.MotdLine("Exams on Friday."), b"MOTD Exams on Friday.\r\n"),
    (
        ev.Error("name-taken", "The name bob is taken."),
        b"ERR name-taken The name bob is taken.\r\n",
    ),
    (ev.Goodbye("quit", "Bye!"), b"BYE quit Bye!\r\n"),
    (
        ev.Goodbye("too-many-new-connections", "Wait a little.", 42),
        b"BYE too-many-new-connections retry-after=42 Wait a little.\r\n",
    ),
    (
        ev.Goodbye("signed-in-elsewhere", "You signed in from another place."),
        b"BYE signed-in-elsewhere You signed in from another place.\r\n",
    ),
    (ev.Replayed(MSG), f"HIST MSG {TS_TEXT} #lobby <bob> hi there\r\n".encode()),
    (ev.Replayed(ACTION), f"HIST ACTION {TS_TEXT} #lobby bob waves\r\n".encode()),
    (ev.Replayed(JOIN), f"HIST JOIN {TS_TEXT} #lobby Åsa\r\n".encode()),
    (ev.Replayed(QUIT), f"HIST LEAVE {TS_TEXT} #lobby bob quit\r\n".encode()),
    (ev.Replayed(RENAME), f"HIST NICK {TS_TEXT} #lobby bob -> robert\r\n".encode()),
    (
        ev.MoreLine(TS, "#lobby", "bob", "    return x"),
        f"MORE {TS_TEXT} #lobby <bob>     return x\r\n".encode(),
    ),
    (
        ev.Replayed(ev.MoreLine(TS, "#lobby", "bob", "")),
        f"HIST MORE {TS_TEXT} #lobby <bob> \r\n".encode(),
    ),
    (
        ev.Hello("trio-chat/1", "trio-chat/0.1.0", 4096, 5, 2.0, 50, 16384),
        b"HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096 flood-burst=5"
        b" flood-rate=2 paste-lines=50 paste-bytes=16384\r\n",
    ),
    (
        ev.Hello("trio-chat/1", "trio-chat/0.1.0", 4096, name_timeout=30.0),
        b"HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096 name-timeout=30\r\n",
    ),
]

KINDS: dict[type, str] = {
    ev.Hello: "HELLO",
    ev.Banner: "BANNER",
    ev.Info: "INFO",
    ev.NamePrompt: "NAME",
    ev.PasswordPrompt: "PASSWORD",
    ev.Welcome: "WELCOME",
    ev.Message: "MSG",
    ev.MoreLine: "MORE",
    ev.Action: "ACTION",
    ev.Private: "PRIV",
    ev.Joined: "JOIN",
    ev.JoinedMany: "JOINS",
    ev.LeftMany: "LEAVES",
    ev.Left: "LEAVE",
    ev.Kicked: "KICK",
    ev.Renamed: "NICK",
    ev.WhoList: "WHO",
    ev.TopicIs: "TOPIC",
    ev.RoomInfo: "ROOM",
    ev.Switched: "SWITCH",
    ev.HelpLine: "HELP",
    ev.MotdLine: "MOTD",
    ev.Error: "ERR",
    ev.Goodbye: "BYE",
    ev.Replayed: "HIST",
}


#: Events the line protocol shows as lines of another kind (they carry
#: structure for other wire formats): encoded, but never decoded back.
SHOWN_AS_TABLE: list[tuple[ev.ServerEvent, bytes]] = [
    (ev.MotdIs(("Exams on Friday.", "")), b"MOTD Exams on Friday.\r\nMOTD \r\n"),
    (ev.MotdIs(()), b""),
    (
        ev.WhoisReply(
            "bob", "bob: in #a; idle 5s", ("#a",), (), TS, 5.0, None, False, False, ""
        ),
        b"INFO bob: in #a; idle 5s\r\n",
    ),
    (
        ev.MarkedAway("lunch", "You are marked away: lunch"),
        b"INFO You are marked away: lunch\r\n",
    ),
    (ev.AwayIs("bob", "lunch", "bob is away: lunch"), b"INFO bob is away: lunch\r\n"),
    (
        ev.RoomChanged("#a", "alice", "key", "s3cret", "alice set a key on #a."),
        b"INFO alice set a key on #a.\r\n",
    ),
    (
        ev.Roster("#a", (ev.Standing("alice", op=True), ev.Standing("bob")), 2),
        b"WHO #a alice bob\r\n",
    ),
    (
        ev.RoomList((ev.RoomInfo("#a", 2, "hi"),), 1),
        b"ROOM #a 2 open hi\r\n",
    ),
    (ev.Online((ev.Standing("bob"),)), b"INFO Online: bob\r\n"),
    (ev.Online(()), b"INFO Online: nobody\r\n"),
    (ev.ModesAre("#a", "k", False), b"INFO #a has a key; everyone may speak.\r\n"),
    (ev.LoggedIn("bob"), b"INFO You are logged in as bob.\r\n"),
]


def test_tables_cover_every_server_event_type() -> None:
    shown_as = {type(event) for event, _ in SHOWN_AS_TABLE}
    assert set(typing.get_args(ev.ServerEvent)) == set(KINDS) | shown_as
    assert {type(event) for event, _ in ENCODE_TABLE} == set(KINDS)


@pytest.mark.parametrize(("event", "line"), SHOWN_AS_TABLE)
def test_encode_events_shown_as_other_kinds(event: ev.ServerEvent, line: bytes) -> None:
    assert encode_event(event) == line


def client_decode(data: bytes) -> ev.ServerEvent:
    """Frame and decode server bytes as a client does."""
    reader = LineReader(max_line_bytes=MAX_SERVER_LINE_BYTES)
    events = feed_chunks(reader, [data])
    assert len(events) == 1
    assert isinstance(events[0], Line)
    return decode_event(events[0].text)


@pytest.mark.parametrize(("event", "line"), ENCODE_TABLE)
def test_encode_event(event: ev.ServerEvent, line: bytes) -> None:
    assert encode_event(event) == line


@pytest.mark.parametrize(("event", "line"), ENCODE_TABLE)
def test_decode_event(event: ev.ServerEvent, line: bytes) -> None:
    assert decode_event(line.removesuffix(LINE_END).decode()) == event
    assert client_decode(line) == event


def test_timestamps_are_utc_whatever_the_local_zone() -> None:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    try:
        assert format_timestamp(TS) == TS_TEXT
        assert parse_timestamp(TS_TEXT) == TS
        assert encode_event(MSG).startswith(f"MSG {TS_TEXT} ".encode())
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_timestamps_are_whole_seconds() -> None:
    assert format_timestamp(TS + 0.999) == TS_TEXT
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"


# -- round trips over arbitrary content -------------------------------------


def _is_valid_name(text: str) -> bool:
    try:
        return validate_name(text) == text
    except InvalidName:
        return False


names = st.one_of(
    st.sampled_from(["bob", "Åsa", "日本語", "Дмитрий", "علي", "हिन्दी", "a_b-c.d"]),
    st.text(
        st.characters(categories=["Lu", "Ll", "Lo", "Nd", "Mn"]),
        min_size=1,
        max_size=24,
    ).filter(_is_valid_name),
)
#: What the server puts in chat text: sanitised, so no line breaks.
texts = st.text(max_size=300).map(sanitize_text)
rooms = st.one_of(st.just(ev.LOBBY), st.from_regex(r"#[a-z0-9-]{1,20}", fullmatch=True))
codes = st.from_regex(r"[a-z][a-z-]{0,20}", fullmatch=True)
timestamps = st.integers(0, 2**33).map(float)
hows = st.sampled_from(["quit", "disconnected"])
every_how = st.sampled_from(["quit", "disconnected", "parted"])

replayable = st.one_of(
    st.builds(ev.Message, timestamps, rooms, names, texts),
    st.builds(ev.Action, timestamps, rooms, names, texts),
    st.builds(ev.Joined, timestamps, rooms, names),
    st.builds(ev.Left, timestamps, rooms, names, every_how, texts),
    st.builds(ev.Kicked, timestamps, rooms, names, names, texts),
    st.builds(ev.Renamed, timestamps, rooms, names, names),
    st.builds(ev.TopicIs, timestamps, rooms, names, texts),
    st.builds(ev.MoreLine, timestamps, rooms, names, texts),
)
server_events = st.one_of(
    replayable,
    st.builds(
        ev.Hello,
        st.from_regex(r"[a-z0-9/.-]{1,20}", fullmatch=True),
        st.from_regex(r"[a-z0-9/.-]{1,20}", fullmatch=True),
        st.integers(1, 10**6),
    ),
    st.builds(ev.Banner, texts),
    st.builds(ev.Info, texts),
    st.builds(ev.NamePrompt, texts),
    st.builds(ev.Welcome, names, texts),
    st.builds(ev.Private, timestamps, names, names, texts),
    st.builds(ev.WhoList, rooms, st.lists(names, max_size=10).map(tuple)),
    st.builds(
        ev.JoinedMany,
        timestamps,
        rooms,
        st.lists(names, min_size=2, max_size=50).map(tuple),
    ),
    st.builds(
        ev.LeftMany,
        timestamps,
        rooms,
        st.lists(names, min_size=2, max_size=50).map(tuple),
        hows,
        texts,
    ),
    st.builds(ev.RoomInfo, rooms, st.integers(0, 10**6), texts, st.booleans()),
    st.builds(ev.PasswordPrompt, st.one_of(names, st.just("*")), texts),
    st.builds(ev.Switched, rooms),
    st.builds(ev.HelpLine, texts),
    st.builds(ev.MotdLine, texts),
    st.builds(ev.Error, codes, texts),
    st.builds(ev.Goodbye, codes, texts),
    st.builds(ev.Replayed, replayable),
)


@given(server_events)
def test_every_server_event_round_trips(event: ev.ServerEvent) -> None:
    """The free-text invariant of the wire format: whatever its free text
    (reasons, away texts, topics, the MOTD, kick and ban reasons), a line
    decodes to the very event it encodes, so no text can change its kind or
    pass for a fixed field. Encoding is one-to-one."""
    line = encode_event(event)
    assert line.endswith(LINE_END)
    assert b"\n" not in line[:-2]
    assert b"\r" not in line[:-2]
    assert len(line) <= MAX_SERVER_LINE_BYTES
    assert line.split(b" ", 1)[0].decode() == KINDS[type(event)]
    assert decode_event(line[:-2].decode("utf-8")) == event
    assert client_decode(line) == event


def test_one_name_joined_is_a_plain_join_line() -> None:
    assert encode_event(ev.JoinedMany(TS, "#lobby", ("Åsa",))) == encode_event(JOIN)


@given(st.lists(names, min_size=2, max_size=400), st.integers(120, 2000))
def test_joins_too_many_for_a_line_come_as_several(
    joiners: list[str], limit: int
) -> None:
    data = encode_event(ev.JoinedMany(TS, "#dev", tuple(joiners)), limit=limit)
    lines = data.split(LINE_END)[:-1]
    assert all(len(line) + len(LINE_END) <= limit for line in lines)
    decoded = [decode_event(line.decode()) for line in lines]
    heard: list[str] = []
    for event in decoded:
        if isinstance(event, ev.JoinedMany):
            heard.extend(event.names)
        else:
            assert isinstance(event, ev.Joined)
            heard.append(event.name)
        assert event.room == "#dev"
        assert event.ts == TS
    assert heard == joiners


def test_one_name_left_is_a_plain_leave_line() -> None:
    one = ev.LeftMany(TS, "#lobby", ("bob",), "quit", "")
    assert encode_event(one) == encode_event(QUIT)


@given(
    st.lists(names, min_size=2, max_size=300),
    hows,
    st.text(max_size=3000).map(sanitize_text),
    st.integers(300, 3000),
)
def test_leaves_too_many_for_a_line_come_as_several(
    leavers: list[str], how: ev.LeaveHow, reason: str, limit: int
) -> None:
    data = encode_event(
        ev.LeftMany(TS, "#dev", tuple(leavers), how, reason), limit=limit
    )
    lines = data.split(LINE_END)[:-1]
    assert all(len(line) + len(LINE_END) <= limit for line in lines)
    heard: list[str] = []
    for line in lines:
        event = decode_event(line.decode())
        if isinstance(event, ev.LeftMany):
            heard.extend(event.names)
        else:
            assert isinstance(event, ev.Left)
            heard.append(event.name)
        assert (event.room, event.how, event.ts) == ("#dev", how, TS)
        # The reason, or as much of it as leaves room for a name.
        assert reason.startswith(event.reason)
        assert len(event.reason.encode()) >= min(len(reason.encode()), limit // 2)
    assert heard == leavers


def test_a_leaves_line_must_name_someone_who_quit_or_was_cut_off() -> None:
    for line in (
        f"LEAVES {TS_TEXT} #dev quit",
        f"LEAVES {TS_TEXT} #dev parted alice bob",
        f"LEAVES {TS_TEXT} #dev quit alice bob (no end",
        f"LEAVES {TS_TEXT} #dev gone alice bob",
    ):
        with pytest.raises(ServerProtocolError):
            decode_event(line)


def test_a_joins_line_without_names_is_malformed() -> None:
    with pytest.raises(ServerProtocolError):
        decode_event(f"JOINS {TS_TEXT} #dev")
    with pytest.raises(ServerProtocolError):
        decode_event(f"JOINS {TS_TEXT} #dev alice  bob")


# -- no spoofing --------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        ev.Message(TS, "#lobby", "mallory", f"LEAVE {TS_TEXT} #lobby alice quit"),
        ev.Message(TS, "#lobby", "mallory", "<bob> I owe mallory 100 euros"),
        ev.Message(TS, "#lobby", "mallory", "> <bob> hi"),
        ev.Message(TS, "#lobby", "mallory", "BYE quit Bye!"),
        ev.Action(TS, "#lobby", "mallory", "<bob> hi"),
        ev.Private(TS, "mallory", "alice", "<bob> psst"),
        ev.Private(TS, "mallory", "alice", "@alice <bob> psst"),
        ev.Replayed(ev.Message(TS, "#lobby", "mallory", "<bob> from history")),
    ],
)
def test_chat_text_cannot_impersonate(event: ev.ServerEvent) -> None:
    assert client_decode(encode_event(event)) == event


def test_line_breaks_in_sanitised_text_cannot_forge_lines() -> None:
    text = sanitize_text(f"hi\r\nLEAVE {TS_TEXT} #lobby alice quit\nBYE x y\u2028z")
    event = ev.Message(TS, "#lobby", "mallory", text)
    assert client_decode(encode_event(event)) == event


# -- overlong text ------------------------------------------------------------

OVERLONG: list[Callable[[str], ev.ServerEvent]] = [
    lambda text: ev.Message(TS, "#lobby", "bob", text),
    lambda text: ev.Action(TS, "#lobby", "bob", text),
    lambda text: ev.Private(TS, "bob", "alice", text),
    lambda text: ev.Left(TS, "#lobby", "bob", "quit", text),
    lambda text: ev.Banner(text),
    lambda text: ev.Info(text),
    lambda text: ev.NamePrompt(text),
    lambda text: ev.Welcome("bob", text),
    lambda text: ev.HelpLine(text),
    lambda text: ev.MotdLine(text),
    lambda text: ev.Error("code", text),
    lambda text: ev.Goodbye("code", text),
    lambda text: ev.Replayed(ev.Message(TS, "#lobby", "bob", text)),
    lambda text: ev.Replayed(ev.Action(TS, "#lobby", "bob", text)),
]


def _text_of(event: ev.ServerEvent) -> str:
    if isinstance(event, ev.Replayed):
        return _text_of(event.event)
    if isinstance(event, ev.Left):
        return event.reason
    text = getattr(event, "text", None)
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("make", OVERLONG)
@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_overlong_text_is_cut_to_fit(
    make: Callable[[str], ev.ServerEvent], char: str
) -> None:
    text = char * MAX_SERVER_LINE_BYTES
    line = encode_event(make(text))
    assert len(line) <= MAX_SERVER_LINE_BYTES
    # Cut at a character boundary, no more than one character short.
    assert len(line) > MAX_SERVER_LINE_BYTES - len(char.encode())
    line.decode("utf-8")  # strict: raises if a character was cut in half
    decoded = client_decode(line)
    cut = _text_of(decoded)
    assert 0 < len(cut) < len(text)
    assert text.startswith(cut)
    assert decoded == make(cut)


def test_overlong_replayed_leave_reason_still_decodes() -> None:
    event = ev.Replayed(ev.Left(TS, "#lobby", "bob", "quit", "x" * 9000))
    line = encode_event(event)
    assert len(line) <= MAX_SERVER_LINE_BYTES
    assert isinstance(client_decode(line), ev.Replayed)


# -- malformed server lines ---------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        " ",
        "HELLO",
        "WHAT is this",
        "MSG",
        f"MSG {TS_TEXT} #lobby",
        f"MSG {TS_TEXT} #lobby bob hi",
        f"MSG {TS_TEXT} #lobby <bob hi",
        "MSG yesterday #lobby <bob> hi",
        "MSG 2026-13-23T23:10:28Z #lobby <bob> hi",
        "MSG 2026-11-23 23:10:28 #lobby <bob> hi",
        f"ACTION {TS_TEXT} #lobby",
        f"PRIV {TS_TEXT} alice <bob> hi",
        f"PRIV {TS_TEXT} @alice bob hi",
        f"JOIN {TS_TEXT} #lobby",
        f"JOIN {TS_TEXT} #lobby bob extra",
        "JOIN soon #lobby bob",
        f"LEAVE {TS_TEXT} #lobby bob",
        f"LEAVE {TS_TEXT} #lobby bob vanished",
        f"LEAVE {TS_TEXT} #lobby bob quit (unclosed",
        f"LEAVE {TS_TEXT} #lobby bob quit reason",
        f"NICK {TS_TEXT} #lobby bob robert",
        f"NICK {TS_TEXT} #lobby bob => robert",
        f"NICK {TS_TEXT} #lobby bob -> robert extra",
        "HELLO trio-chat/1",
        "HELLO trio-chat/1 server max-line=lots",
        "HELLO trio-chat/1 server max-line",
        "HIST",
        "HIST INFO hello",
        "HIST WELCOME bob hi",
        f"HIST HIST MSG {TS_TEXT} #lobby <bob> hi",
        "HIST garbage",
    ],
)
def test_malformed_server_line_is_the_servers_fault(line: str) -> None:
    with pytest.raises(ServerProtocolError):
        decode_event(line)


def test_deeply_nested_hist_is_a_protocol_error() -> None:
    line = "HIST " * 600 + "INFO x"
    assert len(line.encode()) < MAX_SERVER_LINE_BYTES
    with pytest.raises(ServerProtocolError):
        decode_event(line)


@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            "{} {}".format,
            st.sampled_from(sorted(KINDS.values())),
            st.text(max_size=200),
        ),
    )
)
def test_decoding_garbage_returns_an_event_or_raises_protocol_error(
    line: str,
) -> None:
    try:
        event = decode_event(line)
    except ServerProtocolError:
        return
    assert type(event) in KINDS


# --------------------------------------------------------------------------
# Sans-IO: the module loads no I/O


def test_protocol_module_imports_no_io() -> None:
    code = (
        "import json, sys\n"
        "import trio_chat.protocol\n"
        "assert 'trio_chat.protocol' in sys.modules\n"
        "print(json.dumps(sorted(\n"
        "    m for m in ('trio', 'ssl', 'socket', 'asyncio') if m in sys.modules\n"
        ")))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), ("7D", 604800.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "5", "-5m", "1.5h", "10 m", "10y", "10min", "1h30m", "9999999s", "٣m"],
)
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


MUTE_USAGE = (
    "Usage: /mute NAME [DURATION] (DURATION: a number and s, m, h or d:"
    " 90s, 10m, 2h, 7d)"
)


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/mute bob", ev.Mute("bob", math.inf)),
        ("/mute bob 90s", ev.Mute("bob", 90.0, "90s")),
        ("/mute bob 010M", ev.Mute("bob", 600.0, "10m")),
        ("/mute bob 5", ev.BadCommand("usage", MUTE_USAGE)),  # minutes? say so
        ("/mute bob 10min", ev.BadCommand("usage", MUTE_USAGE)),
        ("/mute bob 0s", ev.BadCommand("usage", MUTE_USAGE)),  # not an unmute
        ("/ban bob 150s spam", ev.Ban("bob", 150.0, "spam", "150s")),
        ("/ban bob spam 10m", ev.Ban("bob", math.inf, "spam 10m")),
    ],
)
def test_one_duration_parser_for_mute_and_ban(line: str, parsed: ev.Request) -> None:
    assert parse_request(line) == parsed
