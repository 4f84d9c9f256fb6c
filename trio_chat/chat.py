"""The chat itself: names, commands, joins and leaves.

Independent of any wire format and of trio: it receives requests (see
`trio_chat.events`) from connections and answers with server events through
the hub. It never waits; the clock is passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from trio_chat import PROTOCOL_VERSION, __version__
from trio_chat import events as ev
from trio_chat.commands import help_lines
from trio_chat.hub import Encoder, Hub, Member, Room
from trio_chat.limits import (
    HISTORY_DORMANT_BYTES,
    HISTORY_REPLAY_BYTES,
    LIST_OUTBOX_SHARE,
    LIST_PAGE_BYTES,
    LIST_REPLY_RESERVE,
    MAX_HISTORY_FETCH,
    MAX_SERVER_LINE_BYTES,
    Limits,
)
from trio_chat.moderation import (
    MAX_BAN_REASON,
    BanKind,
    BanRecord,
    Moderation,
    ban_target,
    motd_lines,
)
from trio_chat.names import (
    NAME_RULES,
    InvalidName,
    name_key,
    validate_name,
    validate_room,
)
from trio_chat.roomstate import (
    KEY,
    LECTURE,
    MUTE,
    MUTE_NAME,
    OP,
    TOPIC,
    RoomForgotten,
    RoomSettingsSaved,
    SavedRoom,
    kept_identity,
    restore,
    saved_rooms,
    topic_text,
    until_text,
)
from trio_chat.sanitize import sanitize_text

log = logging.getLogger("trio_chat.chat")

#: The welcome banner shown to every new connection.
BANNER: Final = tuple(
    line.rstrip()  # trailing spaces only widen a line, and wrap it sooner
    for line in (
        r"  _        _                 _           _   ",
        r" | |_ _ __(_) ___        ___| |__   __ _| |_ ",
        r" | __| '__| |/ _ \ _____/ __| '_ \ / _` | __|",
        r" | |_| |  | | (_) |_____| (__| | | | (_| | |_ ",
        r"  \__|_|  |_|\___/       \___|_| |_|\__,_|\__|",
        r"",
        r" Welcome to trio-chat: say hello, be kind.  /help lists the commands.",
    )
)
#: The `/help` text, one line each (from the one list of commands).
HELP_LINES: Final = help_lines()
#: Names that fit in one WHO line, so long lists are split.
WHO_NAMES_PER_LINE: Final = 50
#: Rooms whose recent lines are kept in memory when no room limit is set.
MAX_REMEMBERED_ROOMS: Final = 1000
#: Names one user may /ignore at once.
MAX_IGNORED: Final = 100
#: Longest /quit reason kept, in characters.
MAX_REASON_LENGTH: Final = 200
#: What a history line is taken to weigh beyond its text (its header), for
#: the bytes of history kept in memory.
HISTORY_LINE_WEIGHT: Final = 64
#: History replayed at once takes at most 1/this of a member's bound (and at
#: most `HISTORY_REPLAY_BYTES`): the rest is for the lines around it.
REPLAY_OUTBOX_SHARE: Final = 2
#: What marks free text cut short to fit a reply.
CUT_MARK: Final = "\u2026"
#: History lines kept encoded, for everyone who joins a room soon after.
REPLAY_CACHE_LINES: Final = 1024
#: Guest names tried for someone renamed to make way for a name's owner
#: (`guest-c12`, `guest-c12-2`, ...) before they are disconnected instead.
GUEST_NAME_ATTEMPTS: Final = 10
#: Leave reason when the peer closed the connection without /quit.
CONNECTION_CLOSED: Final = "connection closed"
#: Leave reason of a connection whose registered name signed in again
#: elsewhere (its `BYE` code is `events.SIGNED_IN_ELSEWHERE`).
SIGNED_IN_ELSEWHERE: Final = "signed in elsewhere"
#: What an evicted connection is told, where "Disconnected: <reason>." would
#: not say it plainly.
_GOODBYE_TEXTS: Final = {
    SIGNED_IN_ELSEWHERE: (
        "You signed in from another place; this connection is closed."
    ),
}


def eviction_goodbye(reason: str) -> ev.Goodbye:
    """The `BYE` for a connection dropped for `reason` (its code: dashed)."""
    text = _GOODBYE_TEXTS.get(reason, f"Disconnected: {reason}.")
    return ev.Goodbye(reason.replace(" ", "-"), text)


#: The events a room's history holds.
RoomEvent = ev.Message | ev.Action | ev.Joined | ev.Left | ev.Kicked | ev.Renamed
#: The events replayed to whoever joins: what was said, not who came and went.
HistoryEvent = ev.Message | ev.Action | ev.TopicIs


def _weight(event: HistoryEvent) -> int:
    """About the bytes `event` costs as history (memory and replay)."""
    if isinstance(event, ev.TopicIs):
        return len(event.text) + HISTORY_LINE_WEIGHT
    return len(event.text) + HISTORY_LINE_WEIGHT


#: The prompt for a name: one for everyone (a session keeps the last to ask
#: again, so a copy per connection would cost each about 160 bytes).
_NAME_PROMPT: Final = ev.NamePrompt(f"Choose a name: {NAME_RULES}.")


@dataclasses.dataclass(frozen=True, slots=True)
class Persist:
    """A chat line to commit to the store before anyone sees it.

    The connection awaits the commit, then calls `Chat.deliver`.
    """

    room: Room
    event: ev.Message | ev.Action
    sender: Member


@dataclasses.dataclass(frozen=True, slots=True)
class FetchHistory:
    """The member asked for `limit` lines of `room`'s history from the store."""

    room: Room
    limit: int


@dataclasses.dataclass(frozen=True, slots=True)
class AccountAction:
    """Register or identify the member's name: hashing waits on a thread."""

    action: str  # "register" or "identify"
    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class CertAction:
    """Bind (or unbind) the member's TLS client certificate to its account."""

    add: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """Moderation state to commit to the store before it takes effect.

    The connection has the server commit `saved`, then calls `apply`,
    which changes the state and announces it. If the write fails, the
    member is told it did not take, and nothing changes or is announced.
    """

    saved: Saved
    apply: Callable[[], None]


FollowUp = Persist | FetchHistory | AccountAction | CertAction | Commit


@dataclasses.dataclass(frozen=True, slots=True)
class BanSaved:
    """A ban was put in force: keep it."""

    ban: BanRecord


@dataclasses.dataclass(frozen=True, slots=True)
class BanLifted:
    """The ban on this target was lifted: forget it."""

    kind: BanKind
    target_key: str


@dataclasses.dataclass(frozen=True, slots=True)
class MotdSaved:
    """/motd set the message of the day (None: back to the file's)."""

    lines: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True, slots=True)
class TopicSaved:
    """A room's topic changed (an empty topic: cleared)."""

    room_key: str
    room: str
    topic: str
    setter: str
    ts: float
    set_from: str | None = None  # the setter's address


@dataclasses.dataclass(frozen=True, slots=True)
class IgnoreSaved:
    """An identified user ignores (or no longer ignores) a name."""

    owner_key: str
    target_key: str
    add: bool


#: What the chat hands the server to write to the store: behind (`save`,
#: nobody waits) or first (`Commit`, announced once written).
Saved = (
    BanSaved
    | BanLifted
    | MotdSaved
    | TopicSaved
    | IgnoreSaved
    | RoomSettingsSaved
    | RoomForgotten
)


def _encode_replay(encode: Encoder, event: RoomEvent) -> bytes:
    """`event` as a history line, in `encode`'s wire format."""
    return encode(ev.Replayed(event))


def _ignored(member: Member, event: RoomEvent | ev.TopicIs) -> bool:
    """True if `member` ignores the sender of chat line `event`."""
    if not member.ignoring or not isinstance(event, ev.Message | ev.Action):
        return False
    return name_key(event.sender) in member.ignoring


