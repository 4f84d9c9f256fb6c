"""The hub: membership by name, fan-out through room logs, eviction.

Nothing in the hub awaits: these are plain synchronous tests, with fake
sinks standing for sockets (each takes what its capacity allows per call).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytest

from trio_chat import events as ev
from trio_chat.fanout.log import TRIM_SLACK
from trio_chat.fanout.reader import Buffer, SinkError
from trio_chat.hub import SEND_QUEUE_EXCEEDED, Hub, Member, Room
from trio_chat.protocol import encode_event

HELLO = ev.Info("hello")
HELLO_LINE = encode_event(HELLO)


class CountingEncoder:
    """A real encoder that counts its calls."""

    def __init__(self, prefix: bytes = b"") -> None:
        self.prefix = prefix
        self.calls = 0

    def __call__(self, event: ev.ServerEvent) -> bytes:
        self.calls += 1
        return self.prefix + encode_event(event)


class Evictions:
    """Records a hub's `on_evict` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Member, str]] = []

    def __call__(self, member: Member, reason: str) -> None:
        self.calls.append((member, reason))


class Owner:
    """A member's connection stand-in: writes its evictions' reasons down."""

    def __init__(self, evictions: list[str]) -> None:
        self.evictions = evictions

    def blocked(self) -> None:
        pass  # the tests flush again themselves

    def evicted(self, reason: str) -> None:
        self.evictions.append(reason)


class FakeSink:
    """A socket stand-in: takes up to `capacity` bytes per call (None: all)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.data = bytearray()
        self.calls = 0
        self.error: str | None = None

    holding = False

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        self.calls += 1
        if self.error is not None:
            raise SinkError(self.error)
        data = b"".join(bytes(buffer) for buffer in buffers)
        if self.capacity is not None:
            data = data[: self.capacity]
        self.data += data
        return len(data)

    def lines(self) -> list[bytes]:
        """What arrived, line by line; forgotten once read."""
        lines = bytes(self.data).splitlines(keepends=True)
        self.data.clear()
        return lines


def make_member(
    conn_id: str,
    *,
    evictions: list[str] | None = None,
    max_messages: int = 16,
    max_bytes: int = 64 * 1024,
    sink: FakeSink | None = None,
) -> Member:
    return Member(
        conn_id,
        encode=encode_event,
        owner=None if evictions is None else Owner(evictions),
        sink=FakeSink() if sink is None else sink,
        max_messages=max_messages,
        max_bytes=max_bytes,
    )


def join(
    hub: Hub,
    name: str,
    *,
    max_messages: int = 16,
    max_bytes: int = 64 * 1024,
    room: Room | None = None,
    sink: FakeSink | None = None,
) -> Member:
    member = make_member(
        f"conn-{name}", max_messages=max_messages, max_bytes=max_bytes, sink=sink
    )
    assert hub.add(member, name)
    if room is not None:
        hub.enter(member, room)
    return member


def sink(member: Member) -> FakeSink:
    assert isinstance(member.sink, FakeSink)
    return member.sink


def received(member: Member) -> list[bytes]:
    """What reached the member's socket by the end of a flush, line by line."""
    return sink(member).lines()


def say(hub: Hub, room: Room, member: Member, text: str) -> None:
    """`member` says `text` in `room` (as the chat publishes a line)."""
    assert member.name is not None
    event = ev.Message(0.0, room.name, member.name, text)
    hub.publish(event, room=room, exclude=member, sender_key=member.key)


def line(member: Member, text: str, room: str = "#lobby") -> bytes:
    assert member.name is not None
    return encode_event(ev.Message(0.0, room, member.name, text))


# --------------------------------------------------------------------------
# Delivery


def test_publish_reaches_everyone_but_the_excluded() -> None:
    hub = Hub()
    alice, bob, carol = (join(hub, name) for name in ("alice", "bob", "carol"))
    hub.publish(HELLO, exclude=bob)
    hub.flush()
    assert received(alice) == [HELLO_LINE]
    assert received(bob) == []
    assert received(carol) == [HELLO_LINE]
    hub.publish(HELLO)
    hub.flush()
    assert [received(m) for m in (alice, bob, carol)] == [[HELLO_LINE]] * 3


