"""What the client shows for each server event: layout, colour, safety."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.protocol import decode_event
from trio_chat.render import (
    MENTION_MARK,
    NAME_PALETTE,
    is_mention,
    mentions,
    name_color,
    render_error,
    render_event,
    render_notice,
    render_own,
    render_unreadable,
)

TS = "2026-11-23T23:10:28Z"
SGR = re.compile(r"\x1b\[[0-9;]*m")


def plain(line: str, me: str | None = "carol") -> str:
    """Render one wire line without colour, times in UTC."""
    return render_event(decode_event(line), me=me, color=False, localtime=time.gmtime)


@pytest.mark.parametrize(
    ("wire", "shown"),
    [
        (f"MSG {TS} #lobby <alice> hello there", "23:10 <alice> hello there"),
        (f"ACTION {TS} #lobby alice waves", "23:10 * alice waves"),
        (f"PRIV {TS} @carol <alice> psst", "23:10 [private] <alice> psst"),
        (f"JOIN {TS} #lobby alice", "23:10 -- alice joined"),
        (f"LEAVE {TS} #lobby alice quit (bye)", "23:10 -- alice left (quit: bye)"),
        (f"LEAVE {TS} #lobby alice quit", "23:10 -- alice left (quit)"),
        (
            f"LEAVE {TS} #lobby alice disconnected (send queue exceeded)",
            "23:10 -- alice was disconnected (send queue exceeded)",
        ),
        (f"JOINS {TS} #lobby alice bob", "23:10 -- alice and bob joined"),
        (f"JOINS {TS} #lobby a b c", "23:10 -- a, b and c joined"),
        (
            f"JOINS {TS} #lobby " + " ".join(f"u{i}" for i in range(12)),
            "23:10 -- u0, u1, u2, u3, u4, u5, u6, u7, u8, u9 and 2 more joined",
        ),
        (f"LEAVES {TS} #lobby quit alice bob", "23:10 -- alice and bob left (quit)"),
        (
            f"LEAVES {TS} #lobby quit alice bob (class is over)",
            "23:10 -- alice and bob left (quit: class is over)",
        ),
        (
            f"LEAVES {TS} #lobby disconnected a b c (connection closed)",
            "23:10 -- a, b and c were disconnected (connection closed)",
        ),
        (f"NICK {TS} #lobby al -> alice", "23:10 -- al is now known as alice"),
        (f"HIST MSG {TS} #lobby <bob> earlier", "23:10 [history] <bob> earlier"),
        (f"HIST JOIN {TS} #lobby bob", "23:10 [history] -- bob joined"),
        ("WHO #lobby alice bob", "-- in #lobby: alice, bob"),
        ("INFO 2 users online.", "-- 2 users online."),
        ("NAME Choose a name:", "-- Choose a name:"),
        ("WELCOME carol You are in #lobby.", "-- You are in #lobby."),
        ("ERR name-taken The name bob is taken.", "!! The name bob is taken."),
        ("ERR no-text", "!! no-text"),
        ("BYE quit Bye!", "-- Bye!"),
        ("BANNER  | |_ _ __", " | |_ _ __"),
        ("HELP /who  who is online", "   /who  who is online"),
        (
            "HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096",
            "-- connected to trio-chat/0.1.0",
        ),
    ],
)
def test_layout_without_colour(wire: str, shown: str) -> None:
    assert plain(wire) == shown


def test_time_is_local_hours_and_minutes() -> None:
    event = decode_event(f"MSG {TS} #lobby <alice> hi")
    shifted = render_event(
        event,
        me=None,
        color=False,
        localtime=lambda ts: time.gmtime(ts + 2 * 3600 + 30 * 60),
    )
    assert shifted.startswith("01:40 ")


def test_own_lines_are_shown_in_the_same_layout() -> None:
    def own(request: ev.Say | ev.Me | ev.PrivateMsg) -> str:
        return render_own(
            request, me="carol", ts=0.0, color=False, localtime=time.gmtime
        )

    assert own(ev.Say("hi all")) == "00:00 <carol> hi all"
    assert own(ev.Me("waves")) == "00:00 * carol waves"
    assert own(ev.PrivateMsg("bob", "psst")) == "00:00 [private to bob] <carol> psst"


def test_colour_off_means_no_escape_at_all() -> None:
    for wire in (
        f"MSG {TS} #lobby <alice> hi",
        f"PRIV {TS} @carol <alice> hi",
        f"HIST ACTION {TS} #lobby alice waves",
        "ERR x y",
        "WHO #lobby a b",
    ):
        assert "\x1b" not in plain(wire)
    assert "\x1b" not in render_notice("n", color=False)
    assert "\x1b" not in render_error("e", color=False)


def test_colour_on_marks_names_errors_and_own_lines() -> None:
    line = render_event(
        decode_event(f"MSG {TS} #lobby <alice> hi"), me="carol", color=True
    )
    assert f"\x1b[{name_color('alice')}malice\x1b[0m" in line
    own = render_own(ev.Say("hi"), me="carol", ts=0.0, color=True)
    assert f"\x1b[1;{name_color('carol')}mcarol" in own  # bold: it is you
    assert render_error("boom", color=True).startswith("\x1b[1;31m!! boom")
    # Without the colour codes, a coloured line reads like the plain one.
    assert SGR.sub("", line) == render_event(
        decode_event(f"MSG {TS} #lobby <alice> hi"), me="carol", color=False
    )


def test_name_colour_is_stable_and_ignores_case() -> None:
    assert name_color("Alice") == name_color("alice") == name_color("ALICE")
    assert name_color("Ångström") == name_color("ÅNGSTRÖM")
    colours = {name_color(name) for name in ("alice", "bob", "carol", "dave", "eve")}
    assert colours <= set(NAME_PALETTE)
    assert len(colours) > 1
    assert 31 not in NAME_PALETTE  # red is for errors


def test_server_strings_are_sanitised() -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07text\u202e"
    events: list[ev.ServerEvent] = [
        ev.Message(0.0, "#lobby", f"al{evil}", evil),
        ev.Action(0.0, "#lobby", evil, evil),
        ev.Private(0.0, evil, "carol", evil),
        ev.Left(0.0, "#lobby", evil, "quit", evil),
        ev.Renamed(0.0, "#lobby", evil, evil),
        ev.WhoList(evil, (evil,)),
        ev.Error(evil, evil),
        ev.Goodbye(evil, evil),
        ev.Banner(evil),
        ev.Hello("p", evil, 10),
        ev.Replayed(ev.Message(0.0, "#lobby", evil, evil)),
    ]
    for event in events:
        for color in (False, True):
            shown = SGR.sub("", render_event(event, me="carol", color=color))
            assert "\x1b" not in shown
            assert "\x07" not in shown
            assert "\u202e" not in shown
            assert "pwned" not in shown
    assert "\x1b" not in render_unreadable("GARBAGE \x1b[31m", color=False)


@given(sender=st.text(min_size=1), text=st.text(), color=st.booleans())
def test_no_control_characters_ever_reach_the_terminal(
    sender: str, text: str, color: bool
) -> None:
    for event in (
        ev.Message(0.0, "#lobby", sender, text),
        ev.Private(0.0, sender, "me", text),
        ev.Replayed(ev.Action(0.0, "#lobby", sender, text)),
    ):
        shown = SGR.sub("", render_event(event, me=sender, color=color))
        assert not any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in shown)


# --------------------------------------------------------------------------
# Rooms and mentions


def in_room(line: str, room: str | None, me: str | None = "carol") -> str:
    """Render one wire line without colour, for a user whose room is `room`."""
    return render_event(
        decode_event(line), me=me, color=False, localtime=time.gmtime, room=room
    )


@pytest.mark.parametrize(
    ("wire", "room", "shown"),
    [
        # Lines for another room carry its name; the current room's do not.
        (f"MSG {TS} #rust <bob> hi", "#lobby", "23:10 #rust <bob> hi"),
        (f"MSG {TS} #rust <bob> hi", "#rust", "23:10 <bob> hi"),
        (f"MSG {TS} #Rust <bob> hi", "#rust", "23:10 <bob> hi"),  # names' rules
        (f"ACTION {TS} #rust bob waves", "#lobby", "23:10 #rust * bob waves"),
        (f"JOIN {TS} #rust bob", "#lobby", "23:10 #rust -- bob joined"),
        (f"HIST MSG {TS} #rust <bob> old", "#lobby", "23:10 [history] #rust <bob> old"),
        (f"HIST MSG {TS} #rust <bob> old", "#rust", "23:10 [history] <bob> old"),
        # Lines that name their room already, or concern every room at once.
        (
            f"LEAVE {TS} #rust bob parted (bye)",
            "#lobby",
            "23:10 -- bob left #rust (bye)",
        ),
        (
            f"TOPIC {TS} #rust bob Rust talk",
            "#lobby",
            "23:10 -- topic of #rust (set by bob): Rust talk",
        ),
        (f"NICK {TS} #rust bob -> rob", "#lobby", "23:10 -- bob is now known as rob"),
        (f"LEAVE {TS} #rust bob quit", "#lobby", "23:10 -- bob left (quit)"),
        (f"PRIV {TS} @carol <bob> psst", "#lobby", "23:10 [private] <bob> psst"),
        # No current room (the default): no tags at all.
        (f"MSG {TS} #rust <bob> hi", None, "23:10 <bob> hi"),
    ],
)
def test_room_tags(wire: str, room: str | None, shown: str) -> None:
    assert in_room(wire, room) == shown


def test_room_tag_is_sanitised_and_default_is_untagged() -> None:
    event = ev.Message(0.0, "#ru\x1b[2Jst", "bob", "hi")
    shown = render_event(event, me="carol", color=False, room="#lobby")
    assert shown.endswith(" #rust <bob> hi")  # the escape sequence is gone
    assert render_event(event, me="carol", color=False).endswith(" <bob> hi")


@pytest.mark.parametrize(
    ("wire", "shown"),
    [
        (f"MSG {TS} #lobby <bob> hi carol", "! 23:10 <bob> hi carol"),
        (f"MSG {TS} #lobby <bob> CAROL: look", "! 23:10 <bob> CAROL: look"),
        (f"MSG {TS} #lobby <bob> ask carol.", "! 23:10 <bob> ask carol."),
        (f"ACTION {TS} #lobby bob pokes @Carol", "! 23:10 * bob pokes @Carol"),
        (f"PRIV {TS} @carol <bob> carol?", "! 23:10 [private] <bob> carol?"),
        (f"MSG {TS} #rust <bob> carol", "! 23:10 #rust <bob> carol"),
        # Not a word of its own: no mention.
        (f"MSG {TS} #lobby <bob> caroline", "23:10 <bob> caroline"),
        (f"MSG {TS} #lobby <bob> xcarol", "23:10 <bob> xcarol"),
        (f"MSG {TS} #lobby <bob> carol_2 here", "23:10 <bob> carol_2 here"),
        (f"MSG {TS} #lobby <bob> carol-2 here", "23:10 <bob> carol-2 here"),
        # Never: one's own lines, history, notices.
        (f"MSG {TS} #lobby <Carol> carol here", "23:10 <Carol> carol here"),
        (f"HIST MSG {TS} #lobby <bob> carol", "23:10 [history] <bob> carol"),
        (f"JOIN {TS} #lobby carol", "23:10 -- carol joined"),
        (
            f"TOPIC {TS} #lobby bob ask carol",
            "23:10 -- topic of #lobby (set by bob): ask carol",
        ),
    ],
)
def test_mentions_without_colour(wire: str, shown: str) -> None:
    assert in_room(wire, "#lobby") == shown


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("alice", "alice", True),
        ("hi ALICE!", "alice", True),
        ("alice's turn", "alice", True),
        ("(alice)", "alice", True),
        ("malice", "alice", False),
        ("alicexyz", "alice", False),
        ("bob.alice", "alice", False),
        ("al.ice, hi", "al.ice", True),
        ("hej ÅSA", "åsa", True),
        ("hej A\u030asa", "Åsa", True),  # decomposed Å: the same name
        ("Åsaa", "åsa", False),
        ("Дмитрий!", "дмитрий", True),
        ("anything", None, False),
        ("", "alice", False),
    ],
)
def test_mentions_are_words_compared_as_names(
    text: str, name: str | None, expected: bool
) -> None:
    assert mentions(text, name) is expected


def test_colour_marks_mentions_and_tags_and_reads_like_plain_without_it() -> None:
    for wire in (
        f"MSG {TS} #rust <bob> hi carol",
        f"ACTION {TS} #lobby bob waves at carol",
        f"PRIV {TS} @carol <bob> carol?",
        f"MSG {TS} #rust <bob> plain",
        f"HIST MSG {TS} #rust <bob> carol",
    ):
        event = decode_event(wire)
        coloured = render_event(
            event, me="carol", color=True, localtime=time.gmtime, room="#lobby"
        )
        assert SGR.sub("", coloured) == in_room(wire, "#lobby")
        if is_mention(event, "carol"):
            assert coloured.startswith(f"\x1b[7m{MENTION_MARK}\x1b[0m ")
            assert "\x1b[7m" in coloured.partition(" ")[2]  # the text too
        else:
            assert "\x1b[7m" not in coloured
    tagged = render_event(
        decode_event(f"MSG {TS} #rust <bob> hi"), me="carol", color=True, room="#a"
    )
    assert "\x1b[4m#rust\x1b[0m " in tagged
