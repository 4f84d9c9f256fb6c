"""What the client shows: server events and local notices as display lines.

Pure functions, no I/O. Every string that came from the server (names, text,
rooms, codes) goes through `sanitize_text` here, so a malicious server cannot
move the cursor, recolour the terminal or hide text. With `color=True` the
result holds ANSI SGR sequences (our own, added after sanitising); with
`color=False` it is plain text.

Layout, one line per event:

    12:03 <alice> hello            a message (own ones in bold)
    12:03 * alice waves            an action
    12:03 [private] <alice> psst   a private message; own: [private to bob]
    12:03 -- bob joined            a notice
    12:03 -- bob left #dev (lunch) a notice with free text: always last
    12:03 #rust <bob> hi           a line for a room other than the current one
    ! 12:03 <bob> hi carol         a line that mentions the user (carol)
    12:03 [history] <alice> hi     a line replayed from before we joined
    !! The name bob is taken...    an error

A multi-line message (a paste) is a block: its first line as a message, each
further line (`MORE`, or `render_own_lines` for the user's own) under the
first line's text, without the time and name again:

    12:03 <alice> def f(x):
                      return x

Room tags: given the user's current room, a message, action or join for
another room is tagged with that room. Lines that already name their room (a
part, a topic) are not, nor are renames and quits, which concern the person
everywhere at once (the server sends one per shared room; the client shows
one). Mentions: a line from someone else whose text holds the user's name as
a word (`mentions`) starts with `!` and, in colour, shows its text in reverse
video; replayed history never counts.
"""

from __future__ import annotations

import time
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from typing import Final

from trio_chat import events as ev
from trio_chat.names import name_key
from trio_chat.sanitize import sanitize_text

#: Foreground colours for names: the 16-colour set every terminal has, minus
#: black and white (invisible on one background or the other) and red (kept
#: for errors).
NAME_PALETTE: Final = (32, 33, 34, 35, 36, 92, 93, 94, 95, 96)
#: Styles (SGR parameters) for the parts of a line.
_ERROR_STYLE: Final = "1;31"  # bold red
_NOTICE_STYLE: Final = "2"  # dim: notices must not compete with chat
_TIME_STYLE: Final = "2"
_HISTORY_STYLE: Final = "2"
_PRIVATE_STYLE: Final = "1;35"  # bold magenta tag
_OWN_STYLE: Final = "1"  # bold: your own lines stand out from the rest
_ROOM_STYLE: Final = "4"  # underlined: no name colour can be taken for it
_MENTION_STYLE: Final = "7"  # reverse video: visible on any colour scheme
#: What starts a line that mentions the user, in colour or not (errors start
#: with "!!", so one "!" is told apart).
MENTION_MARK: Final = "!"
_RESET: Final = "\x1b[0m"

#: Longest stretch of an unreadable server line shown back to the user.
_MAX_SHOWN_GARBAGE: Final = 200

LocalTime = Callable[[float], time.struct_time]


def _style(text: str, sgr: str, *, color: bool) -> str:
    return f"\x1b[{sgr}m{text}{_RESET}" if color and text else text


def name_color(name: str) -> int:
    """The SGR foreground code for `name`: the same for every spelling of it.

    Stable across runs and machines (CRC-32, not `hash`), so everybody sees
    a person in the same colour.
    """
    digest = zlib.crc32(name_key(name).encode("utf-8"))
    return NAME_PALETTE[digest % len(NAME_PALETTE)]


def _same(name: str, me: str | None) -> bool:
    return me is not None and name_key(name) == name_key(me)


def _name(name: str, *, me: str | None, color: bool) -> str:
    """A sanitised name, coloured; in bold when it is `me`."""
    clean = sanitize_text(name)
    if not color:
        return clean
    sgr = str(name_color(clean))
    if _same(clean, me):
        sgr = f"{_OWN_STYLE};{sgr}"
    return _style(clean, sgr, color=True)


