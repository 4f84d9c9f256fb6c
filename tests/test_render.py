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
    NAME_PALETTE,
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