def _duration(seconds: float) -> str:
    """A time span measured here (idle time): `42s`, `5m`, `1h05m`, `2d03h`."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _shown(seconds: float, duration: str) -> str:
    """A duration an op gave, as given (`90s`), else measured."""
    return duration or _duration(seconds)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _fit_text(
    encode: Encoder, build: Callable[[str], ev.ServerEvent], text: str, limit: int
) -> bytes:
    """`build(text)` encoded, its free `text` cut (marked) so it fits `limit`.

    For events whose only free text is `text`, at the end of their line.
    """
    data = encode(build(text))
    if len(data) <= limit:
        return data
    raw = text.encode()
    keep = max(len(raw) - (len(data) - limit) - len(CUT_MARK.encode()), 0)
    return encode(build(raw[:keep].decode("utf-8", errors="ignore") + CUT_MARK))


def _info_ending(start: str, text: str) -> ev.Info:
    """An `Info` line of a fixed `start` and free `text`, always last."""
    return ev.Info(start + text)


def _pages(sizes: Sequence[int], budget: int) -> list[int]:
    """Where each page starts: consecutive items whose sizes fit in `budget`.

    Every page holds at least one item; no items make one empty page.
    """
    starts = [0]
    used = 0
    for index, size in enumerate(sizes):
        if used and used + size > budget:
            starts.append(index)
            used = 0
        used += size
    return starts


def _fit_items(
    encode: Encoder, build: Callable[[int], ev.ServerEvent], count: int, budget: int
) -> bytes:
    """`build(n)` encoded, for the most of `count` items whose bytes fit `budget`.

    For a reply that lists items (`build(n)` holds the first n): tried with
    all of them, then with fewer in proportion to how much it was over, so
    a few encodings find the count; with none fitting, `build(0)`.
    """
    data = encode(build(count))
    while len(data) > budget and count > 0:
        count = min(count - 1, count * budget // len(data))
        data = encode(build(count))
    return data


def _and_more(items: Sequence[str], limit: int, noun: str) -> str:
    """`a, b and 12 more NOUNs`: as many of `items` as fit in `limit` bytes."""
    shown: list[str] = []
    size = 0
    for item in items:
        more = len(items) - len(shown) - 1
        tail = len(f" and {_plural(more, noun)}") if more else 0
        size += len(item.encode()) + 2
        if size + tail > limit and shown:
            break
        shown.append(item)
    text = ", ".join(shown)
    more = len(items) - len(shown)
    return f"{text} and {_plural(more, 'more ' + noun)}" if more else text


class Chat:
    """One chat server's logic. Every method returns without waiting.

    A connection calls `greet` once, `choose_name` with each name attempt
    until it is in, `handle` with each request, and `leave` exactly when it
    goes (calling `leave` again does nothing).
    """

    def __init__(
        self,
        hub: Hub | None = None,
        *,
        clock: Callable[[], float],
        room: str = ev.LOBBY,
        limits: Limits = Limits(),  # noqa: B008 - frozen, shared safely
        durable: bool = False,
        moderation: Moderation | None = None,
    ) -> None:
        self.hub = hub if hub is not None else Hub(history_lines=limits.history_lines)
        self.hub.on_evict = self._evicted
        self.room = room
        self.lobby = self.hub.open_room(room, permanent=True)
        #: With a store, chat lines are committed before fan-out (`Persist`);
        #: either way each room's log keeps its recent lines for replay.
        self.durable = durable
        #: Registered names (None: this server keeps no accounts).
        self.is_registered: Callable[[str], bool] | None = None
        #: The registered name a name looks like (`Accounts.lookalike`).
        self.registered_lookalike: Callable[[str], str | None] = lambda name: None
        self.moderation = moderation if moderation is not None else Moderation()
        #: Writes a moderation change, topic or ignore behind to the store.
        self.save: Callable[[Saved], None] = lambda saved: None
        #: Topics kept in the store, by room key, restored when a room opens.
        self.saved_topics: dict[str, tuple[str, str, float]] = {}
        #: Settings of rooms that were open when the server last stopped,
        #: by room key, given back when each opens (`roomstate`).
        self.saved_rooms: dict[str, SavedRoom] = {}
        #: The opening (`roomstate` seq) of each open room; the lobby's is 0.
        self._openings: dict[str, int] = {}
        self._next_opening = itertools.count(1)
        #: Set when the server shuts down: its leaves are not history.
        self.closing = False
        #: History of rooms that are not open (emptied, or read from the
        #: store at start-up), by room key, with its weight: replayed when
        #: the room opens again. The least recently used go past
        #: `HISTORY_DORMANT_BYTES`.
        self._dormant: collections.OrderedDict[str, tuple[list[HistoryEvent], int]] = (
            collections.OrderedDict()
        )
        self._dormant_weight = 0
        self._clock = clock
        self.limits = limits
        self._encode_replay = functools.lru_cache(maxsize=REPLAY_CACHE_LINES)(
            _encode_replay
        )
        self._greetings: dict[Encoder, bytes] = {}  # hello and banner, encoded
        self.accepting_names = True

    # -- connection life cycle -------------------------------------------

    def greet(self, member: Member, *, prompt: bool = True) -> None:
        """Send the hello line, the banner, who is online and the name prompt.

        Without `prompt` (a client certificate names the account), no prompt.
        """
        greeting = self._greetings.get(member.shared)
        if greeting is None:  # the same for everyone: encoded once
            hello = ev.Hello(
                PROTOCOL_VERSION,
                f"trio-chat/{__version__}",
                self.limits.max_line_bytes,
                self.limits.flood_burst if self.limits.flood_rate else 0,
                self.limits.flood_rate,
                self.limits.max_paste_lines if self.limits.pastes else 0,
                self.limits.max_paste_bytes if self.limits.pastes else 0,
                self.limits.name_timeout,
            )
            greeting = member.encode(hello) + b"".join(
                member.encode(ev.Banner(line)) for line in BANNER
            )
            self._greetings[member.shared] = greeting
        self.hub.send_data(member, greeting)
        online = len(self.hub)  # the newcomer is not among them yet
        self.hub.send(
            member,
            ev.Info(
                f"{_plural(online, 'user')} online." if online else "Nobody is online."
            ),
        )
        if prompt:
            if self.moderation.server_password:
                member.admitted = False
            self.prompt(member)

    def prompt(self, member: Member) -> None:
        """Ask `member` for the server password, if it owes one, else a name."""
        if not member.admitted:
            self.hub.send(
                member,
                ev.PasswordPrompt("*", "This server needs a password: send it."),
            )
            return
        self.hub.send(member, _NAME_PROMPT)

    def give_server_password(self, member: Member, given: str) -> bool:
        """Check the server password `member` sent; True if it was right.

        Right: the member is asked for a name; wrong: told so and asked again.
        """
        if self.moderation.check_server_password(given):
            member.admitted = True
            log.info("[%s] gave the server password", member.conn_id)
            self.prompt(member)
            return True
        log.info("[%s] wrong server password", member.conn_id)
        self.hub.send(member, ev.Error("bad-password", "Wrong server password."))
        self.prompt(member)
        return False

    def _refused_name(self, member: Member, name: str) -> bool:
        """Tell `member` why `name` may not be used here, if it may not."""
        moderation = self.moderation
        key = name_key(name)
        now = self._clock()
        if member.address is not None:
            ban = moderation.find("address", member.address, now)
            if ban is not None:
                self.hub.send(member, ev.Goodbye("banned", ban.told()))
                member.close()
                return True
        ban = moderation.find("name", key, now)
        if ban is not None:
            text = ban.told(f"The name {name} is")
            self._error(member, "banned", text, subject=name)
            return True
        if not moderation.allowed(key):
            self._error(
                member,
                "not-allowed",
                f"The name {name} is not on this server's list.",
                subject=name,
            )
            return True
        if moderation.registered_only and not (
            self.is_registered is not None and self.is_registered(name)
        ):
            self._error(
                member,
                "not-allowed",
                "Only registered names may join this server;"
                " ask an operator for an account.",
                subject=name,
            )
            return True
        return False

    def choose_name(
        self, member: Member, raw: str, *, identified: bool = False
    ) -> bool:
        """Try `raw` as the member's name; True once it is in.

        On an invalid or taken name the member is told why and prompted again.
        A registered name is not taken here: the member is asked for its
        password (`PasswordPrompt`) unless `identified` says it gave it.
        """
        member.pending_name = None
        try:
            name = validate_name(raw)
        except InvalidName as exc:
            shown = sanitize_text(raw)[:40]
            self._error(member, "name-invalid", str(exc), subject=shown)
            self.prompt(member)
            return False
        if self._refused_name(member, name):
            if not member.closed:
                self.prompt(member)
            return False
        if (
            not identified
            and self.is_registered is not None
            and self.is_registered(name)
        ):
            member.pending_name = name
            self.hub.send(
                member,
                ev.PasswordPrompt(
                    name,
                    "This name is registered: send its password,"
                    " or choose another name with /nick NAME.",
                ),
            )
            return False
        if identified:
            member.identified = name_key(name)
            ghost = self.hub.get(name)
            if ghost is not None and ghost is not member:
                self.hub.kick(ghost, reason=SIGNED_IN_ELSEWHERE)
            self._displace_lookalikes(member, name)
        if self._too_similar(member, name):
            self.prompt(member)
            return False
        if not self.hub.add(member, name):
            self._error(
                member,
                "name-taken",
                f"The name {name} is taken; choose another.",
                subject=name,
            )
            self.prompt(member)
            return False
        self.hub.send(
            member,
            ev.Welcome(
                name, f"You are in {self.room} as {name}. Type /help for the commands."
            ),
        )
        self._reply(member, [ev.MotdIs(tuple(self.moderation.motd))])
        if self.moderation.is_operator(member.identified):
            self.hub.send(member, ev.Info("You are a server operator here."))
        # Names, up to a line's worth; past that, a list says nothing (and
        # sorting everyone for each newcomer would cost a crowd dearly).
        count = len(self.hub) - 1
        about = f"{_plural(count, 'other user')} here"
        others = ""
        if 0 < count <= WHO_NAMES_PER_LINE:
            others = ", ".join(n for n in self.hub.names() if n != name)
        # Long names could make even 50 a long line: within a share, or none.
        too_long = len(others.encode()) > self._line_budget() // 2
        if count > WHO_NAMES_PER_LINE or too_long:
            about += "; /who * lists them."
        elif count:
            about += ": " + others
        else:
            about = "Nobody else is here yet."
        self.hub.send(member, ev.Info(about))
        member.connected_at = member.last_active = self._clock()
        self.replay(member, self.lobby)
        lobby = self.lobby
        if lobby.topic:
            topic = ev.TopicIs(
                lobby.topic_ts, lobby.name, lobby.topic_setter, lobby.topic
            )
            self.hub.send(member, topic)
        if not self.hub.enter(member, self.lobby):
            return False  # dropped meanwhile (its outbox was full)
        self._notice_join(member, self.lobby)
        log.info("[%s] joined as %s", member.conn_id, name)
        return True

    # -- history ------------------------------------------------------------

    def now(self) -> float:
        """The chat's clock: the time stamped on events."""
        return self._clock()

    def restore_topics(self, topics: list[tuple[str, str, str, float]]) -> None:
        """Take in the topics kept in the store: (room key, topic, setter, ts).

        Each is shown again when its room next opens (the lobby's at once).
        """
        for room_key, topic, setter, ts in topics[-MAX_REMEMBERED_ROOMS:]:
            self.saved_topics[room_key] = (topic, setter, ts)
        saved = self.saved_topics.get(self.lobby.key)
        if saved is not None:
            lobby = self.lobby
            lobby.topic, lobby.topic_setter, lobby.topic_ts = saved

    def restore_rooms(self, rows: list[tuple[str, str, str, str, int]]) -> None:
        """Take in the room settings kept in the store (`Store.room_settings`).

        Each room gets its settings back when it next opens; the lobby at once.
        """
        self.saved_rooms = saved_rooms(rows)
        if self.saved_rooms:
            last = max(saved.seq for saved in self.saved_rooms.values())
            self._next_opening = itertools.count(last + 1)
        lobby = self.saved_rooms.pop(self.lobby.key, None)
        if lobby is not None:
            restore(lobby, self.lobby, self._clock())

    def preload(self, room_key: str, events: list[RoomEvent]) -> None:
        """Take in a room's recent lines (from the store, at start-up).

        They are replayed to whoever joins the room (within the history
        limits); notices among them are not history and are left out.
        """
        lines: list[HistoryEvent] = [
            event for event in events if isinstance(event, HistoryEvent)
        ]
        lines = lines[-self.limits.history_lines :] if self.limits.history_lines else []
        room = self.hub.rooms.get(room_key)
        if room is not None:
            self._seed(room, lines)
        else:
            self._put_dormant(room_key, lines)

    def _put_dormant(self, room_key: str, events: list[HistoryEvent]) -> None:
        old = self._dormant.pop(room_key, None)
        if old is not None:
            self._dormant_weight -= old[1]
        weight = 0
        kept: list[HistoryEvent] = []
        for event in reversed(events):  # the newest, within a replay's bytes
            weight += _weight(event)
            if weight > HISTORY_REPLAY_BYTES and kept:
                weight -= _weight(event)
                break
            kept.append(event)
        if not kept:
            return
        kept.reverse()
        self._dormant[room_key] = (kept, weight)
        self._dormant_weight += weight
        while self._dormant_weight > HISTORY_DORMANT_BYTES and self._dormant:
            self._dormant_weight -= self._dormant.popitem(last=False)[1][1]

    def _seed(self, room: Room, events: list[HistoryEvent]) -> None:
        """Put history into a room's log, heard by nobody (it is the past)."""
        for event in events:
            self.hub.publish(
                event,
                room=room,
                sender_key=name_key(
                    event.setter if isinstance(event, ev.TopicIs) else event.sender
                ),
                keep=_weight(event),
                deaf=room.members,
            )

    def _open_room(self, name: str, *, address: str | None) -> Room:
        """A new room (made from `address`), with the history it had when it
        was last open."""
        room = self.hub.open_room(name, address=address)
        dormant = self._dormant.pop(room.key, None)
        if dormant is not None:
            self._dormant_weight -= dormant[1]
            self._seed(room, dormant[0])
        return room

    def replay(self, member: Member, room: Room) -> None:
        """Send `member` the room's recent lines, marked as history."""
        data = b"".join(self._fitting(member, room.recent(), since=member.since))
        if data:  # one piece: one outbox message, however many lines
            self.hub.send_data(member, data)

    def _fitting(
        self,
        member: Member,
        events: Sequence[ev.ServerEvent],
        *,
        since: float | None = None,
    ) -> list[bytes]:
        """The replay lines of the newest `events` within a replay's bytes.

        Oldest first; lines from users `member` ignores are left out, and so
        are notices (who came and went is not history). Each event is encoded
        once for everyone who joins soon after (a crowd arriving hears the
        same history). With `since`, what was said before it is left out.
        """
        budget = min(
            HISTORY_REPLAY_BYTES, self.limits.outbox_max_bytes // REPLAY_OUTBOX_SHARE
        )
        lines: list[bytes] = []
        for event in reversed(events):
            if not isinstance(event, HistoryEvent) or _ignored(member, event):
                continue
            if since is not None and event.ts < since:
                break  # seen before it reconnected: so was everything older
            data = (
                self._encode_replay(member.shared, event)
                if member.replay_shared
                else member.encode(ev.Replayed(event))  # its own: not cached
            )
            budget -= len(data)
            if budget < 0:
                break
            lines.append(data)
        lines.reverse()
        return lines

    def recent(self, room: Room, limit: int) -> list[ev.ServerEvent]:
        """Up to `limit` of the room's recent lines held in memory."""
        lines = room.recent()
        return lines[-limit:] if limit else []

    def _notice(
        self, room: Room, event: RoomEvent, *, exclude: Member | None = None
    ) -> None:
        """Publish a notice (join, leave, rename): news, not history."""
        self.hub.publish(event, room=room, exclude=exclude)

    def _notice_join(
        self, member: Member, room: Room, *, tell_joiner: bool = False
    ) -> None:
        """Announce that `member` joined `room`.

        The joiner hears its own join (first) only if `tell_joiner`; the
        others may hear it a moment later, with others (`Hub.announce_join`).
        """
        assert member.name is not None
        event = ev.Joined(self._clock(), room.name, member.name)
        if tell_joiner:
            self.hub.send(member, event)
        self.hub.announce_join(member, room, event)

    def _room_gone(self, room: Room) -> None:
        """An emptied room closed: its history waits for it to open again.

        A keyed room's lines are private: whoever makes a room of that name
        next, perhaps without a key, must not see them. Its settings go
        with it, but not when the server stops: a restart gives them back.
        """
        if not room.password:
            self._put_dormant(
                room.key, [e for e in room.recent() if isinstance(e, HistoryEvent)]
            )
        opening = self._openings.pop(room.key, None)
        if opening is not None and not self.closing:
            self.save(RoomForgotten(room.key, opening))

    def _opened(
        self, member: Member, room: Room, key: str, saved: SavedRoom | None
    ) -> None:
        """Set up a room `member` just opened: as it was kept, or theirs."""
        if saved is not None:
            del self.saved_rooms[room.key]
            self._openings[room.key] = saved.seq
            restore(saved, room, self._clock())
            if room.ops:  # its ops come back; the first back is not one
                return
        else:
            self._openings[room.key] = next(self._next_opening)
            room.password = key
        room.ops.add(member.identity)  # the creator runs the room
        changes: list[tuple[str, str, str | None]] = []
        if key and saved is None:
            changes.append((KEY, "", key))
        if kept_identity(member.identity):
            changes.append((OP, member.identity, ""))
        if changes:
            self.save(self._settings(room, *changes))

    def _settings(
        self, room: Room, *changes: tuple[str, str, str | None]
    ) -> RoomSettingsSaved:
        """Rows of `room`'s settings to keep (`roomstate`)."""
        return RoomSettingsSaved(
            room.key, room.name, self._openings.get(room.key, 0), self._clock(), changes
        )

    def _commit(self, saved: Saved | None, apply: Callable[[], None]) -> Commit | None:
        """`apply` at once if nothing is kept; else once `saved` is committed."""
        if saved is None or not self.durable:
            apply()
            return None
        return Commit(saved, apply)

    def deliver(self, persist: Persist) -> None:
        """Fan out a chat line (after the store committed it)."""
        self._deliver(persist.room, persist.event, persist.sender)

    def _deliver(
        self, room: Room, event: ev.Message | ev.Action, sender: Member
    ) -> None:
        if room.key in self.hub.rooms:
            self.hub.publish(
                event,
                room=room,
                exclude=sender,
                sender_key=sender.key,
                keep=_weight(event),
            )
        elif not room.password:  # everyone left while it was being saved
            kept = self._dormant.get(room.key, ([], 0))[0]
            self._put_dormant(room.key, [*kept, event])

    def _too_similar(self, member: Member, name: str) -> bool:
        """Refuse `name` if it looks like someone else's who is online.

        Or like a registered name, unless `member` proved that very name:
        a registered name's lookalikes are nobody else's to take.
        """
        other = self.hub.lookalike(name)
        if other is None or other is member or other.name is None:
            if member.identified == name_key(name):
                return False
            registered = self.registered_lookalike(name)
            if registered is None:
                return False
            text = (
                f"The name {name} looks too much like {registered}, a registered name."
            )
        elif name_key(other.name) == name_key(name):
            text = f"The name {name} is taken; choose another."
        else:
            text = f"The name {name} looks too much like {other.name}, who is online."
        self._error(member, "name-taken", text, subject=name)
        return True

    def _displace_lookalikes(self, member: Member, name: str) -> None:
        """Rename whoever online looks like `name`, which `member` proved.

        The owner of a registered name always gets it: a lookalike online
        (whose name was free when taken) becomes a guest name, and is told.
        One who proved a registered name of its own keeps it.
        """
        for _ in range(len(self.hub)):
            other = self.hub.lookalike(name)
            if other is None or other is member or other.name is None:
                return
            if name_key(other.name) == name_key(name) or (
                other.identified == name_key(other.name)
            ):
                return  # the same name (a ghost), or someone's own account
            old = other.name
            new = self._guest_name(other)
            if new is None or not self.hub.rename(other, new):
                self.hub.kick(other, reason="name taken by its owner")
                continue
            log.info("[%s] %s renamed %s: %s logged in", other.conn_id, old, new, name)
            self.hub.send(
                other,
                ev.Info(
                    f"The name {old} looks too much like {name}, a registered name"
                    f" whose owner just logged in: you are {new} now"
                    " (/nick to choose another)."
                ),
            )
            self._renamed(other, old, new)

    def _guest_name(self, member: Member) -> str | None:
        """A free name for `member`, renamed to make way: `guest-c12`."""
        base = f"guest-{member.conn_id}"
        for attempt in range(1, GUEST_NAME_ATTEMPTS + 1):
            name = base if attempt == 1 else f"{base}-{attempt}"
            try:
                name = validate_name(name)
            except InvalidName:
                return None  # an id too long for a name
            taken = (self.is_registered is not None and self.is_registered(name)) or (
                self.registered_lookalike(name) is not None
            )
            if not taken and self.hub.lookalike(name) is None:
                return name
        return None

    def leave(self, member: Member, how: ev.LeaveHow, reason: str = "") -> None:
        """`member` is gone: tell the others once, if it had joined."""
        if self.hub.remove(member):
            self._announce_leave(member, how, reason)

    def _evicted(self, member: Member, reason: str) -> None:
        self._announce_leave(member, "disconnected", reason)

    def _announce_leave(self, member: Member, how: ev.LeaveHow, reason: str) -> None:
        assert member.name is not None
        log.info(
            "[%s] %s left: %s%s",
            member.conn_id,
            member.name,
            how,
            f" ({reason})" if reason else "",
        )
        now = self._clock()
        for room in list(member.rooms.values()):
            gone = self.hub.exit(member, room)
            event = ev.Left(now, room.name, member.name, how, reason)
            self.hub.announce_leave(member, room, event)
            if gone:
                self._room_gone(room)

    # -- requests ---------------------------------------------------------

    def handle(self, member: Member, request: ev.Request) -> FollowUp | None:
        """Carry out one request from a member that is in.

        Returns what the connection must still do that waits on the store
        (commit a chat line, then `deliver` it; fetch history), or None.
        """
        name = member.name
        assert name is not None, "requests come only after a name"
        send = self.hub.send
        member.last_active = self._clock()
        if isinstance(request, ev.Reply):
            if member.last_private_from is None:
                self._error(member, "no-one-to-reply", "Nobody has messaged you yet.")
                return None
            request = ev.PrivateMsg(member.last_private_from, request.text)
        match request:
            case ev.Say(text, room_name) | ev.Me(text, room_name):
                notice = isinstance(request, ev.Say) and request.notice
                room = self._speaking_room(member, room_name, quiet=notice)
                if room is not None:
                    event: ev.Message | ev.Action = (
                        ev.Message(self._clock(), room.name, name, text, notice)
                        if isinstance(request, ev.Say)
                        else ev.Action(self._clock(), room.name, name, text)
                    )
                    if self.durable and not room.password:  # keyed: not kept
                        return Persist(room, event, member)
                    self._deliver(room, event, member)
            case ev.Since(ts):
                member.since = ts
            case ev.History(count):
                room = self._member_room(member, "")
                if room is not None:
                    limit = min(count, MAX_HISTORY_FETCH)
                    if self.durable:
                        return FetchHistory(room, limit)
                    self.send_history(member, room, self.recent(room, limit))
            case ev.PrivateMsg(target, text, notice):
                recipient = self.hub.get(target)
                if recipient is None or recipient.name is None:
                    if not notice:  # a notice is never answered
                        shown = sanitize_text(target)[:40]
                        self._error(
                            member,
                            "no-such-user",
                            f"Nobody called {shown} is online.",
                            subject=shown,
                        )
                else:
                    if member.key not in recipient.ignoring:
                        recipient.last_private_from = name
                        private = ev.Private(
                            self._clock(), name, recipient.name, text, notice
                        )
                        send(recipient, private)
                    if recipient.away and not notice:
                        text = f"{recipient.name} is away: {recipient.away}"
                        send(member, ev.AwayIs(recipient.name, recipient.away, text))
            case ev.Register(password) | ev.Identify(password):
                if self.is_registered is None:
                    self._error(
                        member,
                        "no-accounts",
                        "This server keeps no accounts (it runs without a database).",
                    )
                    return None
                action = "register" if isinstance(request, ev.Register) else "identify"
                return AccountAction(action, password)
            case ev.Kick(target, reason, room_name):
                self._kick(member, target, reason[:MAX_REASON_LENGTH], room_name)
            case ev.Mute(target, seconds, duration, room_name):
                return self._mute(member, target, seconds, duration, room_name)
            case ev.Ban(target, seconds, reason, duration):
                return self._ban(
                    member, target, seconds, reason[:MAX_BAN_REASON], duration=duration
                )
            case ev.Unban(target):
                return self._unban(member, target)
            case ev.Bans(page):
                self._list_bans(member, page)
            case ev.Motd(text):
                return self._motd(member, text)
            case ev.CertBinding(add):
                if member.cert is None:
                    self._error(
                        member,
                        "no-certificate",
                        "Your connection has no TLS client certificate.",
                    )
                elif member.identified is None or self.is_registered is None:
                    self._error(
                        member,
                        "not-identified",
                        "Register or /identify your name first.",
                    )
                else:
                    return CertAction(add)
            case ev.RoomMode(setting, value, room_name):
                return self._room_mode(member, setting, value, room_name)
            case ev.Away(reason):
                member.away = reason[:MAX_REASON_LENGTH] or "away"
                text = f"You are marked away: {member.away}"
                send(member, ev.MarkedAway(member.away, text))
            case ev.Back():
                member.away = ""
                send(member, ev.MarkedAway("", "You are back."))
            case ev.Whois(target):
                self._whois(member, target)
            case ev.Ignore(target):
                return self._ignore(member, target)
            case ev.Unignore(target):
                return self._unignore(member, target)
            case ev.Nick(new):
                self._rename(member, name, new)
            case ev.Who(scope, page):
                self._who(member, scope, page)
            case ev.Join(room_name, key, names):
                self._join(member, room_name, key, names=names)
            case ev.PartAll(reason):
                for room in list(member.rooms.values()):
                    self._part(member, room.name, reason[:MAX_REASON_LENGTH])
            case ev.Names(target, detail):
                self._roster(member, target, detail)
            case ev.ListRooms():
                self._room_list(member)
            case ev.IsOn(names, userhost):
                self._is_on(member, names, userhost)
            case ev.Part(room_name, reason):
                if not room_name and reason:
                    # "/part dev" names a room of the member's without its #.
                    first, _, rest = reason.partition(" ")
                    if name_key("#" + first.lstrip("#")) in member.rooms:
                        room_name, reason = first, rest.strip()
                self._part(member, room_name, reason[:MAX_REASON_LENGTH])
            case ev.Switch(room_name):
                self._switch(member, room_name)
            case ev.Rooms(page):
                self._rooms(member, page)
            case ev.Topic(text, room_name):
                return self._topic(member, text, room_name)
            case ev.Help():
                self._reply(member, [ev.HelpLine(line) for line in HELP_LINES])
            case ev.Quit(reason):
                reason = reason[:MAX_REASON_LENGTH]
                self.leave(member, "quit", reason)
                send(member, ev.Goodbye("quit", "Bye!"))
                member.close()
            case ev.BadCommand(code, text):
                send(member, ev.Error(code, text))
        return None

    def send_history(
        self, member: Member, room: Room, events: Sequence[ev.ServerEvent]
    ) -> None:
        """Send `events` (oldest first) to `member` as `room`'s history."""
        lines = self._fitting(member, events)
        count = _plural(len(lines), "line")
        heading = member.encode(ev.Info(f"{count} of {room.name}:"))
        self.hub.send_data(member, heading + b"".join(lines))

    def _op_target(
        self, member: Member, target: str, raw: str = ""
    ) -> tuple[Room, Member] | None:
        """The room `raw` names (or the current one) and `target` in it, if
        `member` is an op there."""
        room = self._member_room(member, raw)
        if room is None:
            return None
        if not self.is_op(member, room):
            self._not_op(member, room)
            return None
        other = self.hub.get(target)
        if other is None or other.name is None or room.key not in other.rooms:
            shown = sanitize_text(target)[:40]
            self._error(
                member,
                "no-such-user",
                f"{shown} is not in {room.name}.",
                subject=shown,
            )
            return None
        return room, other

    def _not_op(self, member: Member, room: Room) -> None:
        self._error(
            member,
            "not-op",
            f"Only the ops of {room.name} may do that.",
            subject=room.name,
        )

    def _kick(self, member: Member, target: str, reason: str, raw: str = "") -> None:
        found = self._op_target(member, target, raw)
        if found is None:
            return
        room, other = found
        assert member.name is not None and other.name is not None
        log.info(
            "[%s] %s kicked %s from %s",
            member.conn_id,
            member.name,
            other.name,
            room.name,
        )
        kicked = ev.Kicked(self._clock(), room.name, other.name, member.name, reason)
        self._notice(room, kicked)
        if self.hub.exit(other, room):
            self._room_gone(room)
        if other.current is not None:
            self.hub.send(other, ev.Switched(other.current.name))

    def _mute(
        self,
        member: Member,
        target: str,
        seconds: float,
        duration: str = "",
        raw: str = "",
    ) -> Commit | None:
        found = self._op_target(member, target, raw)
        if found is None:
            return None
        room, other = found
        assert member.name is not None and other.name is not None
        person, name = other.identity, name_key(other.name)
        until = self._clock() + seconds if seconds > 0 else None
        if until is None:
            text = f"{member.name} unmuted {other.name} in {room.name}."
        else:
            span = "" if seconds == math.inf else f" for {_shown(seconds, duration)}"
            text = f"{member.name} muted {other.name} in {room.name}{span}."
        value = None if until is None else until_text(until)
        changes = [(MUTE_NAME, name, value)]
        if kept_identity(person):
            changes.append((MUTE, person, value))

        def apply() -> None:
            if until is None:
                room.muted_people.pop(person, None)
                room.muted_names.pop(name, None)
            else:
                room.muted_people[person] = until
                room.muted_names[name] = until
            log.info("[%s] %s", member.conn_id, text)
            self.hub.publish(ev.Info(text, room.name), room=room)

        return self._commit(self._settings(room, *changes), apply)

    # -- server-wide moderation ---------------------------------------------

    def _server_op(self, member: Member) -> bool:
        if self.moderation.is_operator(member.identified):
            return True
        self._error(member, "not-operator", "Only server operators may do that.")
        return False

    def _announce(self, member: Member, rooms: list[Room], text: str) -> None:
        """Tell `rooms` and the op's current room what a server op did; log it."""
        log.info("[%s] %s", member.conn_id, text)
        if member.current is not None and member.current not in rooms:
            rooms.append(member.current)
        for room in rooms:
            self.hub.publish(ev.Info(text, room.name), room=room)
        if not rooms:
            self.hub.send(member, ev.Info(text))

    def _ban(
        self,
        member: Member,
        raw: str,
        seconds: float,
        reason: str,
        *,
        duration: str = "",
    ) -> Commit | None:
        if not self._server_op(member):
            return None
        assert member.name is not None
        kind, key = ban_target(raw)
        if kind == "name":
            try:
                validate_name(raw)
            except InvalidName as exc:
                self._error(member, "name-invalid", str(exc))
                return None
            if key == member.key:
                self._error(member, "usage", "You cannot ban yourself.")
                return None
        elif key == member.address:
            self._error(member, "usage", "You cannot ban your own address.")
            return None
        now = self._clock()
        expires = None if seconds == math.inf else now + seconds
        ban = BanRecord(kind, key, reason, member.name, now, expires)
        if not self.moderation.can_add(ban):
            self._error(member, "too-many", "No more bans may be set; /unban some.")
            return None
        return self._commit(
            BanSaved(ban), lambda: self._banned(member, raw, ban, seconds, duration)
        )

    def _banned(
        self, member: Member, raw: str, ban: BanRecord, seconds: float, duration: str
    ) -> None:
        """Put `ban` (kept already) in force: out with whoever it hits; announce."""
        assert member.name is not None
        self.moderation.add(ban)
        kind, key, reason = ban.kind, ban.target_key, ban.reason
        span = "" if ban.expires is None else f" for {_shown(seconds, duration)}"
        targets = [
            other
            for other in self.hub
            if other is not member
            and (other.key == key if kind == "name" else other.address == key)
        ]
        rooms: list[Room] = []
        for other in targets:
            rooms.extend(room for room in other.rooms.values() if room not in rooms)
        shown = _and_more(
            [other.name or "?" for other in targets], self._line_budget() // 2, "user"
        )
        gone = f" ({shown} disconnected)" if kind == "address" and targets else ""
        # Out first: an announcement still being written to them would
        # keep them from reading why they were disconnected.
        self.hub.kick(*targets, reason="banned")
        label = sanitize_text(raw)[:60]
        # The reason last: free text must not come before a fixed part.
        why = f": {reason}" if reason else "."
        text = f"{member.name} banned {label}{span}{gone}{why}"
        self._announce(member, [room for room in rooms if room.members], text)

    def _unban(self, member: Member, raw: str) -> Commit | None:
        if not self._server_op(member):
            return None
        kind, key = ban_target(raw)
        label = sanitize_text(raw)[:60]
        if self.moderation.find(kind, key, self._clock()) is None:
            self._error(member, "not-banned", f"{label} is not banned.")
            return None

        def apply() -> None:
            self.moderation.lift(kind, key)
            self._announce(member, [], f"{member.name} lifted the ban on {label}.")

        return self._commit(BanLifted(kind, key), apply)

    def _list_bans(self, member: Member, page: int) -> None:
        if not self._server_op(member):
            return
        bans = self.moderation.active(self._clock())
        if not bans:
            self.hub.send(member, ev.Info("No bans in force."))
            return
        limit = self._line_budget()
        lines = [
            _fit_text(member.encode, ev.Info, ban.describe(), limit) for ban in bans
        ]
        self._send_page(
            member,
            lines,
            page,
            heading=f"{_plural(len(bans), 'ban')} in force",
            noun="ban",
            command="/bans",
        )

    def _motd(self, member: Member, text: str | None) -> Commit | None:
        moderation = self.moderation
        if text is None:
            if not moderation.motd:
                self.hub.send(member, ev.Info("There is no message of the day."))
            self._reply(member, [ev.MotdIs(tuple(moderation.motd))])
            return None
        if not self._server_op(member):
            return None
        motd = None if text == "-" else motd_lines(text)[0]
        did = "reset" if text == "-" else "set"
        said = f"{member.name} {did} the message of the day."

        def apply() -> None:
            moderation.set_motd = motd
            log.info("[%s] %s", member.conn_id, said)
            told: list[ev.ServerEvent] = [
                ev.Info(said),
                ev.MotdIs(tuple(moderation.motd)),
            ]
            for other in self.hub:
                self._reply(other, told)

        return self._commit(MotdSaved(motd), apply)

    def _room_mode(
        self, member: Member, setting: str, value: str, raw: str = ""
    ) -> Commit | None:
        assert member.name is not None
        room = self._member_room(member, raw)
        if room is None:
            return None
        if not setting:  # a member asks what the settings are
            self.hub.send(member, ev.ModesAre(room.name, room.password, room.ops_only))
            return None
        if not self.is_op(member, room):
            self._not_op(member, room)
            return None
        saved: RoomSettingsSaved | None
        if setting == "op":
            other = self.hub.get(value)
            if other is None or other.name is None or room.key not in other.rooms:
                shown = sanitize_text(value)[:40]
                self._error(
                    member,
                    "no-such-user",
                    f"{shown} is not in {room.name}.",
                    subject=shown,
                )
                return None
            identity = other.identity
            value = other.name
            text = f"{member.name} made {other.name} an op of {room.name}."
            # An op held by a connection ends with it: nothing to keep.
            kept = kept_identity(identity)
            saved = self._settings(room, (OP, identity, "")) if kept else None

            def change() -> None:
                room.ops.add(identity)

        elif setting == "key":
            text = ev.key_notice(member.name, room.name, removed=not value)
            saved = self._settings(room, (KEY, "", value or None))

            def change() -> None:
                room.password = value

        else:
            ops_only = value == "on"
            mode = "only ops may speak" if ops_only else "everyone may speak"
            text = f"{member.name} says: in {room.name} {mode} now."
            saved = self._settings(room, (LECTURE, "", "on" if ops_only else None))

            def change() -> None:
                room.ops_only = ops_only

        by = member.name

        def apply() -> None:
            change()
            log.info("[%s] %s", member.conn_id, text)
            changed = ev.RoomChanged(room.name, by, setting, value, text)
            self.hub.publish(changed, room=room)

        return self._commit(saved, apply)

    def is_op(self, member: Member, room: Room) -> bool:
        """True if `member` may run `room`: one of its ops, or a server operator."""
        return member.identity in room.ops or self.moderation.is_operator(
            member.identified
        )

    def identified(self, member: Member, key: str) -> None:
        """`member` proved the account `key`: ops it held stay with it."""
        old = member.identity
        member.identified = key
        new = member.identity
        for room in member.rooms.values():
            changes: list[tuple[str, str, str | None]] = []
            if old in room.ops:
                room.ops.add(new)
                changes.append((OP, new, ""))
            if old in room.muted_people:
                room.muted_people[new] = room.muted_people[old]
                changes.append((MUTE, new, until_text(room.muted_people[old])))
            if changes and old != new:
                self.save(self._settings(room, *changes))  # behind: nobody is told
        if self.moderation.is_operator(key):
            self.hub.send(member, ev.Info("You are a server operator here."))

    # -- presence -------------------------------------------------------------

    def _whois(self, member: Member, target: str) -> None:
        other = self.hub.get(target)
        if other is None or other.name is None:
            shown = sanitize_text(target)[:40]
            self._error(
                member,
                "no-such-user",
                f"Nobody called {shown} is online.",
                subject=shown,
            )
            return
        now = self._clock()
        names = [room.name for room in other.rooms.values()]
        # Without a room limit someone may be in a thousand: cut, counted.
        rooms = _and_more(names, self._line_budget() // 2, "room") or "no room"
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(other.connected_at))
        idle = _duration(now - other.last_active)
        # The address only to server operators: it is what /ban ADDRESS needs.
        address = (
            other.address
            if other.address is not None
            and self.moderation.is_operator(member.identified)
            else None
        )
        where = f"; from {address}" if address is not None else ""
        about = f"{other.name}: in {rooms}; online since {since}; idle {idle}{where}"
        op_rooms = [
            room.name for room in other.rooms.values() if self.is_op(other, room)
        ]

        def reply(away: str) -> ev.WhoisReply:
            # The away reason last: free text must not come before a fixed part.
            text = f"{about}; away: {away}" if away else about
            return ev.WhoisReply(
                other.name or "",
                text,
                tuple(names),
                tuple(op_rooms),
                other.connected_at,
                now - other.last_active,
                address,
                self.moderation.is_operator(other.identified),
                other.key is not None and other.identified == other.key,
                away,
            )

        if not other.away:
            self.hub.send(member, reply(""))
            return
        self.hub.send_data(
            member, _fit_text(member.encode, reply, other.away, self._line_budget())
        )

    def _ignore(self, member: Member, target: str) -> Commit | None:
        if not target:
            shown = _and_more(sorted(member.ignoring), self._line_budget() - 64, "name")
            self.hub.send(member, ev.Info(f"You ignore {shown or 'nobody'}."))
            return None
        key = name_key(target)
        if key == member.key:
            self._error(member, "usage", "You cannot ignore yourself.")
            return None
        if len(member.ignoring) >= MAX_IGNORED:
            self._error(
                member, "too-many", f"You can ignore at most {MAX_IGNORED} names."
            )
            return None
        shown = sanitize_text(target)[:40]

        def apply() -> None:
            member.ignore(key)
            self.hub.send(
                member,
                ev.Info(f"You no longer see {shown}'s lines (/unignore to undo)."),
            )

        identified = member.identified
        kept = None if identified is None else IgnoreSaved(identified, key, add=True)
        return self._commit(kept, apply)

    def _unignore(self, member: Member, target: str) -> Commit | None:
        key = name_key(target)
        shown = sanitize_text(target)[:40]

        def apply() -> None:
            member.unignore(key)
            self.hub.send(member, ev.Info(f"You see {shown}'s lines again."))

        identified = member.identified
        kept = None if identified is None else IgnoreSaved(identified, key, add=False)
        return self._commit(kept, apply)

    # -- rooms --------------------------------------------------------------

    def _error(
        self, member: Member, code: str, text: str, *, subject: str = ""
    ) -> None:
        self.hub.send(member, ev.Error(code, text, subject))

    def _speaking_room(
        self, member: Member, raw: str = "", *, quiet: bool = False
    ) -> Room | None:
        """The room `raw` names (or the current one), if `member` may speak
        there; else None, and `member` is told why (unless `quiet`)."""
        room = self._member_room(member, raw, quiet=True) if raw else member.current
        if quiet:
            if room is None or self._silenced(member, room):
                return None
            return room
        if raw and room is None:
            return self._member_room(member, raw)  # for the error
        if room is None:
            self._error(member, "no-room", "You are in no room: /join a room first.")
            return None
        if self._silenced(member, room, tell=True):
            return None
        return room

    def _silenced(self, member: Member, room: Room, *, tell: bool = False) -> bool:
        """True if `member` may not speak in `room` now (told why if `tell`)."""
        if room.ops_only and not self.is_op(member, room):
            if tell:
                self._error(
                    member,
                    "ops-only",
                    f"Only ops may speak in {room.name} now.",
                    subject=room.name,
                )
            return True
        if not (room.muted_people or room.muted_names):
            return False  # the usual case: nobody muted here
        for muted, key in (
            (room.muted_people, member.identity),
            (room.muted_names, member.key or ""),
        ):
            until = muted.get(key)
            if until is None:
                continue
            if until > self._clock():
                if tell:
                    self._error(
                        member,
                        "muted",
                        f"You are muted in {room.name}.",
                        subject=room.name,
                    )
                return True
            del muted[key]
        return False

    def _member_room(
        self, member: Member, raw: str, *, quiet: bool = False
    ) -> Room | None:
        """The room `raw` names among the member's, or its current room.

        None if there is none, and `member` is told why (unless `quiet`).
        """
        if not raw:
            if member.current is None and not quiet:
                self._error(member, "no-room", "You are in no room.")
            return member.current
        # The name as the room has it (what IRC clients send with every
        # message) needs no validation: the room's own name passed it.
        for held in member.rooms.values():
            if held.name == raw:
                return held
        shown = sanitize_text(raw)[:40]
        try:
            key = name_key(validate_room(raw))
        except InvalidName as exc:
            if not quiet:
                self._error(member, "room-invalid", str(exc), subject=shown)
            return None
        room = member.rooms.get(key)
        if room is None and not quiet:
            self._error(
                member, "not-in-room", f"You are not in {shown}.", subject=shown
            )
        return room

    def _join(self, member: Member, raw: str, key: str, *, names: bool) -> None:
        assert member.name is not None
        try:
            name = validate_room(raw)
        except InvalidName as exc:
            shown = sanitize_text(raw)[:40]
            self._error(member, "room-invalid", str(exc), subject=shown)
            return
        room = self.hub.room(name)
        if room is not None and room.key in member.rooms:
            self._switch(member, name)
            return
        limits = self.limits
        if limits.max_rooms_per_user and len(member.rooms) >= limits.max_rooms_per_user:
            self._error(
                member,
                "too-many-rooms",
                f"You are in {len(member.rooms)} rooms, the most there may be;"
                " /part one first.",
                subject=name,
            )
            return
        created = room is None
        if room is None:
            kept = self.saved_rooms.get(name_key(name))
            if kept is not None and kept.key and key != kept.key:
                self._error(member, "bad-room-key", f"{name} needs the right key.")
                return
            if limits.max_rooms and len(self.hub.rooms) >= limits.max_rooms:
                self._error(
                    member,
                    "too-many-rooms",
                    "No more rooms may be created.",
                    subject=name,
                )
                return
            most = limits.max_rooms_per_address
            if (
                most
                and member.address is not None
                and self.hub.rooms_from(member.address) >= most
            ):
                self._error(
                    member,
                    "too-many-rooms",
                    f"Your address has created {most} rooms that are still open,"
                    " the most there may be.",
                    subject=name,
                )
                return
            room = self._open_room(name, address=member.address)
            self._opened(member, room, key, kept)
            saved = self.saved_topics.get(room.key)
            if saved is not None and not room.password:
                room.topic, room.topic_setter, room.topic_ts = saved
            log.info("[%s] %s created %s", member.conn_id, member.name, room.name)
        elif room.password and key != room.password:
            self._error(
                member,
                "bad-room-key",
                f"{room.name} needs the right key.",
                subject=room.name,
            )
            return
        if not names:
            self.replay(member, room)
        if not self.hub.enter(member, room):  # dropped meanwhile
            if self.hub.close_if_empty(room):
                self._room_gone(room)
            return
        self._notice_join(member, room, tell_joiner=True)
        if room.topic:
            self.hub.send(
                member,
                ev.TopicIs(room.topic_ts, room.name, room.topic_setter, room.topic),
            )
        if names:  # IRC's order: the join, the topic, the names, then history
            self._roster(member, room.name, detail=False)
            self.replay(member, room)
        else:
            self._who(member, room.name)
        if created and key:
            # `/join study group` makes #study with the key `group`: say so.
            self.hub.send(
                member,
                ev.Info(
                    f"You created {room.name} with a key (whoever joins needs"
                    f" it; /key without one removes it): {key}"
                ),
            )
        self.hub.send(member, ev.Switched(room.name))

    def _part(self, member: Member, raw: str, reason: str) -> None:
        assert member.name is not None
        room = self._member_room(member, raw)
        if room is None:
            return
        parted = ev.Left(self._clock(), room.name, member.name, "parted", reason)
        self._notice(room, parted)
        if self.hub.exit(member, room):
            self._room_gone(room)
        if member.current is not None:
            self.hub.send(member, ev.Switched(member.current.name))

    def _switch(self, member: Member, raw: str) -> None:
        room = self._member_room(member, raw)
        if room is not None:
            member.current = room
            self.hub.send(member, ev.Switched(room.name))

    def _rooms(self, member: Member, page: int) -> None:
        rooms = sorted(self.hub.rooms.values(), key=lambda room: room.key)
        limit = self._line_budget()
        lines = []
        for room in rooms:
            topic = room.topic[: self.limits.max_topic_length or None]
            line = _fit_text(
                member.encode,
                functools.partial(
                    ev.RoomInfo, room.name, len(room), keyed=bool(room.password)
                ),
                topic,
                limit,
            )
            lines.append(line)
        self._send_page(
            member,
            lines,
            page,
            heading=_plural(len(rooms), "room"),
            noun="room",
            command="/rooms",
        )

    def _topic(self, member: Member, text: str | None, raw: str = "") -> Commit | None:
        assert member.name is not None
        room = self._member_room(member, raw)
        if room is None:
            return None
        if text is None:
            if room.topic:
                self.hub.send(
                    member,
                    ev.TopicIs(room.topic_ts, room.name, room.topic_setter, room.topic),
                )
            else:
                self.hub.send(member, ev.Info(f"{room.name} has no topic."))
            return None
        if room.ops and not self.is_op(member, room):
            self._error(
                member,
                "not-op",
                f"Only the ops of {room.name} set its topic.",
                subject=room.name,
            )
            return None
        topic = text[: self.limits.max_topic_length] if text != "-" else ""
        setter, ts = member.name, self._clock()
        saved: Saved
        if room.password:
            # A keyed room's topic is as private as its lines: kept with its
            # settings, which go when it empties, not for whoever comes later.
            saved = self._settings(room, (TOPIC, "", topic_text(ts, setter, topic)))
        else:
            saved = TopicSaved(room.key, room.name, topic, setter, ts, member.address)

        def apply() -> None:
            room.topic, room.topic_setter, room.topic_ts = topic, setter, ts
            log.info("[%s] %s set the topic of %s", member.conn_id, setter, room.name)
            if isinstance(saved, TopicSaved):
                self._keep_topic(room.key, topic, setter, ts)
            changed = ev.TopicIs(ts, room.name, setter, topic, changed=True)
            self.hub.publish(changed, room=room, keep=_weight(changed))

        return self._commit(saved, apply)

    def _keep_topic(self, room_key: str, topic: str, setter: str, ts: float) -> None:
        """Remember the topic kept in the store, for the room's next opening."""
        if not topic:
            self.saved_topics.pop(room_key, None)
            return
        self.saved_topics[room_key] = (topic, setter, ts)
        while len(self.saved_topics) > MAX_REMEMBERED_ROOMS:
            del self.saved_topics[next(iter(self.saved_topics))]

    def _who(self, member: Member, scope: str, page: int = 1) -> None:
        people: Iterable[Member]
        if scope == "*":
            label, names, people = "online", self.hub.names(), self.hub
        else:
            room = self._member_room(member, scope) if scope else member.current
            if room is None:
                if not scope:
                    self._error(member, "no-room", "You are in no room.")
                return
            label, names, people = room.name, room.names(), room.members
        where = f"in {label}" if label.startswith("#") else label
        room_field = label if label.startswith("#") else "*"
        limit = self._line_budget()
        away: dict[str, bytes] = {}
        for other in people:
            if other.away and other.name is not None:
                away[other.name] = _fit_text(
                    member.encode,
                    functools.partial(_info_ending, f"{other.name} is away: "),
                    other.away,
                    limit,
                )
        # A name costs its bytes and a space, and each WHO line its start;
        # an away name its INFO line too (in the line format, never less).
        head = len(member.encode(ev.WhoList(room_field, ())))
        sizes = []
        for index, name in enumerate(names):
            size = len(name.encode()) + 1 + len(away.get(name, b""))
            sizes.append(size + (head if index % WHO_NAMES_PER_LINE == 0 else 0))
        starts = _pages(sizes, self._reply_budget() - head)
        if not self._page_exists(member, page, len(starts), "user"):
            return
        start = starts[page - 1]
        end = starts[page] if page < len(starts) else len(names)
        heading = f"{_plural(len(names), 'user')} {where}"
        if len(starts) > 1:
            heading += f", page {page} of {len(starts)}"
        shown = names[start:end]
        out = [member.encode(ev.Info(heading + ":"))]
        for at in range(0, len(shown), WHO_NAMES_PER_LINE):
            chunk = tuple(shown[at : at + WHO_NAMES_PER_LINE])
            out.append(member.encode(ev.WhoList(room_field, chunk)))
        out += [away[name] for name in shown if name in away]
        if end < len(names):
            more = _plural(len(names) - end, "more user")
            command = f"/who {room_field} {page + 1}"
            out.append(member.encode(ev.Info(f"{more}: {command} for the next page.")))
        self.hub.send_data(member, b"".join(out))

    def _roster(self, member: Member, target: str, detail: bool) -> None:
        """Who is in `target` (a room of the member's, `*` or a name), with
        their standing, as one `Roster` within a reply's share."""
        room: Room | None = None
        people: Iterable[Member]
        if target == "*":
            label, people = "*", self.hub
        elif target.startswith("#"):
            room = self._member_room(member, target)
            if room is None:
                return
            label, people = room.name, room.members
        else:
            other = self.hub.get(target)
            found = other is not None and other.name is not None
            label = other.name if other is not None and other.name else target
            people = [other] if other is not None and found else []
        standings = sorted(
            (
                ev.Standing(
                    other.name,
                    self.is_op(other, room)
                    if room is not None
                    else self.moderation.is_operator(other.identified),
                    bool(other.away),
                )
                for other in people
                if other.name is not None
            ),
            key=lambda standing: name_key(standing.name),
        )

        def roster(count: int) -> ev.Roster:
            return ev.Roster(label, tuple(standings[:count]), len(standings), detail)

        budget = self._reply_budget()
        self.hub.send_data(
            member, _fit_items(member.encode, roster, len(standings), budget)
        )

    def _room_list(self, member: Member) -> None:
        """Every room (as many as fit a reply's share) as one `RoomList`."""
        rooms = sorted(self.hub.rooms.values(), key=lambda room: room.key)
        most = self.limits.max_topic_length or None
        infos = [
            ev.RoomInfo(room.name, len(room), room.topic[:most], bool(room.password))
            for room in rooms
        ]

        def listing(count: int) -> ev.RoomList:
            return ev.RoomList(tuple(infos[:count]), len(infos))

        budget = self._reply_budget()
        self.hub.send_data(
            member, _fit_items(member.encode, listing, len(infos), budget)
        )

    def _is_on(self, member: Member, names: Iterable[str], userhost: bool) -> None:
        """`Online`: which of `names` are online, each once, in the order asked."""
        found: dict[str, ev.Standing] = {}
        for raw in names:
            other = self.hub.get(raw)
            if other is None or other.name is None or other.name in found:
                continue
            operator = self.moderation.is_operator(other.identified)
            found[other.name] = ev.Standing(other.name, operator, bool(other.away))
        self.hub.send(member, ev.Online(tuple(found.values()), userhost))

    # -- replies that list things -------------------------------------------

    def _reply(self, member: Member, events: Iterable[ev.ServerEvent]) -> None:
        """Send `events` to `member` in one piece (one message of its outbox)."""
        data = b"".join(member.encode(event) for event in events)
        if data:
            self.hub.send_data(member, data)

    def _reply_budget(self) -> int:
        """Bytes the lines of one listing may take: its share of an outbox."""
        share = self.limits.outbox_max_bytes // LIST_OUTBOX_SHARE
        return min(share, LIST_PAGE_BYTES) - LIST_REPLY_RESERVE

    def _line_budget(self) -> int:
        """Bytes one line of a listing may take (its free text is cut to fit)."""
        return min(MAX_SERVER_LINE_BYTES, self._reply_budget())

    def _page_exists(self, member: Member, page: int, pages: int, noun: str) -> bool:
        if 1 <= page <= pages:
            return True
        self._error(
            member,
            "no-such-page",
            f"There is no page {page} of {noun}s; the last is {pages}.",
        )
        return False

    def _send_page(
        self,
        member: Member,
        lines: list[bytes],
        page: int,
        *,
        heading: str,
        noun: str,
        command: str,
    ) -> None:
        """Send page `page` of a listing of `lines`, each an encoded item.

        The page fits `_reply_budget`; a heading says which page of how
        many (when there are several), and a last line how to get the next.
        """
        starts = _pages([len(line) for line in lines], self._reply_budget())
        if not self._page_exists(member, page, len(starts), noun):
            return
        start = starts[page - 1]
        end = starts[page] if page < len(starts) else len(lines)
        if len(starts) > 1:
            heading += f", page {page} of {len(starts)}"
        out = [member.encode(ev.Info(heading + ":")), *lines[start:end]]
        if end < len(lines):
            more = _plural(len(lines) - end, f"more {noun}")
            text = f"{more}: {command} {page + 1} for the next page."
            out.append(member.encode(ev.Info(text)))
        self.hub.send_data(member, b"".join(out))

    def _rename(self, member: Member, old: str, raw: str) -> None:
        try:
            new = validate_name(raw)
        except InvalidName as exc:
            shown = sanitize_text(raw)[:40]
            self._error(member, "name-invalid", str(exc), subject=shown)
            return
        if new == old:
            self.hub.send(member, ev.Info(f"You are already {new}."))
            return
        if name_key(new) != name_key(old) and self._refused_name(member, new):
            return
        if member.identified == name_key(new):
            self._displace_lookalikes(member, new)
        if self._too_similar(member, new):
            return
        registered = self.is_registered is not None and self.is_registered(new)
        if registered and member.identified != name_key(new):
            self._error(
                member,
                "name-registered",
                f"The name {new} is registered: connect as {new} with its password.",
                subject=new,
            )
            return
        if not self.hub.rename(member, new):
            self._error(member, "name-taken", f"The name {new} is taken.", subject=new)
            return
        log.info("[%s] %s is now %s", member.conn_id, old, new)
        self._renamed(member, old, new)

    def _renamed(self, member: Member, old: str, new: str) -> None:
        """Tell `member`'s rooms (or, in none, itself) it is `new` now."""
        now = self._clock()
        for room in member.rooms.values():
            self._notice(room, ev.Renamed(now, room.name, old, new))
        if not member.rooms:
            self.hub.send(member, ev.Renamed(now, "*", old, new))