def format_time(ts: float, *, localtime: LocalTime = time.localtime) -> str:
    """`ts` (POSIX seconds) as local `HH:MM`."""
    return time.strftime("%H:%M", localtime(ts))


def _stamp(ts: float, *, color: bool, localtime: LocalTime) -> str:
    return _style(format_time(ts, localtime=localtime), _TIME_STYLE, color=color) + " "


def render_notice(text: str, *, color: bool) -> str:
    """A notice from the client itself (connecting, reconnecting...)."""
    return _style(f"-- {sanitize_text(text)}", _NOTICE_STYLE, color=color)


def render_error(text: str, *, color: bool) -> str:
    """An error for the user: marked `!!`, red when coloured."""
    return _style(f"!! {sanitize_text(text)}", _ERROR_STYLE, color=color)


def render_unreadable(line: str, *, color: bool) -> str:
    """A server line this client could not parse, shown (cut short) as an error."""
    shown = sanitize_text(line)[:_MAX_SHOWN_GARBAGE]
    return render_error(f"unreadable line from the server: {shown}", color=color)


# Characters that make a word: letters, digits and marks of any script, and
# "_". Names may also hold "-" and ".", which join two such characters
# ("alice-2" is one name) but end a word otherwise ("hi alice." names alice).
_WORD_CATEGORIES: Final = frozenset("LNM")
_JOINERS: Final = frozenset("-.")


def _word_char(text: str, index: int) -> bool:
    if not 0 <= index < len(text):
        return False
    char = text[index]
    return char == "_" or unicodedata.category(char)[0] in _WORD_CATEGORIES


def _continues(text: str, index: int, step: int) -> bool:
    """Whether the word ending (step -1: starting) next to `index` goes on."""
    if 0 <= index < len(text) and text[index] in _JOINERS:
        return _word_char(text, index + step)
    return _word_char(text, index)


def mentions(text: str, name: str | None) -> bool:
    """Whether `text` holds `name` as a word, compared as names are.

    Both go through `name_key` (case and normalisation do not matter), and
    the match must not be part of a longer word or name: "hi Alice!" and
    "alice." mention alice; "malice", "alice_2", "alice-2" do not.
    """
    if not name:
        return False
    key = name_key(name)
    folded = name_key(text)
    start = folded.find(key)
    while start >= 0:
        end = start + len(key)
        if not _continues(folded, start - 1, -1) and not _continues(folded, end, 1):
            return True
        start = folded.find(key, start + 1)
    return False


def is_mention(event: ev.ServerEvent, me: str | None) -> bool:
    """Whether `event` is a live line from someone else that mentions `me`.

    Messages, actions and private messages count; history (`Replayed`),
    notices and the user's own lines never do.
    """
    if not isinstance(event, ev.Message | ev.MoreLine | ev.Action | ev.Private):
        return False
    return not _same(event.sender, me) and mentions(event.text, me)


def _body(
    sender: str, text: str, *, me: str | None, color: bool, mention: bool = False
) -> str:
    """The text of a message, sanitised, highlighted if it mentions `me`."""
    body = sanitize_text(text)
    if color and mention:
        body = _style(body, _MENTION_STYLE, color=True)
    elif color and _same(sanitize_text(sender), me):
        body = _style(body, _OWN_STYLE, color=True)
    return body


def _message(
    sender: str, text: str, *, me: str | None, color: bool, mention: bool = False
) -> str:
    body = _body(sender, text, me=me, color=color, mention=mention)
    return f"<{_name(sender, me=me, color=color)}> {body}"


