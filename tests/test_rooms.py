"""Rooms: joining, switching, parting, topics, and who sees what."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from chatpeer import Peer, open_peers

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.limits import Limits
from trio_chat.server import ChatServer
from trio_chat.store import AsyncStore

NOW = 1_795_475_428.0
STAMP = "2026-11-23T23:10:28Z"


@pytest.fixture
def server() -> ChatServer:
    return ChatServer(Chat(clock=lambda: NOW, limits=Limits(max_rooms_per_user=3)))


async def join_all(
    nursery: trio.Nursery, server: ChatServer, *names: str
) -> list[Peer]:
    return await open_peers(nursery, server, *names, drain_joins=True)


async def command(peer: Peer, line: str, until: str) -> str:
    await peer.send(line)
    return await peer.expect(until)


async def test_join_creates_a_room_and_lines_stay_in_it(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob, carol = await join_all(nursery, server, "alice", "bob", "carol")
    assert await command(alice, "/join rust", "JOIN") == f"JOIN {STAMP} #rust alice"
    assert await alice.expect("WHO") == "WHO #rust alice"
    assert await alice.expect("SWITCH") == "SWITCH #rust"
    await bob.send("/join #RUST")  # names of rooms ignore case
    assert await bob.expect("SWITCH") == "SWITCH #rust"
    assert await alice.expect("JOIN") == f"JOIN {STAMP} #rust bob"
    await alice.send("borrow checker!")
    assert await bob.expect("MSG") == f"MSG {STAMP} #rust <alice> borrow checker!"
    await carol.send("/who *")
    assert await carol.expect("WHO") == "WHO * alice bob carol"
    assert not any(line.startswith("MSG") for line in carol.lines)


async def test_switch_picks_where_plain_lines_go(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #rust", "SWITCH")
    await alice.send("in rust")
    assert await command(alice, "/switch lobby", "SWITCH") == "SWITCH #lobby"
    await alice.send("in the lobby")
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> in the lobby"
    assert not any("in rust" in line for line in bob.lines)
    error = await command(alice, "/switch #nowhere", "ERR")
    assert error.startswith("ERR not-in-room ")


async def test_part_leaves_a_room_and_an_empty_room_goes(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #rust", "SWITCH")
    await command(bob, "/join #rust", "SWITCH")
    await alice.expect("JOIN")
    await bob.send("/part see you")
    leave = f"LEAVE {STAMP} #rust bob parted (see you)"
    assert await alice.expect("LEAVE") == leave
    assert await bob.expect("LEAVE") == leave
    assert await bob.expect("SWITCH") == "SWITCH #lobby"
    await alice.send("/part #rust")
    assert await alice.expect("SWITCH") == "SWITCH #lobby"
    await bob.send("/rooms")
    assert (await bob.expect("ROOM")).startswith("ROOM #lobby 2")
    await bob.send("/who")
    assert await bob.expect("WHO") == "WHO #lobby alice bob"
    assert not any(line.startswith("ROOM #rust") for line in bob.lines)


async def test_rooms_lists_sizes_and_topics(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #rust", "SWITCH")
    await alice.send("/topic ownership and borrowing")
    assert (
        await alice.expect("TOPIC")
        == f"TOPIC {STAMP} #rust alice ownership and borrowing"
    )
    await bob.send("/rooms")
    while await bob.line() != "INFO 2 rooms:":
        pass
    assert await bob.expect("ROOM") == "ROOM #lobby 2 open "
    assert await bob.expect("ROOM") == "ROOM #rust 1 open ownership and borrowing"


async def test_topic_is_for_room_ops_and_shown_on_join(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #rust", "SWITCH")
    await alice.send("/topic no unsafe")
    await alice.expect("TOPIC")
    await bob.send("/join #rust")
    assert await bob.expect("TOPIC") == f"TOPIC {STAMP} #rust alice no unsafe"
    error = await command(bob, "/topic anything goes", "ERR")
    assert error.startswith("ERR not-op ")
    await bob.send("/topic")
    assert await bob.expect("TOPIC") == f"TOPIC {STAMP} #rust alice no unsafe"


async def test_quit_and_nick_reach_every_shared_room(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    for peer in (alice, bob):
        await command(peer, "/join #rust", "SWITCH")
    await alice.expect("JOIN")
    await alice.send("/nick alicia")
    nicks = [await bob.expect("NICK"), await bob.expect("NICK")]
    assert sorted(nicks) == [
        f"NICK {STAMP} #lobby alice -> alicia",
        f"NICK {STAMP} #rust alice -> alicia",
    ]
    await alice.send("/quit bye")
    leaves = [await bob.expect("LEAVE"), await bob.expect("LEAVE")]
    assert sorted(leaves) == [
        f"LEAVE {STAMP} #lobby alicia quit (bye)",
        f"LEAVE {STAMP} #rust alicia quit (bye)",
    ]


async def test_room_key(nursery: trio.Nursery, server: ChatServer) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await alice.send("/join secret hunter2")  # "/join study group": a key, said
    await alice.expect("WHO")
    assert await alice.expect("INFO") == (
        "INFO You created #secret with a key (whoever joins needs it; /key"
        " without one removes it): hunter2"
    )
    assert await alice.expect("SWITCH") == "SWITCH #secret"
    assert (await command(bob, "/join #secret", "ERR")).startswith("ERR bad-room-key ")
    assert await command(bob, "/join #secret hunter2", "SWITCH") == "SWITCH #secret"
    await bob.send("/rooms")
    await bob.expect("ROOM")
    assert await bob.expect("ROOM") == "ROOM #secret 2 key "


async def test_an_op_who_renames_stays_op_and_the_old_name_is_not(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #class", "SWITCH")
    await command(bob, "/join #class", "SWITCH")
    await command(alice, "/nick alicia", "NICK")
    await command(bob, "/nick alice", "NICK")  # the op's old name
    assert (await command(bob, "/key x", "ERR")).startswith("ERR not-op ")
    assert await command(alice, "/key x", "INFO") == "INFO alicia set a key on #class."


async def test_room_limits_and_names(nursery: trio.Nursery, server: ChatServer) -> None:
    (alice,) = await join_all(nursery, server, "alice")
    await command(alice, "/join #a", "SWITCH")
    await command(alice, "/join #b", "SWITCH")
    assert (await command(alice, "/join #c", "ERR")).startswith("ERR too-many-rooms ")
    error = await command(alice, "/join #no<way>", "ERR")
    assert error.startswith("ERR room-invalid ")
    assert (await command(alice, "/part #zzz", "ERR")).startswith("ERR not-in-room ")


async def test_speaking_with_no_room(nursery: trio.Nursery, server: ChatServer) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await alice.send("/part")
    await alice.expect("LEAVE")
    await alice.send("anyone?")
    assert (await alice.expect("ERR")).startswith("ERR no-room ")
    await bob.send("/who *")
    assert await bob.expect("WHO") == "WHO * alice bob"


async def test_joining_replays_recent_history(nursery: trio.Nursery) -> None:
    server = ChatServer(Chat(clock=lambda: NOW, limits=Limits(history_lines=3)))
    alice, bob = await join_all(nursery, server, "alice", "bob")
    for number in range(4):
        await alice.send(f"line {number}")
        await bob.expect("MSG")
    (carol,) = await join_all(nursery, server, "carol")
    await carol.send("/who")
    await carol.expect("WHO")
    assert [line for line in carol.lines if line.startswith("HIST")] == [
        f"HIST MSG {STAMP} #lobby <alice> line {n}" for n in (1, 2, 3)
    ]
    await carol.send("/history 2")
    assert await carol.expect("INFO") == "INFO 2 lines of #lobby:"
    # Who came and went is not history: the last two lines said.
    assert await carol.expect("HIST") == f"HIST MSG {STAMP} #lobby <alice> line 2"
    assert await carol.expect("HIST") == f"HIST MSG {STAMP} #lobby <alice> line 3"


async def test_history_can_be_switched_off(nursery: trio.Nursery) -> None:
    server = ChatServer(Chat(clock=lambda: NOW, limits=Limits(history_lines=0)))
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await alice.send("gone")
    await bob.expect("MSG")
    (carol,) = await join_all(nursery, server, "carol")
    await carol.send("/who")
    await carol.expect("WHO")
    assert not any(line.startswith("HIST") for line in carol.lines)


async def test_history_from_the_store(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with AsyncStore.open(str(tmp_path / "h.db")) as store:
        chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
        server = ChatServer(chat, store=store)
        alice, bob = await join_all(nursery, server, "alice", "bob")
        for number in range(30):
            await alice.send(f"line {number}")
        for _ in range(30):
            await bob.expect("MSG")
        rows = await store.history("#lobby", 100)
        assert [event.text for _, event in rows if isinstance(event, ev.Message)] == [
            f"line {n}" for n in range(30)
        ]
        await bob.send("/history 25")
        assert await bob.expect("INFO") == "INFO 25 lines of #lobby:"
        for peer in (alice, bob):
            await peer.aclose()
        await trio.testing.wait_all_tasks_blocked()


async def test_room_ops_share_ops_set_keys_and_give_lectures(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob, carol = await join_all(nursery, server, "alice", "bob", "carol")
    await command(alice, "/join #class", "SWITCH")
    await command(bob, "/join #class", "SWITCH")
    assert (await command(bob, "/lecture on", "ERR")).startswith("ERR not-op ")
    await alice.send("/lecture on")
    assert (
        await bob.expect("INFO") == "INFO alice says: in #class only ops may speak now."
    )
    assert (await command(bob, "questions?", "ERR")).startswith("ERR ops-only ")
    await alice.send("/op bob")
    assert await bob.expect("INFO") == "INFO alice made bob an op of #class."
    await bob.send("now I may")
    assert await alice.expect("MSG") == f"MSG {STAMP} #class <bob> now I may"
    await bob.send("/key sesame")
    await alice.expect("INFO")
    assert (await command(carol, "/join #class", "ERR")).startswith("ERR bad-room-key ")
    assert await command(carol, "/join #class sesame", "SWITCH") == "SWITCH #class"


async def test_a_keyed_room_keeps_its_lines_to_itself(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #secret sesame", "SWITCH")
    await alice.send("the plan")
    await alice.send("/part")
    await alice.expect("SWITCH")
    await bob.send("/join #secret")  # the room went; a new one has no key
    assert await bob.expect("SWITCH") == "SWITCH #secret"
    assert not any(line.startswith("HIST") and "#secret" in line for line in bob.lines)


async def test_history_leaves_out_ignored_people(nursery: trio.Nursery) -> None:
    server = ChatServer(Chat(clock=lambda: NOW))
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await alice.send("from alice")
    await bob.send("from bob")
    await alice.expect("MSG")
    await alice.send("/ignore bob")
    await alice.expect("INFO")
    await alice.send("/history 10")
    await alice.expect("INFO")
    await alice.send("/who")
    await alice.expect("WHO")
    history = [line for line in alice.lines if line.startswith("HIST MSG")]
    assert history == [f"HIST MSG {STAMP} #lobby <alice> from alice"]


async def test_the_lobby_topic_greets_newcomers(nursery: trio.Nursery) -> None:
    server = ChatServer(Chat(clock=lambda: NOW))
    (alice,) = await join_all(nursery, server, "alice")
    await alice.send("/topic be kind")
    await alice.expect("TOPIC")
    (bob,) = await join_all(nursery, server, "bob")
    await bob.send("/who")
    await bob.expect("WHO")
    assert f"TOPIC {STAMP} #lobby alice be kind" in bob.lines


async def test_old_history_is_pruned(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with AsyncStore.open(str(tmp_path / "p.db")) as store:
        limits = Limits(flood_rate=0, history_rows=5)
        server = ChatServer(Chat(clock=lambda: NOW, limits=limits), store=store)
        alice, bob = await join_all(nursery, server, "alice", "bob")
        for number in range(20):
            await alice.send(f"line {number}")
        for _ in range(20):
            await bob.expect("MSG")
        assert await server.prune_history(store) > 0
        rows = await store.history("#lobby", 100)
        assert [event for _, event in rows] == [
            ev.Message(NOW, "#lobby", "alice", f"line {n}") for n in range(15, 20)
        ]
        for peer in (alice, bob):
            await peer.aclose()
        await trio.testing.wait_all_tasks_blocked()


async def test_part_takes_a_room_name_without_its_hash(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob = await join_all(nursery, server, "alice", "bob")
    await command(alice, "/join #dev", "SWITCH")
    await command(alice, "/switch #lobby", "SWITCH")
    await alice.send("/part dev off to lunch")
    assert (
        await alice.expect("LEAVE") == f"LEAVE {STAMP} #dev alice parted (off to lunch)"
    )
    await alice.send("/part bye all")  # not a room of hers: a reason for the current
    assert await bob.expect("LEAVE") == f"LEAVE {STAMP} #lobby alice parted (bye all)"


async def test_ops_kick_and_non_ops_cannot(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    alice, bob, carol = await join_all(nursery, server, "alice", "bob", "carol")
    for peer in (alice, bob, carol):
        await command(peer, "/join #class", "SWITCH")
    assert (await command(bob, "/kick carol", "ERR")).startswith("ERR not-op ")
    await alice.send("/kick bob talking over others")
    kick = f"KICK {STAMP} #class bob alice talking over others"
    assert await carol.expect("KICK") == kick
    assert await bob.expect("KICK") == kick
    await carol.send("/history 1")  # a kick is news, not history
    assert await carol.expect("INFO") == "INFO 0 lines of #class:"
    assert await bob.expect("SWITCH") == "SWITCH #lobby"


async def test_mute_expires_and_unmute(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = ChatServer(Chat(clock=trio.current_time))
    alice, bob = await open_peers(nursery, server, "alice", "bob", drain_joins=True)
    await command(alice, "/join #class", "SWITCH")
    await command(bob, "/join #class", "SWITCH")
    await alice.send("/mute bob 10m")
    assert await bob.expect("INFO") == "INFO alice muted bob in #class for 10m."
    assert (await command(bob, "may I?", "ERR")).startswith("ERR muted ")
    await trio.sleep(601)
    await bob.send("now I may")
    assert (await alice.expect("MSG")).endswith("<bob> now I may")
    await alice.send("/mute bob 90s")
    assert await bob.expect("INFO") == "INFO alice muted bob in #class for 90s."
    await alice.send("/mute bob 5")  # 5 what? a usage error, no mute
    assert (await alice.expect("ERR")).startswith("ERR usage Usage: /mute NAME ")
    await alice.send("/mute bob")
    assert await bob.expect("INFO") == "INFO alice muted bob in #class."
    await alice.send("/unmute bob")
    assert await bob.expect("INFO") == "INFO alice unmuted bob in #class."
    await bob.send("free again")
    assert (await alice.expect("MSG")).endswith("<bob> free again")


async def test_muting_a_name_that_is_a_connection_id_mutes_only_that_user(
    nursery: trio.Nursery, server: ChatServer
) -> None:
    # alice is the server's first connection, c1; the user she mutes is
    # called c1: muting that name must not silence her connection.
    alice, other = await join_all(nursery, server, "alice", "c1")
    for peer in (alice, other):
        await command(peer, "/join #class", "SWITCH")
    await alice.send("/mute c1")
    assert await other.expect("INFO") == "INFO alice muted c1 in #class."
    assert (await command(other, "may I?", "ERR")).startswith("ERR muted ")
    await alice.send("the op still speaks")
    assert (await other.expect("MSG")).endswith("<alice> the op still speaks")
    assert not any(line.startswith("ERR") for line in alice.lines)


async def test_since_leaves_what_was_seen_out_of_the_replay(
    nursery: trio.Nursery,
) -> None:
    clock = [NOW]
    server = ChatServer(Chat(clock=lambda: clock[0]))
    (alice,) = await join_all(nursery, server, "alice")
    await alice.send("seen already")
    await command(alice, "/who", "WHO")  # handled: time may pass now
    clock[0] += 60
    await alice.send("/topic new topic")
    await alice.expect("TOPIC")
    await alice.send("said while bob was away")
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    bob = Peer(client)
    await bob.expect("NAME")
    await bob.send("/since 2026-11-23T23:11:00Z")  # before the name: the lobby
    await bob.send("bob")
    await bob.expect("WELCOME")
    await bob.send("/who")
    await bob.expect("WHO")
    replayed = [line for line in bob.lines if line.startswith("HIST ")]
    assert replayed == [
        "HIST TOPIC 2026-11-23T23:11:28Z #lobby alice new topic",
        "HIST MSG 2026-11-23T23:11:28Z #lobby <alice> said while bob was away",
    ]
    await bob.send("/history 5")  # asked for: everything kept
    assert await bob.expect("INFO") == "INFO 3 lines of #lobby:"
