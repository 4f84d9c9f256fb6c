"""The hub: membership by name, fan-out that never waits, eviction.

Nothing in the hub awaits, and trio memory channels need no running event
loop for `send_nowait`/`receive_nowait`, so these are plain synchronous
tests on real channels.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from trio_chat import events as ev
from trio_chat.hub import SEND_QUEUE_EXCEEDED, Hub, Member, Outbox
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


def make_member(
    conn_id: str,
    *,
    evictions: list[str] | None = None,
    max_messages: int = 16,
    max_bytes: int = 64 * 1024,
) -> Member:
    return Member(
        conn_id,
        encode=encode_event,
        on_evict=(evictions.append if evictions is not None else lambda reason: None),
        max_messages=max_messages,
        max_bytes=max_bytes,
    )


def join(
    hub: Hub, name: str, *, max_messages: int = 16, max_bytes: int = 64 * 1024
) -> Member:
    member = make_member(f"conn-{name}", max_messages=max_messages, max_bytes=max_bytes)
    assert hub.add(member, name)
    return member


def received(member: Member) -> list[bytes]:
    """Everything queued in the member's outbox right now."""
    lines: list[bytes] = []
    while True:
        try:
            lines.append(member.outbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return lines


def outbox_is_closed(member: Member) -> bool:
    """Drain the outbox; True if it then reports end of channel."""
    received(member)
    try:
        member.outbox.receive_nowait()
    except trio.EndOfChannel:
        return True
    except trio.WouldBlock:
        return False
    raise AssertionError("received_nowait after a drain returned data")


# --------------------------------------------------------------------------
# Delivery


def test_publish_reaches_everyone_but_the_excluded() -> None:
    hub = Hub()
    alice, bob, carol = (join(hub, name) for name in ("alice", "bob", "carol"))
    hub.publish(HELLO, exclude=bob)
    assert received(alice) == [HELLO_LINE]
    assert received(bob) == []
    assert received(carol) == [HELLO_LINE]
    hub.publish(HELLO)
    assert [received(m) for m in (alice, bob, carol)] == [[HELLO_LINE]] * 3


def test_publish_skips_members_not_yet_named() -> None:
    hub = Hub()
    alice = join(hub, "alice")
    newcomer = make_member("conn-new")
    hub.publish(HELLO)
    assert received(alice) == [HELLO_LINE]
    assert received(newcomer) == []


def test_send_reaches_one_member_online_or_not() -> None:
    hub = Hub()
    alice, bob = join(hub, "alice"), join(hub, "bob")
    newcomer = make_member("conn-new")
    hub.send(alice, HELLO)
    hub.send(newcomer, HELLO)
    assert received(alice) == [HELLO_LINE]
    assert received(bob) == []
    assert received(newcomer) == [HELLO_LINE]


def test_an_event_is_encoded_once_per_encoder() -> None:
    hub = Hub()
    plain, tagged = CountingEncoder(), CountingEncoder(b"tag:")
    members = [Member(f"conn-{i}", encode=plain if i % 3 else tagged) for i in range(9)]
    for i, member in enumerate(members):
        assert hub.add(member, f"user{i}")
    hub.publish(HELLO, exclude=members[1])
    assert (plain.calls, tagged.calls) == (1, 1)
    for i, member in enumerate(members):
        expected = [] if i == 1 else [(b"" if i % 3 else b"tag:") + HELLO_LINE]
        assert received(member) == expected
    hub.publish(HELLO)
    assert (plain.calls, tagged.calls) == (2, 2)


# --------------------------------------------------------------------------
# Eviction


@pytest.mark.parametrize(
    "limits",
    [
        {"max_messages": 2},
        # Room for two lines and a byte short of a third.
        {"max_bytes": 3 * len(HELLO_LINE) - 1},
    ],
    ids=["by-count", "by-bytes"],
)
def test_a_full_outbox_evicts_only_its_member(limits: dict[str, int]) -> None:
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    slow_evictions: list[str] = []
    slow = make_member("conn-slow", evictions=slow_evictions, **limits)
    assert hub.add(slow, "slow")
    alice, bob = join(hub, "alice"), join(hub, "bob")

    hub.publish(HELLO)
    hub.publish(HELLO)
    assert slow.evicted is None
    assert on_evict.calls == []

    hub.publish(HELLO)  # the third does not fit
    assert slow.evicted == SEND_QUEUE_EXCEEDED
    assert slow_evictions == [SEND_QUEUE_EXCEEDED]
    assert on_evict.calls == [(slow, SEND_QUEUE_EXCEEDED)]
    assert slow not in hub
    assert hub.get("slow") is None
    assert hub.names() == ["alice", "bob"]
    assert slow.closed
    # The others got everything, the evicted member what fitted, then the end.
    assert received(alice) == [HELLO_LINE] * 3
    assert received(bob) == [HELLO_LINE] * 3
    assert received(slow) == [HELLO_LINE] * 2
    assert outbox_is_closed(slow)

    # Later traffic neither reaches it nor evicts it again.
    hub.publish(HELLO)
    hub.send(slow, HELLO)
    assert slow_evictions == [SEND_QUEUE_EXCEEDED]
    assert on_evict.calls == [(slow, SEND_QUEUE_EXCEEDED)]
    assert received(alice) == [HELLO_LINE]


def test_an_outbox_exactly_full_in_bytes_is_not_evicted() -> None:
    hub = Hub()
    exact = join(hub, "exact", max_bytes=2 * len(HELLO_LINE))
    hub.publish(HELLO)
    hub.publish(HELLO)
    assert exact.evicted is None
    assert exact.queued_bytes == 2 * len(HELLO_LINE)


def test_send_to_a_full_outbox_evicts() -> None:
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    alice = join(hub, "alice", max_messages=1)
    hub.send(alice, HELLO)
    hub.send(alice, HELLO)
    assert alice.evicted == SEND_QUEUE_EXCEEDED
    assert alice not in hub
    assert on_evict.calls == [(alice, SEND_QUEUE_EXCEEDED)]


def test_evicting_a_member_not_online_announces_nothing() -> None:
    # A connection still choosing a name that stops reading is evicted, but
    # there is no leave to announce for someone who never joined.
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    evictions: list[str] = []
    newcomer = make_member("conn-new", evictions=evictions, max_messages=1)
    hub.send(newcomer, HELLO)
    hub.send(newcomer, HELLO)
    assert evictions == [SEND_QUEUE_EXCEEDED]
    assert outbox_is_closed(newcomer)
    assert on_evict.calls == []


def test_eviction_cascade_terminates_and_evicts_each_once() -> None:
    # The hub's on_evict announces the leave to everyone, which fills the
    # next slow member's outbox, whose leave is announced in turn.
    announced: list[str] = []
    hub = Hub()

    def announce_leave(member: Member, reason: str) -> None:
        assert member.name is not None
        announced.append(member.name)
        hub.publish(ev.Info(f"{member.name} left: {reason}"))

    hub.on_evict = announce_leave
    member_evictions: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    a = make_member("conn-a", evictions=member_evictions["a"], max_messages=1)
    b = make_member("conn-b", evictions=member_evictions["b"], max_messages=2)
    c = make_member("conn-c", evictions=member_evictions["c"], max_messages=3)
    for member, name in ((a, "a"), (b, "b"), (c, "c")):
        assert hub.add(member, name)
    survivor = join(hub, "survivor", max_messages=100)

    hub.publish(ev.Info("1"))  # a is now full
    hub.publish(ev.Info("2"))  # a overflows; its leave fills b, b's fills c

    assert announced == ["a", "b", "c"]
    assert member_evictions == {name: [SEND_QUEUE_EXCEEDED] for name in "abc"}
    assert hub.names() == ["survivor"]

    def lines(*texts: str) -> list[bytes]:
        return [encode_event(ev.Info(text)) for text in texts]

    left = {name: f"{name} left: {SEND_QUEUE_EXCEEDED}" for name in "abc"}
    assert received(survivor) == lines("1", "2", left["a"], left["b"], left["c"])
    assert received(b) == lines("1", "2")
    assert received(c) == lines("1", "2", left["a"])
    assert all(outbox_is_closed(m) for m in (a, b, c))


def test_a_member_found_full_twice_is_evicted_once() -> None:
    # `second` overflows on the publish and again on `first`'s announcement.
    calls = Evictions()
    hub = Hub()

    def on_evict(member: Member, reason: str) -> None:
        calls(member, reason)
        hub.publish(HELLO)

    hub.on_evict = on_evict
    evictions: dict[str, list[str]] = {"first": [], "second": []}
    members = {
        name: make_member(f"conn-{name}", evictions=evictions[name], max_messages=1)
        for name in evictions
    }
    for name, member in members.items():
        assert hub.add(member, name)
    hub.publish(HELLO)
    hub.publish(HELLO)
    assert calls.calls == [
        (members["first"], SEND_QUEUE_EXCEEDED),
        (members["second"], SEND_QUEUE_EXCEEDED),
    ]
    assert evictions == {
        "first": [SEND_QUEUE_EXCEEDED],
        "second": [SEND_QUEUE_EXCEEDED],
    }
    assert len(hub) == 0


def test_a_long_eviction_cascade_does_not_recurse() -> None:
    # Every leave announcement finds all the remaining slow members full;
    # each eviction must not nest the next one's (no RecursionError).
    hub = Hub()
    announced: list[str] = []

    def announce_leave(member: Member, reason: str) -> None:
        assert member.name is not None
        announced.append(member.name)
        hub.publish(ev.Info(f"{member.name} left"))

    hub.on_evict = announce_leave
    count = sys.getrecursionlimit() // 2
    for i in range(count):
        join(hub, f"slow{i}", max_messages=1)
    hub.publish(HELLO)
    hub.publish(HELLO)
    assert sorted(announced) == sorted(f"slow{i}" for i in range(count))
    assert len(hub) == 0


def test_send_to_a_closed_member_is_a_no_op() -> None:
    on_evict = Evictions()
    hub = Hub(on_evict=on_evict)
    evictions: list[str] = []
    alice = make_member("conn-alice", evictions=evictions, max_messages=1)
    assert hub.add(alice, "alice")
    hub.send(alice, HELLO)
    alice.close()
    hub.send(alice, HELLO)  # would overflow, were it open
    hub.publish(HELLO)
    assert alice.evicted is None
    assert evictions == []
    assert on_evict.calls == []
    assert received(alice) == [HELLO_LINE]  # what was queued before closing
    assert outbox_is_closed(alice)


# --------------------------------------------------------------------------
# Byte accounting


def test_sent_returns_the_bytes_to_the_budget() -> None:
    hub = Hub()
    alice = join(hub, "alice", max_bytes=len(HELLO_LINE))
    hub.send(alice, HELLO)
    assert alice.queued_bytes == len(HELLO_LINE)
    data = alice.outbox.receive_nowait()
    alice.sent(len(data))
    assert alice.queued_bytes == 0
    # With the budget back, the next line fits and nobody is evicted.
    hub.send(alice, HELLO)
    assert alice.evicted is None
    assert alice.queued_bytes == len(HELLO_LINE)


def test_without_sent_the_byte_budget_runs_out() -> None:
    hub = Hub()
    alice = join(hub, "alice", max_bytes=len(HELLO_LINE))
    hub.send(alice, HELLO)
    alice.outbox.receive_nowait()  # taken, but never reported with sent()
    hub.send(alice, HELLO)
    assert alice.evicted == SEND_QUEUE_EXCEEDED


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
    assert received(alice) == []
    assert received(bob) == [HELLO_LINE]


# --------------------------------------------------------------------------
# The outbox: bounded, one waiting writer, batches


async def test_the_writer_takes_everything_queued_in_one_batch() -> None:
    outbox = Outbox(max_messages=3)
    assert all(outbox.put(line) for line in (b"a\r\n", b"b\r\n", b"c\r\n"))
    assert not outbox.put(b"d\r\n")  # full: the caller evicts, nothing queued
    assert await outbox.take(65536) == b"a\r\nb\r\nc\r\n"
    assert outbox.put(b"d\r\n")
    assert outbox.put(b"e\r\n")
    assert await outbox.take(1) == b"d\r\n"  # at least one line, then stop
    assert await outbox.take(1) == b"e\r\n"


async def test_a_waiting_writer_wakes_on_put_and_ends_on_close() -> None:
    outbox = Outbox(max_messages=8)
    taken: list[bytes] = []

    async def writer() -> None:
        while True:
            try:
                taken.append(await outbox.take(65536))
            except trio.EndOfChannel:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        outbox.put(b"one\r\n")
        outbox.put(b"two\r\n")  # before the writer runs: the same batch
        await trio.testing.wait_all_tasks_blocked()
        assert taken == [b"one\r\ntwo\r\n"]
        outbox.put(b"last\r\n")
        outbox.close()  # what is queued still goes, then the end
    assert taken == [b"one\r\ntwo\r\n", b"last\r\n"]
    with pytest.raises(trio.EndOfChannel):
        outbox.receive_nowait()


async def test_a_cancelled_take_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(max_messages=8)
    with trio.move_on_after(0.01):
        await outbox.take(65536)
    assert outbox.put(b"kept\r\n")  # no writer left parked
    assert await outbox.take(65536) == b"kept\r\n"


async def test_an_idle_writer_is_bypassed_by_a_direct_write() -> None:
    hub = Hub()
    alice = join(hub, "alice")
    written: list[bytes] = []
    room_for = [100]

    def direct(data: bytes) -> int:
        if room_for[0] == 0:
            raise BlockingIOError
        n = min(len(data), room_for[0])
        room_for[0] -= n
        written.append(data[:n])
        return n

    ready: list[Member] = []
    alice.outbox.direct = direct
    alice.on_ready = ready.append
    taken: list[bytes] = []

    async def writer() -> None:
        taken.append(await alice.outbox.take(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        alice.deliver(b"x" * 30)  # idle: written at once
        alice.deliver(b"y" * 60)  # until the flush, lines wait ...
        alice.deliver(b"z" * 30)
        assert written == [b"x" * 30]
        assert ready == [alice]  # ... and the member is flushed once
        alice.flush()  # one write of both: 70 bytes fit, the rest waits
        assert written == [b"x" * 30, b"y" * 60 + b"z" * 10]
        assert alice.queued_bytes == 20
        assert alice.outbox.cut  # half a line is out: no goodbye may follow
    assert taken == [b"z" * 20]  # the writer took the rest


async def test_a_held_burst_goes_out_in_one_write_at_the_flush() -> None:
    hub = Hub()
    alice = join(hub, "alice")
    written: list[bytes] = []

    def direct(data: bytes) -> int:
        written.append(data)
        return len(data)

    ready: list[Member] = []
    alice.outbox.direct = direct
    alice.on_ready = ready.append

    async with trio.open_nursery() as nursery:
        nursery.start_soon(alice.outbox.take, 65536)
        await trio.testing.wait_all_tasks_blocked()
        alice.hold()  # a welcome and what follows it
        alice.deliver(b"WELCOME\r\n")
        alice.deliver(b"INFO\r\n")
        assert written == []  # nothing yet, not even the first line
        assert ready == [alice]
        alice.hold()  # already held: no second flush asked for
        assert ready == [alice]
        alice.flush()
        assert written == [b"WELCOME\r\nINFO\r\n"]
        assert alice.queued_bytes == 0
        nursery.cancel_scope.cancel()


def test_hold_without_a_direct_write_does_nothing() -> None:
    hub = Hub()
    alice = join(hub, "alice")
    alice.hold()
    hub.send(alice, HELLO)
    assert received(alice) == [HELLO_LINE]


async def test_a_failed_direct_write_is_kept_for_the_writer() -> None:
    hub = Hub()
    alice = join(hub, "alice")

    def reset(data: bytes) -> int:
        raise ConnectionResetError(104, "Connection reset by peer")

    ready: list[Member] = []
    alice.outbox.direct = reset
    alice.on_ready = ready.append
    taken: list[bytes] = []

    async def writer() -> None:
        taken.append(await alice.outbox.take(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert alice.deliver(b"hello\r\n")
        assert isinstance(alice.outbox.error, ConnectionResetError)
        assert alice.outbox.direct is None  # no more direct writes
        alice.flush()  # the writer takes the line, and meets the error
    assert taken == [b"hello\r\n"]


async def test_a_rest_left_by_a_direct_write_goes_before_later_lines() -> None:
    hub = Hub()
    alice = join(hub, "alice")
    room_for = [10]

    def direct(data: bytes) -> int:
        if room_for[0] == 0:
            raise BlockingIOError
        n = min(len(data), room_for[0])
        room_for[0] -= n
        return n

    alice.outbox.direct = direct
    alice.on_ready = lambda member: member.flush()  # flushed at once
    taken: list[bytes] = []

    async def writer() -> None:
        taken.append(await alice.outbox.take(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        alice.deliver(b"a" * 30)  # 10 bytes out; the rest wakes the writer
        alice.deliver(b"b" * 5)  # queued behind the rest, never before it
    assert taken == [b"a" * 20 + b"b" * 5]