def _columns(text: str) -> int:
    """How many terminal columns `text` (without escape sequences) takes."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) == "Cf":
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def display_width(text: str) -> int:
    """How many terminal columns `text` (without escape sequences) takes."""
    return _columns(text)


def _continued(
    lead: str, sender: str, text: str, *, me: str | None, color: bool
) -> str:
    """A further line of a multi-line message, its text under the first line's.

    `lead` is what comes before the first line's text, as plain text: the
    line is indented by as many columns.
    """
    if not text.strip():
        return ""  # a blank line of the paste: no trailing spaces
    mention = not _same(sender, me) and mentions(text, me)
    pad = " " * _columns(lead)
    if mention:  # marked like any line naming the user, within the indent
        pad = f"{_style(MENTION_MARK, _MENTION_STYLE, color=color)} " + pad[2:]
    return pad + _body(sender, text, me=me, color=color, mention=mention)


def _lead(
    event: ev.Message | ev.MoreLine,
    *,
    current: str | None,
    history: bool,
    localtime: LocalTime,
) -> str:
    """What comes before the text of `event`'s first line, as plain text."""
    stamp = _stamp(event.ts, color=False, localtime=localtime)
    tag = "[history] " if history else ""
    where = _room_tag(event, current=current, color=False)
    return f"{stamp}{tag}{where}<{sanitize_text(event.sender)}> "


def _action(
    sender: str, text: str, *, me: str | None, color: bool, mention: bool = False
) -> str:
    body = sanitize_text(text)
    if color and mention:
        body = _style(body, _MENTION_STYLE, color=True)
    return f"* {_name(sender, me=me, color=color)} {body}"


def _marked(line: str, *, color: bool) -> str:
    """`line` marked as mentioning the user."""
    return f"{_style(MENTION_MARK, _MENTION_STYLE, color=color)} {line}"


def _room_tag(
    event: ev.Message
    | ev.MoreLine
    | ev.Action
    | ev.Joined
    | ev.JoinedMany
    | ev.Left
    | ev.Kicked
    | ev.LeftMany
    | ev.Renamed
    | ev.TopicIs,
    *,
    current: str | None,
    color: bool,
) -> str:
    """`#room ` if `event` belongs to a room other than `current`, else ""."""
    if current is None or isinstance(
        event, ev.Renamed | ev.TopicIs | ev.Left | ev.Kicked | ev.LeftMany
    ):
        return ""  # no current room; or the line names its room, or all rooms
    if name_key(event.room) == name_key(current):
        return ""
    return _style(sanitize_text(event.room), _ROOM_STYLE, color=color) + " "


def _left(event: ev.Left, *, me: str | None, color: bool) -> str:
    who = _name(event.name, me=me, color=color)
    reason = sanitize_text(event.reason)
    if event.how == "parted":
        detail = f" ({reason})" if reason else ""
        return f"{who} left {sanitize_text(event.room)}{detail}"
    if event.how == "quit":
        detail = f" (quit: {reason})" if reason else " (quit)"
        return f"{who} left{detail}"
    detail = f" ({reason})" if reason else ""
    return f"{who} was disconnected{detail}"


#: Names a gathered join or leave notice shows; the rest are counted.
JOINED_NAMES_SHOWN: Final = 10


def _some_names(names: tuple[str, ...], *, me: str | None, color: bool) -> str:
    """`alice, bob and carol`: the first names, and how many more."""
    shown = [_name(name, me=me, color=color) for name in names[:JOINED_NAMES_SHOWN]]
    more = len(names) - len(shown)
    if more:
        return f"{', '.join(shown)} and {more} more"
    if len(shown) == 1:
        return shown[0]
    return f"{', '.join(shown[:-1])} and {shown[-1]}"


def _joined_many(names: tuple[str, ...], *, me: str | None, color: bool) -> str:
    """`alice, bob and carol joined`."""
    return f"{_some_names(names, me=me, color=color)} joined"


