"""Membership and fan-out: who is online, and getting events to them.

The hub never waits for anyone. Each room has a log (`fanout.log.Log`): a
line said there is appended once, and every member reads it through a
cursor (`fanout.reader.Reader`, which `Member` is). Once per scheduler pass
the server calls `Hub.flush`, and each member with something new writes
everything it is behind by in one non-blocking call; a member is evicted
("send queue exceeded") only when, after the kernel took what it would, it
is still more than its bound behind, and everyone else carries on.

Replies and private lines go through a small log of the member's own,
merged with its rooms' in the order things happened (one sequence for the
whole server).

Joins and leaves in big rooms are gathered (`Hub.announce_join`,
`announce_leave`, `flush_presence`): announcing each to everyone costs the
square of the room, so a crowd arriving or leaving goes out on a few shared
lines instead, in order with everything else said in the room.

The hub knows nothing of wire formats: each member brings its own encoder,
and an entry is encoded once per encoder however many members read it.
Fan-out to a room goes through `Fanout.publish`, the one narrow interface a
cross-node bus can later implement.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol, cast

from trio_chat import events as ev
from trio_chat.fanout.log import TRIM_SLACK, Encoder, Log, Sequence
from trio_chat.fanout.reader import SEND_QUEUE_EXCEEDED, Owner, Reader, Sink
from trio_chat.limits import (
    HISTORY_LINES,
    HISTORY_REPLAY_BYTES,
    OUTBOX_MAX_BYTES,
    OUTBOX_MAX_MESSAGES,
    PRESENCE_BATCH_MEMBERS,
    PRESENCE_FLUSH_NAMES,
    PRESENCE_NAMES_PER_LINE,
)
from trio_chat.names import lookalike_keys, name_key

__all__ = ["SEND_QUEUE_EXCEEDED", "Encoder", "Fanout", "Hub", "Member", "Room"]

#: What one history line is taken to weigh beyond its text, for the bytes
#: of history a room keeps (`HISTORY_REPLAY_BYTES`): its header, about.
HISTORY_LINE_OVERHEAD: Final = 64


class Member(Reader):
    """One connection as the hub sees it: a name (once chosen) and its reading.

    Its connection, the `owner`, gives it a sink (its socket) and is told
    when the sink refused data and when the hub evicted it.
    """

    # Slots: a member per connection, so every byte counts.
    __slots__ = (
        "_key",
        "_key_of",
        "address",
        "admitted",
        "away",
        "cert",
        "conn_id",
        "connected_at",
        "current",
        "cut",
        "encode",
        "evicted",
        "identified",
        "last_active",
        "last_private_from",
        "name",
        "pending_name",
        "replay_shared",
        "rooms",
        "since",
    )

    def __init__(
        self,
        conn_id: str,
        *,
        encode: Encoder,
        shared: Encoder | None = None,
        replay_shared: bool | None = None,
        owner: Owner | None = None,
        sink: Sink | None = None,
        max_messages: int = OUTBOX_MAX_MESSAGES,
        max_bytes: int = OUTBOX_MAX_BYTES,
    ) -> None:
        super().__init__(
            shared=encode if shared is None else shared,
            max_bytes=max_bytes,
            max_lines=max_messages,
            owner=owner,
            sink=sink,
        )
        #: Encodes what goes to this member alone (replies, private lines);
        #: `shared` encodes room lines, once for every reader using it. The
        #: same function for the line protocol; IRC numerics carry the
        #: recipient's nick, so an IRC member's replies are its own.
        self.encode = encode
        #: History replayed to this member is what `shared` makes of it, the
        #: same bytes for everyone with that encoder (cached per event).
        #: Unless told, true when its replies are encoded as room lines are.
        self.replay_shared = shared is None if replay_shared is None else replay_shared
        self.conn_id = conn_id
        self.name: str | None = None
        self.evicted: str | None = None
        self.rooms: dict[str, Room] = {}  # by room key, in joining order
        self.current: Room | None = None  # where plain lines go
        self.away = ""  # the reason, when away
        self.connected_at = 0.0
        self.last_active = 0.0
        self.last_private_from: str | None = None
        self.pending_name: str | None = None  # registered name awaiting a password
        self.identified: str | None = None  # name key proven by a password
        self.address: str | None = None  # admission key of the peer's address
        self.cert: str | None = None  # SHA-256 of the TLS client certificate
        self.admitted = True  # False until the server password is given
        #: Replays leave out what was said before this (`/since`), or None.
        self.since: float | None = None
        #: Part of a line was out when it was evicted: a goodbye would garble.
        self.cut = False
        self._key_of: str | None = None
        self._key = ""

    def ignore(self, key: str) -> None:
        """Stop showing this member lines from the name key `key`."""
        if not isinstance(self.ignoring, set):
            self.ignoring = set()
        self.ignoring.add(key)
        for cursor in self.cursors:
            cursor.scanned = cursor.pos  # what is waiting is checked again

    def unignore(self, key: str) -> None:
        """Show this member lines from `key` again."""
        if isinstance(self.ignoring, set):
            self.ignoring.discard(key)

    @property
    def key(self) -> str | None:
        """The member's `name_key`, or None before it has a name."""
        name = self.name
        if name is None:
            return None
        if name is not self._key_of:  # worked out once per name, not per line
            self._key_of = name
            self._key = name_key(name)
        return self._key

    @property
    def identity(self) -> str:
        """The key room ops and mutes are held under.

        The account once identified, else this connection: a name taken
        after its owner left inherits nothing, and a rename keeps both.
        """
        return "@" + self.identified if self.identified else self.conn_id

    def close(self) -> None:
        """Take nothing more; what is waiting still goes out."""
        self.closed = True
        for cursor in self.cursors[1:]:  # nothing said from now on
            head = cursor.log.head
            if cursor.until is None or cursor.until > head:
                cursor.until = head

    def evict(self, reason: str) -> None:
        """Mark the member evicted, drop what waits and tell its connection."""
        if self.evicted is None:
            self.evicted = reason
            # Part of a line is out (or held by TLS): a goodbye would garble.
            self.cut = self.mid_line or (self.sink is not None and self.sink.holding)
            self.close()
            self.drop_everything()
            if self.owner is not None:
                self.owner.evicted(reason)


