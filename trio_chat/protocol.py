"""The trio-chat line protocol, sans-IO.

Bytes in, events out; events in, bytes out. This module imports no trio,
ssl or socket, reads no clock and logs nothing, so it is tested with plain
tables and reused by the server, the client and the benchmarks alike.

Framing: lines end in LF or CRLF (both accepted; the server sends CRLF).
Bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD. A line
longer than the limit yields `LineTooLong` and the rest of it is discarded
up to the next newline; the buffer never holds more than the limit. The
wire format itself is documented in docs/PROTOCOL.md.
"""

from __future__ import annotations

import calendar
import dataclasses
import enum
import functools
import math
import re
import time
from typing import Final

from trio_chat import events as ev
from trio_chat.limits import MAX_LINE_BYTES, MAX_SERVER_LINE_BYTES
from trio_chat.names import MAX_NAME_LENGTH

LINE_END: Final = b"\r\n"
#: The mode field of a `ROOM` line: anyone may join, or joining needs a key.
ROOM_OPEN: Final = "open"
ROOM_KEYED: Final = "key"

# --------------------------------------------------------------------------
# Framing: bytes -> lines


class NeedData(enum.Enum):
    """Sentinel: feed more bytes before asking for the next event."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """A complete line, decoded, line ending removed (may be empty)."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class LineTooLong:
    """The peer sent a line over the limit; its remainder will be discarded."""

    limit: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReadQueueExceeded:
    """The peer sent more than `limit` bytes without a newline (fatal)."""

    limit: int