def _left_many(
    names: tuple[str, ...], how: str, reason: str, *, me: str | None, color: bool
) -> str:
    """`alice and bob left (quit: bye)`, or `... were disconnected (reason)`."""
    who = _some_names(names, me=me, color=color)
    reason = sanitize_text(reason)
    if how == "quit":
        return f"{who} left" + (f" (quit: {reason})" if reason else " (quit)")
    verb = "was" if len(names) == 1 else "were"
    return f"{who} {verb} disconnected" + (f" ({reason})" if reason else "")


def _notice_line(text: str, *, color: bool) -> str:
    """A notice whose parts are already sanitised (and maybe coloured)."""
    return f"{_style('--', _NOTICE_STYLE, color=color)} {text}"


def _chat_body(
    event: ev.Message
    | ev.Action
    | ev.Joined
    | ev.JoinedMany
    | ev.Left
    | ev.Kicked
    | ev.LeftMany
    | ev.Renamed
    | ev.TopicIs,
    *,
    me: str | None,
    color: bool,
    mention: bool = False,
) -> str:
    """The part of a chat or notice line after its time stamp."""
    match event:
        case ev.TopicIs(_ts, room, setter, text):
            about = f"topic of {sanitize_text(room)}"
            by = _name(setter, me=me, color=color)
            if not text:
                return _notice_line(f"{about} cleared by {by}", color=color)
            # The topic last: nothing fixed may follow free text.
            return _notice_line(
                f"{about} (set by {by}): {sanitize_text(text)}", color=color
            )
        case ev.Kicked(_ts, room, name, by, reason):
            who = _name(name, me=me, color=color)
            op = _name(by, me=me, color=color)
            detail = f" ({sanitize_text(reason)})" if reason else ""
            return _notice_line(
                f"{who} was kicked from {sanitize_text(room)} by {op}{detail}",
                color=color,
            )
        case ev.Message(_ts, _room, sender, text):
            return _message(sender, text, me=me, color=color, mention=mention)
        case ev.Action(_ts, _room, sender, text):
            return _action(sender, text, me=me, color=color, mention=mention)
        case ev.Joined(_ts, _room, name):
            return _notice_line(
                f"{_name(name, me=me, color=color)} joined", color=color
            )
        case ev.JoinedMany(_ts, _room, names):
            return _notice_line(_joined_many(names, me=me, color=color), color=color)
        case ev.LeftMany(_ts, _room, names, how, reason):
            return _notice_line(
                _left_many(names, how, reason, me=me, color=color), color=color
            )
        case ev.Left():
            return _notice_line(_left(event, me=me, color=color), color=color)
        case ev.Renamed(_ts, _room, old, new):
            text = (
                f"{_name(old, me=me, color=color)} is now known as"
                f" {_name(new, me=me, color=color)}"
            )
            return _notice_line(text, color=color)


