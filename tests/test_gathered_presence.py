"""Gathered presence: big rooms hear a crowd arriving or leaving in few lines.

Each member must hear every join and leave after its own join exactly once,
in order, and never a line from someone before that someone's join.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.hub import Hub, Member, Room
from trio_chat.limits import PRESENCE_FLUSH_NAMES, PRESENCE_NAMES_PER_LINE, Limits
from trio_chat.protocol import LINE_END, decode_event, encode_event
from trio_chat.server import ChatServer

TS = 1_795_475_428.0


def member(hub: Hub, name: str) -> Member:
    one = Member(f"conn-{name}", encode=encode_event, max_messages=64)
    assert hub.add(one, name)
    return one


def heard(one: Member) -> list[ev.ServerEvent]:
    """Every event queued for `one`, decoded (several lines per item too)."""
    data = one.take(1 << 30)
    return [decode_event(line.decode()) for line in data.split(LINE_END)[:-1]]


def presence(events: list[ev.ServerEvent]) -> list[tuple[str, str]]:
    """("+", name) for each join heard, ("-", name) for each quit or cut-off."""
    heard: list[tuple[str, str]] = []
    for event in events:
        match event:
            case ev.Joined(name=name):
                heard.append(("+", name))
            case ev.JoinedMany(names=names):
                heard.extend(("+", name) for name in names)
            case ev.Left(name=name, how=how) if how != "parted":
                heard.append(("-", name))
            case ev.LeftMany(names=names):
                heard.extend(("-", name) for name in names)
            case ev.Message(text=text):
                heard.append(("m", text))
    return heard


def joined_names(events: list[ev.ServerEvent]) -> list[str]:
    names: list[str] = []
    for event in events:
        if isinstance(event, ev.Joined):
            names.append(event.name)
        elif isinstance(event, ev.JoinedMany):
            names.extend(event.names)
    return names


class Lobby:
    """A hub gathering joins from `batch_from` members, and its lobby."""

    def __init__(
        self, batch_from: int, *names: str, flush_names: int = PRESENCE_FLUSH_NAMES
    ) -> None:
        self.hub = Hub(batch_presence_from=batch_from, presence_flush_names=flush_names)
        self.waiting: list[Room] = []
        self.hub.on_presence = self.waiting.append
        self.room = self.hub.open_room("#lobby", permanent=True)
        self.members = [self.arrive(name) for name in names]
        while self.room.pending_presence:  # the ones there to begin with
            self.hub.flush_presence(self.room)
        self.waiting.clear()

    def arrive(self, name: str) -> Member:
        one = member(self.hub, name)
        self.hub.enter(one, self.room)
        self.hub.announce_join(one, self.room, ev.Joined(TS, "#lobby", name))
        return one

    def quit(self, one: Member, reason: str = "") -> ev.Left:
        assert one.name is not None
        self.hub.remove(one)
        self.hub.exit(one, self.room)
        gone = ev.Left(TS, "#lobby", one.name, "quit", reason)
        self.hub.announce_leave(one, self.room, gone)
        return gone


def test_small_rooms_hear_each_join_at_once() -> None:
    lobby = Lobby(3, "alice")
    alice = lobby.members[0]
    bob = lobby.arrive("bob")
    assert lobby.waiting == []
    assert heard(alice) == [ev.Joined(TS, "#lobby", "bob")]
    assert heard(bob) == []


def test_without_on_joins_nothing_is_gathered() -> None:
    hub = Hub(batch_presence_from=1)
    room = hub.open_room("#lobby", permanent=True)
    alice, bob = member(hub, "alice"), member(hub, "bob")
    hub.enter(alice, room)
    hub.enter(bob, room)
    hub.announce_join(bob, room, ev.Joined(TS, "#lobby", "bob"))
    assert heard(alice) == [ev.Joined(TS, "#lobby", "bob")]


def test_a_crowd_is_announced_in_one_line_when_flushed() -> None:
    lobby = Lobby(2, "alice", "bob")
    alice, bob = lobby.members
    heard(alice)
    carol, dave, erin = (lobby.arrive(name) for name in ("carol", "dave", "erin"))
    assert lobby.waiting == [lobby.room]  # once, for the first join waiting
    assert heard(alice) == heard(bob) == []
    lobby.hub.flush_presence(lobby.room)
    crowd = ev.JoinedMany(TS, "#lobby", ("carol", "dave", "erin"))
    assert heard(alice) == heard(bob) == [crowd]
    # A newcomer hears only of those who came after it.
    assert heard(carol) == [ev.JoinedMany(TS, "#lobby", ("dave", "erin"))]
    assert heard(dave) == [ev.Joined(TS, "#lobby", "erin")]
    assert heard(erin) == []
    lobby.hub.flush_presence(lobby.room)  # nothing left: nothing sent
    assert heard(alice) == []


def test_a_line_in_the_room_sends_the_waiting_joins_first() -> None:
    lobby = Lobby(2, "alice", "bob")
    alice, bob = lobby.members
    heard(alice)
    carol = lobby.arrive("carol")
    hello = ev.Message(TS, "#lobby", "carol", "hello")
    lobby.hub.publish(hello, room=lobby.room, exclude=carol)
    assert heard(alice) == [ev.Joined(TS, "#lobby", "carol"), hello]
    lobby.hub.flush_presence(lobby.room)  # the due flush finds nothing
    assert heard(bob) == [ev.Joined(TS, "#lobby", "carol"), hello]


def test_a_server_wide_line_sends_every_rooms_waiting_joins_first() -> None:
    lobby = Lobby(2, "alice", "bob")
    alice = lobby.members[0]
    heard(alice)
    dev = lobby.hub.open_room("#dev")
    for one in lobby.members:
        lobby.hub.enter(one, dev)
    carol = member(lobby.hub, "carol")
    lobby.hub.enter(carol, dev)
    lobby.hub.announce_join(carol, dev, ev.Joined(TS, "#dev", "carol"))
    lobby.hub.publish(ev.Info("restarting soon"))
    assert heard(alice) == [ev.Joined(TS, "#dev", "carol"), ev.Info("restarting soon")]


def test_someone_who_leaves_before_the_flush_is_announced_then_leaves() -> None:
    lobby = Lobby(2, "alice", "bob")
    alice = lobby.members[0]
    heard(alice)
    carol, dave = lobby.arrive("carol"), lobby.arrive("dave")
    lobby.hub.exit(carol, lobby.room)
    gone = ev.Left(TS, "#lobby", "carol", "quit", "")
    lobby.hub.publish(gone, room=lobby.room)
    assert heard(alice) == [ev.JoinedMany(TS, "#lobby", ("carol", "dave")), gone]
    assert heard(dave) == [gone]
    assert heard(carol) == []


def test_a_full_outbox_during_the_flush_evicts_only_that_member() -> None:
    lobby = Lobby(2, "alice", "bob")
    alice, bob = lobby.members
    heard(alice)
    for _ in range(alice.max_lines):
        lobby.hub.send(alice, ev.Info("x"))  # not read: at the bound now
    evicted: list[tuple[Member, str]] = []
    lobby.hub.on_evict = lambda one, reason: evicted.append((one, reason))
    lobby.arrive("carol")
    lobby.arrive("dave")
    lobby.hub.flush_presence(lobby.room)
    lobby.hub.flush()  # one line more than alice may be behind
    assert evicted == [(alice, "send queue exceeded")]
    assert heard(bob) == [ev.JoinedMany(TS, "#lobby", ("carol", "dave"))]


def test_a_crowd_leaving_is_announced_in_few_lines() -> None:
    lobby = Lobby(2, "alice", "bob", "carol", "dave", "erin")
    alice, bob, carol, dave, _ = lobby.members
    for one in lobby.members:
        heard(one)
    lobby.quit(bob)
    lobby.quit(carol)
    lobby.quit(dave, "lunch")
    assert lobby.waiting == [lobby.room]
    assert heard(alice) == []
    lobby.hub.flush_presence(lobby.room)
    assert heard(alice) == [
        ev.LeftMany(TS, "#lobby", ("bob", "carol"), "quit", ""),
        ev.Left(TS, "#lobby", "dave", "quit", "lunch"),  # another reason
    ]
    assert heard(bob) == []  # gone: told nothing


def test_a_newcomer_hears_only_the_leaves_after_its_own_join() -> None:
    lobby = Lobby(2, "alice", "bob", "carol")
    alice, bob, carol = lobby.members
    heard(alice)
    lobby.quit(bob)
    dave = lobby.arrive("dave")  # told, as it joined, who was there
    lobby.quit(carol)
    lobby.hub.flush_presence(lobby.room)
    assert presence(heard(alice)) == [("-", "bob"), ("+", "dave"), ("-", "carol")]
    assert presence(heard(dave)) == [("-", "carol")]


def test_a_huge_crowd_goes_out_in_parts_each_within_an_outbox() -> None:
    crowd = 2 * PRESENCE_FLUSH_NAMES + 10
    lobby = Lobby(2, "alice", *(f"u{i}" for i in range(crowd)))
    alice = lobby.members[0]
    alice.max_lines = 16
    heard(alice)
    for one in lobby.members[1:]:
        lobby.quit(one, "connection closed")
    late = lobby.arrive("late")  # after them all
    lobby.waiting.clear()
    sizes: list[int] = []
    everything: list[ev.ServerEvent] = []
    while lobby.room.pending_presence:
        lobby.hub.flush_presence(lobby.room)
        data = [alice.take(1 << 30)]
        sizes.append(len(data[0]))
        everything.extend(
            decode_event(line.decode()) for line in data[0].split(LINE_END)[:-1]
        )
        assert heard(late) == []  # nothing from before it joined
    assert len(sizes) == 3 and len(lobby.waiting) == 2  # told each time
    assert max(sizes) < 64 * 1024
    assert presence(everything) == [
        *(("-", f"u{i}") for i in range(crowd)),
        ("+", "late"),
    ]


def test_a_line_said_behind_a_small_crowd_sends_it_first() -> None:
    lobby = Lobby(2, "alice", *(f"u{i}" for i in range(20)))
    alice = lobby.members[0]
    heard(alice)
    for one in lobby.members[1:]:
        lobby.quit(one)
    said = ev.Message(TS, "#lobby", "alice", "where did everyone go?")
    lobby.hub.publish(said, room=lobby.room)
    events = heard(alice)
    assert events[-1] == said
    assert len(presence(events[:-1])) == 20


def test_a_line_said_behind_a_huge_crowd_waits_its_turn() -> None:
    crowd = PRESENCE_FLUSH_NAMES + 5
    lobby = Lobby(2, "alice", "bob", *(f"u{i}" for i in range(crowd)))
    alice, bob = lobby.members[:2]
    for one in lobby.members:
        heard(one)
    for one in lobby.members[2:]:
        lobby.quit(one)
    said = ev.Message(TS, "#lobby", "alice", "where did everyone go?")
    lobby.hub.publish(said, room=lobby.room, exclude=alice)
    assert heard(bob) == []  # not before the crowd's leaves
    late = lobby.arrive("late")  # after the line: must not hear it
    lobby.hub.flush_presence(lobby.room)
    first = heard(bob)
    assert len(presence(first)) == PRESENCE_FLUSH_NAMES and said not in first
    lobby.hub.flush_presence(lobby.room)
    second = heard(bob)
    assert second[-1] == said  # right after the leaves said before it
    assert presence(second[:-1]) == [("-", f"u{i}") for i in range(500, crowd)]
    lobby.hub.flush_presence(lobby.room)
    assert heard(bob) == [ev.Joined(TS, "#lobby", "late")]
    assert heard(alice) == [*first, *second[:-1], ev.Joined(TS, "#lobby", "late")]
    assert heard(late) == []  # the line was said before it came
    assert not lobby.room.pending_presence


def test_joins_and_leaves_stay_gathered_while_some_wait_in_a_shrinking_room() -> None:
    lobby = Lobby(50, *(f"u{i}" for i in range(60)))
    stays = lobby.members[-1]
    heard(stays)
    for one in lobby.members[:-1]:  # the room drops below 50 as they go
        lobby.quit(one)
    assert len(lobby.room.members) == 1
    lobby.hub.flush_presence(lobby.room)
    assert heard(stays) == [
        ev.LeftMany(TS, "#lobby", tuple(f"u{i}" for i in range(50)), "quit", ""),
        ev.LeftMany(TS, "#lobby", tuple(f"u{i}" for i in range(50, 59)), "quit", ""),
    ]


def test_a_part_goes_out_at_once_after_what_waits() -> None:
    lobby = Lobby(2, "alice", "bob", "carol")
    alice, bob, carol = lobby.members
    heard(alice)
    heard(carol)
    lobby.quit(bob)
    lobby.hub.exit(carol, lobby.room)
    parted = ev.Left(TS, "#lobby", "carol", "parted", "")
    lobby.hub.announce_leave(carol, lobby.room, parted)
    assert heard(alice) == [ev.Left(TS, "#lobby", "bob", "quit", ""), parted]


@given(
    st.lists(st.sampled_from(["+", "-", "m"]), min_size=1, max_size=150),
    st.integers(0, 3),
    st.sampled_from([3, 7, PRESENCE_FLUSH_NAMES]),
)
def test_everyone_hears_every_later_join_and_leave_exactly_once(
    steps: list[str], old: int, flush_names: int
) -> None:
    lobby = Lobby(1, *(f"old{i}" for i in range(old)), flush_names=flush_names)
    for one in lobby.members:
        heard(one)
    present = list(lobby.members)
    happened: list[tuple[str, str]] = []
    since: dict[Member, int] = {}  # a newcomer: where in `happened` it came in
    for index, step in enumerate(steps):
        if step == "m":
            said = ev.Message(TS, "#lobby", "old", f"line {index}")
            lobby.hub.publish(said, room=lobby.room)
            happened.append(("m", f"line {index}"))
        elif step == "+" or not present:
            one = lobby.arrive(f"u{index}")
            happened.append(("+", f"u{index}"))
            since[one] = len(happened)
            present.append(one)
        else:
            one = present.pop(index % len(present))
            lobby.quit(one, reason=f"r{index % 2}")
            assert one.name is not None
            happened.append(("-", one.name))
    while lobby.room.pending_presence:  # in parts of at most flush_names
        lobby.hub.flush_presence(lobby.room)
    for one in present:
        assert presence(heard(one)) == happened[since.get(one, 0) :], one.name


@given(
    old=st.integers(0, 5),
    new=st.integers(1, 3 * PRESENCE_NAMES_PER_LINE + 5),
)
def test_everyone_hears_every_later_join_exactly_once_in_order(
    old: int, new: int
) -> None:
    names = [f"u{i}" for i in range(old + new)]
    lobby = Lobby(1, *names[:old])
    for one in lobby.members:
        heard(one)
    newcomers = [lobby.arrive(name) for name in names[old:]]
    lobby.hub.flush_presence(lobby.room)
    for index, one in enumerate(lobby.members):
        events = heard(one)
        assert joined_names(events) == names[old:], index
        # Few lines: at most one per PRESENCE_NAMES_PER_LINE names.
        assert len(events) <= -(-new // PRESENCE_NAMES_PER_LINE)
    for index, one in enumerate(newcomers):
        assert joined_names(heard(one)) == names[old + index + 1 :]


# --------------------------------------------------------------------------
# Through a real server, with real sockets: whatever the timing gathers,
# nobody misses, repeats or reorders a join.


#: Everyone comes from 127.0.0.1: the per-address limits are off.
ONE_ADDRESS = Limits(
    max_per_address=0,
    max_new_per_minute=0,
    max_unregistered_per_address=0,
    flood_rate=0,
)


@contextlib.asynccontextmanager
async def serving(chat: Chat) -> AsyncIterator[int]:
    server = ChatServer(chat)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def connect(port: int, name: str) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"{name}\n".encode())
    buffer = b""
    while b"WELCOME " not in buffer:
        buffer += await stream.receive_some()
    return stream, buffer[buffer.index(b"WELCOME ") :]


async def test_a_crowd_joining_a_real_server_is_heard_exactly_once_in_order() -> None:
    chat = Chat(clock=lambda: TS, hub=Hub(batch_presence_from=2), limits=ONE_ADDRESS)
    names = [f"u{i}" for i in range(24)]
    async with serving(chat) as port:
        first, first_seen = await connect(port, "first")
        joined: list[tuple[trio.SocketStream, bytes]] = []

        async def arrive(name: str) -> None:
            joined.append(await connect(port, name))

        for wave in range(0, len(names), 8):  # eight at once, in three waves
            async with trio.open_nursery() as nursery:
                for name in names[wave : wave + 8]:
                    nursery.start_soon(arrive, name)
        last, _ = await connect(port, "last")
        await last.send_all(b"that's everyone\n")

        async def hear_until_the_last_line(
            stream: trio.SocketStream, seen: bytes
        ) -> list[ev.ServerEvent]:
            buffer = seen
            while b"<last> that's everyone" not in buffer:
                buffer += await stream.receive_some()
            lines = buffer.split(LINE_END)[:-1]
            return [decode_event(line.decode()) for line in lines[1:]]

        with trio.fail_after(10):
            # The order the server took them in, as the first one heard it:
            order = joined_names(await hear_until_the_last_line(first, first_seen))
            assert sorted(order) == sorted([*names, "last"])
            assert order[-1] == "last"
            for stream, seen in joined:
                name = seen.split(b" ", 2)[1].decode()
                heard_there = joined_names(await hear_until_the_last_line(stream, seen))
                assert heard_there == order[order.index(name) + 1 :], name
        for stream, _ in [(first, b""), (last, b""), *joined]:
            await stream.aclose()


async def test_a_crowd_hanging_up_on_a_real_server_is_heard_leaving_once() -> None:
    hub = Hub(batch_presence_from=2, presence_flush_names=7)
    chat = Chat(clock=lambda: TS, hub=hub, limits=ONE_ADDRESS)
    async with serving(chat) as port:
        stays, seen = await connect(port, "stays")
        crowd = [await connect(port, f"u{i}") for i in range(30)]
        for stream, _ in crowd:  # all at once, without a word
            await stream.aclose()
        buffer = seen
        heard: list[tuple[str, str]] = []
        with trio.fail_after(10):
            while len([1 for kind, _ in heard if kind == "-"]) < len(crowd):
                buffer += await stays.receive_some()
                lines = buffer.split(LINE_END)[:-1]
                heard = presence([decode_event(line.decode()) for line in lines[1:]])
        left = [name for kind, name in heard if kind == "-"]
        assert sorted(left) == sorted(f"u{i}" for i in range(30))  # once each
        joined = [name for kind, name in heard if kind == "+"]
        assert joined == [f"u{i}" for i in range(30)]
        # Each was heard arriving before it was heard leaving.
        assert all(heard.index(("+", name)) < heard.index(("-", name)) for name in left)
        await stays.aclose()
