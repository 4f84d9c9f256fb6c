"""Rooms' settings as rows, sans-IO: read back, given back, unknown rows skipped."""

from __future__ import annotations

import math

from trio_chat.hub import Room
from trio_chat.roomstate import (
    KEY,
    LECTURE,
    MUTE,
    MUTE_NAME,
    OP,
    TOPIC,
    restore,
    saved_rooms,
    topic_text,
    until_text,
)


def test_rows_come_back_as_the_rooms_settings() -> None:
    topic = topic_text(5.25, "alice", "behind closed doors")
    assert topic is not None
    rows = [
        ("#dev", KEY, "", "sesame", 3),
        ("#dev", LECTURE, "", "on", 3),
        ("#dev", OP, "@alice", "", 3),
        ("#dev", MUTE, "@bob", until_text(math.inf), 3),
        ("#dev", MUTE_NAME, "bob", until_text(100.0), 3),
        ("#dev", MUTE_NAME, "carol", until_text(10.0), 3),  # over by then
        ("#dev", TOPIC, "", topic, 3),
        ("#dev", "colour", "", "blue", 4),  # from a newer server: skipped
        ("#dev", MUTE_NAME, "dave", "soon", 3),  # unreadable: skipped
    ]
    saved = saved_rooms(rows)
    assert list(saved) == ["#dev"]
    assert saved["#dev"].seq == 4
    room = Room("#dev")
    restore(saved["#dev"], room, now=50.0)
    assert (room.password, room.ops_only, room.ops) == ("sesame", True, {"@alice"})
    assert room.muted_people == {"@bob": math.inf}
    assert room.muted_names == {"bob": 100.0}
    assert (room.topic, room.topic_setter, room.topic_ts) == (
        "behind closed doors",
        "alice",
        5.25,
    )


def test_a_cleared_topic_is_no_row() -> None:
    assert topic_text(1.0, "alice", "") is None