@dataclasses.dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer closed its side; any partial line was discarded."""

    partial_bytes: int


FramingEvent = Line | LineTooLong | ReadQueueExceeded | EndOfStream


class LocalProtocolError(RuntimeError):
    """This program misused the protocol object (a bug here, not the peer's)."""


class LineReader:
    """Split a byte stream into lines, in bounded memory.

    Feed bytes with `feed` (`b""` means end of stream), then call
    `next_event` until it returns `NEED_DATA`. The partial line held between
    feeds never exceeds `max_line_bytes + 1` bytes (the +1 is a CR that may
    belong to a CRLF). Bytes fed but not yet framed are held until the next
    `next_event` calls consume them, so feed in bounded chunks.

    `max_unterminated_bytes` (None: no limit) turns a stream that never sends
    a newline into a `ReadQueueExceeded` event, after which nothing more is
    reported.
    """

    # Slots: one per connection.
    __slots__ = (
        "_chunks",
        "_discarding",
        "_done",
        "_eof",
        "_max",
        "_max_unterminated",
        "_offset",
        "_partial",
        "_pending",
        "_unterminated",
    )

    def __init__(
        self,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_unterminated_bytes: int | None = None,
    ) -> None:
        if max_line_bytes < 1:
            raise LocalProtocolError("max_line_bytes must be at least 1")
        self._max = max_line_bytes
        self._max_unterminated = max_unterminated_bytes
        # Received chunks not yet framed, and where in the first one the
        # next line starts (a list: it holds a chunk or two, and a deque's
        # first block alone costs 760 bytes on every connection; none, a
        # shared empty tuple, while there is nothing to frame).
        self._chunks: list[bytes] | tuple[()] = ()
        self._offset = 0
        self._partial = bytearray()
        self._discarding = False
        self._unterminated = 0  # bytes since the last newline
        self._eof = False
        self._done = False
        self._pending: FramingEvent | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partial line held (never more than the limit + 1)."""
        return len(self._partial)

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; `b""` marks the end of the stream."""
        if self._eof:
            if data:
                raise LocalProtocolError("data fed after end of stream")
            return
        if self._done:
            return  # a fatal event was reported: nothing more is framed
        if data:
            if isinstance(self._chunks, list):
                self._chunks.append(bytes(data))
            else:
                self._chunks = [bytes(data)]
        else:
            self._eof = True

    def next_event(self) -> FramingEvent | NeedData:
        """Return the next framing event, or `NEED_DATA`."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        if self._done:
            return NEED_DATA
        chunks = self._chunks
        while isinstance(chunks, list) and chunks:
            chunk = chunks[0]
            start = self._offset
            newline = chunk.find(b"\n", start)
            if newline < 0:
                del chunks[0]
                self._offset = 0
                found = self._take_partial(chunk[start:] if start else chunk)
            else:
                if newline + 1 < len(chunk):
                    self._offset = newline + 1
                else:
                    del chunks[0]
                    self._offset = 0
                found = self._end_line(chunk[start:newline])
            if found is not None:
                return found
        self._chunks = ()
        if self._eof:
            self._done = True
            partial = len(self._partial)
            self._partial.clear()
            return EndOfStream(partial)
        return NEED_DATA

    def _take_partial(self, data: bytes) -> FramingEvent | None:
        self._unterminated += len(data)
        if self._max_unterminated is not None and (
            self._unterminated > self._max_unterminated
        ):
            self._done = True
            self._chunks = ()
            self._offset = 0
            self._partial.clear()
            return ReadQueueExceeded(self._max_unterminated)
        if self._discarding:
            return None
        self._partial += data
        if len(self._partial) > self._max + 1:
            self._partial.clear()
            self._discarding = True
            return LineTooLong(self._max)
        return None

    def _end_line(self, data: bytes) -> FramingEvent | None:
        unterminated = self._unterminated + len(data)
        self._unterminated = 0
        if self._max_unterminated is not None and (
            unterminated > self._max_unterminated
        ):
            # The same events as if the bytes had come one at a time: the
            # line was too long (once) before the stream went over the limit.
            fatal = ReadQueueExceeded(self._max_unterminated)
            self._done = True
            self._chunks = ()
            self._offset = 0
            self._partial.clear()
            if not self._discarding and unterminated > self._max + 1:
                self._pending = fatal
                return LineTooLong(self._max)
            return fatal
        if self._discarding:
            self._discarding = False
            return None
        if self._partial:
            self._partial += data
            raw = bytes(self._partial)
            self._partial.clear()
        else:
            raw = data
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self._max:
            return LineTooLong(self._max)
        return Line(raw.decode("utf-8", errors="replace"))


def looks_like_tls(data: bytes | bytearray) -> bool:
    """True if `data` starts like a TLS ClientHello (a TLS client, wrong port)."""
    return len(data) >= 2 and data[0] == 0x16 and data[1] == 0x03


_HTTP_REQUEST_LINE: Final = re.compile(
    r"^(?:GET|HEAD|POST|PUT|DELETE|OPTIONS|CONNECT|PATCH|TRACE) \S+ HTTP/\d\.\d$"
)


def looks_like_http(line: str) -> bool:
    """True if `line` is an HTTP request line (a browser, wrong port)."""
    return _HTTP_REQUEST_LINE.match(line) is not None


# --------------------------------------------------------------------------
# User input -> requests


#: Lines `/history` replays when no count is given.
DEFAULT_HISTORY_REQUEST: Final = 50
#: Digits of a page number (`/rooms 2`): no listing has a million pages.
MAX_PAGE_DIGITS: Final = 6


_DURATION: Final = re.compile(r"^([0-9]{1,6})([smhd])$")
_DURATION_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: How every command that takes a duration explains one.
DURATION_HELP: Final = "a number and s, m, h or d: 90s, 10m, 2h, 7d"


def parse_duration(text: str) -> float | None:
    """Seconds in `90s`, `10m`, `2h` or `1d` (1 to 6 digits, then the unit).

    None for anything else: a bare number, another unit, a sign, a space.
    """
    match = _DURATION.match(text.lower())
    if match is None:
        return None
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration_text(text: str) -> str:
    """A duration as its user gave it, tidied: `010M` is `10m`."""
    return f"{int(text[:-1])}{text[-1].lower()}"


def _usage(command: str, usage: str) -> ev.BadCommand:
    return ev.BadCommand("usage", f"Usage: /{command} {usage}".rstrip())


def _duration_usage(command: str, usage: str) -> ev.BadCommand:
    """The usage of a command taking a duration, with what a duration is."""
    return _usage(command, f"{usage} (DURATION: {DURATION_HELP})")


def _parse_ban(rest: str) -> ev.Ban | ev.BadCommand:
    """`/ban NAME|ADDRESS [DURATION] [REASON]`: no duration is until lifted.

    A word after the target that starts with a digit is the duration, and
    must be one: `/ban bob 10min flooding` is a usage error, not a ban
    until lifted with the reason `10min flooding`.
    """
    usage = "NAME|ADDRESS [DURATION] [REASON]"
    target, _, tail = rest.partition(" ")
    if not target:
        return _usage("ban", usage)
    first, _, reason = tail.strip().partition(" ")
    if not first[:1].isascii() or not first[:1].isdigit():
        return ev.Ban(target, math.inf, tail.strip())
    seconds = parse_duration(first)
    if not seconds:  # not understood, or zero
        return _duration_usage("ban", usage)
    return ev.Ban(target, seconds, reason.strip(), duration_text(first))


def _page(command: str, usage: str, text: str) -> int | ev.BadCommand:
    """The page number `text` asks for (1 if none), or a usage error."""
    if not text:
        return 1
    if not text.isascii() or not text.isdigit() or len(text) > MAX_PAGE_DIGITS:
        return _usage(command, usage)
    return int(text)


def parse_request(text: str) -> ev.Request | None:
    """Parse one line of (already sanitised) user input into a request.

    Returns None for a line with nothing to say (empty or only spaces).
    A line starting with `//` is chat text starting with `/`. Unknown
    commands and missing arguments become `BadCommand`.
    """
    if not text.strip():
        return None
    if not text.startswith("/"):
        return ev.Say(text)
    if text.startswith("//"):
        return ev.Say(text[1:])
    command, _, rest = text[1:].partition(" ")
    command = command.lower()
    rest = rest.strip()
    if command == "help":
        return ev.Help()
    if command in ("who", "names"):
        scope, _, after = rest.partition(" ")
        page = after.strip().split(" ", 1)[0]
        if not (page.isascii() and page.isdigit()):
            return ev.Who(scope)  # further words are ignored
        number = _page(command, "[ROOM|*] [PAGE]", page)
        return number if isinstance(number, ev.BadCommand) else ev.Who(scope, number)
    if command == "join":
        room, _, key = rest.partition(" ")
        return ev.Join(room, key.strip()) if room else _usage("join", "ROOM [KEY]")
    if command in ("part", "leave"):
        room, _, reason = rest.partition(" ")
        if room and not room.startswith("#"):
            return ev.Part("", rest)  # a reason only: the current room
        return ev.Part(room, reason.strip())
    if command in ("switch", "go"):
        return ev.Switch(rest) if rest and " " not in rest else _usage("switch", "ROOM")
    if command in ("rooms", "list"):
        number = _page(command, "[PAGE]", rest)
        return number if isinstance(number, ev.BadCommand) else ev.Rooms(number)
    if command == "topic":
        return ev.Topic(rest or None)
    if command == "kick":
        name, _, reason = rest.partition(" ")
        return (
            ev.Kick(name, reason.strip()) if name else _usage("kick", "NAME [REASON]")
        )
    if command in ("mute", "unmute"):
        name, _, duration = rest.partition(" ")
        duration = duration.strip()
        if not name or (command == "unmute" and duration):
            return _usage(command, "NAME" if command == "unmute" else "NAME [DURATION]")
        if command == "unmute":
            return ev.Mute(name, 0.0)
        if not duration:
            return ev.Mute(name, math.inf)
        seconds = parse_duration(duration)
        if not seconds:  # not understood, or zero (which would unmute)
            return _duration_usage("mute", "NAME [DURATION]")
        return ev.Mute(name, seconds, duration_text(duration))
    if command == "ban":
        return _parse_ban(rest)
    if command == "unban":
        if not rest or " " in rest:
            return _usage("unban", "NAME|ADDRESS")
        return ev.Unban(rest)
    if command == "bans":
        number = _page(command, "[PAGE]", rest)
        return number if isinstance(number, ev.BadCommand) else ev.Bans(number)
    if command == "motd":
        return ev.Motd(rest or None)
    if command in ("certadd", "certdel"):
        if rest:
            return _usage(command, "")
        return ev.CertBinding(add=command == "certadd")
    if command == "op":
        return (
            ev.RoomMode("op", rest)
            if rest and " " not in rest
            else _usage("op", "NAME")
        )
    if command == "key":
        return ev.RoomMode("key", rest) if " " not in rest else _usage("key", "[KEY]")
    if command == "lecture":
        if rest.lower() not in ("on", "off"):
            return _usage("lecture", "on|off")
        return ev.RoomMode("lecture", rest.lower())
    if command == "register":
        return ev.Register(rest) if rest else _usage("register", "PASSWORD")
    if command == "identify":
        return ev.Identify(rest) if rest else _usage("identify", "PASSWORD")
    if command == "away":
        return ev.Away(rest)
    if command == "back":
        return ev.Back()
    if command == "whois":
        return ev.Whois(rest) if rest and " " not in rest else _usage("whois", "NAME")
    if command == "ignore":
        return ev.Ignore(rest) if " " not in rest else _usage("ignore", "[NAME]")
    if command == "unignore":
        if not rest or " " in rest:
            return _usage("unignore", "NAME")
        return ev.Unignore(rest)
    if command in ("reply", "r"):
        return ev.Reply(rest) if rest else _usage("reply", "TEXT")
    if command == "since":
        try:
            return ev.Since(parse_timestamp(rest))
        except ValueError:
            return _usage("since", "TIMESTAMP (as on MSG lines: 2026-11-23T23:10:28Z)")
    if command == "history":
        if not rest:
            return ev.History(DEFAULT_HISTORY_REQUEST)
        if not rest.isdigit() or not rest.isascii():
            return _usage("history", "[N]")
        return ev.History(int(rest))
    if command == "quit":
        return ev.Quit(rest)
    if command == "me":
        return ev.Me(rest) if rest else _usage("me", "ACTION")
    if command == "nick":
        if not rest or " " in rest:
            return _usage("nick", "NEW")
        return ev.Nick(rest)
    if command in ("msg", "m"):
        name, _, message = rest.partition(" ")
        message = message.strip()
        if not name or not message:
            return _usage("msg", "NAME TEXT")
        return ev.PrivateMsg(name, message)
    shown = command if command.isprintable() and len(command) <= 32 else "?"
    return ev.BadCommand(
        "unknown-command", f"Unknown command /{shown}; type /help for the list."
    )


def encode_request(
    request: ev.Say | ev.Me | ev.Nick | ev.PrivateMsg | ev.Since,
) -> bytes:
    """Encode a request as a client line (what our client sends)."""
    match request:
        case ev.Say(text):
            line = "/" + text if text.startswith("/") else text
        case ev.Me(text):
            line = f"/me {text}"
        case ev.Nick(name):
            line = f"/nick {name}"
        case ev.PrivateMsg(name, text):
            line = f"/msg {name} {text}"
        case ev.Since(ts):
            line = f"/since {format_timestamp(ts)}"
    return line.encode("utf-8") + LINE_END


# --------------------------------------------------------------------------
# Server events -> lines

_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
#: The key of a refusal's hint: `BYE <code> retry-after=<seconds> <text>`.
RETRY_AFTER: Final = "retry-after"


def format_timestamp(ts: float) -> str:
    """Format a POSIX time as the wire's UTC timestamp, `2026-11-23T23:10:28Z`."""
    return _format_second(math.floor(ts))


# A pure function's memo (not state): a busy second's lines share one
# strftime, which was a twentieth of the server's work in fan-out profiles.
@functools.lru_cache(maxsize=16)
def _format_second(second: int) -> str:
    return time.strftime(_TS_FORMAT, time.gmtime(second))


def parse_timestamp(text: str) -> float:
    """Inverse of `format_timestamp`; raises ValueError on a malformed one."""
    return float(calendar.timegm(time.strptime(text, _TS_FORMAT)))


def _fit(head: str, text: str, tail: str = "", *, limit: int) -> bytes:
    """`head + text + tail + CRLF`, cutting `text` so the line fits `limit`."""
    line = f"{head}{text}{tail}".encode() + LINE_END
    if len(line) <= limit:
        return line
    budget = limit - len(f"{head}{tail}".encode()) - len(LINE_END)
    cut = text.encode()[: max(budget, 0)].decode("utf-8", errors="ignore")
    return f"{head}{cut}{tail}".encode() + LINE_END


def _message_lines(
    ts: float, room: str, sender: str, text: str, *, limit: int, prefix: str = ""
) -> bytes:
    """A `MSG` line for the first line of `text`, a `MORE` line for each other."""
    where = f"{format_timestamp(ts)} {room} <{sender}> "
    if "\n" not in text:  # the usual case: one line
        return _fit(f"{prefix}MSG {where}", text, limit=limit)
    first, *more = text.split("\n")
    return _fit(f"{prefix}MSG {where}", first, limit=limit) + b"".join(
        _fit(f"{prefix}MORE {where}", line, limit=limit) for line in more
    )


#: Bytes of the longest name (`MAX_NAME_LENGTH` characters of 4 bytes each).
_LONGEST_NAME: Final = 4 * MAX_NAME_LENGTH


def _names_lines(
    head: str, names: tuple[str, ...], limit: int, reason: str = ""
) -> bytes:
    """`head`, then `names`, then ` (reason)` if any: as many lines as needed.

    Each line is at most `limit` bytes; the reason is cut (at a character
    boundary) if it would leave no room for a name of the longest kind.
    """
    tail = ""
    if reason:
        budget = limit - len(head.encode()) - len(LINE_END) - _LONGEST_NAME - 3
        cut = reason.encode()[: max(budget, 0)].decode("utf-8", errors="ignore")
        tail = f" ({cut})"
    room_left = limit - len(head.encode()) - len(tail.encode()) - len(LINE_END)
    lines: list[str] = []
    line = head
    left = room_left
    for name in names:
        size = 1 + len(name.encode())
        if size > left and line != head:
            lines.append(line)
            line, left = head, room_left
        line += " " + name
        left -= size
    lines.append(line)
    return b"".join((line + tail).encode() + LINE_END for line in lines)


def encode_event(event: ev.ServerEvent, *, limit: int = MAX_SERVER_LINE_BYTES) -> bytes:
    """Serialise a server event to one wire line, CRLF included.

    The result is at most `limit` bytes (`MAX_SERVER_LINE_BYTES`); chat text
    or a reason is cut at a character boundary to fit. Two exceptions come
    as several lines (each within `limit`), in one piece: a multi-line
    message (one `MSG` line and a `MORE` line for each further line of its
    text), and `JoinedMany` with more names than fit on one `JOINS` line.
    """
    match event:
        case ev.Message(ts, room, sender, text):
            return _message_lines(ts, room, sender, text, limit=limit)
        case ev.MoreLine(ts, room, sender, text):
            return _fit(
                f"MORE {format_timestamp(ts)} {room} <{sender}> ", text, limit=limit
            )
        case ev.Action(ts, room, sender, text):
            return _fit(
                f"ACTION {format_timestamp(ts)} {room} {sender} ", text, limit=limit
            )
        case ev.Private(ts, sender, recipient, text):
            return _fit(
                f"PRIV {format_timestamp(ts)} @{recipient} <{sender}> ",
                text,
                limit=limit,
            )
        case ev.Joined(ts, room, name):
            return _fit(f"JOIN {format_timestamp(ts)} {room} {name}", "", limit=limit)
        case ev.JoinedMany(ts, room, (name,)):
            return _fit(f"JOIN {format_timestamp(ts)} {room} {name}", "", limit=limit)
        case ev.JoinedMany(ts, room, names):
            return _names_lines(f"JOINS {format_timestamp(ts)} {room}", names, limit)
        case ev.LeftMany(ts, room, (name,), how, reason):
            return encode_event(ev.Left(ts, room, name, how, reason), limit=limit)
        case ev.LeftMany(ts, room, names, how, reason):
            head = f"LEAVES {format_timestamp(ts)} {room} {how}"
            return _names_lines(head, names, limit, reason)
        case ev.Left(ts, room, name, how, reason):
            head = f"LEAVE {format_timestamp(ts)} {room} {name} {how}"
            return (
                _fit(head + " (", reason, ")", limit=limit)
                if reason
                else _fit(head, "", limit=limit)
            )
        case ev.Kicked(ts, room, name, by, reason):
            return _fit(
                f"KICK {format_timestamp(ts)} {room} {name} {by} ", reason, limit=limit
            )
        case ev.Renamed(ts, room, old, new):
            return _fit(
                f"NICK {format_timestamp(ts)} {room} {old} -> {new}", "", limit=limit
            )
        case ev.Hello(protocol, server, max_line, burst, rate, lines, size, naming):
            flood = f" flood-burst={burst} flood-rate={rate:g}" if rate else ""
            paste = f" paste-lines={lines} paste-bytes={size}" if lines and size else ""
            name = f" name-timeout={naming:g}" if naming else ""
            return _fit(
                f"HELLO {protocol} {server} max-line={max_line}{flood}{paste}{name}",
                "",
                limit=limit,
            )

        case ev.Banner(text):
            return _fit("BANNER ", text, limit=limit)
        case ev.Info(text):
            return _fit("INFO ", text, limit=limit)
        case ev.NamePrompt(text):
            return _fit("NAME ", text, limit=limit)
        case ev.PasswordPrompt(name, text):
            return _fit(f"PASSWORD {name} ", text, limit=limit)
        case ev.Welcome(name, text):
            return _fit(f"WELCOME {name} ", text, limit=limit)
        case ev.WhoList(room, names):
            return _fit(f"WHO {room} ", " ".join(names), limit=limit)
        case ev.HelpLine(text):
            return _fit("HELP ", text, limit=limit)
        case ev.MotdLine(text):
            return _fit("MOTD ", text, limit=limit)
        case ev.MotdIs(lines):
            return b"".join(_fit("MOTD ", text, limit=limit) for text in lines)
        case (
            ev.WhoisReply(text=text)
            | ev.MarkedAway(text=text)
            | ev.AwayIs(text=text)
            | ev.RoomChanged(text=text)
        ):
            return _fit("INFO ", text, limit=limit)
        # The answers to requests only other wire formats make (IRC's NAMES,
        # LIST, ISON, MODE, SASL), should one reach a line client.
        case ev.Roster(target, members, _total, _detail):
            names = tuple(member.name for member in members)
            return _names_lines(f"WHO {target}", names, limit)
        case ev.RoomList(rooms, _total):
            return b"".join(encode_event(room, limit=limit) for room in rooms)
        case ev.Online(members, _userhost):
            online = " ".join(member.name for member in members) or "nobody"
            return _fit("INFO Online: ", online, limit=limit)
        case ev.ModesAre(room, key, lecture):
            keyed = "a key" if key else "no key"
            speak = "only ops may speak" if lecture else "everyone may speak"
            return _fit(f"INFO {room} has {keyed}; {speak}.", "", limit=limit)
        case ev.LoggedIn(name):
            return _fit(f"INFO You are logged in as {name}.", "", limit=limit)
        case ev.Error(code, text):
            return _fit(f"ERR {code} ", text, limit=limit)
        case ev.Goodbye(code, text, retry_after):
            hint = f"{RETRY_AFTER}={retry_after} " if retry_after > 0 else ""
            return _fit(f"BYE {code} {hint}", text, limit=limit)
        case ev.TopicIs(ts, room, setter, text):
            return _fit(
                f"TOPIC {format_timestamp(ts)} {room} {setter} ", text, limit=limit
            )
        case ev.RoomInfo(room, members, topic, keyed):
            mode = ROOM_KEYED if keyed else ROOM_OPEN
            return _fit(f"ROOM {room} {members} {mode} ", topic, limit=limit)
        case ev.Switched(room):
            return _fit(f"SWITCH {room}", "", limit=limit)
        case ev.Replayed(ev.Message(ts, room, sender, text)):
            return _message_lines(ts, room, sender, text, limit=limit, prefix="HIST ")
        case ev.Replayed(inner):
            prefix = b"HIST "
            return prefix + encode_event(inner, limit=limit - len(prefix))
    raise LocalProtocolError(f"cannot encode {event!r}")  # pragma: no cover


# --------------------------------------------------------------------------
# Lines -> server events (for clients)


class ServerProtocolError(ValueError):
    """The server sent a line this client does not understand (its fault)."""


#: Kinds of line that may be replayed from history (behind HIST).
_REPLAYABLE_KINDS: Final = frozenset(
    {"MSG", "MORE", "ACTION", "JOIN", "LEAVE", "KICK", "NICK", "TOPIC"}
)
_LEAVE_HOWS: Final[dict[str, ev.LeaveHow]] = {
    "quit": "quit",
    "disconnected": "disconnected",
    "parted": "parted",
}
_LEAVE_REASON: Final = re.compile(
    r"^(quit|disconnected|parted)(?: \((.*)\))?$", re.DOTALL
)


def decode_event(line: str) -> ev.ServerEvent:
    """Parse one server line (line ending removed) back into its event.

    Raises `ServerProtocolError` for a line of unknown kind or wrong shape.
    """
    kind, _, rest = line.partition(" ")
    try:
        return _decode(kind, rest)
    except (ValueError, IndexError) as exc:
        raise ServerProtocolError(f"malformed {kind} line: {line!r}") from exc


def _decode(kind: str, rest: str) -> ev.ServerEvent:
    if kind in ("MSG", "MORE", "ACTION", "PRIV"):
        ts_text, target, rest = rest.split(" ", 2)
        ts = parse_timestamp(ts_text)
        if kind == "ACTION":
            sender, _, text = rest.partition(" ")
            return ev.Action(ts, target, sender, text)
        bracketed, _, text = rest.partition(" ")
        if not (bracketed.startswith("<") and bracketed.endswith(">")):
            raise ValueError("sender not in <>")
        if kind == "MSG":
            return ev.Message(ts, target, bracketed[1:-1], text)
        if kind == "MORE":
            return ev.MoreLine(ts, target, bracketed[1:-1], text)
        if not target.startswith("@"):
            raise ValueError("recipient without @")
        return ev.Private(ts, bracketed[1:-1], target[1:], text)
    if kind == "JOIN":
        ts_text, room, name = rest.split(" ")
        return ev.Joined(parse_timestamp(ts_text), room, name)
    if kind == "JOINS":
        ts_text, room, *joiners = rest.split(" ")
        if not joiners or "" in joiners:
            raise ValueError("JOINS without names")
        return ev.JoinedMany(parse_timestamp(ts_text), room, tuple(joiners))
    if kind == "LEAVES":
        # Names hold no parentheses: the first " (" starts the reason.
        body, paren, reason = rest.partition(" (")
        if paren and not reason.endswith(")"):
            raise ValueError("bad leave reason")
        ts_text, room, how_text, *leavers = body.split(" ")
        if not leavers or "" in leavers:
            raise ValueError("LEAVES without names")
        if how_text not in ("quit", "disconnected"):
            raise ValueError("LEAVES of people who did not quit or were not cut off")
        return ev.LeftMany(
            parse_timestamp(ts_text),
            room,
            tuple(leavers),
            _LEAVE_HOWS[how_text],
            reason[:-1] if paren else "",
        )
    if kind == "LEAVE":
        ts_text, room, name, tail = rest.split(" ", 3)
        match = _LEAVE_REASON.match(tail)
        if match is None:
            raise ValueError("bad leave reason")
        how: ev.LeaveHow = _LEAVE_HOWS[match.group(1)]
        return ev.Left(parse_timestamp(ts_text), room, name, how, match.group(2) or "")
    if kind == "KICK":
        ts_text, room, name, by, *words = rest.split(" ", 4)
        return ev.Kicked(parse_timestamp(ts_text), room, name, by, "".join(words))
    if kind == "NICK":
        ts_text, room, old, arrow, new = rest.split(" ")
        if arrow != "->":
            raise ValueError("no arrow")
        return ev.Renamed(parse_timestamp(ts_text), room, old, new)
    if kind == "TOPIC":
        ts_text, room, setter, *words = rest.split(" ", 3)
        return ev.TopicIs(parse_timestamp(ts_text), room, setter, "".join(words))
    if kind == "ROOM":
        room, members, mode, *words = rest.split(" ", 3)
        if mode not in (ROOM_OPEN, ROOM_KEYED):
            raise ValueError(f"unknown room mode {mode!r}")
        return ev.RoomInfo(room, int(members), "".join(words), mode == ROOM_KEYED)
    if kind == "SWITCH":
        (room,) = rest.split(" ")
        return ev.Switched(room)
    if kind == "HELLO":
        protocol, server, *options = rest.split(" ")
        settings = dict(option.split("=", 1) for option in options)
        return ev.Hello(
            protocol,
            server,
            int(settings.get("max-line", MAX_LINE_BYTES)),
            int(settings.get("flood-burst", 0)),
            float(settings.get("flood-rate", 0)),
            int(settings.get("paste-lines", 0)),
            int(settings.get("paste-bytes", 0)),
            float(settings.get("name-timeout", 0)),
        )

    if kind == "PASSWORD":
        name, _, text = rest.partition(" ")
        return ev.PasswordPrompt(name, text)
    if kind == "WELCOME":
        name, _, text = rest.partition(" ")
        return ev.Welcome(name, text)
    if kind == "WHO":
        room, _, names = rest.partition(" ")
        return ev.WhoList(room, tuple(names.split()))
    if kind in ("ERR", "BYE"):
        code, _, text = rest.partition(" ")
        if kind == "ERR":
            return ev.Error(code, text)
        hint, _, after = text.partition(" ")
        key, equals, seconds = hint.partition("=")
        if key == RETRY_AFTER and equals and seconds.isascii() and seconds.isdigit():
            return ev.Goodbye(code, after, int(seconds))
        return ev.Goodbye(code, text)
    if kind == "HIST":
        inner_kind, _, inner_rest = rest.partition(" ")
        if inner_kind not in _REPLAYABLE_KINDS:
            raise ValueError("HIST of a line that is not chat or notice")
        inner = _decode(inner_kind, inner_rest)
        if not isinstance(
            inner,
            ev.Message
            | ev.MoreLine
            | ev.Action
            | ev.Joined
            | ev.Left
            | ev.Kicked
            | ev.Renamed
            | ev.TopicIs,
        ):
            raise ValueError("HIST of a line that is not chat or notice")
        return ev.Replayed(inner)
    if kind == "BANNER":
        return ev.Banner(rest)
    if kind == "INFO":
        return ev.Info(rest)
    if kind == "NAME":
        return ev.NamePrompt(rest)
    if kind == "HELP":
        return ev.HelpLine(rest)
    if kind == "MOTD":
        return ev.MotdLine(rest)
    raise ValueError(f"unknown kind {kind!r}")