def test_a_room_line_reaches_its_members_but_the_sender_once() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    alice, bob, carol = (join(hub, n, room=lobby) for n in ("alice", "bob", "carol"))
    outsider = join(hub, "outsider")
    say(hub, lobby, alice, "hi")
    say(hub, lobby, bob, "hello")
    hub.flush()
    assert received(alice) == [line(bob, "hello")]
    assert received(bob) == [line(alice, "hi")]
    assert received(carol) == [line(alice, "hi"), line(bob, "hello")]
    assert received(outsider) == []
    hub.flush()  # nothing new: nothing sent twice
    assert [received(m) for m in (alice, bob, carol)] == [[], [], []]


def test_a_line_goes_into_the_log_once_and_each_reader_writes_once() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    readers = [join(hub, f"r{i}", room=lobby) for i in range(10)]
    sender = join(hub, "sender", room=lobby)
    for number in range(50):
        say(hub, lobby, sender, f"line {number}")
    assert len(lobby.log) == 50  # not 50 per reader
    hub.flush()
    for reader in readers:
        assert sink(reader).calls == 1  # one write for the whole burst
        assert received(reader) == [line(sender, f"line {n}") for n in range(50)]


def test_publish_skips_members_not_yet_named() -> None:
    hub = Hub()
    alice = join(hub, "alice")
    newcomer = make_member("conn-new")
    hub.publish(HELLO)
    hub.flush()
    assert received(alice) == [HELLO_LINE]
    assert received(newcomer) == []


def test_send_reaches_one_member_online_or_not() -> None:
    hub = Hub()
    alice, bob = join(hub, "alice"), join(hub, "bob")
    newcomer = make_member("conn-new")
    hub.send(alice, HELLO)
    hub.send(newcomer, HELLO)
    hub.flush()
    assert received(alice) == [HELLO_LINE]
    assert received(bob) == []
    assert received(newcomer) == [HELLO_LINE]


def test_an_event_is_encoded_once_per_encoder() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    plain, tagged = CountingEncoder(), CountingEncoder(b"tag:")
    members = [Member(f"conn-{i}", encode=plain if i % 3 else tagged) for i in range(9)]
    for i, member in enumerate(members):
        member.sink = FakeSink()
        assert hub.add(member, f"user{i}")
        hub.enter(member, lobby)
    hub.publish(HELLO, room=lobby, exclude=members[1])
    hub.flush()
    assert (plain.calls, tagged.calls) == (1, 1)
    for i, member in enumerate(members):
        expected = [] if i == 1 else [(b"" if i % 3 else b"tag:") + HELLO_LINE]
        assert received(member) == expected
    hub.publish(HELLO)  # to everyone online: once per encoder too
    assert (plain.calls, tagged.calls) == (2, 2)


def test_lines_from_several_logs_arrive_in_the_order_they_happened() -> None:
    hub = Hub()
    lobby, dev = hub.open_room("#lobby"), hub.open_room("#dev")
    alice = join(hub, "alice", room=lobby)
    hub.enter(alice, dev)
    bob = join(hub, "bob", room=lobby)
    hub.enter(bob, dev)
    say(hub, lobby, bob, "1")
    hub.send(alice, ev.Info("2"))
    say(hub, dev, bob, "3")
    say(hub, lobby, bob, "4")
    hub.send(alice, ev.Info("5"))
    hub.flush()
    assert received(alice) == [
        line(bob, "1"),
        encode_event(ev.Info("2")),
        line(bob, "3", "#dev"),
        line(bob, "4"),
        encode_event(ev.Info("5")),
    ]


def test_a_line_half_taken_goes_on_where_it_stopped() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    slow_sink = FakeSink(capacity=7)
    alice = join(hub, "alice", room=lobby, sink=slow_sink)
    bob = join(hub, "bob", room=lobby)
    say(hub, lobby, bob, "a rather long line")
    say(hub, lobby, bob, "and another")
    hub.flush()
    assert alice.blocked and alice.mid_line
    while alice.blocked:
        hub.flush_member(alice)  # the socket took more: write again
    assert bytes(slow_sink.data) == line(bob, "a rather long line") + line(
        bob, "and another"
    )
    assert not alice.mid_line


def test_leaving_a_room_still_delivers_what_was_said_before() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    alice, bob = join(hub, "alice", room=lobby), join(hub, "bob", room=lobby)
    say(hub, lobby, bob, "before")
    hub.publish(ev.Left(0.0, "#lobby", "alice", "parted", ""), room=lobby)
    hub.exit(alice, lobby)
    say(hub, lobby, bob, "after")
    hub.flush()
    assert received(alice) == [
        line(bob, "before"),
        encode_event(ev.Left(0.0, "#lobby", "alice", "parted", "")),
    ]
    assert alice.cursor(lobby.log) is None  # done with it