class Room:
    """A room: its members (in joining order), log, topic, ops and settings."""

    def __init__(
        self,
        name: str,
        *,
        permanent: bool = False,
        history_lines: int = HISTORY_LINES,
        address: str | None = None,
    ) -> None:
        self.name = name
        self.key = name_key(name)
        self.permanent = permanent  # kept when empty (the lobby)
        self.address = address  # whose address created it (counted per address)
        self.members: dict[Member, None] = {}
        self.log = Log()
        #: Absolute indexes of the history lines the log keeps for replay,
        #: and what each weighs (`keep`).
        self.history: collections.deque[tuple[int, int]] = collections.deque()
        self._history_weight = 0
        self._history_lines = history_lines
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

    def keep(self, index: int, weight: int) -> None:
        """The log's entry at `index` is history: keep it for replay.

        The newest `history_lines` of them are kept, within
        `HISTORY_REPLAY_BYTES` (by `weight`, about its bytes).
        """
        history = self.history
        history.append((index, weight))
        self._history_weight += weight
        while history and (
            len(history) > self._history_lines
            or (self._history_weight > HISTORY_REPLAY_BYTES and len(history) > 1)
        ):
            self._history_weight -= history.popleft()[1]

    def recent(self) -> list[ev.ServerEvent]:
        """The history lines the log holds, oldest first."""
        log = self.log
        base = log.base
        events = log.events
        return [
            event
            for index, _ in self.history
            if index >= base and (event := events[index - base]) is not None
        ]

    def trim(self) -> None:
        """Let the log forget what everyone has read and history needs not."""
        log = self.log
        if len(log) <= TRIM_SLACK + len(self.history):
            return
        upto = log.slowest()
        if self.history:
            upto = min(upto, self.history[0][0])
        if upto - log.base >= TRIM_SLACK:
            log.trim(upto)


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    """A line published to a room behind a crowd's joins and leaves."""

    event: ev.ServerEvent
    exclude: Member | None
    sender_key: str | None
    keep: int  # its history weight, 0 if it is not history
    #: Who was in the room when it was said: only they hear it.
    members: frozenset[Member]


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

    `on_evict(member, reason)` is called once for each member evicted (too
    far behind, or its socket failed), after it was removed (the chat
    announces the leave there). `on_dirty()` is called when something new
    waits to be written and no flush is due yet: whoever set it calls
    `flush` soon (once per scheduler pass). Nothing here awaits.

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
        history_lines: int = HISTORY_LINES,
    ) -> None:
        self._members: dict[str, Member] = {}
        self.rooms: dict[str, Room] = {}  # by room key
        self._lookalikes: dict[str, Member] = {}  # by confusable_key
        self._rooms_from: dict[str, int] = {}  # rooms open, by creator's address
        self.on_evict = on_evict
        self._evicted: collections.deque[tuple[Member, str]] = collections.deque()
        self._announcing = False
        self.on_presence: Callable[[Room], None] | None = None
        self._on_dirty: Callable[[], None] = lambda: None
        self.batch_presence_from = batch_presence_from
        self.presence_flush_names = presence_flush_names
        self.history_lines = history_lines
        self._presence_waiting: dict[Room, None] = {}  # rooms with some waiting
        self.sequence = Sequence()
        #: Rooms with new entries, and members with new lines of their own
        #: (or a sink that takes data again), since the last `flush`.
        self._dirty_rooms: dict[Room, None] = {}
        self._dirty_members: dict[Member, None] = {}
        self._due = False

    @property
    def on_dirty(self) -> Callable[[], None]:
        """Called when something new waits and no flush is due yet."""
        return self._on_dirty

    @on_dirty.setter
    def on_dirty(self, callback: Callable[[], None]) -> None:
        self._on_dirty = callback
        self._due = False
        if self._dirty_rooms or self._dirty_members:
            self._due_now()

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
            room = Room(
                name,
                permanent=permanent,
                history_lines=self.history_lines,
                address=address,
            )
            self.rooms[room.key] = room
            if address is not None:
                self._rooms_from[address] = self._rooms_from.get(address, 0) + 1
        return room

    def rooms_from(self, address: str) -> int:
        """Rooms open now that were created from `address`."""
        return self._rooms_from.get(address, 0)

    def enter(self, member: Member, room: Room) -> bool:
        """Put `member` in `room` (it becomes the member's current room).

        It hears what is said there from now on. False, and nothing done,
        if `member` is not online (say, evicted as it was being sent the
        room's history): a member gone must not hold a room open for ever.
        """
        if member not in self:
            return False
        room.members[member] = None
        member.rooms[room.key] = room
        member.current = room
        member.follow(room.log)
        return True

    def exit(self, member: Member, room: Room) -> bool:
        """Take `member` out of `room`; True if the room went, being empty.

        What was said there before still reaches it (its own leave, a kick).
        The lobby (a permanent room) never goes.
        """
        room.members.pop(member, None)
        member.rooms.pop(room.key, None)
        member.unfollow(room.log)
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

    # -- delivery -------------------------------------------------------------

    def _due_now(self) -> None:
        if not self._due:
            self._due = True
            self._on_dirty()

    def _append(
        self,
        room: Room,
        event: ev.ServerEvent,
        exclude: Member | None,
        sender_key: str | None,
        keep: int,
        deaf: Iterable[Member] = (),
    ) -> None:
        """Put `event` in the room's log; `exclude` and `deaf` do not hear it."""
        log = room.log
        index = log.append(self.sequence.next(), event, sender_key)
        if exclude is not None:
            exclude.skip(log, index)
        for member in deaf:
            member.skip(log, index)
        if keep:
            room.keep(index, keep)
        if log.readers and room not in self._dirty_rooms:
            self._dirty_rooms[room] = None
            self._due_now()

    def publish(
        self,
        event: ev.ServerEvent,
        *,
        room: Room | None = None,
        exclude: Member | None = None,
        sender_key: str | None = None,
        keep: int = 0,
        deaf: Iterable[Member] = (),
    ) -> None:
        """Deliver `event` to `room` (None: everyone online) but `exclude`.

        Nor to `deaf` (members of the room who must not hear it: the room's
        past, put in its log). Members who `/ignore` `sender_key` are
        skipped. With `keep` (its
        weight, about its bytes), the line is history: the room's log keeps
        it for replay (`Room.recent`).

        Never waits: the line is appended to the room's log once, and goes
        out at the next `flush`.

        Joins and leaves waiting in the room go first: nobody hears from
        someone before their join. Behind more of them than go out at once
        (a crowd of thousands), the event waits its turn in the room's queue
        (`flush_presence`), for those in the room now.
        """
        if room is None:
            if self._presence_waiting:
                self.flush_all_presence()
            encoded: dict[Encoder, bytes] = {}
            for member in self._members.values():
                if member is exclude or member.closed:
                    continue
                if member.ignoring and sender_key in member.ignoring:
                    continue
                data = encoded.get(member.shared)
                if data is None:
                    data = encoded[member.shared] = member.shared(event)
                self._own(member, data)
            return
        if room.pending_presence:
            pending = room.pending_presence
            if len(pending) > self.presence_flush_names:
                members = frozenset(room.members)
                pending.append(_Held(event, exclude, sender_key, keep, members))
                return
            while room.pending_presence:
                self.flush_presence(room)
        self._append(room, event, exclude, sender_key, keep, deaf)

    def _own(self, member: Member, data: bytes) -> None:
        member.own.append_data(self.sequence.next(), data)
        if member not in self._dirty_members:
            self._dirty_members[member] = None
            self._due_now()

    def send(self, member: Member, event: ev.ServerEvent) -> None:
        """Deliver `event` to one member (online or not), never waiting.

        Nothing goes to a member that is closed (on its way out).
        """
        if not member.closed:
            self._own(member, member.encode(event))

    def send_data(self, member: Member, data: bytes) -> None:
        """Deliver `data`, already in `member.encode`'s format, as `send` does."""
        if not member.closed:
            self._own(member, data)

    def writable(self, member: Member) -> None:
        """`member`'s sink takes data again: write what waits at the next flush."""
        member.blocked = False
        if member not in self._dirty_members:
            self._dirty_members[member] = None
            self._due_now()

    def flush(self) -> None:
        """Write what is new to every member concerned; evict the too slow.

        Each member with something new writes it in one non-blocking call
        (`Reader.flush`). Then rooms' logs forget what all have read.
        Never waits.
        """
        self._due = False
        rooms, self._dirty_rooms = self._dirty_rooms, {}
        members, self._dirty_members = self._dirty_members, {}
        for room in rooms:
            for cursor in room.log.readers:
                members[cast(Member, cursor.reader)] = None
        evicted: list[tuple[Member, str]] = []
        for member in members:
            reason = member.flush()
            if reason is not None:
                evicted.append((member, reason))
            elif member.more:
                self._again(member)
        for room in rooms:
            room.trim()
        for member, reason in evicted:
            self._evict(member, reason)
        self._announce_evictions()

    def flush_member(self, member: Member) -> None:
        """Write what waits for `member` now (its sink takes data again)."""
        member.blocked = False
        reason = member.flush()
        if reason is not None:
            self._evict(member, reason)
            self._announce_evictions()
        elif member.more:
            self._again(member)

    def _again(self, member: Member) -> None:
        """`member` has more to write: at the next flush."""
        member.more = False
        if member not in self._dirty_members:
            self._dirty_members[member] = None
            self._due_now()

    # -- presence ------------------------------------------------------------

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
        appended once to the room's log. Each member hears every join and
        leave after its own join exactly once: members who were there before
        hear all of them; a member whose own join is among them only what
        came after it (it learnt of the rest as it joined). Lines published
        behind the part (see `publish`) follow it, to the members who were
        there when they were said. Never waits.
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
        later.intersection_update(room.members)
        if part:
            self._append_presence(room, part, later)
        for line in held:
            deaf = [m for m in room.members if m not in line.members]
            self._append(
                room, line.event, line.exclude, line.sender_key, line.keep, deaf
            )

    def _append_presence(
        self,
        room: Room,
        pending: list[tuple[Member, ev.Joined | ev.Left]],
        later: set[Member],
    ) -> None:
        if len(pending) == 1 and not later:
            member, event = pending[0]
            exclude = member if isinstance(event, ev.Joined) else None
            self._append(room, event, exclude, None, 0)
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

        log = room.log
        indexes: list[int] = []
        for chunk in chunks:
            self._append(room, many(chunk), None, None, 0, later)
            indexes.append(log.head - 1)
        # A member whose own join is in chunk i hears none of chunks 0..i
        # but the names after its own in chunk i, on a line of its own
        # placed just before chunk i+1.
        for number, chunk in enumerate(chunks):
            for at, (member, event) in enumerate(chunk):
                if not isinstance(event, ev.Joined) or member not in room.members:
                    continue
                if member in later:
                    continue
                for index in indexes[: number + 1]:
                    member.skip(log, index)
                after = chunk[at + 1 :]
                if after:
                    seq = log.seqs[indexes[number] - log.base] + 1
                    data = member.shared(many(after))
                    member.own.append_data(seq, data)
                    if member not in self._dirty_members:
                        self._dirty_members[member] = None
                        self._due_now()

    def flush_all_presence(self) -> None:
        """Announce everything waiting, in every room (`flush_presence`)."""
        while self._presence_waiting:
            for room in list(self._presence_waiting):
                self.flush_presence(room)

    # -- leaving ------------------------------------------------------------

    def kick(self, *members: Member, reason: str) -> None:
        """Disconnect `members` now, announcing why (never waits).

        All go before anyone is told, so none is sent the others' leaves.
        """
        for member in members:
            self._evict(member, reason)
        self._announce_evictions()

    def _evict(self, member: Member, reason: str) -> None:
        # Removed at once, so the leave notices that follow skip it: a
        # cascade of evictions costs linear, not quadratic, time.
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
