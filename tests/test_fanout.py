"""The eviction rule of fan-out, for any chunking and scheduling order.

Slow means behind, after writing: a burst that a reader drains in time never
evicts it, however the lines are spread over flushes and however its socket
takes them; a reader that stopped reading goes exactly when it is past its
bound, and the log's memory comes back.
"""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.fanout.log import TRIM_SLACK
from trio_chat.fanout.reader import Buffer
from trio_chat.hub import Hub, Member, Room
from trio_chat.protocol import encode_event

MAX_BYTES = 4096
MAX_LINES = 32


class ChunkSink:
    """A socket that takes a varying number of bytes per call (0 included)."""

    holding = False

    def __init__(self, capacities: list[int]) -> None:
        self._capacities = itertools.cycle(capacities)
        self.data = bytearray()

    def send_now(self, buffers: list[Buffer]) -> int:
        data = b"".join(bytes(buffer) for buffer in buffers)
        taken = data[: next(self._capacities)]
        self.data += taken
        return len(taken)


@dataclasses.dataclass
class Say:
    sender: int
    size: int


@dataclasses.dataclass
class Reply:
    reader: int


@dataclasses.dataclass
class Flush:
    pass


@dataclasses.dataclass
class Writable:
    reader: int


Step = Say | Reply | Flush | Writable

steps = st.lists(
    st.one_of(
        st.builds(Say, st.integers(0, 2), st.integers(1, 600)),
        st.builds(Reply, st.integers(0, 3)),
        st.just(Flush()),
        st.builds(Writable, st.integers(0, 3)),
    ),
    max_size=80,
)
capacities = st.lists(st.integers(0, 700), min_size=1, max_size=6).filter(any)


def member(hub: Hub, name: str, sink: ChunkSink, room: Room) -> Member:
    one = Member(
        f"conn-{name}",
        encode=encode_event,
        max_bytes=MAX_BYTES,
        max_messages=MAX_LINES,
    )
    one.sink = sink
    assert hub.add(one, name)
    hub.enter(one, room)
    return one


def drain(hub: Hub, one: Member) -> None:
    """The socket takes data again and again until the member is caught up."""
    while one.behind()[1]:
        hub.flush_member(one)


@given(steps, st.lists(capacities, min_size=4, max_size=4))
@settings(max_examples=300, deadline=None)
def test_a_burst_drained_in_time_never_evicts(
    plan: list[Step], socket_chunks: list[list[int]]
) -> None:
    hub = Hub()
    room = hub.open_room("#lobby")
    sinks = [ChunkSink(chunks) for chunks in socket_chunks]
    readers = [member(hub, f"r{i}", sinks[i], room) for i in range(4)]
    evicted: list[str] = []
    hub.on_evict = lambda one, reason: evicted.append(f"{one.name}: {reason}")
    expected: list[bytearray] = [bytearray() for _ in readers]
    # What each reader was sent since it last caught up, in bytes and lines.
    owed = [[0, 0] for _ in readers]
    for number, step in enumerate(plan):
        event: ev.ServerEvent
        match step:
            case Say(speaker, size):
                event = ev.Message(0.0, "#lobby", f"r{speaker}", "x" * size)
                data = encode_event(event)
                targets = [i for i in range(4) if i != speaker]
            case Reply(reader):
                event = ev.Info(f"reply {number}")
                data = encode_event(event)
                targets = [reader]
            case Flush():
                hub.flush()
                continue
            case Writable(reader):
                hub.flush_member(readers[reader])
                continue
        for target in targets:
            # Drained in time: a reader never owes more than its bound.
            if (
                owed[target][0] + len(data) > MAX_BYTES
                or owed[target][1] + 1 > MAX_LINES
            ):
                hub.flush()
                drain(hub, readers[target])
                owed[target] = [0, 0]
            owed[target][0] += len(data)
            owed[target][1] += 1
            expected[target] += data
        if isinstance(step, Say):
            said_by = readers[step.sender]
            hub.publish(event, room=room, exclude=said_by, sender_key=said_by.key)
        else:
            hub.send(readers[step.reader], event)
    hub.flush()
    for one in readers:
        drain(hub, one)
    assert evicted == []
    for sink, wanted in zip(sinks, expected, strict=True):
        assert sink.data == wanted  # everything, once, in order


@given(st.lists(st.integers(1, 900), min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_a_reader_that_stopped_reading_goes_exactly_past_its_bound(
    sizes: list[int],
) -> None:
    hub = Hub(history_lines=0)
    room = hub.open_room("#lobby")
    stalled = member(hub, "stalled", ChunkSink([0]), room)
    keeping_up = member(hub, "reader", ChunkSink([1 << 20]), room)
    sender = member(hub, "sender", ChunkSink([1 << 20]), room)
    evicted: list[Member] = []
    hub.on_evict = lambda one, reason: evicted.append(one)
    owed_bytes = 0
    gone = False
    for owed_lines, size in enumerate(sizes, 1):
        event = ev.Message(0.0, "#lobby", "sender", "y" * size)
        owed_bytes += len(encode_event(event))
        hub.publish(event, room=room, exclude=sender, sender_key=sender.key)
        hub.flush()
        past = owed_bytes > MAX_BYTES or owed_lines > MAX_LINES
        gone = gone or past
        assert (stalled.evicted is not None) == gone
        assert keeping_up.evicted is None
    assert evicted == ([stalled] if gone else [])
    if gone:
        # Its place in the log went with it: the log holds no more than the
        # others need (nothing) and a little slack.
        assert len(room.log) <= TRIM_SLACK
        assert [cursor.log for cursor in stalled.cursors] == [stalled.own]


@given(
    st.lists(
        st.one_of(
            st.builds(Say, st.integers(0, 2), st.integers(1, 3000)),
            st.just(Flush()),
        ),
        max_size=60,
    )
)
@settings(max_examples=200, deadline=None)
def test_a_pass_carrying_more_than_the_bound_is_no_reason_to_evict(
    plan: list[Say | Flush],
) -> None:
    # A crowd pasting at once: one pass may carry several times a reader's
    # bound; a reader whose socket takes it all is never the worse for it.
    hub = Hub()
    room = hub.open_room("#lobby")
    sinks = [ChunkSink([1 << 20]) for _ in range(4)]
    readers = [member(hub, f"r{i}", sinks[i], room) for i in range(4)]
    evicted: list[Member] = []
    hub.on_evict = lambda one, reason: evicted.append(one)
    expected = [bytearray() for _ in readers]
    for step in plan:
        if isinstance(step, Flush):
            hub.flush()
            continue
        event = ev.Message(0.0, "#lobby", f"r{step.sender}", "z" * step.size)
        sender = readers[step.sender]
        hub.publish(event, room=room, exclude=sender, sender_key=sender.key)
        for target in range(4):
            if target != step.sender:
                expected[target] += encode_event(event)
    hub.flush()
    assert evicted == []
    for sink, wanted in zip(sinks, expected, strict=True):
        assert sink.data == wanted