def test_coming_back_before_the_lines_arrived_hears_nothing_said_meanwhile() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    alice, bob = join(hub, "alice", room=lobby), join(hub, "bob", room=lobby)
    say(hub, lobby, bob, "before")
    hub.exit(alice, lobby)
    say(hub, lobby, bob, "while away")
    hub.enter(alice, lobby)
    say(hub, lobby, bob, "back")
    hub.flush()
    assert received(alice) == [line(bob, "before"), line(bob, "back")]


def test_ignored_senders_are_skipped() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    alice, bob = join(hub, "alice", room=lobby), join(hub, "bob", room=lobby)
    carol = join(hub, "carol", room=lobby)
    alice.ignore("bob")
    say(hub, lobby, bob, "from bob")
    say(hub, lobby, carol, "from carol")
    hub.flush()
    assert received(alice) == [line(carol, "from carol")]


# --------------------------------------------------------------------------
# Eviction: slow means behind, after writing


def test_a_burst_a_reader_takes_never_evicts_it() -> None:
    # Far more than the bound arrives in one pass; the socket takes it all.
    hub = Hub()
    lobby = hub.open_room("#lobby")
    reader = join(hub, "reader", room=lobby, max_messages=16, max_bytes=8192)
    senders = [join(hub, f"s{i}", room=lobby) for i in range(6)]
    for sender in senders:
        say(hub, lobby, sender, "x" * 4000)
    hub.flush()
    assert reader.evicted is None
    assert len(received(reader)) == 6


@pytest.mark.parametrize(
    "limits",
    [
        {"max_messages": 2},
        # Room for two lines and a byte short of a third.
        {"max_bytes": 3 * len(HELLO_LINE) - 1},
    ],
    ids=["by-count", "by-bytes"],
)
def test_a_reader_behind_past_its_bound_is_evicted_alone(
    limits: dict[str, int],
) -> None:
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    lobby = hub.open_room("#lobby")
    slow_evictions: list[str] = []
    slow = make_member(
        "conn-slow", evictions=slow_evictions, sink=FakeSink(capacity=0), **limits
    )
    assert hub.add(slow, "slow")
    hub.enter(slow, lobby)
    alice, bob = join(hub, "alice", room=lobby), join(hub, "bob", room=lobby)

    hub.publish(HELLO, room=lobby)
    hub.publish(HELLO, room=lobby)
    hub.flush()
    assert slow.evicted is None
    assert on_evict.calls == []

    hub.publish(HELLO, room=lobby)  # the third is one too many
    assert slow.evicted is None  # nothing is judged before writing
    hub.flush()
    assert slow.evicted == SEND_QUEUE_EXCEEDED
    assert slow_evictions == [SEND_QUEUE_EXCEEDED]
    assert on_evict.calls == [(slow, SEND_QUEUE_EXCEEDED)]
    assert slow not in hub
    assert hub.get("slow") is None
    assert hub.names() == ["alice", "bob"]
    assert slow.closed
    assert received(alice) == [HELLO_LINE] * 3
    assert received(bob) == [HELLO_LINE] * 3
    # Later traffic neither reaches it nor evicts it again.
    hub.publish(HELLO, room=lobby)
    hub.send(slow, HELLO)
    hub.flush()
    assert slow_evictions == [SEND_QUEUE_EXCEEDED]
    assert on_evict.calls == [(slow, SEND_QUEUE_EXCEEDED)]
    assert received(alice) == [HELLO_LINE]
    assert sink(slow).data == b""


def test_a_reader_exactly_at_its_bound_is_not_evicted() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    exact = join(
        hub, "exact", max_bytes=2 * len(HELLO_LINE), room=lobby, sink=FakeSink(0)
    )
    hub.publish(HELLO, room=lobby)
    hub.publish(HELLO, room=lobby)
    hub.flush()
    assert exact.evicted is None
    assert exact.behind() == (2 * len(HELLO_LINE), 2)


def test_a_failing_socket_evicts_with_its_reason() -> None:
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    alice = join(hub, "alice")
    sink(alice).error = "connection reset"
    hub.send(alice, HELLO)
    hub.flush()
    assert on_evict.calls == [(alice, "connection reset")]


