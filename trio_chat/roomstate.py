"""What a room's ops set, kept across restarts: key, lecture, ops, mutes, topic.

Sans-IO: rows in, rows out, no store and no clock of its own. A room's
settings are saved as rows (setting, target, value) while the room is open,
and forgotten when it empties; a server that stops, or is killed, with the
room open finds them at start-up (`saved_rooms`) and gives them back to the
room when someone opens it again (`restore`): the first to come back needs
its key, and its ops are still its ops.

Only what outlives a connection is kept: ops and mutes held by an account
(`@name`, see `Member.identity`) and mutes of a name. An op or a mute held
by a connection id ends with that connection. A keyed room's topic is kept
here too (an open room's topic is kept with the topics otherwise, and
shown to whoever opens a room of that name later: not a keyed room's).

Each opening of a room has a number (`seq`, growing across restarts): when
a room empties, the rows of that opening and earlier ones go
(`RoomForgotten`), never those of a later opening of the same name that
might be written first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Final

from trio_chat.hub import Room

#: The `setting` of each kind of row.
KEY: Final = "key"  # target "", value: the key
LECTURE: Final = "lecture"  # target "", value "on"
OP: Final = "op"  # target: an account identity ("@name"), value ""
MUTE: Final = "mute"  # target: an account identity, value: until ("inf")
MUTE_NAME: Final = "mute-name"  # target: a name key, value: until
TOPIC: Final = "topic"  # a keyed room's: target "", value: "ts setter topic"


@dataclasses.dataclass(frozen=True, slots=True)
class RoomSettingsSaved:
    """Rows of one room's settings to write: each (setting, target, value).

    A value of None deletes that row (a key removed, a lecture over, an
    unmute). `seq` is the room's opening.
    """

    room_key: str
    room: str
    seq: int
    ts: float
    changes: tuple[tuple[str, str, str | None], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RoomForgotten:
    """A room emptied: forget the settings of its opening `seq` and earlier."""

    room_key: str
    seq: int


@dataclasses.dataclass(slots=True)
class SavedRoom:
    """A room's settings found in the store at start-up."""

    seq: int
    key: str = ""
    lecture: bool = False
    ops: set[str] = dataclasses.field(default_factory=set)
    #: Mutes of accounts (by identity) and of names (by name key): until.
    muted_people: dict[str, float] = dataclasses.field(default_factory=dict)
    muted_names: dict[str, float] = dataclasses.field(default_factory=dict)
    topic: tuple[str, str, float] | None = None  # text, setter, ts


def kept_identity(identity: str) -> bool:
    """True if an op or mute held by `identity` outlives its connection."""
    return identity.startswith("@")


def until_text(until: float) -> str:
    """A mute's end as its row's value."""
    return "inf" if until == math.inf else repr(until)


def topic_text(ts: float, setter: str, topic: str) -> str | None:
    """A keyed room's topic as its row's value (None: cleared)."""
    return f"{ts!r} {setter} {topic}" if topic else None


def saved_rooms(
    rows: Iterable[tuple[str, str, str, str, int]],
) -> dict[str, SavedRoom]:
    """The rooms of `rows` (room key, setting, target, value, seq), by room key.

    Rows of a kind this code does not know are skipped (a newer trio-chat
    may have written them).
    """
    rooms: dict[str, SavedRoom] = {}
    for room_key, setting, target, value, seq in rows:
        saved = rooms.setdefault(room_key, SavedRoom(seq))
        saved.seq = max(saved.seq, seq)
        if setting == KEY:
            saved.key = value
        elif setting == LECTURE:
            saved.lecture = True
        elif setting == OP:
            saved.ops.add(target)
        elif setting in (MUTE, MUTE_NAME):
            try:
                until = float(value)
            except ValueError:
                continue
            mutes = saved.muted_people if setting == MUTE else saved.muted_names
            mutes[target] = until
        elif setting == TOPIC:
            ts, _, rest = value.partition(" ")
            setter, _, topic = rest.partition(" ")
            try:
                saved.topic = (topic, setter, float(ts))
            except ValueError:
                continue
    return rooms


def restore(saved: SavedRoom, room: Room, now: float) -> None:
    """Give `room` (just opened) the settings it had; expired mutes stay out."""
    room.password = saved.key
    room.ops_only = saved.lecture
    room.ops.update(saved.ops)
    for saved_mutes, mutes in (
        (saved.muted_people, room.muted_people),
        (saved.muted_names, room.muted_names),
    ):
        mutes.update((key, until) for key, until in saved_mutes.items() if until > now)
    if saved.topic is not None:
        room.topic, room.topic_setter, room.topic_ts = saved.topic
