"""Multi-line messages: `/paste N` framing, `MSG` + `MORE` lines, and the server.

Sans-IO first (the collector, the costs, the wire lines, fed whole and byte
by byte), then the server in-process over memory streams: a paste reaches
the others as one block, never interleaved, is refused with an `ERR` when it
breaks a limit (its lines then discarded, not relayed), and is kept and
replayed from history as one entry.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
import trio.testing
from chatpeer import Peer, open_peers

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.flood import FloodControl
from trio_chat.limits import MAX_SERVER_LINE_BYTES, Limits
from trio_chat.pacing import TokenBucket
from trio_chat.paste import (
    Paste,
    PasteCollector,
    PasteError,
    encode_paste,
    paste_cost,
    paste_request,
    split_paste,
    trim_blank_lines,
)
from trio_chat.protocol import (
    NEED_DATA,
    Line,
    LineReader,
    LocalProtocolError,
    ServerProtocolError,
    decode_event,
    encode_event,
)
from trio_chat.server import ChatServer
from trio_chat.store import AsyncStore

NOW = 1_795_475_428.0
STAMP = "2026-11-23T23:10:28Z"
HEAD = f"{STAMP} #lobby <bob>"


# --------------------------------------------------------------------------
# The collector (sans-IO)


def collector(**settings: float) -> PasteCollector:
    limits: dict[str, float] = {"max_lines": 5, "max_bytes": 20, "timeout": 10.0}
    return PasteCollector(**(limits | settings))  # type: ignore[arg-type]


def feed(paste: PasteCollector, *lines: str, now: float = 0.0) -> list[object]:
    return [paste.line(line, now) for line in lines]


def test_ordinary_lines_pass_through() -> None:
    paste = collector()
    assert feed(paste, "hello", "/me waves", "", "/pastey 2") == [
        "hello",
        "/me waves",
        "",
        "/pastey 2",
    ]
    assert not paste.collecting
    assert paste.deadline == math.inf


def test_a_paste_collects_exactly_n_lines_verbatim() -> None:
    paste = collector()
    assert feed(paste, "/paste 3", "/quit", "  two ", "") == [
        None,
        None,
        None,
        Paste(("/quit", "  two ", "")),
    ]
    assert feed(paste, "after") == ["after"]


@pytest.mark.parametrize("line", ["/PASTE 2", "/Paste   2 ", "/paste\t2"])
def test_the_command_word_ignores_case_and_spacing(line: str) -> None:
    paste = collector()
    assert feed(paste, line, "a", "b") == [None, None, Paste(("a", "b"))]


def test_one_line_is_a_paste_too() -> None:
    # Refusing it would turn the line after it into a command.
    paste = collector()
    assert feed(paste, "/paste 1", "/nick evil") == [None, Paste(("/nick evil",))]


@pytest.mark.parametrize("count", ["", "0", "-1", "x", "2 3", "٣", "1234567"])
def test_a_bad_count_is_refused_and_nothing_is_collected(count: str) -> None:
    paste = collector()
    result = paste.line(f"/paste {count}".strip(), 0.0)
    assert isinstance(result, PasteError)
    assert result.code == "bad-paste"
    assert "N from 1 to 5" in result.text
    assert not paste.collecting
    assert feed(paste, "next") == ["next"]


def test_too_many_lines_are_refused_and_consumed() -> None:
    paste = collector()
    error = paste.line("/paste 7", 0.0)
    assert error == PasteError(
        "paste-too-long",
        "A paste may have at most 5 lines; its 7 lines were not sent.",
    )
    assert feed(paste, *(f"x{n}" for n in range(7))) == [None] * 7
    assert feed(paste, "next") == ["next"]


def test_too_many_bytes_are_refused_once_and_the_rest_consumed() -> None:
    paste = collector()
    results = feed(paste, "/paste 4", "a" * 10, "b" * 11, "c", "d")
    assert results[:2] == [None, None]
    assert results[2] == PasteError(
        "paste-too-long",
        "A paste may hold at most 20 bytes of text; it was not sent.",
    )
    assert results[3:] == [None, None]
    assert feed(paste, "/paste 2", "e", "f") == [None, None, Paste(("e", "f"))]


def test_too_many_bytes_on_the_last_line_leaves_a_clean_collector() -> None:
    paste = collector()
    results = feed(paste, "/paste 2", "a" * 10, "é" * 6)  # 12 bytes, 6 characters
    assert isinstance(results[2], PasteError)
    assert not paste.collecting
    assert feed(paste, "/paste 2", "e", "f")[-1] == Paste(("e", "f"))


def test_a_line_over_the_line_limit_spoils_the_paste() -> None:
    paste = collector()
    assert paste.line("/paste 3", 0.0) is None
    assert paste.line("ok", 0.0) is None
    assert paste.line_too_long(4096) == PasteError(
        "paste-too-long",
        "A line of the paste is over 4096 bytes; the paste was not sent.",
    )
    assert paste.line("last", 0.0) is None
    assert feed(paste, "next") == ["next"]


def test_a_long_line_outside_a_paste_is_no_paste_business() -> None:
    with pytest.raises(LocalProtocolError):
        collector().line_too_long(4096)


def test_a_second_long_line_says_nothing_more() -> None:
    paste = collector()
    paste.line("/paste 3", 0.0)
    assert paste.line_too_long(100) is not None
    assert paste.line_too_long(100) is None
    assert paste.collecting
    assert paste.line_too_long(100) is None
    assert not paste.collecting


def test_a_paste_times_out_and_later_lines_are_lines() -> None:
    paste = collector(timeout=10.0)
    assert feed(paste, "/paste 3", "one", now=5.0) == [None, None]
    assert paste.deadline == 15.0
    assert paste.expire(14.9) is None
    assert paste.expire(15.0) == PasteError(
        "paste-timeout",
        "Only 1 of the paste's 3 lines arrived within 10 seconds; it was not sent.",
    )
    assert paste.expire(16.0) is None
    assert paste.deadline == math.inf
    assert feed(paste, "two", now=16.0) == ["two"]


def test_a_refused_paste_times_out_silently() -> None:
    paste = collector(timeout=10.0)
    assert isinstance(paste.line("/paste 9", 0.0), PasteError)
    assert paste.collecting
    assert paste.expire(10.0) is None
    assert not paste.collecting


def test_no_timeout_means_none() -> None:
    paste = collector(timeout=0.0)
    paste.line("/paste 2", 0.0)
    assert paste.deadline == math.inf
    assert paste.expire(1e9) is None
    assert paste.line("a", 1e9) is None


@pytest.mark.parametrize("settings", [{"max_lines": 0}, {"max_bytes": 0}])
def test_pastes_can_be_off(settings: dict[str, float]) -> None:
    paste = collector(**settings)
    assert paste.line("/paste 2", 0.0) == PasteError(
        "bad-paste", "Multi-line messages are off on this server."
    )
    assert feed(paste, "a", "b") == ["a", "b"]


def test_a_paste_says_its_sanitised_lines_without_blank_ends() -> None:
    raw = Paste(("", "  ", "\x1b[31mred\x1b[0m", "", "tab\there", " ", ""))
    assert paste_request(raw) == ev.Say("red\n\ntab here")
    assert paste_request(Paste(("", " ", "\x1b[0m"))) is None
    assert paste_request(Paste(("", "/quit"))) == ev.Say("/quit")


@pytest.mark.parametrize(
    ("lines", "cost"), [(1, 1), (2, 1), (9, 1), (10, 2), (19, 2), (50, 6)]
)
def test_a_paste_costs_one_token_and_one_per_ten_lines(lines: int, cost: int) -> None:
    assert paste_cost(lines) == cost


def test_split_paste_fits_lines_and_bytes() -> None:
    lines = ["aaaa", "bbbb", "cccc", "dddd", "eeee"]
    assert split_paste(lines, max_lines=2, max_bytes=100) == (lines[:2], lines[2:])
    assert split_paste(lines, max_lines=50, max_bytes=10) == (lines[:2], lines[2:])
    assert split_paste(lines, max_lines=50, max_bytes=100) == (lines, [])
    # One line longer than the byte limit still goes, alone.
    assert split_paste(["x" * 30, "y"], max_lines=5, max_bytes=10) == (
        ["x" * 30],
        ["y"],
    )


def test_trim_blank_lines() -> None:
    assert trim_blank_lines(["", " ", "a", "", "b", "  "]) == ["a", "", "b"]
    assert trim_blank_lines([" ", ""]) == []


def test_encode_paste_frames_the_lines() -> None:
    assert encode_paste(["def f():", "    pass"]) == (
        b"/paste 2\r\ndef f():\r\n    pass\r\n"
    )


# --------------------------------------------------------------------------
# Costs in the token bucket and flood control (sans-IO)


def test_a_costly_line_waits_for_its_tokens_and_may_go_into_debt() -> None:
    bucket = TokenBucket(5, 2.0)
    bucket.take(0.0, 3)
    assert bucket.ready_at(3) == pytest.approx(0.5)  # 2 left, 1 more in 0.5 s
    with pytest.raises(ValueError, match="no token left"):
        bucket.take(0.4, 3)
    bucket.take(0.5, 3)
    # More than the burst: only from a full bucket, and it leaves a debt.
    assert bucket.ready_at(6) == pytest.approx(3.0)
    bucket.take(3.0, 6)
    assert bucket.tokens(3.0) == pytest.approx(-1.0)
    assert bucket.ready_at() == pytest.approx(4.0)


def test_flood_control_counts_an_item_by_its_cost() -> None:
    control: FloodControl[str] = FloodControl(
        burst=5, rate=2.0, max_backlog=20, max_delay=10.0, now=0.0
    )
    control.offer("paste of 50 lines", 0.0, cost=6)
    control.offer("line", 0.0)
    assert control.ready(0.0) == ["paste of 50 lines"]
    assert control.next_time(0.0) == pytest.approx(1.0)
    assert control.ready(1.0) == ["line"]


# --------------------------------------------------------------------------
# The wire: MSG and MORE lines (sans-IO)

PASTED = ev.Message(NOW, "#lobby", "bob", "def f(x):\n    return x\n\nf(1)")
PASTED_LINES = (
    f"MSG {HEAD} def f(x):\r\n"
    f"MORE {HEAD}     return x\r\n"
    f"MORE {HEAD} \r\n"
    f"MORE {HEAD} f(1)\r\n"
).encode()
PASTED_EVENTS: list[ev.Message | ev.MoreLine] = [
    ev.Message(NOW, "#lobby", "bob", "def f(x):"),
    ev.MoreLine(NOW, "#lobby", "bob", "    return x"),
    ev.MoreLine(NOW, "#lobby", "bob", ""),
    ev.MoreLine(NOW, "#lobby", "bob", "f(1)"),
]


def decode_all(chunks: list[bytes]) -> list[ev.ServerEvent]:
    """Frame server bytes fed in `chunks` and decode every line, as a client."""
    reader = LineReader(max_line_bytes=MAX_SERVER_LINE_BYTES)
    events: list[ev.ServerEvent] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            assert isinstance(event, Line)
            events.append(decode_event(event.text))
    return events


def test_a_multi_line_message_is_a_msg_line_and_more_lines() -> None:
    assert encode_event(PASTED) == PASTED_LINES


@pytest.mark.parametrize("how", ["whole", "byte by byte", "with trailing data"])
def test_more_lines_decode_fed_any_way(how: str) -> None:
    data = PASTED_LINES
    if how == "whole":
        chunks = [data]
    elif how == "byte by byte":
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:
        chunks = [data + b"INFO after\r\nINFO part"]
    events = decode_all(chunks)
    if how == "with trailing data":
        assert events[-1] == ev.Info("after")
        events = events[:-1]
    assert events == PASTED_EVENTS


def test_history_replays_a_paste_as_hist_msg_and_hist_more() -> None:
    data = encode_event(ev.Replayed(PASTED))
    assert data == b"".join(
        b"HIST " + line + b"\r\n" for line in PASTED_LINES.split(b"\r\n")[:-1]
    )
    assert decode_all([data]) == [ev.Replayed(event) for event in PASTED_EVENTS]


def test_each_line_of_a_paste_is_cut_to_fit_on_its_own() -> None:
    long = ev.Message(NOW, "#lobby", "bob", "a" * 9000 + "\n" + "b" * 9000 + "\nc")
    lines = encode_event(long).split(b"\r\n")[:-1]
    assert [line[:4] for line in lines] == [b"MSG ", b"MORE", b"MORE"]
    assert all(len(line) + 2 <= MAX_SERVER_LINE_BYTES for line in lines)
    assert lines[-1].endswith(b"<bob> c")


@pytest.mark.parametrize(
    "line",
    [
        f"MORE {STAMP} #lobby bob text",  # no <sender>
        "MORE yesterday #lobby <bob> text",
        f"MORE {STAMP}",
        f"HIST MORE {STAMP} #lobby bob text",
    ],
)
def test_malformed_more_lines_are_the_servers_fault(line: str) -> None:
    with pytest.raises(ServerProtocolError):
        decode_event(line)


def test_hello_announces_the_paste_limits_and_old_servers_none() -> None:
    hello = decode_event(
        "HELLO trio-chat/1 s max-line=4096 flood-burst=5 flood-rate=2"
        " paste-lines=50 paste-bytes=16384"
    )
    assert isinstance(hello, ev.Hello)
    assert (hello.paste_lines, hello.paste_bytes) == (50, 16384)
    old = decode_event("HELLO trio-chat/1 s max-line=4096")
    assert isinstance(old, ev.Hello)
    assert (old.paste_lines, old.paste_bytes) == (0, 0)
    off = ev.Hello("trio-chat/1", "s", 4096, 5, 2.0, 0, 16384)
    assert b"paste" not in encode_event(off)


# --------------------------------------------------------------------------
# Limits


def test_a_paste_must_fit_a_readers_outbox() -> None:
    with pytest.raises(ValueError, match="--max-paste-bytes"):
        Limits(outbox_max_bytes=16 * 1024)
    Limits(outbox_max_bytes=16 * 1024, max_paste_lines=0)
    Limits(outbox_max_bytes=16 * 1024, max_paste_bytes=2048, max_paste_lines=10)
    assert Limits().pastes
    assert not Limits(max_paste_bytes=0).pastes
    assert "--paste-timeout" in Limits(paste_timeout=0).switched_off()
    assert "--max-paste-lines" not in Limits(max_paste_lines=0).switched_off()


# --------------------------------------------------------------------------
# The server


def server_with(**limits: object) -> ChatServer:
    return ChatServer(Chat(clock=lambda: NOW, limits=Limits(**limits)))  # type: ignore[arg-type]


async def send_paste(peer: Peer, *lines: str) -> None:
    """Send `lines` as one paste, in one write."""
    await peer.send_bytes(encode_paste(lines))


async def settle(peer: Peer) -> None:
    """Wait until the server has handled everything `peer` sent before."""
    await peer.send("/away")
    await peer.expect("INFO")
    await peer.send("/back")
    await peer.expect("INFO")


async def history_heading(peer: Peer) -> str:
    """The `INFO <n> lines of <room>:` line that starts a `/history` reply."""
    while not (line := await peer.expect("INFO")).endswith(" lines of #lobby:"):
        pass
    return line


def chat_lines(peer: Peer) -> list[str]:
    return [line for line in peer.lines if line.startswith(("MSG ", "MORE "))]


async def test_a_paste_reaches_the_others_as_one_block_not_the_sender(
    nursery: trio.Nursery,
) -> None:
    alice, bob, carol = await open_peers(
        nursery, server_with(), "alice", "bob", "carol", drain_joins=True
    )
    await send_paste(bob, "def f(x):", "    return x", "", "f(1)")
    for peer in (alice, carol):
        assert await peer.expect("MSG") == f"MSG {HEAD} def f(x):"
        assert [await peer.line() for _ in range(3)] == [
            f"MORE {HEAD}     return x",
            f"MORE {HEAD} ",
            f"MORE {HEAD} f(1)",
        ]
    await settle(bob)
    assert chat_lines(bob) == []  # the server does not echo: the client shows it


async def test_paste_lines_are_text_never_commands(nursery: trio.Nursery) -> None:
    alice, bob = await open_peers(
        nursery, server_with(), "alice", "bob", drain_joins=True
    )
    await send_paste(bob, "/quit", "/nick mallory", "\x1b[31mred\ttab")
    assert await alice.expect("MSG") == f"MSG {HEAD} /quit"
    assert await alice.line() == f"MORE {HEAD} /nick mallory"
    assert await alice.line() == f"MORE {HEAD} red tab"
    await bob.send("still here")
    assert await alice.expect("MSG") == f"MSG {HEAD} still here"


async def test_blank_ends_are_dropped_and_one_line_left_is_a_plain_line(
    nursery: trio.Nursery,
) -> None:
    alice, bob = await open_peers(
        nursery, server_with(), "alice", "bob", drain_joins=True
    )
    await send_paste(bob, "", "  ", "")  # nothing to say
    await send_paste(bob, "", "only this", " ")
    assert await alice.expect("MSG") == f"MSG {HEAD} only this"
    await settle(bob)
    await bob.send("next")
    assert await alice.expect("MSG") == f"MSG {HEAD} next"
    assert chat_lines(alice) == [f"MSG {HEAD} only this", f"MSG {HEAD} next"]


async def test_another_users_line_never_lands_inside_a_paste(
    nursery: trio.Nursery,
) -> None:
    alice, bob, carol = await open_peers(
        nursery, server_with(), "alice", "bob", "carol", drain_joins=True
    )
    await bob.send_bytes(b"/paste 3\r\nfirst\r\n")
    await trio.testing.wait_all_tasks_blocked()
    await carol.send("carol cuts in")
    assert await alice.expect("MSG") == f"MSG {STAMP} #lobby <carol> carol cuts in"
    await bob.send_bytes(b"second\r\nthird\r\n")
    assert await alice.expect("MSG") == f"MSG {HEAD} first"
    assert await alice.line() == f"MORE {HEAD} second"
    assert await alice.line() == f"MORE {HEAD} third"


async def test_pastes_from_several_people_at_once_stay_whole(
    nursery: trio.Nursery,
) -> None:
    names = ["p1", "p2", "p3", "p4"]
    peers = await open_peers(
        nursery, server_with(flood_rate=0), "watcher", *names, drain_joins=True
    )
    watcher, senders = peers[0], peers[1:]

    async def paste_a_lot(peer: Peer, name: str) -> None:
        for number in range(5):
            lines = [f"{name} paste {number} line {n}" for n in range(10)]
            # Byte by byte, so the pastes really arrive mixed up.
            for byte in encode_paste(lines):
                await peer.send_bytes(bytes([byte]))

    async with trio.open_nursery() as pasting:
        for peer, name in zip(senders, names, strict=True):
            pasting.start_soon(paste_a_lot, peer, name)
    blocks: list[list[str]] = []
    while len(blocks) < 20 or len(blocks[-1]) < 10:
        line = await watcher.line()
        assert line is not None
        if line.startswith("MSG "):
            blocks.append([line])
        else:
            assert line.startswith("MORE ")
            blocks[-1].append(line)
    for block in blocks:
        sender = block[0].split(" ")[3]
        assert all(line.split(" ")[3] == sender for line in block)
        first = block[0].split(" ", 4)[4]
        name, _, number = first.split(" ")[:3]
        assert [line.split(" ", 4)[4] for line in block] == [
            f"{name} paste {number} line {n}" for n in range(10)
        ]


async def test_bad_counts_and_long_pastes_are_refused_and_discarded(
    nursery: trio.Nursery,
) -> None:
    alice, bob = await open_peers(
        nursery, server_with(max_paste_bytes=100), "alice", "bob", drain_joins=True
    )
    for count in ("", "zero", "0"):
        await bob.send(f"/paste {count}")
        error = await bob.expect("ERR")
        assert error.startswith("ERR bad-paste Usage: /paste N")
    await bob.send("/paste 60")
    assert await bob.expect("ERR") == (
        "ERR paste-too-long A paste may have at most 50 lines;"
        " its 60 lines were not sent."
    )
    await bob.send_bytes(b"".join(f"x{n}\r\n".encode() for n in range(60)))
    await send_paste(bob, "a" * 60, "b" * 60, "c")
    assert await bob.expect("ERR") == (
        "ERR paste-too-long A paste may hold at most 100 bytes of text;"
        " it was not sent."
    )
    await bob.send("after")
    assert await alice.expect("MSG") == f"MSG {HEAD} after"
    assert chat_lines(alice) == [f"MSG {HEAD} after"]


async def test_a_line_over_the_limit_spoils_its_paste(nursery: trio.Nursery) -> None:
    alice, bob = await open_peers(
        nursery, server_with(max_line_bytes=100), "alice", "bob", drain_joins=True
    )
    await send_paste(bob, "ok", "y" * 200, "z")
    assert await bob.expect("ERR") == (
        "ERR paste-too-long A line of the paste is over 100 bytes;"
        " the paste was not sent."
    )
    await bob.send("after")
    assert await alice.expect("MSG") == f"MSG {HEAD} after"
    await settle(bob)
    assert not any(line.startswith("ERR line-too-long") for line in bob.lines)
    assert chat_lines(alice) == [f"MSG {HEAD} after"]


async def test_with_pastes_off_the_server_says_so_and_takes_lines(
    nursery: trio.Nursery,
) -> None:
    server = server_with(max_paste_lines=0)
    alice, bob = await open_peers(nursery, server, "alice", "bob", drain_joins=True)
    assert "paste" not in bob.lines[0]  # HELLO announces no pastes
    await send_paste(bob, "one", "two")
    assert await bob.expect("ERR") == (
        "ERR bad-paste Multi-line messages are off on this server."
    )
    assert await alice.expect("MSG") == f"MSG {HEAD} one"
    assert await alice.expect("MSG") == f"MSG {HEAD} two"


async def test_a_paste_goes_to_the_current_room_like_a_line(
    nursery: trio.Nursery,
) -> None:
    alice, bob = await open_peers(
        nursery, server_with(), "alice", "bob", drain_joins=True
    )
    await alice.send("/join #dev")
    await alice.expect("SWITCH")
    await bob.send("/join #dev")
    await bob.expect("SWITCH")
    await send_paste(bob, "in", "dev")
    assert await alice.expect("MSG") == f"MSG {STAMP} #dev <bob> in"
    assert await alice.line() == f"MORE {STAMP} #dev <bob> dev"
    await bob.send("/part #dev")
    await bob.send("/part #lobby")
    await bob.expect("LEAVE")
    await bob.expect("LEAVE")
    await send_paste(bob, "no", "room")
    assert await bob.expect("ERR") == (
        "ERR no-room You are in no room: /join a room first."
    )


async def test_a_paste_times_out_and_the_next_line_is_a_line(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    alice, bob = await open_peers(
        nursery, server_with(paste_timeout=5.0), "alice", "bob", drain_joins=True
    )
    start = trio.current_time()
    await bob.send_bytes(b"/paste 3\r\nfirst\r\n")
    assert await bob.expect("ERR") == (
        "ERR paste-timeout Only 1 of the paste's 3 lines arrived within 5 seconds;"
        " it was not sent."
    )
    assert trio.current_time() - start == pytest.approx(5.0, abs=0.01)
    await bob.send("second")
    assert await alice.expect("MSG") == f"MSG {HEAD} second"
    assert chat_lines(alice) == [f"MSG {HEAD} second"]


async def test_a_paste_costs_its_lines_gently_in_the_flood_limit(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    alice, bob = await open_peers(
        nursery, server_with(), "alice", "bob", drain_joins=True
    )
    start = trio.current_time()
    # 50 lines cost 6 tokens of the 5 (at 2 a second): the next line waits
    # until the debt is paid and a token is back, 1 second.
    await bob.send_bytes(encode_paste([f"l{n}" for n in range(50)]) + b"next\r\n")
    await alice.expect("MSG")
    assert trio.current_time() - start < 0.01
    assert await alice.expect("MSG") == f"MSG {HEAD} next"
    assert trio.current_time() - start == pytest.approx(1.0, abs=0.01)
    assert sum(line.startswith("MORE") for line in alice.lines) == 49


async def test_lines_sent_separately_still_come_separately(
    nursery: trio.Nursery,
) -> None:
    alice, bob = await open_peers(
        nursery, server_with(), "alice", "bob", drain_joins=True
    )
    await bob.send_bytes(b"line 1\r\nline 2\nline 3\r\n")  # a paste into nc
    for number in (1, 2, 3):
        assert await alice.expect("MSG") == f"MSG {HEAD} line {number}"
    await settle(bob)
    assert not any(line.startswith("MORE") for line in alice.lines)


async def test_history_keeps_a_paste_as_one_entry(nursery: trio.Nursery) -> None:
    server = server_with()
    alice, bob = await open_peers(nursery, server, "alice", "bob", drain_joins=True)
    await send_paste(bob, "one", "two", "three")
    await bob.send("plain")
    assert await alice.expect("MSG") == f"MSG {HEAD} one"
    assert await alice.expect("MSG") == f"MSG {HEAD} plain"
    (carol,) = await open_peers(nursery, server, "carol")
    await carol.send("/history 3")  # the paste and the line (joins are news)
    assert await history_heading(carol) == "INFO 2 lines of #lobby:"
    assert [await carol.line() for _ in range(4)] == [
        f"HIST MSG {HEAD} one",
        f"HIST MORE {HEAD} two",
        f"HIST MORE {HEAD} three",
        f"HIST MSG {HEAD} plain",
    ]
    replayed = [line for line in carol.lines if line.startswith("HIST M")]
    assert replayed[:4] == [
        f"HIST MSG {HEAD} one",
        f"HIST MORE {HEAD} two",
        f"HIST MORE {HEAD} three",
        f"HIST MSG {HEAD} plain",
    ]


async def test_history_in_the_store_keeps_a_paste_as_one_row(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with AsyncStore.open(str(tmp_path / "paste.db")) as store:
        server = ChatServer(Chat(clock=lambda: NOW), store=store)
        alice, bob = await open_peers(nursery, server, "alice", "bob", drain_joins=True)
        await send_paste(bob, "one", "", "three")
        assert await alice.expect("MSG") == f"MSG {HEAD} one"
        rows = await store.history("#lobby", 10)
        messages = [event for _, event in rows if isinstance(event, ev.Message)]
        assert messages == [ev.Message(NOW, "#lobby", "bob", "one\n\nthree")]
        await alice.send("/history 1")
        assert await alice.expect("INFO") == "INFO 1 line of #lobby:"
        assert [await alice.line() for _ in range(3)] == [
            f"HIST MSG {HEAD} one",
            f"HIST MORE {HEAD} ",
            f"HIST MORE {HEAD} three",
        ]
        for peer in (alice, bob):
            await peer.aclose()
        await trio.testing.wait_all_tasks_blocked()


async def test_joining_after_big_pastes_never_overflows_the_newcomer(
    nursery: trio.Nursery,
) -> None:
    server = server_with(flood_rate=0)
    alice, bob = await open_peers(nursery, server, "alice", "bob", drain_joins=True)
    for number in range(6):  # 6 x 16 KB of history: more than an outbox holds
        await send_paste(bob, *(f"{number}" * 4000 for _ in range(4)))
        assert (await alice.expect("MSG")).endswith("<bob> " + f"{number}" * 4000)
    (carol,) = await open_peers(nursery, server, "carol")
    await carol.send("/history 20")
    await history_heading(carol)
    await carol.send("still here")
    assert await alice.expect("MSG") == f"MSG {STAMP} #lobby <carol> still here"
    replayed = [line for line in carol.lines if line.startswith("HIST MSG")]
    assert replayed, "the newest lines are replayed"
    assert replayed[-1].endswith("<bob> " + "5" * 4000)
    assert not any(line.startswith("BYE") for line in carol.lines)