def test_evicting_a_member_not_online_announces_nothing() -> None:
    # A connection still choosing a name that stops reading is evicted, but
    # there is no leave to announce for someone who never joined.
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    evictions: list[str] = []
    newcomer = make_member(
        "conn-new", evictions=evictions, max_messages=1, sink=FakeSink(0)
    )
    hub.send(newcomer, HELLO)
    hub.send(newcomer, HELLO)
    hub.flush()
    assert evictions == [SEND_QUEUE_EXCEEDED]
    assert on_evict.calls == []


def test_eviction_cascade_terminates_and_evicts_each_once() -> None:
    # The hub's on_evict announces the leave to everyone, which puts the
    # next stalled member past its bound, whose leave is announced in turn.
    announced: list[str] = []
    hub = Hub()

    def announce_leave(member: Member, reason: str) -> None:
        assert member.name is not None
        announced.append(member.name)
        hub.publish(ev.Info(f"{member.name} left: {reason}"))
        hub.flush()

    hub.on_evict = announce_leave
    member_evictions: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    stalled = {
        name: make_member(
            f"conn-{name}",
            evictions=member_evictions[name],
            max_messages=bound,
            sink=FakeSink(0),
        )
        for name, bound in (("a", 1), ("b", 2), ("c", 3))
    }
    for name, member in stalled.items():
        assert hub.add(member, name)
    survivor = join(hub, "survivor", max_messages=100)

    hub.publish(ev.Info("1"))  # a is at its bound
    hub.publish(ev.Info("2"))  # a is past it; its leave puts b past, b's c
    hub.flush()

    assert announced == ["a", "b", "c"]
    assert member_evictions == {name: [SEND_QUEUE_EXCEEDED] for name in "abc"}
    assert hub.names() == ["survivor"]

    def lines(*texts: str) -> list[bytes]:
        return [encode_event(ev.Info(text)) for text in texts]

    left = {name: f"{name} left: {SEND_QUEUE_EXCEEDED}" for name in "abc"}
    assert received(survivor) == lines("1", "2", left["a"], left["b"], left["c"])


def test_a_long_eviction_cascade_does_not_recurse() -> None:
    # Every leave announcement puts all the remaining stalled members past
    # their bound; each eviction must not nest the next one's.
    hub = Hub()
    announced: list[str] = []

    def announce_leave(member: Member, reason: str) -> None:
        assert member.name is not None
        announced.append(member.name)
        hub.publish(ev.Info(f"{member.name} left"))

    hub.on_evict = announce_leave
    count = sys.getrecursionlimit() // 2
    for i in range(count):
        join(hub, f"slow{i}", max_messages=1, sink=FakeSink(0))
    hub.publish(HELLO)
    hub.publish(HELLO)
    hub.flush()
    assert sorted(announced) == sorted(f"slow{i}" for i in range(count))
    assert len(hub) == 0


def test_send_to_a_closed_member_is_a_no_op_but_what_waits_goes() -> None:
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    evictions: list[str] = []
    alice = make_member("conn-alice", evictions=evictions, max_messages=1)
    assert hub.add(alice, "alice")
    hub.send(alice, HELLO)
    alice.close()
    hub.send(alice, HELLO)  # would be past the bound, were it open
    hub.publish(HELLO)
    hub.flush()
    assert alice.evicted is None
    assert evictions == []
    assert on_evict.calls == []
    assert received(alice) == [HELLO_LINE]  # what was queued before closing


def test_a_stalled_readers_log_memory_comes_back_when_it_goes() -> None:
    hub = Hub(history_lines=0)
    lobby = hub.open_room("#lobby")
    stalled = join(
        hub,
        "stalled",
        room=lobby,
        max_messages=10**4,
        max_bytes=10**6,
        sink=FakeSink(0),
    )
    alice, bob = join(hub, "alice", room=lobby), join(hub, "bob", room=lobby)
    for number in range(2000):
        say(hub, lobby, bob, f"line {number}")
        hub.flush()
    assert len(lobby.log) == 2000  # kept for the one still behind
    hub.kick(stalled, reason="gone")
    say(hub, lobby, bob, "one more")
    hub.flush()
    assert len(lobby.log) <= TRIM_SLACK
    assert len(received(alice)) == 2001


