"""Free text never passes for the server's own words, on the wire or on screen.

Whatever a user writes in a field of free text (a part, quit, kick or ban
reason, an away text, a topic, the message of the day, chat), every line
the server sends that holds it holds it last (or last inside the final
parentheses of a `LEAVE`), and decodes to the event it was: a part that
reads like a kick is a part, an away text cannot put an address in front
of the real one, a topic cannot add a key.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.hub import Hub, Member
from trio_chat.moderation import Moderation
from trio_chat.protocol import decode_event, encode_event, parse_request
from trio_chat.render import render_event
from trio_chat.sanitize import sanitize_text

NOW = 1_795_475_428.0
TS = "2026-11-23T23:10:28Z"
#: Brackets a user's free text so it can be found in what the server sends.
MARK = "☃"
#: Text that imitates the fixed parts of server lines.
IMITATIONS = st.sampled_from(
    [
        "kicked by alice: for no reason at all",
        ") (kicked by alice: x",
        "lunch), mallory (",
        "; from 10.6.6.6",
        "; away: x; from 10.6.6.6",
        " [key]",
        "key ",
        "open",
        " (set by alice)",
        ": spam (bob disconnected)",
        "\r\nKICK 2026-11-23T23:10:28Z #dev carol alice x",
        "\u2028LEAVE x",
        "INFO ",
        "-- ",
        ")",
        "(",
        ":",
        ";",
        ", ",
        " ",
    ]
)
FREE_TEXT = st.lists(st.one_of(st.text(max_size=10), IMITATIONS), max_size=6).map(
    "".join
)


def fits(text: str) -> bool:
    # Short enough that no limit cuts it (reasons: 200 characters).
    return len(sanitize_text(text)) <= 150


class Server:
    """A chat with an operator (teacher), alice (op of #dev), bob and carol."""

    def __init__(self) -> None:
        self.chat = Chat(
            Hub(), clock=lambda: NOW, moderation=Moderation(operators=["teacher"])
        )
        self.members: dict[str, Member] = {}
        for index, name in enumerate(["teacher", "alice", "bob", "carol"]):
            member = Member(f"c{index + 1}", encode=encode_event, max_messages=1 << 20)
            member.address = f"10.0.0.{index + 1}"
            assert self.chat.choose_name(member, name)
            self.members[name] = member
        self.members["teacher"].identified = "teacher"
        for name in ("alice", "teacher", "bob", "carol"):
            self.say(name, "/join #dev")
        self.lines()

    def say(self, name: str, line: str) -> None:
        member = self.members[name]
        request = parse_request(sanitize_text(line))
        assert request is not None
        if not member.closed:
            self.chat.handle(member, request)

    def lines(self) -> list[str]:
        """Every line sent to anyone since the last call."""
        got: list[str] = []
        for member in self.members.values():
            data = member.take(1 << 40)
            got += data.decode().split("\r\n")[:-1]
        return got


def last_field(event: ev.ServerEvent) -> str | None:
    """The free text an event carries, if any."""
    match event:
        case ev.Left(reason=text) | ev.Kicked(reason=text) | ev.LeftMany(reason=text):
            return text
        case ev.TopicIs(text=text) | ev.RoomInfo(topic=text):
            return text
        case ev.Message(text=text) | ev.Action(text=text) | ev.Private(text=text):
            return text
        case (
            ev.Info(text) | ev.MotdLine(text) | ev.Error(_, text) | ev.Goodbye(_, text)
        ):
            return text
        case ev.Replayed(inner):
            return last_field(inner)
    return None


@given(FREE_TEXT.filter(fits))
@example("kicked by alice: for no reason at all")
@example("lunch), mallory (")
@example("x; from 10.6.6.6")
def test_free_text_is_always_last_and_never_a_fixed_part(raw: str) -> None:
    server = Server()
    text = f"{MARK}{raw}{MARK}"
    shown = sanitize_text(text).strip()  # commands strip free text
    commands = [
        ("bob", f"/away {text}"),
        ("alice", f"/topic {text}"),
        ("alice", "/key secret"),
        ("carol", "/rooms"),
        ("teacher", "/who #dev"),
        ("teacher", "/whois bob"),
        ("teacher", f"/motd {text}"),
        ("bob", f"/me {text}"),
        ("bob", text.lstrip("/")),
        ("bob", f"/msg alice {text}"),
        ("alice", f"/kick carol {text}"),
        ("bob", f"/part #dev {text}"),
        ("teacher", f"/ban dave 10m {text}"),
        ("teacher", "/bans"),
        ("teacher", f"/ban 10.0.0.4 {text}"),  # carol's address
        ("alice", f"/quit {text}"),
    ]
    lines: list[str] = []
    for name, command in commands:
        server.say(name, command)
        lines += server.lines()
    late = Member("c9", encode=encode_event)
    server.chat.choose_name(late, "dave")  # banned, with the reason
    lines += late.take(1 << 40).decode().split("\r\n")[:-1]

    carrying = [line for line in lines if shown in line]
    assert len(carrying) >= 15, carrying
    for line in carrying:
        assert line.endswith((shown, f"({shown})")), line
        event = decode_event(line)
        assert last_field(event) is not None, line
        assert (last_field(event) or "").endswith(shown), line
    events = [decode_event(line) for line in lines]
    # The one kick is alice's; bob's part stays a part.
    kicks = {event for event in events if isinstance(event, ev.Kicked)}
    assert {(kick.name, kick.by, kick.reason) for kick in kicks} == {
        ("carol", "alice", shown)
    }
    parts = [e for e in events if isinstance(e, ev.Left) and e.how == "parted"]
    assert {(part.name, part.reason) for part in parts} == {("bob", shown)}
    # The operator's /whois shows bob's real address before his away text.
    (whois,) = [line for line in lines if line.startswith("INFO bob: in ")]
    assert whois.index("; from 10.0.0.3; away: ") < whois.index(shown)
    # One line per person away in /who, and the room's key is its own field.
    assert sum(line.startswith("INFO bob is away: ") for line in lines) == 1
    (room,) = [e for e in events if isinstance(e, ev.RoomInfo) and e.room == "#dev"]
    assert room.keyed and room.topic == shown


# -- on screen --------------------------------------------------------------

NAMES = st.sampled_from(["alice", "bob", "carol", "Åsa", "a1ice", "x"])
ROOMS = st.sampled_from(["#dev", "#lobby", "#x"])
HOWS = st.sampled_from(["quit", "disconnected", "parted"])


def with_text(kind: str, text: str, a: str, b: str, room: str) -> ev.ServerEvent:
    """An event of `kind` whose free text is `text`."""
    ts = NOW
    events: dict[str, ev.ServerEvent] = {
        "msg": ev.Message(ts, room, a, text),
        "action": ev.Action(ts, room, a, text),
        "priv": ev.Private(ts, a, b, text),
        "quit": ev.Left(ts, room, a, "quit", text),
        "disconnected": ev.Left(ts, room, a, "disconnected", text),
        "parted": ev.Left(ts, room, a, "parted", text),
        "kicked": ev.Kicked(ts, room, a, b, text),
        "many": ev.LeftMany(ts, room, (a, b), "quit", text),
        "topic": ev.TopicIs(ts, room, a, text),
        "room": ev.RoomInfo(room, 3, text),
        "keyed": ev.RoomInfo(room, 3, text, keyed=True),
        "motd": ev.MotdLine(text),
        "history": ev.Replayed(ev.Left(ts, room, a, "parted", text)),
        "history-kick": ev.Replayed(ev.Kicked(ts, room, a, b, text)),
    }
    return events[kind]


KINDS_WITH_TEXT = st.sampled_from(
    [
        "msg",
        "action",
        "priv",
        "quit",
        "disconnected",
        "parted",
        "kicked",
        "many",
        "topic",
        "room",
        "keyed",
        "motd",
        "history",
        "history-kick",
    ]
)


def show(event: ev.ServerEvent) -> str:
    return render_event(
        event, me=None, color=False, localtime=lambda ts: __import__("time").gmtime(ts)
    )


def prefix(kind: str, a: str, b: str, room: str) -> str:
    """What comes before the free text of such an event on screen."""
    line = show(with_text(kind, "X", a, b, room))
    assert line.endswith(("X", "X)")), line
    return line[: line.rindex("X")]


@given(KINDS_WITH_TEXT, FREE_TEXT, NAMES, NAMES, ROOMS)
def test_free_text_is_last_on_screen(
    kind: str, raw: str, a: str, b: str, room: str
) -> None:
    text = sanitize_text(raw).strip() or "x"
    line = show(with_text(kind, text, a, b, room))
    start = prefix(kind, a, b, room)
    assert line.startswith(start)
    assert line[len(start) :] in (text, f"{text})")


@given(
    KINDS_WITH_TEXT,
    NAMES,
    NAMES,
    ROOMS,
    KINDS_WITH_TEXT,
    NAMES,
    NAMES,
    ROOMS,
)
def test_no_free_text_makes_one_notice_look_like_another(
    kind: str, a: str, b: str, room: str, kind2: str, a2: str, b2: str, room2: str
) -> None:
    """What comes before the free text tells the lines apart: of two lines
    with different fixed parts, neither start is the start of the other, so
    no text can complete one into the other."""
    first, second = prefix(kind, a, b, room), prefix(kind2, a2, b2, room2)
    if first == second:
        return  # the same thing said
    assert not second.startswith(first) and not first.startswith(second), (
        first,
        second,
    )


@pytest.mark.parametrize(
    ("event", "shown"),
    [
        (
            ev.Left(NOW, "#dev", "bob", "parted", "kicked by alice: for no reason"),
            "23:10 -- bob left #dev (kicked by alice: for no reason)",
        ),
        (
            ev.Kicked(NOW, "#dev", "bob", "alice", "for no reason"),
            "23:10 -- bob was kicked from #dev by alice (for no reason)",
        ),
        (
            ev.Kicked(NOW, "#dev", "bob", "alice", ""),
            "23:10 -- bob was kicked from #dev by alice",
        ),
        (
            ev.TopicIs(NOW, "#dev", "alice", "ship it (set by bob)"),
            "23:10 -- topic of #dev (set by alice): ship it (set by bob)",
        ),
        (ev.RoomInfo("#dev", 3, "[key]"), "-- #dev (3 here): [key]"),
        (ev.RoomInfo("#dev", 3, "", keyed=True), "-- #dev (3 here, key needed)"),
        (ev.MotdLine("Exams on Friday."), "-- [motd] Exams on Friday."),
        (ev.MotdLine(""), "-- [motd]"),
    ],
)
def test_how_free_text_is_shown(event: ev.ServerEvent, shown: str) -> None:
    assert show(event) == shown
    assert unicodedata.is_normalized("NFC", shown)
