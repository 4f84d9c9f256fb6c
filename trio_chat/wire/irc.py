"""IRC, server side, sans-IO: one `IrcSession` per client connection.

IRC clients (irssi, weechat, HexChat) share rooms with line-protocol users:
an IRC channel is a trio-chat room, a nick is a trio-chat name, and every
request goes through the same chat core, with its names, history,
moderation and limits. docs/IRC.md says what maps to what; this module is
the mapping. It imports no trio, ssl or socket, reads no clock and logs
nothing (see `trio_chat.wire`).

Two kinds of output:

- `encode_shared(event)`: the lines that are the same bytes for every IRC
  member of a room (messages, actions, joins, parts, quits, kicks, nick and
  topic changes, what an op changed). Fan-out encodes each room line once
  per wire format and shares the bytes, so nothing here depends on the
  recipient: no message tags, no capability, no nick. Gathered presence
  (`JoinedMany`, `LeftMany`, how big rooms hear a crowd) has no IRC line of
  its own: it becomes one JOIN or QUIT line per name, concatenated, still
  encoded once and shared.
- `IrcSession.send(event)`: an event for this client only (replies,
  numerics carrying its nick, history replayed the way its capabilities
  allow). Events that are shared lines are given as `encode_shared` gives
  them; an event IRC has nothing to show for gives `b""`.

Registration (CAP, PASS, NICK, USER, SASL PLAIN) is gathered here and
turned into the login requests of `trio_chat.events` (`ServerPassword`,
`LogIn`, `ChooseName`); the chat's answers to them (prompts, errors,
`LoggedIn`, `Welcome`) drive it on. Errors are the peer's to hear, as
numerics; `LocalProtocolError` is raised only for misuse by this program.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from trio_chat import __version__
from trio_chat import events as ev
from trio_chat.limits import (
    IRC_MAX_ISON_NAMES,
    IRC_MAX_JOIN_TARGETS,
    IRC_MAX_LINE_BYTES,
    IRC_MAX_MODES,
    IRC_MAX_SASL_BYTES,
    IRC_MAX_TAGS_BYTES,
    IRC_MAX_TARGETS,
    IRC_MAX_USERHOST_NAMES,
    IRC_WHOIS_CHANNEL_LINES,
    Limits,
)
from trio_chat.names import MAX_NAME_LENGTH, MAX_ROOM_LENGTH
from trio_chat.protocol import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    format_timestamp,
    looks_like_tls,
)
from trio_chat.sanitize import sanitize_text
from trio_chat.wire import NOOP, Closed, Noop

__all__ = [
    "CAPABILITIES",
    "ERROR_REPLIES",
    "SHARED_SOURCE",
    "USER_HOST",
    "IrcSession",
    "encode_shared",
    "strip_formatting",
]

CRLF: Final = b"\r\n"
#: The host part of every user's mask (`alice!alice@trio-chat`): addresses
#: are told to server operators only (WHOIS), never in a mask.
USER_HOST: Final = "trio-chat"
#: The source of the notices a room's members share (what an op did there):
#: shared lines cannot carry a server name chosen per session.
SHARED_SOURCE: Final = "trio-chat"
#: The capabilities offered (CAP LS), and why only these (docs/IRC.md):
#: `sasl` logs a registered name in; `server-time` puts history's original
#: times on its lines; `multi-prefix` is trivially true, `@` being the only
#: prefix. `message-tags`, `away-notify`, `echo-message`, `extended-join`,
#: `account-notify` and `batch` would make shared lines differ by recipient,
#: or relay what the chat does not keep (client tags): refused (NAK).
CAPABILITIES: Final = ("multi-prefix", "sasl", "server-time")
#: SASL mechanisms: PLAIN (a name and its password) is what trio-chat's
#: accounts can check; EXTERNAL (a certificate) logs in before any line.
SASL_MECHANISMS: Final = ("PLAIN",)
#: A SASL response arrives in chunks of this many base64 bytes; a shorter
#: one (or `+`) ends it.
SASL_CHUNK: Final = 400
#: Commands an unregistered client may send; anything else gets 451.
_REGISTRATION_COMMANDS: Final = frozenset(
    {"CAP", "PASS", "NICK", "USER", "AUTHENTICATE", "PING", "PONG", "QUIT"}
)
#: Modes a channel has (CHANMODES: `k` takes a key, `m` is a lecture) and
#: the prefix of its ops (PREFIX).
_CHANNEL_MODES: Final = "km"

#: The chat's error codes as IRC numerics: (numeric, whether the error's
#: subject, a nick or a channel, is a parameter before the text). Codes not
#: here become 400 (ERR_UNKNOWNERROR) with the chat's text.
ERROR_REPLIES: Final[Mapping[str, tuple[str, bool]]] = {
    "name-invalid": ("432", True),  # ERR_ERRONEUSNICKNAME
    "not-allowed": ("432", True),  # not on the allowlist: no other nick helps
    "name-taken": ("433", True),  # ERR_NICKNAMEINUSE, lookalikes included
    "name-registered": ("433", True),  # reserved for its owner
    "banned": ("465", False),  # ERR_YOUREBANNEDCREEP: bans are server-wide
    "no-such-user": ("401", True),  # ERR_NOSUCHNICK
    "no-one-to-reply": ("401", True),
    "not-in-room": ("442", True),  # ERR_NOTONCHANNEL
    "no-room": ("442", True),
    "not-op": ("482", True),  # ERR_CHANOPRIVSNEEDED
    "not-operator": ("481", False),  # ERR_NOPRIVILEGES
    "bad-room-key": ("475", True),  # ERR_BADCHANNELKEY
    "too-many-rooms": ("405", True),  # ERR_TOOMANYCHANNELS
    "muted": ("404", True),  # ERR_CANNOTSENDTOCHAN
    "ops-only": ("404", True),  # a lecture: +m
    "room-invalid": ("479", True),  # ERR_BADCHANNAME
    "bad-password": ("464", False),  # ERR_PASSWDMISMATCH
    "login-refused": ("464", False),
    "not-registered": ("451", False),  # ERR_NOTREGISTERED
    "line-too-long": ("417", False),  # ERR_INPUTTOOLONG
    "unknown-command": ("421", True),  # ERR_UNKNOWNCOMMAND
}

# mIRC formatting: bold, colour (with up to two 1-2 digit numbers), hex
# colour, reset, monospace, reverse, italic, strikethrough, underline.
_FORMATTING: Final = re.compile(
    r"\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    r"|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
_NOT_IN_PARAM: Final = re.compile(r"[\x00\r\n ]")
_NOT_IN_TRAILING: Final = re.compile(r"[\x00\r\n]")
#: Line heads (`:source PRIVMSG #room :`) kept encoded: senders repeat.
IRC_HEAD_CACHE: Final = 1024
#: What a message's text loses before it is cut into lines.
_NOT_IN_TEXT: Final = re.compile(r"[\x00\r]")
#: Any control character: only text with one can hold formatting codes.
_CONTROL: Final = re.compile(r"[\x00-\x1f]")


def strip_formatting(text: str) -> str:
    """`text` without mIRC formatting codes (colours with their numbers).

    What an IRC user's bold or colour becomes for everyone: plain text (the
    chat keeps one text per line, shown on terminals too).
    """
    if _CONTROL.search(text) is None:  # the usual case, found in C
        return text
    return _FORMATTING.sub("", text)


def _text(raw: str) -> str:
    """Free text from an IRC client, as the chat takes it: no formatting,
    nothing a terminal would act on."""
    return sanitize_text(strip_formatting(raw))


def _word(raw: str) -> str:
    """A name, channel or key from an IRC client, made terminal-safe."""
    return sanitize_text(raw)


# --------------------------------------------------------------------------
# Lines out


def _param(text: str) -> str:
    """A middle parameter: no space, CR, LF or NUL, not empty, no leading `:`."""
    return _NOT_IN_PARAM.sub("", text).lstrip(":") or "*"


def _cut(data: bytes, size: int) -> bytes:
    """The first `size` bytes of UTF-8 `data`, at a character boundary."""
    if len(data) <= size:
        return data
    return data[: max(size, 0)].decode("utf-8", errors="ignore").encode()


def _line(
    source: str | None, command: str, *params: str, trail: str | None = None
) -> bytes:
    """One IRC line, CRLF included, at most `IRC_MAX_LINE_BYTES`.

    `params` are middle parameters (cleaned by `_param`); `trail`, if
    given, is the last one, cut at a character boundary to fit.
    """
    head = (f":{source} " if source else "") + " ".join(
        [command, *(_param(param) for param in params)]
    )
    data = head.encode()
    if trail is not None:
        room = IRC_MAX_LINE_BYTES - len(CRLF) - len(data) - 2
        data += b" :" + _cut(_NOT_IN_TRAILING.sub("", trail).encode(), room)
    return _cut(data, IRC_MAX_LINE_BYTES - len(CRLF)) + CRLF


def _pieces(text: str, budget: int) -> Iterator[str]:
    """`text` as lines of at most `budget` bytes: split at its newlines, and
    a long line at its last space that keeps at least half, or between
    characters. A blank line becomes a space (IRC has no empty message)."""
    budget = max(budget, 4)  # a character of 4 bytes always fits
    for line in text.split("\n"):
        data = line.encode()
        if not data:
            yield " "
            continue
        while data:
            if len(data) <= budget:
                yield data.decode()
                break
            piece = _cut(data, budget)
            space = piece.rfind(b" ")
            if space >= budget // 2:
                piece = piece[: space + 1]
            yield piece.decode()
            data = data[len(piece) :]


def mask(name: str) -> str:
    """The full source of a user's lines: `name!name@trio-chat`."""
    return f"{name}!{name}@{USER_HOST}"