def test_the_log_keeps_only_the_history_it_replays() -> None:
    hub = Hub(history_lines=3)
    lobby = hub.open_room("#lobby")
    alice, bob = join(hub, "alice", room=lobby), join(hub, "bob", room=lobby)
    for number in range(1000):
        assert bob.name is not None
        event = ev.Message(0.0, "#lobby", bob.name, f"line {number}")
        hub.publish(event, room=lobby, exclude=bob, keep=70)
        hub.flush()
    assert len(lobby.log) <= TRIM_SLACK + 3
    assert [e.text for e in lobby.recent()] == [  # type: ignore[union-attr]
        "line 997",
        "line 998",
        "line 999",
    ]
    assert alice.evicted is None


# --------------------------------------------------------------------------
# Names


def test_add_refuses_a_taken_name_whatever_its_case() -> None:
    hub = Hub()
    bob = join(hub, "Bob")
    for variant in ("bob", "BOB", "bOb"):
        other = make_member("conn-other")
        assert not hub.add(other, variant)
        assert other.name is None
        assert other not in hub
    assert hub.get("BOB") is bob
    assert hub.names() == ["Bob"]


def test_add_refuses_a_taken_name_in_another_normal_form() -> None:
    hub = Hub()
    join(hub, "Åsa")
    assert not hub.add(make_member("conn-other"), "A\u030asa")
    assert not hub.add(make_member("conn-other"), "ÅSA")
    assert len(hub) == 1


def test_get_finds_any_case() -> None:
    hub = Hub()
    straße = join(hub, "Straße")
    assert hub.get("STRASSE") is straße
    assert hub.get("strasse") is straße
    assert hub.get("nobody") is None


def test_rename_to_a_case_variant_of_ones_own_name() -> None:
    hub = Hub()
    bob = join(hub, "bob")
    assert hub.rename(bob, "BOB")
    assert bob.name == "BOB"
    assert hub.names() == ["BOB"]
    assert hub.get("bob") is bob
    assert len(hub) == 1


def test_rename_onto_anothers_name_is_refused() -> None:
    hub = Hub()
    alice, bob = join(hub, "alice"), join(hub, "bob")
    assert not hub.rename(bob, "ALICE")
    assert bob.name == "bob"
    assert hub.get("alice") is alice
    assert hub.get("bob") is bob
    assert hub.names() == ["alice", "bob"]


def test_rename_frees_the_old_name() -> None:
    hub = Hub()
    bob = join(hub, "bob")
    assert hub.rename(bob, "robert")
    assert hub.get("bob") is None
    assert hub.get("robert") is bob
    newcomer = make_member("conn-new")
    assert hub.add(newcomer, "Bob")
    assert hub.names() == ["Bob", "robert"]


def test_rename_of_a_departed_member_leaves_others_alone() -> None:
    hub = Hub()
    gone = join(hub, "bob")
    assert hub.remove(gone)
    bob = join(hub, "bob")
    hub.rename(gone, "alice")
    assert hub.get("bob") is bob
    assert bob in hub
    assert gone not in hub
    assert hub.names() == ["bob"]


def test_names_are_sorted_for_people() -> None:
    hub = Hub()
    for name in ("carol", "Bob", "alice", "Dave"):
        join(hub, name)
    assert hub.names() == ["alice", "Bob", "carol", "Dave"]


def test_remove() -> None:
    hub = Hub()
    alice, bob = join(hub, "alice"), join(hub, "bob")
    assert hub.remove(alice)
    assert not hub.remove(alice)
    assert alice not in hub
    assert hub.names() == ["bob"]
    assert hub.add(make_member("conn-new"), "Alice")
    hub.publish(HELLO)
    hub.flush()
    assert received(alice) == []
    assert received(bob) == [HELLO_LINE]


def test_a_backlog_longer_than_one_flush_goes_out_over_the_next() -> None:
    hub = Hub()
    lobby = hub.open_room("#lobby")
    due: list[int] = []
    hub.on_dirty = lambda: due.append(1)
    alice = join(hub, "alice", room=lobby, max_messages=100_000, max_bytes=10**7)
    bob = join(hub, "bob", room=lobby)
    for number in range(5000):  # more than one flush writes
        say(hub, lobby, bob, f"line {number}")
    due.clear()
    hub.flush()
    assert due  # another flush was asked for, with nothing new said
    while alice.behind()[1]:
        hub.flush()
    assert received(alice) == [line(bob, f"line {n}") for n in range(5000)]