def render_event(
    event: ev.ServerEvent,
    *,
    me: str | None,
    color: bool,
    localtime: LocalTime = time.localtime,
    room: str | None = None,
) -> str:
    """The display line for one server event.

    `me` is the user's current name (None before it is chosen): lines from
    that name are shown as the user's own, lines from others that mention it
    are marked (`is_mention`). `room` is the user's current room: lines for
    other rooms are tagged with theirs (None: no tags). Never raises for a
    well-formed event; every server string is sanitised.
    """
    match event:
        case ev.MoreLine(_ts, _room, sender, text):
            lead = _lead(event, current=room, history=False, localtime=localtime)
            return _continued(lead, sender, text, me=me, color=color)
        case ev.Replayed(ev.MoreLine(_ts, _room, sender, text) as inner):
            lead = _lead(inner, current=room, history=True, localtime=localtime)
            return _continued(lead, sender, text, me=me, color=color)
        case (
            (ev.Message() | ev.Action() | ev.Joined() | ev.Left() | ev.Renamed())
            | ev.Kicked()
            | ev.TopicIs()
            | ev.JoinedMany()
            | ev.LeftMany()
        ):
            mention = is_mention(event, me)
            line = (
                _stamp(event.ts, color=color, localtime=localtime)
                + _room_tag(event, current=room, color=color)
                + _chat_body(event, me=me, color=color, mention=mention)
            )
            return _marked(line, color=color) if mention else line
        case ev.RoomInfo(room, members, topic, keyed):
            about = f": {sanitize_text(topic)}" if topic else ""
            key = ", key needed" if keyed else ""
            return _notice_line(
                f"{sanitize_text(room)} ({members} here{key}){about}", color=color
            )
        case ev.Switched(room):
            return render_notice(f"now talking in {sanitize_text(room)}", color=color)
        case ev.Replayed(inner) if not isinstance(inner, ev.MoreLine):
            stamp = _stamp(inner.ts, color=color, localtime=localtime)
            tag = _style("[history]", _HISTORY_STYLE, color=color)
            where = _room_tag(inner, current=room, color=color)
            return f"{stamp}{tag} {where}{_chat_body(inner, me=me, color=color)}"
        case ev.Private(ts, sender, _recipient, text):
            mention = is_mention(event, me)
            tag = _style("[private]", _PRIVATE_STYLE, color=color)
            stamp = _stamp(ts, color=color, localtime=localtime)
            body = _message(sender, text, me=me, color=color, mention=mention)
            line = f"{stamp}{tag} {body}"
            return _marked(line, color=color) if mention else line
        case ev.Hello(_protocol, server, _max_line):
            return render_notice(f"connected to {server}", color=color)
        case ev.Banner(text):
            return sanitize_text(text)
        case (
            ev.Info(text)
            | ev.NamePrompt(text)
            | ev.PasswordPrompt(_, text)
            | ev.Welcome(_, text)
        ):
            return render_notice(text, color=color)
        case ev.WhoList(room, names):
            shown = ", ".join(_name(name, me=me, color=color) for name in names)
            where = "online" if room == "*" else f"in {sanitize_text(room)}"
            return _notice_line(f"{where}: {shown}", color=color)
        case ev.HelpLine(text):
            return "   " + sanitize_text(text)
        case ev.MotdLine(text):
            return render_notice(f"[motd] {text}".rstrip(), color=color)
        case ev.Error(code, text):
            return render_error(text or code, color=color)
        case ev.Goodbye(code, text):
            return render_notice(text or code, color=color)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


def render_own(
    request: ev.Say | ev.Me | ev.PrivateMsg,
    *,
    me: str,
    ts: float,
    color: bool,
    localtime: LocalTime = time.localtime,
) -> str:
    """The display line for something the user just sent.

    The server does not echo a user's own lines, so the client shows them
    with this, in the same layout as everybody else's (and bold when
    coloured). A private message reads `[private to bob] <me> text`.
    """
    stamp = _stamp(ts, color=color, localtime=localtime)
    match request:
        case ev.Say(text):
            return stamp + _message(me, text, me=me, color=color)
        case ev.Me(text):
            return stamp + _action(me, text, me=me, color=color)
        case ev.PrivateMsg(recipient, text):
            tag = _style(
                f"[private to {sanitize_text(recipient)}]", _PRIVATE_STYLE, color=color
            )
            return f"{stamp}{tag} {_message(me, text, me=me, color=color)}"
    raise AssertionError(f"unhandled request {request!r}")  # pragma: no cover


def render_own_lines(
    lines: Sequence[str],
    *,
    me: str,
    ts: float,
    color: bool,
    localtime: LocalTime = time.localtime,
) -> list[str]:
    """The display lines for a multi-line message the user just sent.

    The first as `render_own` shows a chat line, each other one under its
    text, as the others see the message (`MORE` lines).
    """
    first, *more = lines
    lead = f"{format_time(ts, localtime=localtime)} <{sanitize_text(me)}> "
    shown = [render_own(ev.Say(first), me=me, ts=ts, color=color, localtime=localtime)]
    shown += [_continued(lead, me, line, me=me, color=color) for line in more]
    return shown
