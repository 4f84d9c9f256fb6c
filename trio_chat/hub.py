"""Membership and fan-out: who is online, and getting events to them.

The hub never waits for anyone. Each member has a bounded outbox (an
`Outbox`: a queue bounded in messages and, by the hub's own accounting, in
bytes, with one waiting writer); delivery never waits, and a member whose
outbox is full is evicted with the reason "send queue exceeded" while
everyone else carries on.

The outbox is a list and a parked writer task rather than a trio memory
channel: it is the same bounded, single-consumer queue, but putting a line
in costs a list append instead of a `send_nowait` (about 15 times the work:
trio's channels guard every call against KeyboardInterrupt and keep
statistics), and the writer takes everything queued in one call. Fan-out
does this once per recipient per line, so it is the server's hottest loop.

Joins and leaves in big rooms are gathered (`Hub.announce_join`,
`announce_leave`, `flush_presence`): announcing each to everyone costs the
square of the room, so a crowd arriving or leaving goes out on a few shared
lines instead, in order with everything else said in the room.

The hub knows nothing of wire formats: each member brings its own encoder,
and an event is encoded once per encoder however many members share it.
Fan-out to a room goes through `Fanout.publish`, the one narrow interface a
cross-node bus can later implement.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

import trio

from trio_chat import events as ev
from trio_chat.limits import (
    OUTBOX_MAX_BYTES,
    OUTBOX_MAX_MESSAGES,
    PRESENCE_BATCH_MEMBERS,
    PRESENCE_FLUSH_NAMES,
    PRESENCE_NAMES_PER_LINE,
)
from trio_chat.names import lookalike_keys, name_key

#: Eviction reason for a member whose outbox is full.
SEND_QUEUE_EXCEEDED: Final = "send queue exceeded"

Encoder = Callable[[ev.ServerEvent], bytes]

#: Whom a member ignores until it first uses /ignore (shared, never changed).
_NOBODY: Final[frozenset[str]] = frozenset()


def _write_now(outbox: Outbox, write: Callable[[bytes], int], data: bytes) -> int:
    """Bytes of `data` the non-blocking `write` took now (0 if none fit).

    A failure (the peer reset the connection, ...) ends the fast path; it
    is kept in `outbox.error` for the writer to raise, since the kernel
    reports it only once.
    """
    try:
        written = write(data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        outbox.direct = None
        outbox.error = exc
        return 0
    if 0 < written < len(data):
        outbox.cut = True  # a line is half out: nothing may go before its rest
    return written


class Outbox:
    """A connection's queue of encoded lines: many producers, one writer.

    `put` never waits; the writer awaits `take`, which returns everything
    queued (joined, up to a batch size) at once. The bound in messages is
    enforced here; the bound in bytes by `Member`, which also counts the
    bytes taken but not yet written.
    """

    __slots__ = (
        "_closed",
        "_items",
        "_max_messages",
        "_writer",
        "cut",
        "direct",
        "error",
    )

    def __init__(self, max_messages: int) -> None:
        # A list, not a deque: the writer takes everything at once, and a
        # deque's first block alone costs 760 bytes on every connection.
        self._items: list[bytes] = []
        self._max_messages = max_messages
        self._closed = False
        self._writer: trio.lowlevel.Task | None = None
        #: A write that never blocks (a non-blocking socket's send), or None:
        #: `Member.flush` writes through it while the writer is idle, with
        #: no task switch. The connection clears it before its socket closes.
        self.direct: Callable[[bytes], int] | None = None
        #: What made a direct write fail, for the writer to raise.
        self.error: OSError | None = None
        #: A direct write sent part of a line; the writer clears it once the
        #: rest is out (until then a goodbye would land mid-line).
        self.cut = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data: bytes) -> bool:
        """Queue `data` and wake the writer; False (nothing queued) if full."""
        if len(self._items) >= self._max_messages:
            return False
        self._items.append(data)
        self.wake()
        return True

    def wake(self) -> None:
        """Wake the writer if it waits (something was queued)."""
        if self._writer is not None:
            trio.lowlevel.reschedule(self._writer)
            self._writer = None

    def close(self) -> None:
        """Take nothing more: the writer gets what is queued, then the end."""
        self._closed = True
        if self._writer is not None:
            trio.lowlevel.reschedule(self._writer)
            self._writer = None

    async def take(self, max_bytes: int) -> bytes:
        """Everything queued, joined, up to about `max_bytes` (at least one line).

        Waits while the outbox is empty. Raises trio.EndOfChannel once it is
        closed and empty. Cancellation while waiting takes nothing.
        """
        if not self._items:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.EndOfChannel
            assert self._writer is None, "an outbox has one writer"
            self._writer = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._writer = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            if not self._items:
                raise trio.EndOfChannel  # woken by close()
        else:
            await trio.lowlevel.checkpoint()
        return self._take_now(max_bytes)

    def receive_nowait(self) -> bytes:
        """One queued line without waiting (tests and tools).

        Raises trio.WouldBlock if empty, trio.EndOfChannel if also closed.
        """
        if self._items:
            return self._items.pop(0)
        raise trio.EndOfChannel if self._closed else trio.WouldBlock

    def _take_now(self, max_bytes: int) -> bytes:
        items = self._items
        if len(items) == 1:
            return items.pop()
        size = 0
        count = 0
        for data in items:
            if size >= max_bytes:
                break
            size += len(data)
            count += 1
        batch = b"".join(items[:count]) if count < len(items) else b"".join(items)
        del items[:count]
        return batch


class Member:
    """One connection as the hub sees it: a name (once chosen) and an outbox.

    The connection's single writer task takes from `outbox` and calls
    `sent(n)` for the bytes it took, which keeps the byte accounting true.
    """

    # Slots: a member per connection, so every byte counts (a __dict__ for
    # these would cost about 600 bytes more each).
    __slots__ = (
        "_closed",
        "_max_bytes",
        "_on_evict",
        "_queued_bytes",
        "_ready",
        "address",
        "admitted",
        "away",
        "cert",
        "conn_id",
        "connected_at",
        "current",
        "encode",
        "evicted",
        "identified",
        "ignoring",
        "last_active",
        "last_private_from",
        "name",
        "on_ready",
        "outbox",
        "pending_name",
        "rooms",
    )

    def __init__(
        self,
        conn_id: str,
        *,
        encode: Encoder,
        on_evict: Callable[[str], None] = lambda reason: None,
        max_messages: int = OUTBOX_MAX_MESSAGES,
        max_bytes: int = OUTBOX_MAX_BYTES,
    ) -> None:
        self.conn_id = conn_id
        self.encode = encode
        self.name: str | None = None
        self.evicted: str | None = None
        self.rooms: dict[str, Room] = {}  # by room key, in joining order
        self.current: Room | None = None  # where plain lines go
        self.away = ""  # the reason, when away
        self.connected_at = 0.0
        self.last_active = 0.0
        #: Name keys whose lines are not shown (`ignore`, `unignore`).
        self.ignoring: set[str] | frozenset[str] = _NOBODY
        self.last_private_from: str | None = None
        self.pending_name: str | None = None  # registered name awaiting a password
        self.identified: str | None = None  # name key proven by a password
        self.address: str | None = None  # admission key of the peer's address
        self.cert: str | None = None  # SHA-256 of the TLS client certificate
        self.admitted = True  # False until the server password is given
        self._on_evict = on_evict
        #: With a direct write, who flushes this member's outbox soon (once
        #: for everything queued meanwhile) instead of waking its writer.
        self.on_ready: Callable[[Member], None] | None = None
        self._ready = False
        self._max_bytes = max_bytes
        self._queued_bytes = 0
        self._closed = False
        self.outbox = Outbox(max_messages)

    def ignore(self, key: str) -> None:
        """Stop showing this member lines from the name key `key`."""
        if not isinstance(self.ignoring, set):
            self.ignoring = set()
        self.ignoring.add(key)

    def unignore(self, key: str) -> None:
        """Show this member lines from `key` again."""
        if isinstance(self.ignoring, set):
            self.ignoring.discard(key)

    @property
    def key(self) -> str | None:
        """The member's `name_key`, or None before it has a name."""
        return None if self.name is None else name_key(self.name)

    @property
    def identity(self) -> str:
        """The key room ops and mutes are held under.

        The account once identified, else this connection: a name taken
        after its owner left inherits nothing, and a rename keeps both.
        """
        return "@" + self.identified if self.identified else self.conn_id

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the outbox."""
        return self._queued_bytes

    @property
    def closed(self) -> bool:
        """True once the outbox takes nothing more."""
        return self._closed

    def deliver(self, data: bytes) -> bool:
        """Queue `data` without waiting; False if the outbox is full.

        Delivering to a closed outbox silently does nothing (True): the
        member is on its way out.
        """
        if self._closed:
            return True
        size = len(data)
        outbox = self.outbox
        if (
            self._queued_bytes + size > self._max_bytes
            or len(outbox._items) >= outbox._max_messages
        ):
            return False
        if outbox._writer is not None and not self._ready:
            if self.on_ready is None:
                outbox._items.append(data)
                self._queued_bytes += size
                outbox.wake()
                return True
            # Idle, and the first line since the last flush: out at once;
            # whatever follows before the flush waits for it, and goes in
            # one write with the rest.
            # (Ready until the flush: no line may overtake a queued rest.)
            self._ready = True
            assert outbox.direct is not None
            written = _write_now(outbox, outbox.direct, data)
            if written < size:
                outbox._items.append(data[written:])
                self._queued_bytes += size - written
            self.on_ready(self)
            return True
        outbox._items.append(data)
        self._queued_bytes += size
        return True

    def hold(self) -> None:
        """Queue the lines that follow for the next flush, not write the first.

        For a burst of lines to one member (a welcome, a history replay):
        one write instead of two. Without a direct write it does nothing.
        """
        if (
            self.on_ready is not None
            and not self._ready
            and self.outbox._writer is not None
            and not self._closed
        ):
            self._ready = True
            self.on_ready(self)

    def flush(self) -> None:
        """Write what is queued now, if the writer is idle (for `on_ready`).

        One non-blocking write of everything queued; what it cannot take
        (or everything, without a direct write) is left to the writer.
        """
        self._ready = False
        outbox = self.outbox
        items = outbox._items
        if outbox._writer is None or not items:
            return  # the writer is at work: it takes what is queued itself
        if outbox.direct is not None:
            data = items[0] if len(items) == 1 else b"".join(items)
            items.clear()
            written = _write_now(outbox, outbox.direct, data)
            self._queued_bytes -= written
            if written == len(data):
                return
            items.append(data[written:])
        outbox.wake()

    def sent(self, nbytes: int) -> None:
        """The writer took `nbytes` from the outbox."""
        self._queued_bytes -= nbytes

    def close(self) -> None:
        """Take nothing more; the writer sends what is queued, then stops."""
        self._closed = True
        self.outbox.close()

    def evict(self, reason: str) -> None:
        """Mark the member evicted, close its outbox and tell its connection."""
        if self.evicted is None:
            self.evicted = reason
            self.close()
            self._on_evict(reason)


class Room:
    """A room: its members (in joining order), topic, ops and settings."""

    def __init__(
        self, name: str, *, permanent: bool = False, address: str | None = None
    ) -> None:
        self.name = name
        self.key = name_key(name)
        self.permanent = permanent  # kept when empty (the lobby)
        self.address = address  # whose address created it (counted per address)
        self.members: dict[Member, None] = {}
        self.ops: set[str] = set()  # `Member.identity` of each op
        self.topic = ""
        self.topic_setter = ""
        self.topic_ts = 0.0
        self.password = ""
        self.ops_only = False  # only ops may speak (lectures)
        #: Until when (chat clock) each muted user may not speak, kept twice:
        #: by `Member.identity`, so a rename stays muted, and by name key, so
        #: a reconnection under the same name does. Two dicts, since a name
        #: can spell a connection id ("c1").
        self.muted_people: dict[str, float] = {}
        self.muted_names: dict[str, float] = {}
        #: Joins and leaves not yet announced, in order (`Hub.announce_join`).
        #: Lines published behind many of them wait here too, in order.
        self.pending_presence: list[tuple[Member, ev.Joined | ev.Left] | _Held] = []

    def __len__(self) -> int:
        return len(self.members)

    def names(self) -> list[str]:
        """Member names, sorted for people."""
        return sorted((m.name for m in self.members if m.name), key=name_key)


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    """A line published to a room behind a crowd's joins and leaves."""

    event: ev.ServerEvent
    exclude: Member | None
    sender_key: str | None