@functools.lru_cache(maxsize=IRC_HEAD_CACHE)
def _said_head(source: str, command: str, target: str) -> bytes:
    """`:source COMMAND target :`, kept for the next line of the same kind."""
    return f":{source} {command} {_param(target)} :".encode()


def _said(source: str, command: str, target: str, text: str, tags: str = "") -> bytes:
    """A PRIVMSG or NOTICE of `text`, as many lines as it takes (never cut)."""
    head = _said_head(source, command, target)
    budget = IRC_MAX_LINE_BYTES - len(CRLF) - len(head)
    prefix = f"@{tags} ".encode() if tags else b""
    clean = _NOT_IN_TEXT.sub("", text)  # newlines stay: they split lines
    if "\n" not in clean:
        data = clean.encode()
        if 0 < len(data) <= budget:  # one line, as most are
            return prefix + head + data + CRLF
    return b"".join(
        prefix + _line(source, command, target, trail=piece)
        for piece in _pieces(clean, budget)
    )


def _acted(source: str, target: str, text: str, tags: str = "") -> bytes:
    """A CTCP ACTION (`/me`) of `text`, as many lines as it takes."""
    head = f":{source} PRIVMSG {_param(target)} :\x01ACTION \x01"
    budget = IRC_MAX_LINE_BYTES - len(CRLF) - len(head.encode())
    prefix = f"@{tags} ".encode() if tags else b""
    return b"".join(
        prefix + _line(source, "PRIVMSG", target, trail=f"\x01ACTION {piece}\x01")
        for piece in _pieces(_NOT_IN_TEXT.sub("", text), budget)
    )


def _left(name: str, room: str, how: ev.LeaveHow, reason: str) -> bytes:
    if how == "parted":
        if reason:
            return _line(mask(name), "PART", room, trail=reason)
        return _line(mask(name), "PART", room)
    if how == "quit":
        return _line(mask(name), "QUIT", trail=f"Quit: {reason}" if reason else "Quit")
    why = f"Disconnected: {reason}" if reason else "Disconnected"
    return _line(mask(name), "QUIT", trail=why)


def _room_changed(event: ev.RoomChanged) -> bytes:
    source = mask(event.by)
    match event.setting:
        case "op":
            return _line(source, "MODE", event.room, "+o", event.value)
        case "key" if event.value:
            return _line(source, "MODE", event.room, "+k", trail=event.value)
        case "key":
            return _line(source, "MODE", event.room, "-k", "*")
        case "lecture":
            sign = "+" if event.value == "on" else "-"
            return _line(source, "MODE", event.room, f"{sign}m")
    return _line(SHARED_SOURCE, "NOTICE", event.room, trail=event.text)


def _server_time(ts: float) -> str:
    """IRCv3 server-time: `2026-11-23T23:10:28.000Z`."""
    milliseconds = int(ts * 1000) % 1000
    return f"{format_timestamp(ts)[:-1]}.{milliseconds:03d}Z"


def _replayed(event: ev.ServerEvent, *, server_time: bool) -> bytes:
    """A line of history: with `server-time`, as it was said, tagged with its
    time; without, as a NOTICE from its sender that starts with the time.

    Only chat lines are replayed: a join or leave of the past, shown as a
    live one, would make a client's list of who is here wrong.
    """
    match event:
        case ev.Message(ts, room, sender, text) | ev.MoreLine(ts, room, sender, text):
            notice = isinstance(event, ev.Message) and event.notice
            if server_time:
                command = "NOTICE" if notice else "PRIVMSG"
                return _said(
                    mask(sender), command, room, text, f"time={_server_time(ts)}"
                )
            when = f"[{format_timestamp(ts)}]"
            return _said(
                mask(sender),
                "NOTICE",
                room,
                "\n".join(f"{when} {line}" for line in text.split("\n")),
            )
        case ev.Action(ts, room, sender, text):
            if server_time:
                return _acted(mask(sender), room, text, f"time={_server_time(ts)}")
            when = f"[{format_timestamp(ts)}]"
            return _said(mask(sender), "NOTICE", room, f"{when} * {sender} {text}")
    return b""


