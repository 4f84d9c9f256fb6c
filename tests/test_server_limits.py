"""Server protections in-process: flood control, name attempts, idle, bugs."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing
from chatpeer import Peer, open_peers

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.limits import Limits
from trio_chat.server import ChatServer

NOW = 1_795_475_428.0
STAMP = "2026-11-23T23:10:28Z"


def server_with(**limits: float) -> ChatServer:
    return ChatServer(Chat(clock=lambda: NOW, limits=Limits(**limits)))  # type: ignore[arg-type]


async def test_lines_over_the_burst_are_delayed_at_the_rate_not_dropped(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(flood_burst=5, flood_rate=2.0, flood_max_backlog=20)
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    start = trio.current_time()
    await alice.send_bytes(b"".join(f"line {n}\r\n".encode() for n in range(20)))
    arrivals = []
    for number in range(20):
        assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> line {number}"
        arrivals.append(trio.current_time() - start)
    assert all(at < 0.01 for at in arrivals[:5])  # the burst goes at once
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[4:])]
    assert all(gap == pytest.approx(0.5, abs=0.01) for gap in gaps)
    assert not any(line.startswith("LEAVE") for line in bob.lines)


async def test_a_flooder_is_dropped_and_others_do_not_wait(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(flood_burst=5, flood_rate=2.0, flood_max_backlog=20)
    alice, bob, carol = await open_peers(nursery, server, "alice", "bob", "carol")
    await alice.expect("JOIN")
    await alice.expect("JOIN")
    await bob.expect("JOIN")
    await alice.send_bytes(b"".join(f"spam {n}\r\n".encode() for n in range(30)))
    bye = (await alice.until_closed())[-1]
    assert bye.startswith("BYE excess-flood ")
    relayed = [line for line in bob.lines if line.startswith("MSG")]
    leave = await bob.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby alice disconnected (excess flood)"
    relayed = [line for line in bob.lines if line.startswith("MSG")]
    assert len(relayed) <= 6  # the burst and perhaps one more, never 30
    start = trio.current_time()
    await carol.send("still quick?")
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <carol> still quick?"
    assert trio.current_time() - start < 0.01


async def test_blank_lines_count_against_the_flood_limit(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(flood_burst=5, flood_rate=2.0, flood_max_backlog=20)
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.expect("JOIN")
    await alice.send_bytes(b"\r\n" * 1000)
    bye = (await alice.until_closed())[-1]
    assert bye.startswith("BYE excess-flood ")
    leave = await bob.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby alice disconnected (excess flood)"


async def test_nick_changes_count_against_the_flood_limit(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(flood_burst=2, flood_rate=1.0, flood_max_backlog=3)
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.expect("JOIN")
    names = [f"a{n}" for n in range(10)]
    await alice.send_bytes(b"".join(f"/nick {name}\r\n".encode() for name in names))
    leave = await bob.expect("LEAVE")
    assert leave.endswith("disconnected (excess flood)")
    nicks = [line for line in bob.lines if line.startswith("NICK")]
    assert 1 <= len(nicks) <= 3
    assert len(set(nicks)) == len(nicks)  # each change announced once


async def test_too_many_name_attempts(nursery: trio.Nursery) -> None:
    server = server_with(max_name_attempts=3)
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    peer = Peer(client)
    for _ in range(3):
        await peer.expect("NAME")
        await peer.send("bad name")
        assert (await peer.expect("ERR")).startswith("ERR name-invalid ")
    await peer.send("still bad")
    rest = await peer.until_closed()
    assert rest[-1].startswith("BYE too-many-attempts ")


async def test_idle_timeout_when_an_operator_sets_one(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(idle_timeout=60.0)
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.expect("JOIN")
    await trio.sleep(55)
    await bob.send("keeping bob alive")
    leave = await bob.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby alice disconnected (idle timeout)"
    assert (await alice.until_closed())[-1].startswith("BYE idle-timeout ")


async def test_bytes_without_a_whole_line_do_not_keep_a_user_from_idling(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(idle_timeout=60.0)
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.expect("JOIN")
    start = trio.current_time()
    for _ in range(2):  # a byte every 20 s, but no line
        await trio.sleep(20)
        await alice.send_bytes(b"x")
        await bob.send("keeping bob alive")
    bob.timeout = 120  # virtual seconds
    leave = await bob.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby alice disconnected (idle timeout)"
    assert trio.current_time() - start == pytest.approx(60, abs=1)  # virtual time


async def test_no_idle_timeout_by_default(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with()
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await trio.sleep(24 * 3600)
    await alice.send("still here after a day")
    assert (await bob.expect("MSG")).endswith("<alice> still here after a day")


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyError("boom"), trio.TooSlowError()]
)
async def test_a_bug_of_any_kind_closes_only_its_connection(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    server = server_with()
    alice, bob, carol = await open_peers(nursery, server, "alice", "bob", "carol")
    real_handle = Chat.handle

    def buggy_handle(self: Chat, member: object, request: ev.Request) -> None:
        if request == ev.Say("boom"):
            raise error
        real_handle(self, member, request)  # type: ignore[arg-type]

    monkeypatch.setattr(Chat, "handle", buggy_handle)
    with caplog.at_level(logging.INFO, logger="trio_chat"):
        await alice.send("boom")
        assert await alice.until_closed() is not None
    leave = await bob.expect("LEAVE")
    assert leave.startswith(f"LEAVE {STAMP} #lobby alice disconnected")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if isinstance(error, trio.TooSlowError):
        assert errors == []  # a timeout is the peer's doing: INFO, no traceback
    else:
        assert len(errors) == 1 and errors[0].exc_info is not None
    await bob.send("carry on")
    assert (await carol.expect("MSG")).endswith("<bob> carry on")


async def test_tasks_return_to_baseline_after_every_kind_of_exit(
    nursery: trio.Nursery,
) -> None:
    server = server_with()
    (watcher,) = await open_peers(nursery, server, "watcher")
    await trio.testing.wait_all_tasks_blocked()
    baseline = server.stats()
    endings = ["eof", "quit", "mid-line", "at-prompt", "broken"]
    for ending in endings:
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        peer = Peer(client)
        if ending == "at-prompt":
            await peer.expect("NAME")
            await peer.aclose()
        else:
            await peer.join(ending)
            if ending == "quit":
                await peer.send("/quit")
                await peer.until_closed()
            elif ending == "mid-line":
                await peer.send_bytes(b"half")
            if ending == "broken":
                await trio.aclose_forcefully(client)
            else:
                await peer.aclose()
        await trio.testing.wait_all_tasks_blocked()
    assert server.stats() == baseline
    leaves = [line for line in watcher.lines if line.startswith("LEAVE")]
    await watcher.send("/who")
    await watcher.expect("WHO")
    leaves = [line for line in watcher.lines if line.startswith("LEAVE")]
    assert len(leaves) == 4  # one each for those that had joined


async def test_delayed_lines_are_still_relayed_after_the_sender_hangs_up(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = server_with(flood_burst=5, flood_rate=2.0, flood_max_backlog=20)
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.send_bytes(b"".join(f"line {n}\r\n".encode() for n in range(12)))
    await alice.aclose()
    for number in range(12):
        assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> line {number}"
    leave = await bob.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby alice disconnected (connection closed)"


async def test_a_capital_i_lookalike_is_refused(nursery: trio.Nursery) -> None:
    server = server_with()
    await open_peers(nursery, server, "alice")
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    peer = Peer(client)
    await peer.expect("NAME")
    await peer.send("aIice")
    assert "looks too much like alice" in await peer.expect("ERR")


async def test_nul_bytes_vanish_and_an_emptied_line_is_ignored(
    nursery: trio.Nursery,
) -> None:
    server = server_with()
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.send_bytes(b"\x00\x00\r\n\x1b[0m\r\nhel\x00lo \xff\r\n")
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> hello \ufffd"
    await alice.send("/who")
    await alice.expect("WHO")
    assert [line for line in bob.lines if line.startswith("MSG")] == [
        f"MSG {STAMP} #lobby <alice> hello \ufffd"
    ]


async def test_quit_reasons_are_capped(nursery: trio.Nursery) -> None:
    server = server_with()
    alice, bob = await open_peers(nursery, server, "alice", "bob")
    await alice.send("/quit " + "x" * 3000)
    leave = await bob.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby alice quit ({'x' * 200})"