def _alike(one: ev.Joined | ev.Left, other: ev.Joined | ev.Left) -> bool:
    """Whether `one` and `other` may share a line: joins, or like leaves."""
    if isinstance(one, ev.Joined) or isinstance(other, ev.Joined):
        return isinstance(one, ev.Joined) and isinstance(other, ev.Joined)
    return one.how == other.how and one.reason == other.reason


class Fanout(Protocol):
    """Deliver an event to a room: the one narrow fan-out interface."""

    def publish(
        self,
        event: ev.ServerEvent,
        *,
        room: Room | None = None,
        exclude: Member | None = None,
    ) -> None:
        """Deliver `event` to `room`'s members (None: everyone) but `exclude`.

        Never waits.
        """


class Hub:
    """The members who are online, by `name_key`, and delivery to them.

    `on_evict(member, reason)` is called once for each member evicted for a
    full outbox, after it was removed (the chat announces the leave there).
    Nothing here awaits.

    With `on_presence` set, joins and leaves in rooms of
    `batch_presence_from` members or more are gathered (`announce_join`,
    `announce_leave`): `on_presence(room)` is called when the first of a
    room's is waiting, and whoever set it calls `flush_presence` soon after.
    """

    def __init__(
        self,
        *,
        on_evict: Callable[[Member, str], None] = lambda m, r: None,
        batch_presence_from: int = PRESENCE_BATCH_MEMBERS,
        presence_flush_names: int = PRESENCE_FLUSH_NAMES,
    ) -> None:
        self._members: dict[str, Member] = {}
        self.rooms: dict[str, Room] = {}  # by room key
        self._lookalikes: dict[str, Member] = {}  # by confusable_key
        self._rooms_from: dict[str, int] = {}  # rooms open, by creator's address
        self.on_evict = on_evict
        self._evicted: collections.deque[tuple[Member, str]] = collections.deque()
        self._announcing = False
        self.on_presence: Callable[[Room], None] | None = None
        self.batch_presence_from = batch_presence_from
        self.presence_flush_names = presence_flush_names
        self._presence_waiting: dict[Room, None] = {}  # rooms with some waiting

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def __contains__(self, member: object) -> bool:
        return isinstance(member, Member) and (
            member.key is not None and self._members.get(member.key) is member
        )

    def get(self, name: str) -> Member | None:
        """The member called `name` (compared through `name_key`), if online."""
        return self._members.get(name_key(name))

    def names(self) -> list[str]:
        """Names online, sorted for people."""
        return sorted(
            (m.name for m in self._members.values() if m.name is not None),
            key=name_key,
        )

    def lookalike(self, name: str) -> Member | None:
        """The online member whose name is confusable with `name`, if any.

        Confusable means their `lookalike_keys` (Unicode TR39 skeletons)
        meet: "alice", "ALICE", "aIice" and "аlice" with a Cyrillic а all do.
        """
        for key in lookalike_keys(name):
            member = self._lookalikes.get(key)
            if member is not None:
                return member
        return None

    def add(self, member: Member, name: str) -> bool:
        """Register `member` as `name`; False if the name's key is taken."""
        key = name_key(name)
        if key in self._members:
            return False
        member.name = name
        self._members[key] = member
        self._index_lookalike(member)
        return True

    def rename(self, member: Member, new: str) -> bool:
        """Rename `member`; False if it is not online or the new key is taken."""
        if member not in self:
            return False
        old_key, new_key = member.key, name_key(new)
        holder = self._members.get(new_key)
        if holder is not None and holder is not member:
            return False
        assert old_key is not None and member.name is not None
        del self._members[old_key]
        self._forget_lookalike(member)
        member.name = new
        self._members[new_key] = member
        self._index_lookalike(member)
        return True

    def _index_lookalike(self, member: Member) -> None:
        assert member.name is not None
        for key in lookalike_keys(member.name):
            self._lookalikes.setdefault(key, member)

    def _forget_lookalike(self, member: Member) -> None:
        assert member.name is not None
        for key in lookalike_keys(member.name):
            if self._lookalikes.get(key) is member:
                del self._lookalikes[key]

    def remove(self, member: Member) -> bool:
        """Remove `member`; False if it was not online."""
        if member not in self:
            return False
        assert member.key is not None
        del self._members[member.key]
        self._forget_lookalike(member)
        return True

    def room(self, name: str) -> Room | None:
        """The room called `name` (compared through `name_key`), if it exists."""
        return self.rooms.get(name_key(name))

    def open_room(
        self, name: str, *, permanent: bool = False, address: str | None = None
    ) -> Room:
        """The room called `name`, created if needed (from `address`, if known).

        A room created stays until its last member leaves (`exit`), or
        until `close_if_empty` finds it without one; until then it counts
        against `address` (`rooms_from`).
        """
        room = self.room(name)
        if room is None:
            room = Room(name, permanent=permanent, address=address)
            self.rooms[room.key] = room
            if address is not None:
                self._rooms_from[address] = self._rooms_from.get(address, 0) + 1
        return room

    def rooms_from(self, address: str) -> int:
        """Rooms open now that were created from `address`."""
        return self._rooms_from.get(address, 0)

    def enter(self, member: Member, room: Room) -> bool:
        """Put `member` in `room` (it becomes the member's current room).

        False, and nothing done, if `member` is not online (say, evicted as
        it was being sent the room's history): a member gone must not hold
        a room open for ever.
        """
        if member not in self:
            return False
        room.members[member] = None
        member.rooms[room.key] = room
        member.current = room
        return True

    def exit(self, member: Member, room: Room) -> bool:
        """Take `member` out of `room`; True if the room went, being empty.

        The lobby (a permanent room) never goes.
        """
        room.members.pop(member, None)
        member.rooms.pop(room.key, None)
        if member.current is room:
            member.current = next(iter(member.rooms.values()), None)
        return self.close_if_empty(room)

    def close_if_empty(self, room: Room) -> bool:
        """Close `room` if nobody is in it (and it is not permanent); True if so."""
        if room.members or room.permanent or self.rooms.get(room.key) is not room:
            return False
        del self.rooms[room.key]
        if room.address is not None:
            left = self._rooms_from[room.address] - 1
            if left:
                self._rooms_from[room.address] = left
            else:
                del self._rooms_from[room.address]
        return True

    def publish(
        self,
        event: ev.ServerEvent,
        *,
        room: Room | None = None,
        exclude: Member | None = None,
        sender_key: str | None = None,
    ) -> None:
        """Deliver `event` to `room` (None: everyone online) but `exclude`.

        Members who `/ignore` `sender_key` are skipped.

        Never waits. Each distinct encoder runs once. A member whose outbox
        is full is evicted on the spot; its leave is announced after everyone
        else got the event.

        Joins and leaves waiting in the room go first: nobody hears from
        someone before their join. Behind more of them than go out at once
        (a crowd of thousands), the event waits its turn in the room's queue
        (`flush_presence`).
        """
        if room is None:
            if self._presence_waiting:
                self.flush_all_presence()
        elif room.pending_presence:
            pending = room.pending_presence
            if len(pending) > self.presence_flush_names:
                pending.append(_Held(event, exclude, sender_key))
                return
            while room.pending_presence:
                self.flush_presence(room)
        self._deliver(
            event,
            self._members.values() if room is None else room.members,
            exclude,
            sender_key,
        )

    def _deliver(
        self,
        event: ev.ServerEvent,
        members: Iterable[Member],
        exclude: Member | None,
        sender_key: str | None,
    ) -> None:
        encoded: dict[Encoder, bytes] = {}
        last_encode: Encoder | None = None
        data = b""
        size = 0
        full: list[Member] = []
        # The hot loop of the server: per recipient it is kept to attribute
        # reads and a list append (`Member.deliver`, inlined). Full outboxes
        # are evicted after the loop, so the room is
        # not changed while it is walked.
        for member in members:
            if member is exclude or member._closed:
                continue
            if member.ignoring and sender_key in member.ignoring:
                continue
            if member.encode is not last_encode:
                last_encode = member.encode
                cached = encoded.get(last_encode)
                if cached is None:
                    cached = encoded[last_encode] = last_encode(event)
                data = cached
                size = len(data)
            outbox = member.outbox
            if (
                member._queued_bytes + size > member._max_bytes
                or len(outbox._items) >= outbox._max_messages
            ):
                full.append(member)
                continue
            if outbox._writer is not None and not member._ready:
                if member.on_ready is None:
                    trio.lowlevel.reschedule(outbox._writer)
                    outbox._writer = None
                else:  # `Member.deliver`'s first line since a flush: now
                    member._ready = True
                    assert outbox.direct is not None
                    written = _write_now(outbox, outbox.direct, data)
                    if written < size:
                        outbox._items.append(data[written:])
                        member._queued_bytes += size - written
                    member.on_ready(member)
                    continue
            outbox._items.append(data)
            member._queued_bytes += size
        for member in full:
            self._evict(member, SEND_QUEUE_EXCEEDED)
        self._announce_evictions()

    def announce_join(self, member: Member, room: Room, event: ev.Joined) -> None:
        """Tell everyone in `room` but `member` that it joined (`event`).

        Never waits. In a room of `batch_presence_from` members or more
        (with `on_presence` set) the join waits for `flush_presence`,
        together with the joins and leaves that come meanwhile; anything
        else published to the room first sends those waiting, so no line is
        heard before its sender's join, and joins and leaves keep their order.
        """
        if self.on_presence is None or (
            not room.pending_presence and len(room.members) < self.batch_presence_from
        ):
            self.publish(event, room=room, exclude=member)
            return
        self._gather(room, member, event)

    def announce_leave(self, member: Member, room: Room, event: ev.Left) -> None:
        """Tell everyone in `room` that `member` (already out of it) left.

        As `announce_join`: in a big room, a quit or a disconnection waits
        and goes out with the others. A `/part` (`how` "parted", which the
        member itself hears too) always goes out at once, after those waiting.
        """
        if (
            self.on_presence is None
            or event.how == "parted"
            or (
                not room.pending_presence
                and len(room.members) + 1 < self.batch_presence_from
            )
        ):
            self.publish(event, room=room)
            return
        self._gather(room, member, event)

    def _gather(self, room: Room, member: Member, event: ev.Joined | ev.Left) -> None:
        pending = room.pending_presence
        pending.append((member, event))
        if len(pending) == 1 or len(pending) == self.presence_flush_names:
            # The first one waiting; or enough to go now (see `flush_presence`).
            self._presence_waiting[room] = None
            assert self.on_presence is not None
            self.on_presence(room)

    def flush_presence(self, room: Room) -> None:
        """Announce the joins and leaves waiting in `room`, in few lines.

        At most `presence_flush_names` of them: the rest wait for another
        call (`on_presence` is told). In order, consecutive joins (and
        consecutive leaves alike in how and reason) share lines of up to
        `PRESENCE_NAMES_PER_LINE` names (`JoinedMany`, `LeftMany`), each
        encoded once per encoder. Each member hears every join and leave
        after its own join exactly once: members who were there before hear
        all of them; a member whose own join is among them only what came
        after it (it learnt of the rest as it joined). Lines published behind
        the part (see `publish`) follow it, to the members who were there
        when they were said. Never waits; full outboxes are evicted as in
        `publish`.
        """
        pending = room.pending_presence
        self._presence_waiting.pop(room, None)
        if not pending:
            return
        # A part at a time, and the lines held behind it; the rest is due
        # again at once (`on_presence` sees a full part waiting) or as usual.
        most = self.presence_flush_names
        count = 0
        while count < min(most, len(pending)) and not isinstance(pending[count], _Held):
            count += 1
        after = count
        while after < len(pending) and isinstance(pending[after], _Held):
            after += 1
        part = [item for item in pending[:count] if not isinstance(item, _Held)]
        held = [item for item in pending[count:after] if isinstance(item, _Held)]
        rest = pending[after:]
        room.pending_presence = rest
        if rest:
            self._presence_waiting[room] = None
            if self.on_presence is not None:
                self.on_presence(room)
        # Members who joined after this part hear none of it.
        later = {
            item[0]
            for item in rest
            if not isinstance(item, _Held) and isinstance(item[1], ev.Joined)
        }
        if part:
            self._deliver_presence(room, part, later)
        members = [m for m in room.members if m not in later] if later else None
        for line in held:
            self._deliver(
                line.event,
                room.members if members is None else members,
                line.exclude,
                line.sender_key,
            )

    def _deliver_presence(
        self,
        room: Room,
        pending: list[tuple[Member, ev.Joined | ev.Left]],
        later: set[Member],
    ) -> None:
        if len(pending) == 1 and not later:
            member, event = pending[0]
            exclude = member if isinstance(event, ev.Joined) else None
            self._deliver(event, room.members, exclude, None)
            return
        chunks: list[list[tuple[Member, ev.Joined | ev.Left]]] = []
        for item in pending:
            last = chunks[-1] if chunks else None
            if (
                last is not None
                and len(last) < PRESENCE_NAMES_PER_LINE
                and _alike(last[0][1], item[1])
            ):
                last.append(item)
            else:
                chunks.append([item])

        def many(part: list[tuple[Member, ev.Joined | ev.Left]]) -> ev.ServerEvent:
            first, ts = part[0][1], part[-1][1].ts
            names = tuple(event.name for _, event in part)
            if isinstance(first, ev.Joined):
                return ev.JoinedMany(ts, room.name, names)
            return ev.LeftMany(ts, room.name, names, first.how, first.reason)

        events = [many(chunk) for chunk in chunks]
        position: dict[Member, tuple[int, int]] = {}  # joiners: chunk, place
        for index, chunk in enumerate(chunks):
            for at, (member, event) in enumerate(chunk):
                if isinstance(event, ev.Joined):
                    position[member] = (index, at)
        lines: dict[Encoder, list[bytes]] = {}
        everything: dict[Encoder, bytes] = {}
        full: list[Member] = []
        for member in room.members:
            if member._closed or member in later:
                continue
            encode = member.encode
            encoded = lines.get(encode)
            if encoded is None:
                encoded = lines[encode] = [encode(event) for event in events]
                everything[encode] = b"".join(encoded)
            place = position.get(member)
            if place is None:
                data = everything[encode]
            else:
                index, at = place
                after = chunks[index][at + 1 :]
                head = encode(many(after)) if after else b""
                data = head + b"".join(encoded[index + 1 :])
                if not data:
                    continue
            if not member.deliver(data):
                full.append(member)
        for member in full:
            self._evict(member, SEND_QUEUE_EXCEEDED)
        self._announce_evictions()

    def flush_all_presence(self) -> None:
        """Announce everything waiting, in every room (`flush_presence`)."""
        while self._presence_waiting:
            for room in list(self._presence_waiting):
                self.flush_presence(room)

    def send(self, member: Member, event: ev.ServerEvent) -> None:
        """Deliver `event` to one member (online or not), never waiting.

        A member whose outbox is full is evicted.
        """
        if not member.deliver(member.encode(event)):
            self._evict(member, SEND_QUEUE_EXCEEDED)
            self._announce_evictions()

    def send_data(self, member: Member, data: bytes) -> None:
        """Deliver `data`, already in `member.encode`'s format, as `send` does."""
        if not member.deliver(data):
            self._evict(member, SEND_QUEUE_EXCEEDED)
            self._announce_evictions()

    def kick(self, *members: Member, reason: str) -> None:
        """Disconnect `members` now, announcing why (never waits).

        All go before anyone is told, so none is sent the others' leaves.
        """
        for member in members:
            self._evict(member, reason)
        self._announce_evictions()

    def _evict(self, member: Member, reason: str) -> None:
        # Removed at once, so the leave notices that follow skip it: a
        # cascade of full outboxes costs linear, not quadratic, time.
        if member.evicted is not None:
            return
        was_online = self.remove(member)
        member.evict(reason)
        if was_online:
            self._evicted.append((member, reason))

    def _announce_evictions(self) -> None:
        # Announcing a leave publishes, which may evict more: a work list
        # instead of recursion keeps that flat.
        if self._announcing:
            return
        self._announcing = True
        try:
            while self._evicted:
                member, reason = self._evicted.popleft()
                self.on_evict(member, reason)
        finally:
            self._announcing = False