def encode_shared(event: ev.ServerEvent) -> bytes:
    """`event` as the IRC lines every IRC member of its room gets, CRLF ended.

    The same bytes whoever receives them (fan-out shares them); `b""` for
    an event that only makes sense to one member (see `IrcSession.send`).
    Never raises.
    """
    match event:
        case ev.Message(_ts, room, sender, text, notice):
            return _said(mask(sender), "NOTICE" if notice else "PRIVMSG", room, text)
        case ev.MoreLine(_ts, room, sender, text):
            return _said(mask(sender), "PRIVMSG", room, text)
        case ev.Action(_ts, room, sender, text):
            return _acted(mask(sender), room, text)
        case ev.Private(_ts, sender, recipient, text, notice):
            command = "NOTICE" if notice else "PRIVMSG"
            return _said(mask(sender), command, recipient, text)
        case ev.Joined(_ts, room, name):
            return _line(mask(name), "JOIN", room)
        case ev.JoinedMany(_ts, room, names):
            return b"".join(_line(mask(name), "JOIN", room) for name in names)
        case ev.Left(_ts, room, name, how, reason):
            return _left(name, room, how, reason)
        case ev.LeftMany(_ts, room, names, how, reason):
            return b"".join(_left(name, room, how, reason) for name in names)
        case ev.Kicked(_ts, room, name, by, reason):
            if reason:
                return _line(mask(by), "KICK", room, name, trail=reason)
            return _line(mask(by), "KICK", room, name)
        case ev.Renamed(_ts, _room, old, new):
            return _line(mask(old), "NICK", new)
        case ev.TopicIs(_ts, room, setter, text):
            return _line(mask(setter), "TOPIC", room, trail=text)
        case ev.Info(text, room):
            return _line(SHARED_SOURCE, "NOTICE", room or "*", trail=text)
        case ev.RoomChanged():
            return _room_changed(event)
        case ev.Replayed(inner):
            return _replayed(inner, server_time=False)
        case ev.Goodbye(_code, text):
            return _line(None, "ERROR", trail=f"Closing link: {text}")
    return b""


# --------------------------------------------------------------------------
# Lines in


def _parse(line: str) -> tuple[str, list[str]] | None:
    """(COMMAND, params) of one line without its tags; None if it has none.

    A source (`:nick ...`), which clients need not send, is ignored; runs of
    spaces count as one; the 15th parameter takes the rest of the line.
    """
    rest = line.lstrip(" ")
    if rest.startswith(":"):
        rest = rest.partition(" ")[2].lstrip(" ")
    command, _, rest = rest.partition(" ")
    if not command:
        return None
    params: list[str] = []
    while rest:
        rest = rest.lstrip(" ")
        if not rest:
            break
        if rest.startswith(":") or len(params) == 14:
            params.append(rest.removeprefix(":"))
            break
        word, _, rest = rest.partition(" ")
        params.append(word)
    return command.upper(), params


def _targets(text: str, most: int) -> tuple[list[str], int]:
    """The comma-separated targets of `text`, at most `most`, and how many
    more there were."""
    targets = [target for target in text.split(",") if target]
    return targets[:most], max(len(targets) - most, 0)


class _Waiting(enum.Enum):
    """What registration waits for from the chat."""

    #: Nothing: the next step goes when the client's part is complete.
    NOTHING = enum.auto()
    #: The answer to `ServerPassword` (a name prompt, or `bad-password`).
    SERVER_PASSWORD = enum.auto()
    #: The answer to `LogIn` from SASL (`LoggedIn`, or an error: 904).
    SASL = enum.auto()
    #: The answer to `LogIn` with PASS for a registered nick.
    LOGIN = enum.auto()
    #: The answer to `ChooseName` (`Welcome`, or an error).
    NAME = enum.auto()


Event = ev.Request | ev.LoginRequest | Noop | Closed


class IrcSession:
    """One IRC client connection's protocol state (see the module docstring).

    `server_name` is this server's name on the wire (the source of its
    numerics); `limits` the limits in force (unterminated bytes, topic
    length, rooms per user for ISUPPORT). `lobby` is the room everyone is
    put in on entering the chat: the client is told it joined it.
    `accounts`: the server keeps accounts, so SASL is offered.
    `current_name` tells the member's name in the chat as it is now (a
    rename in a room reaches this session only as a shared line); without
    it, the session follows its welcome and the renames it is sent.
    `network` names the network (001, ISUPPORT NETWORK) and `created` says
    when the server started (003). `tls`: the connection is inside TLS
    already (else a TLS handshake is taken for what it is, and closed).
    """

    # Slots: a session per connection, so every byte counts.
    __slots__ = (
        "_account",
        "_accounts",
        "_admitted",
        "_buffer",
        "_closed",
        "_created",
        "_current_name",
        "_discarding",
        "_eof",
        "_events",
        "_first_data",
        "_limits",
        "_lobby",
        "_lobby_shown",
        "_name",
        "_negotiating",
        "_network",
        "_nick",
        "_nick_refused",
        "_out",
        "_password",
        "_ping",
        "_registered",
        "_sasl",
        "_scanned",
        "_server_password",
        "_tls",
        "_told_password",
        "_unterminated",
        "_user",
        "_waiting",
        "capabilities",
        "server_name",
    )

    #: The server pings IRC clients that fall silent, and they answer.
    keepalive: Final = True
    #: History is replayed as each client's capabilities allow.
    shared_replay: Final = False
    #: A certificate's account is taken when the client registers (NICK).
    certificate_login: Final = False
    #: Nothing here is timed: `tick` has nothing to do.
    deadline: Final = math.inf

    def __init__(
        self,
        *,
        server_name: str,
        limits: Limits = Limits(),  # noqa: B008 - frozen, shared safely
        lobby: str = ev.LOBBY,
        accounts: bool = True,
        current_name: Callable[[], str | None] | None = None,
        network: str = "trio-chat",
        created: str = "",
        tls: bool = False,
    ) -> None:
        if not server_name or _param(server_name) != server_name:
            raise LocalProtocolError(f"not a server name: {server_name!r}")
        self.server_name = server_name
        self._limits = limits
        self._lobby = lobby
        self._accounts = accounts
        self._current_name = current_name
        self._network = _param(network)
        self._created = created
        self._tls = tls
        self._first_data = True
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline
        self._discarding = False  # the rest of an overlong line goes
        self._unterminated = 0  # bytes since the last newline
        self._eof = False
        self._closed = False  # `Closed` was reported: nothing more is read
        # A list, not a deque: a deque's first block costs 760 bytes, and
        # this holds a few events at a time.
        self._events: list[Event] = []
        self._out = bytearray()
        # Registration.
        self._registered = False
        # The lobby's JOIN waits for the MOTD, which follows the welcome:
        # clients expect 001-005, then the MOTD, then channels.
        self._lobby_shown = False
        self._nick: str | None = None  # the nick asked for (NICK)
        self._name = ""  # the name in the chat, once welcomed
        self._user = False  # USER was given
        self._password: str | None = None  # PASS, until used
        self._server_password = False  # the chat asked for one
        self._admitted = False  # ... and took it
        self._told_password = False  # that PASS is missing
        self._negotiating = False  # between CAP LS/REQ and CAP END
        self._waiting = _Waiting.NOTHING
        self._nick_refused = False  # the last ChooseName failed: a new NICK
        self._account: str | None = None  # the name SASL or PASS proved
        self._sasl: bytearray | None = None  # the response so far, mid-SASL
        self.capabilities: frozenset[str] = frozenset()
        self._ping: str | None = None  # the token of an unanswered PING

    # -- the interface --------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True once the client is in the chat (001 was sent).

        Until then the connection keeps its registration deadline running.
        """
        return self._registered

    @property
    def awaiting_pong(self) -> bool:
        """True while a PING sent by `ping` is unanswered."""
        return self._ping is not None

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; `b""` marks the end of the stream.

        Raises `LocalProtocolError` for data after the end. Call
        `next_event` until `NEED_DATA` before feeding more: the session
        holds what it is fed until then.
        """
        if self._eof:
            if data:
                raise LocalProtocolError("data fed after end of stream")
            return
        if not data:
            self._eof = True
        elif self._first_data and not self._tls and looks_like_tls(data):
            self._first_data = False
            self._closed = True  # nothing to say: the peer speaks TLS
            self._events.append(Closed("protocol error"))
        elif not self._closed:
            self._first_data = False
            self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next request for the chat, a `Closed`, or `NEED_DATA`.

        Lines the session answers itself (PING, CAP, errors of form) leave
        their answer in `data_to_send()` and no event.
        """
        while True:
            if self._events:
                return self._events.pop(0)
            if self._closed:
                return NEED_DATA
            line = self._next_line()
            if line is None:
                if self._closed:
                    continue
                if self._eof:
                    self._closed = True
                    return Closed("connection closed")
                return NEED_DATA
            self._take(line)

    def tick(self, now: float) -> None:
        """Nothing in an IRC session is timed (pings are the connection's)."""

    def data_to_send(self) -> bytes:
        """What the session produced on its own since the last call."""
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    def ping(self, token: str) -> bool:
        """Ask the peer for a PONG (its bytes go to `data_to_send()`).

        False, and nothing sent, if the last PING is still unanswered: the
        peer failed to answer in time, and the connection drops it.
        """
        if self._ping is not None:
            return False
        self._ping = _param(token)
        self._out += _line(None, "PING", trail=self._ping)
        return True

    def send(self, event: ev.ServerEvent) -> bytes:
        """`event`, from the chat for this client, as IRC lines.

        Numerics carry this client's nick; history is replayed as its
        capabilities allow. The chat's answers during registration move it
        on (see the module docstring). Never raises; `b""` for an event IRC
        has nothing to show for.
        """
        if not self._registered:
            data = self._registering(event)
            if data is not None:
                return data
        return self._reply(event)

    # -- framing ------------------------------------------------------------

    def _next_line(self) -> bytes | None:
        """The next complete line (without its line ending), or None.

        An overlong line is answered with 417 and skipped; past
        `max_unterminated_bytes` without a newline the session closes. The
        same happens however the bytes were chunked.
        """
        buffer = self._buffer
        most = IRC_MAX_TAGS_BYTES + IRC_MAX_LINE_BYTES
        limit = self._limits.max_unterminated_bytes
        while True:
            newline = buffer.find(b"\n", self._scanned)
            end = len(buffer) if newline < 0 else newline
            seen = self._unterminated + end - self._scanned  # of this line
            if seen > most and not self._discarding:
                self._too_long()
                self._discarding = True
            if limit and seen > limit:
                self._fatal("read queue exceeded")
                return None
            if newline < 0:
                self._unterminated = seen
                if self._discarding:
                    buffer.clear()
                self._scanned = len(buffer)
                return None
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            self._scanned = 0
            self._unterminated = 0
            if self._discarding:
                self._discarding = False
                continue
            return line.removesuffix(b"\r")

    def _too_long(self) -> None:
        self._out += self._numeric("417", trail="Input line was too long")

    def _fatal(self, reason: str) -> None:
        self._closed = True
        self._buffer.clear()
        self._out += _line(None, "ERROR", trail=f"Closing link: {reason}")
        self._events.append(Closed(reason))

    # -- lines in -------------------------------------------------------------

    def _take(self, raw: bytes) -> None:
        """Handle one line from the client: once in, a line that asks the
        chat for nothing is a `Noop` (it counts against the flood limit)."""
        asked = len(self._events)
        self._take_line(raw)
        if self._registered and len(self._events) == asked:
            self._events.append(NOOP)

    def _take_line(self, raw: bytes) -> None:
        body = raw
        if raw.startswith(b"@"):
            tags, _, body = raw.partition(b" ")
            if len(tags) + 1 > IRC_MAX_TAGS_BYTES:
                self._too_long()
                return
        if len(body) > IRC_MAX_LINE_BYTES - len(CRLF):
            self._too_long()
            return
        if self._registered and body.startswith(b"PRIVMSG #"):
            # Most lines by far: a message to one channel. Taken here as
            # `_message` would take it, without the general parse.
            target, colon, raw = body[8:].partition(b" :")
            simple = colon and raw and b"," not in target and b" " not in target
            if simple and not raw.startswith(b"\x01"):  # CTCP: the general way
                text = _text(raw.decode("utf-8", errors="replace"))
                if text.strip():
                    channel = _word(target.decode("utf-8", errors="replace"))
                    self._events.append(ev.Say(text, channel, False))
                    return
        parsed = _parse(body.decode("utf-8", errors="replace"))
        if parsed is None:
            return
        command, params = parsed
        handler = _HANDLERS.get(command)
        if not self._registered and command not in _REGISTRATION_COMMANDS:
            self._out += self._numeric("451", trail="You have not registered")
            return
        if handler is None:
            shown = _param(_word(command)[:32])
            self._out += self._numeric("421", shown, trail="Unknown command")
            return
        handler(self, params)

    def _need(self, command: str, params: list[str], count: int) -> bool:
        """True if `params` has `count` (non-empty first); else 461 is sent."""
        if len(params) >= count and (count == 0 or params[0]):
            return True
        self._out += self._numeric("461", command, trail="Not enough parameters")
        return False

    def _me(self) -> str:
        """The nick numerics are addressed to ("*" before registration)."""
        if not self._registered:
            return "*"
        if self._current_name is not None:
            name = self._current_name()
            if name:
                return name
        return self._name or "*"

    def _numeric(self, code: str, *params: str, trail: str | None = None) -> bytes:
        return _line(self.server_name, code, self._me(), *params, trail=trail)

    def _notice(self, text: str) -> bytes:
        return _line(self.server_name, "NOTICE", self._me(), trail=text)

    # -- registration ---------------------------------------------------------

    def _cap(self, params: list[str]) -> None:
        if not self._need("CAP", params, 1):
            return
        sub = params[0].upper()
        offered = [cap for cap in CAPABILITIES if cap != "sasl" or self._accounts]
        if sub == "LS":
            if not self._registered:
                self._negotiating = True
            values = len(params) > 1 and params[1].isdigit() and int(params[1]) >= 302
            shown = [
                f"sasl={','.join(SASL_MECHANISMS)}" if cap == "sasl" and values else cap
                for cap in offered
            ]
            self._out += _line(
                self.server_name, "CAP", self._me(), "LS", trail=" ".join(shown)
            )
        elif sub == "LIST":
            self._out += _line(
                self.server_name,
                "CAP",
                self._me(),
                "LIST",
                trail=" ".join(sorted(self.capabilities)),
            )
        elif sub == "REQ":
            if not self._registered:
                self._negotiating = True
            asked = params[1].split() if len(params) > 1 else []
            wanted = set(self.capabilities)
            for cap in asked:
                name = cap.removeprefix("-")
                if name not in offered:
                    wanted = set()
                    break
                if cap.startswith("-"):
                    wanted.discard(name)
                else:
                    wanted.add(name)
            ok = bool(asked) and all(cap.removeprefix("-") in offered for cap in asked)
            if ok:
                self.capabilities = frozenset(wanted)
            answer = "ACK" if ok else "NAK"
            self._out += _line(
                self.server_name,
                "CAP",
                self._me(),
                answer,
                trail=_text(" ".join(asked))[:400],
            )
        elif sub == "END":
            self._negotiating = False
            self._advance()
        else:
            self._out += self._numeric(
                "410", _param(_word(sub)[:20]), trail="Invalid CAP command"
            )

    def _pass(self, params: list[str]) -> None:
        if self._registered:
            self._out += self._numeric("462", trail="You may not reregister")
            return
        if self._need("PASS", params, 1):
            self._password = params[0]  # not sanitised: compared, never shown
            self._advance()

    def _nick_command(self, params: list[str]) -> None:
        if not params or not params[0]:
            self._out += self._numeric("431", trail="No nickname given")
            return
        nick = _word(params[0])
        if self._registered:
            self._events.append(ev.Nick(nick))
            return
        self._nick = nick
        self._nick_refused = False
        self._advance()

    def _user_command(self, params: list[str]) -> None:
        if self._registered:
            self._out += self._numeric("462", trail="You may not reregister")
            return
        if self._need("USER", params, 4):
            self._user = True  # the user name and real name are not kept
            self._advance()

    def _authenticate(self, params: list[str]) -> None:
        if not self._need("AUTHENTICATE", params, 1):
            return
        if self._registered or self._account is not None:
            self._out += self._numeric("907", trail="You have already authenticated")
            return
        if not self._accounts:
            self._out += self._numeric("904", trail="SASL authentication failed")
            return
        arg = params[0]
        if arg == "*":
            if self._sasl is not None or self._waiting is _Waiting.SASL:
                self._sasl = None
                self._out += self._numeric("906", trail="SASL authentication aborted")
            return
        if self._waiting is _Waiting.SASL:
            return  # a password is being checked; more is noise
        if self._sasl is None:
            if arg.upper() not in SASL_MECHANISMS:
                self._out += self._numeric(
                    "908",
                    ",".join(SASL_MECHANISMS),
                    trail="are available SASL mechanisms",
                )
                self._out += self._numeric("904", trail="SASL authentication failed")
                return
            self._sasl = bytearray()
            self._out += _line(None, "AUTHENTICATE", "+")
            return
        if len(arg) > SASL_CHUNK or len(self._sasl) + len(arg) > IRC_MAX_SASL_BYTES:
            self._sasl = None
            self._out += self._numeric("905", trail="SASL message too long")
            return
        if arg != "+":
            self._sasl += arg.encode()
        if len(arg) == SASL_CHUNK:
            return  # more follows
        response, self._sasl = bytes(self._sasl), None
        try:
            fields = base64.b64decode(response, validate=True).split(b"\0")
            authzid, authcid, password = (field.decode("utf-8") for field in fields)
        except (binascii.Error, ValueError):
            self._out += self._numeric("904", trail="SASL authentication failed")
            return
        if not authcid or (authzid and authzid != authcid):
            self._out += self._numeric("904", trail="SASL authentication failed")
            return
        self._waiting = _Waiting.SASL
        self._events.append(ev.LogIn(_word(authcid), password))

    def _advance(self) -> None:
        """Take the next step of registration, if the client's part is done."""
        if (
            self._registered
            or self._waiting is not _Waiting.NOTHING
            or self._negotiating
            or self._sasl is not None
            or self._nick is None
            or not self._user
            or self._nick_refused
        ):
            return
        if self._server_password and not self._admitted:
            if self._password is None:
                if not self._told_password:  # once; a PASS may still come
                    self._told_password = True
                    self._out += self._numeric(
                        "464", trail="This server needs a password: send it with PASS"
                    )
                return
            self._waiting = _Waiting.SERVER_PASSWORD
            password, self._password = self._password, None
            self._events.append(ev.ServerPassword(password))
            return
        name = self._account or self._nick
        self._waiting = _Waiting.NAME
        self._events.append(ev.ChooseName(name, proven=self._account is not None))

    def _registering(self, event: ev.ServerEvent) -> bytes | None:
        """The chat's answers while registering: the bytes for `event`, or
        None to show it as after registration."""
        waiting = self._waiting
        match event:
            case ev.Hello() | ev.Banner() | ev.Switched():
                return b""
            case ev.Info():
                # The line protocol's greeting ("3 users online."): IRC
                # clients show LUSERS-like counts after the welcome, if at all.
                return b""
            case ev.PasswordPrompt("*", _text):
                self._server_password = True
                self._admitted = False
                self._advance()
                return b""
            case ev.PasswordPrompt(name, _text):
                self._waiting = _Waiting.NOTHING
                if self._password is not None and not self._server_password:
                    password, self._password = self._password, None
                    self._waiting = _Waiting.LOGIN
                    self._events.append(ev.LogIn(name, password))
                    return b""
                self._nick_refused = True
                return self._numeric(
                    "433",
                    _param(name),
                    trail="This name is registered: log in with SASL, or give its"
                    " password with PASS",
                )
            case ev.NamePrompt():
                if waiting is _Waiting.SERVER_PASSWORD:
                    self._admitted = True
                self._waiting = _Waiting.NOTHING
                self._advance()
                return b""
            case ev.LoggedIn(name):
                self._waiting = _Waiting.NOTHING
                self._account = name
                data = _line(
                    self.server_name,
                    "900",
                    self._nick or "*",
                    mask(self._nick or name),
                    name,
                    trail=f"You are now logged in as {name}",
                )
                if waiting is _Waiting.SASL:
                    data += _line(
                        self.server_name,
                        "903",
                        self._nick or "*",
                        trail="SASL authentication successful",
                    )
                self._advance()
                return data
            case ev.Error(code, text, subject):
                if waiting is _Waiting.SASL:
                    self._waiting = _Waiting.NOTHING
                    return self._numeric("904", trail="SASL authentication failed")
                if waiting is _Waiting.SERVER_PASSWORD:
                    self._waiting = _Waiting.NOTHING
                    return self._numeric("464", trail=text)
                if waiting in (_Waiting.NAME, _Waiting.LOGIN):
                    # The chat prompts again: a new NICK (or PASS) goes on.
                    self._waiting = _Waiting.NOTHING
                    self._nick_refused = True
                    self._account = None
                    if waiting is _Waiting.LOGIN:
                        return self._numeric("464", trail=text)
                return self._error(code, text, subject or self._nick or "*")
            case ev.Welcome(name):
                return self._welcome(name)
        return None

    def _welcome(self, name: str) -> bytes:
        """001-005: the client is in (the lobby's JOIN follows the MOTD)."""
        self._registered = True
        self._waiting = _Waiting.NOTHING
        self._name = name
        server = self.server_name
        version = f"trio-chat-{__version__}"
        lines = [
            self._numeric(
                "001", trail=f"Welcome to the {self._network} IRC network, {name}"
            ),
            self._numeric(
                "002", trail=f"Your host is {server}, running version {version}"
            ),
            self._numeric(
                "003",
                trail=f"This server was created {self._created}"
                if self._created
                else f"This server runs {version}",
            ),
            self._numeric("004", server, version, "i", _CHANNEL_MODES + "o", "ko"),
        ]
        tokens = self._isupport()
        for start in range(0, len(tokens), 12):
            lines.append(
                self._numeric(
                    "005",
                    *tokens[start : start + 12],
                    trail="are supported by this server",
                )
            )
        return b"".join(lines)

    def _isupport(self) -> list[str]:
        limits = self._limits
        tokens = [
            "CASEMAPPING=rfc8265",
            "UTF8ONLY",
            "CHANTYPES=#",
            "PREFIX=(o)@",
            f"CHANMODES=,{_CHANNEL_MODES[0]},,{_CHANNEL_MODES[1]}",
            f"MODES={IRC_MAX_MODES}",
            f"NICKLEN={MAX_NAME_LENGTH}",
            f"CHANNELLEN={MAX_ROOM_LENGTH + 1}",
            f"NETWORK={self._network}",
            "SAFELIST",
            f"TARGMAX=PRIVMSG:{IRC_MAX_TARGETS},NOTICE:{IRC_MAX_TARGETS},"
            f"JOIN:{IRC_MAX_JOIN_TARGETS},PART:{IRC_MAX_JOIN_TARGETS},"
            f"KICK:{IRC_MAX_TARGETS},WHOIS:1,NAMES:1,"
            f"USERHOST:{IRC_MAX_USERHOST_NAMES},ISON:{IRC_MAX_ISON_NAMES}",
        ]
        if limits.max_topic_length:
            tokens.append(f"TOPICLEN={limits.max_topic_length}")
        if limits.max_rooms_per_user:
            tokens.append(f"CHANLIMIT=#:{limits.max_rooms_per_user}")
        return tokens

    # -- commands -----------------------------------------------------------

    def _ping_command(self, params: list[str]) -> None:
        if not params:
            self._out += self._numeric("409", trail="No origin specified")
            return
        self._out += _line(
            self.server_name, "PONG", self.server_name, trail=_word(params[-1])
        )

    def _pong(self, params: list[str]) -> None:
        if params and self._ping is not None and params[-1] == self._ping:
            self._ping = None

    def _quit(self, params: list[str]) -> None:
        self._events.append(ev.Quit(_text(params[0]) if params else ""))

    def _message(self, params: list[str], *, notice: bool) -> None:
        command = "NOTICE" if notice else "PRIVMSG"
        if not params or not params[0]:
            if not notice:
                self._out += self._numeric(
                    "411", trail=f"No recipient given ({command})"
                )
            return
        if len(params) < 2 or not params[1]:
            if not notice:
                self._out += self._numeric("412", trail="No text to send")
            return
        if "," in params[0]:
            targets, more = _targets(params[0], IRC_MAX_TARGETS)
        else:  # one target, as nearly always
            targets, more = [params[0]], 0
        if more and not notice:
            self._out += self._numeric(
                "407", _param(_word(params[0])[:64]), trail="Too many targets"
            )
        raw = params[1]
        action = False
        if raw.startswith("\x01"):
            verb, _, rest = raw[1:].removesuffix("\x01").partition(" ")
            if verb.upper() != "ACTION":
                # Other CTCP (VERSION, PING, DCC...) is not relayed: the chat
                # keeps text, and a line-protocol user could not answer.
                if not notice:
                    shown = _param(_word(verb)[:20].upper())
                    self._out += self._notice(
                        f"CTCP {shown} is not relayed on this server."
                    )
                return
            action, raw = True, rest
        text = _text(raw)
        if not text.strip():
            if not notice:
                self._out += self._numeric("412", trail="No text to send")
            return
        for target in targets:
            target = _word(target)
            if target.startswith("#"):
                if action:
                    self._events.append(ev.Me(text, target))
                else:
                    self._events.append(ev.Say(text, target, notice))
            else:
                # A private /me: the chat has no private action.
                said = f"* {text}" if action else text
                self._events.append(ev.PrivateMsg(target, said, notice))

    def _privmsg(self, params: list[str]) -> None:
        self._message(params, notice=False)

    def _notice_command(self, params: list[str]) -> None:
        self._message(params, notice=True)

    def _channels(self, command: str, text: str, most: int) -> Iterator[str]:
        """The channels of a comma list; 403 for a name without `#`, 407 past
        `most`."""
        targets, more = _targets(text, most)
        for target in targets:
            channel = _word(target)
            if channel.startswith("#"):
                yield channel
            else:
                self._out += self._numeric(
                    "403", _param(channel[:64]), trail="No such channel"
                )
        if more:
            self._out += self._numeric(
                "407", _param(_word(text)[:64]), trail=f"Too many targets ({command})"
            )

    def _join(self, params: list[str]) -> None:
        if not self._need("JOIN", params, 1):
            return
        if params[0] == "0":
            self._events.append(ev.PartAll())
            return
        keys = params[1].split(",") if len(params) > 1 else []
        channels = list(self._channels("JOIN", params[0], IRC_MAX_JOIN_TARGETS))
        for index, channel in enumerate(channels):
            key = _word(keys[index]) if index < len(keys) else ""
            self._events.append(ev.Join(channel, key, names=True))

    def _part(self, params: list[str]) -> None:
        if not self._need("PART", params, 1):
            return
        reason = _text(params[1]) if len(params) > 1 else ""
        for channel in self._channels("PART", params[0], IRC_MAX_JOIN_TARGETS):
            self._events.append(ev.Part(channel, reason))

    def _names(self, params: list[str]) -> None:
        if not params or not params[0]:
            self._out += self._numeric("366", "*", trail="End of /NAMES list")
            return
        for channel in self._channels("NAMES", params[0], 1):
            self._events.append(ev.Names(channel))

    def _topic(self, params: list[str]) -> None:
        if not self._need("TOPIC", params, 1):
            return
        for channel in self._channels("TOPIC", params[0], 1):
            text = _text(params[1]) if len(params) > 1 else None
            self._events.append(ev.Topic(text, channel))

    def _list(self, params: list[str]) -> None:
        self._events.append(ev.ListRooms())

    def _who(self, params: list[str]) -> None:
        target = _word(params[0]) if params and params[0] else "*"
        if target == "0":
            target = "*"
        if target != "*" and ("*" in target or "?" in target):
            # Masks are not matched: nobody is listed.
            self._out += self._numeric(
                "315", _param(target[:64]), trail="End of /WHO list"
            )
            return
        self._events.append(ev.Names(target, detail=True))

    def _whois(self, params: list[str]) -> None:
        if not params or not params[-1]:
            self._out += self._numeric("431", trail="No nickname given")
            return
        nick = _word(params[-1].split(",")[0])  # WHOIS [server] nick
        self._events.append(ev.Whois(nick))

    def _whowas(self, params: list[str]) -> None:
        if not params or not params[0]:
            self._out += self._numeric("431", trail="No nickname given")
            return
        nick = _param(_word(params[0])[:64])
        self._out += self._numeric("406", nick, trail="There was no such nickname")
        self._out += self._numeric("369", nick, trail="End of WHOWAS")

    def _away(self, params: list[str]) -> None:
        reason = _text(params[0]) if params else ""
        self._events.append(ev.Away(reason) if reason.strip() else ev.Back())

    def _kick(self, params: list[str]) -> None:
        if not self._need("KICK", params, 2):
            return
        reason = _text(params[2]) if len(params) > 2 else ""
        channels = list(self._channels("KICK", params[0], 1))
        nicks, _ = _targets(params[1], IRC_MAX_TARGETS)
        for channel in channels:
            for nick in nicks:
                self._events.append(ev.Kick(_word(nick), reason, channel))

    def _mode(self, params: list[str]) -> None:
        if not self._need("MODE", params, 1):
            return
        target = _word(params[0])
        if not target.startswith("#"):
            self._user_mode(target, params[1:])
            return
        if len(params) == 1:
            self._events.append(ev.RoomMode("", "", target))
            return
        args = iter(params[2:])
        sign = "+"
        changes = 0
        for char in params[1]:
            if char in "+-":
                sign = char
                continue
            changes += 1
            if changes > IRC_MAX_MODES:
                break
            if char == "b":
                arg = next(args, None)
                if arg is None:  # the ban list: bans are the server's
                    self._out += self._numeric(
                        "368", _param(target), trail="End of channel ban list"
                    )
                    continue
                self._out += self._numeric(
                    "472",
                    "b",
                    trail="is not a channel mode here: bans are server-wide,"
                    " set by server operators",
                )
            elif char == "o" and sign == "+":
                arg = next(args, None)
                if arg is None:
                    self._out += self._numeric(
                        "461", "MODE", trail="Not enough parameters"
                    )
                else:
                    self._events.append(ev.RoomMode("op", _word(arg), target))
            elif char == "k":
                arg = next(args, None)
                if sign == "+" and not arg:
                    self._out += self._numeric(
                        "461", "MODE", trail="Not enough parameters"
                    )
                else:
                    key = _word(arg or "") if sign == "+" else ""
                    self._events.append(ev.RoomMode("key", key, target))
            elif char == "m":
                value = "on" if sign == "+" else "off"
                self._events.append(ev.RoomMode("lecture", value, target))
            else:
                shown = _param(_word(char))
                detail = (
                    "ops stay ops here" if char == "o" else "is unknown mode char to me"
                )
                self._out += self._numeric("472", shown, trail=detail)

    def _user_mode(self, target: str, params: list[str]) -> None:
        me = self._me()
        if target.casefold() != me.casefold():
            self._out += self._numeric("502", trail="Can't change mode for other users")
            return
        if not params:
            self._out += self._numeric("221", "+i")
            return
        # +i (invisible) is how everyone is here; nothing else is a user mode.
        if any(char not in "+-i" for char in params[0]):
            self._out += self._numeric("501", trail="Unknown MODE flag")

    def _ison(self, params: list[str]) -> None:
        if not self._need("ISON", params, 1):
            return
        names = [_word(name) for param in params for name in param.split()]
        self._events.append(ev.IsOn(tuple(names[:IRC_MAX_ISON_NAMES])))

    def _userhost(self, params: list[str]) -> None:
        if not self._need("USERHOST", params, 1):
            return
        names = [_word(name) for param in params for name in param.split()]
        self._events.append(ev.IsOn(tuple(names[:IRC_MAX_USERHOST_NAMES]), True))

    def _motd(self, params: list[str]) -> None:
        self._events.append(ev.Motd())

    def _version(self, params: list[str]) -> None:
        self._out += self._numeric(
            "351", f"trio-chat-{__version__}", self.server_name, trail="trio-chat"
        )

    def _oper(self, params: list[str]) -> None:
        self._out += self._numeric(
            "491",
            trail="Server operators are registered names the server lists;"
            " log in as one with SASL",
        )

    # -- events out -------------------------------------------------------

    def _error(self, code: str, text: str, subject: str) -> bytes:
        numeric, named = ERROR_REPLIES.get(code, ("400", False))
        if numeric == "400":
            return self._numeric("400", "*", trail=text)
        if named:
            return self._numeric(numeric, _param(subject[:64] or "*"), trail=text)
        return self._numeric(numeric, trail=text)

    def _reply(self, event: ev.ServerEvent) -> bytes:
        match event:
            case ev.Replayed(inner):
                return _replayed(inner, server_time="server-time" in self.capabilities)
            case ev.TopicIs(ts, room, setter, text, changed=False):
                if not text:
                    return self._numeric("331", room, trail="No topic is set")
                return self._numeric("332", room, trail=text) + self._numeric(
                    "333", room, mask(setter), str(int(ts))
                )
            case ev.Info(text, ""):
                return self._notice(text)
            case ev.HelpLine(text):
                return self._notice(text)
            case ev.MotdLine(text):
                return self._numeric("372", trail=f"- {text}")
            case ev.MotdIs(lines):
                data = self._motd_lines(lines)
                if not self._lobby_shown and self._registered:
                    self._lobby_shown = True
                    data += _line(mask(self._name), "JOIN", self._lobby)
                    # Who is in the lobby (353, 366) comes as the answer.
                    self._events.append(ev.Names(self._lobby))
                return data
            case ev.Error(code, text, subject):
                return self._error(code, text, subject or "*")
            case ev.Goodbye(code, text):
                data = self._numeric("465", trail=text) if code == "banned" else b""
                return data + _line(None, "ERROR", trail=f"Closing link: {text}")
            case ev.Roster():
                return self._roster(event)
            case ev.RoomList(rooms, total):
                return self._room_list(rooms, total)
            case ev.Online(members, userhost):
                return self._online(members, userhost=userhost)
            case ev.WhoisReply():
                return self._whois_reply(event)
            case ev.MarkedAway(reason):
                if reason:
                    return self._numeric(
                        "306", trail="You have been marked as being away"
                    )
                return self._numeric(
                    "305", trail="You are no longer marked as being away"
                )
            case ev.AwayIs(name, reason):
                return self._numeric("301", name, trail=reason)
            case ev.ModesAre(room, key, lecture):
                modes = "+" + ("m" if lecture else "") + ("k" if key else "")
                if key:
                    return self._numeric("324", room, modes, trail=key)
                return self._numeric("324", room, modes)
            case ev.RoomInfo(room, members, topic, _keyed):
                return self._numeric("322", room, str(members), trail=topic)
            case ev.LoggedIn(name):
                return self._numeric(
                    "900",
                    mask(self._me()),
                    name,
                    trail=f"You are now logged in as {name}",
                )
            case ev.Renamed(_ts, _room, old, new):
                if old == self._name:
                    self._name = new
                return encode_shared(event)
            case ev.Welcome(name):
                self._name = name
                return b""
            case (
                ev.Hello()
                | ev.Banner()
                | ev.NamePrompt()
                | ev.PasswordPrompt()
                | ev.Switched()
                | ev.WhoList()
            ):
                return b""
        return encode_shared(event)

    def _motd_lines(self, lines: tuple[str, ...]) -> bytes:
        if not lines:
            return self._numeric("422", trail="There is no message of the day")
        return (
            self._numeric("375", trail=f"- {self.server_name} Message of the day -")
            + b"".join(self._numeric("372", trail=f"- {line}") for line in lines)
            + self._numeric("376", trail="End of /MOTD command")
        )

    def _packed(
        self, code: str, params: tuple[str, ...], words: Iterable[str]
    ) -> bytes:
        """`words` on as few `code` lines as fit (`params` before them)."""
        head = _line(self.server_name, code, self._me(), *params, trail="")
        room = IRC_MAX_LINE_BYTES - len(head)
        lines: list[bytes] = []
        current: list[str] = []
        size = 0
        for word in words:
            cost = len(word.encode()) + (1 if current else 0)
            if current and size + cost > room:
                lines.append(self._numeric(code, *params, trail=" ".join(current)))
                current, size, cost = [], 0, len(word.encode())
            current.append(word)
            size += cost
        if current:
            lines.append(self._numeric(code, *params, trail=" ".join(current)))
        return b"".join(lines)

    def _roster(self, roster: ev.Roster) -> bytes:
        target = roster.target
        room = target.startswith("#")
        more = roster.total - len(roster.members)
        cut = (
            self._notice(f"{more} more in {target} than fit in this list.")
            if more > 0
            else b""
        )
        if not roster.detail:
            names = (("@" if one.op else "") + one.name for one in roster.members)
            return (
                self._packed("353", ("=", target), names)
                + cut
                + self._numeric("366", target, trail="End of /NAMES list")
            )
        lines = []
        for one in roster.members:
            flags = ("G" if one.away else "H") + (
                ("@" if room else "*") if one.op else ""
            )
            lines.append(
                self._numeric(
                    "352",
                    target if room else "*",
                    one.name,
                    USER_HOST,
                    self.server_name,
                    one.name,
                    flags,
                    trail=f"0 {one.name}",
                )
            )
        return (
            b"".join(lines)
            + cut
            + self._numeric("315", target, trail="End of /WHO list")
        )

    def _room_list(self, rooms: tuple[ev.RoomInfo, ...], total: int) -> bytes:
        lines = [self._numeric("321", "Channel", trail="Users  Name")]
        for info in rooms:
            lines.append(
                self._numeric("322", info.room, str(info.members), trail=info.topic)
            )
        if total > len(rooms):
            lines.append(
                self._notice(f"{total - len(rooms)} more rooms than fit in this list.")
            )
        lines.append(self._numeric("323", trail="End of /LIST"))
        return b"".join(lines)

    def _online(self, members: tuple[ev.Standing, ...], *, userhost: bool) -> bytes:
        if not userhost:
            data = self._packed("303", (), (one.name for one in members))
            return data or self._numeric("303", trail="")
        replies = (
            f"{one.name}{'*' if one.op else ''}={'-' if one.away else '+'}"
            f"{one.name}@{USER_HOST}"
            for one in members
        )
        return self._packed("302", (), replies) or self._numeric("302", trail="")

    def _whois_reply(self, reply: ev.WhoisReply) -> bytes:
        name = reply.name
        lines = [self._numeric("311", name, name, USER_HOST, "*", trail=name)]
        ops = set(reply.op_rooms)
        channels = [("@" if room in ops else "") + room for room in reply.rooms]
        shown = self._packed("319", (name,), channels).split(CRLF)[:-1]
        lines += [line + CRLF for line in shown[:IRC_WHOIS_CHANNEL_LINES]]
        lines.append(self._numeric("312", name, self.server_name, trail=self._network))
        if reply.operator:
            lines.append(self._numeric("313", name, trail="is a server operator"))
        if reply.account:
            lines.append(self._numeric("330", name, name, trail="is logged in as"))
        if reply.address is not None:
            lines.append(
                self._numeric("338", name, reply.address, trail="actually using host")
            )
        lines.append(
            self._numeric(
                "317",
                name,
                str(int(reply.idle)),
                str(int(reply.since)),
                trail="seconds idle, signon time",
            )
        )
        if reply.away:
            lines.append(self._numeric("301", name, trail=reply.away))
        lines.append(self._numeric("318", name, trail="End of /WHOIS list"))
        return b"".join(lines)


_Handler = Callable[[IrcSession, list[str]], None]
#: Each command the session knows, and what handles it.
_HANDLERS: Final[Mapping[str, _Handler]] = {
    "CAP": IrcSession._cap,
    "PASS": IrcSession._pass,
    "NICK": IrcSession._nick_command,
    "USER": IrcSession._user_command,
    "AUTHENTICATE": IrcSession._authenticate,
    "PING": IrcSession._ping_command,
    "PONG": IrcSession._pong,
    "QUIT": IrcSession._quit,
    "PRIVMSG": IrcSession._privmsg,
    "NOTICE": IrcSession._notice_command,
    "JOIN": IrcSession._join,
    "PART": IrcSession._part,
    "NAMES": IrcSession._names,
    "TOPIC": IrcSession._topic,
    "LIST": IrcSession._list,
    "WHO": IrcSession._who,
    "WHOIS": IrcSession._whois,
    "WHOWAS": IrcSession._whowas,
    "AWAY": IrcSession._away,
    "KICK": IrcSession._kick,
    "MODE": IrcSession._mode,
    "ISON": IrcSession._ison,
    "USERHOST": IrcSession._userhost,
    "MOTD": IrcSession._motd,
    "VERSION": IrcSession._version,
    "OPER": IrcSession._oper,
}
