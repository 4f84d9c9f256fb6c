"""The chat client's core: connect, join, relay lines, reconnect.

Independent of terminals. The user interface is passed in: a `ClientUI` that
shows display lines, and a trio `ReceiveChannel` of the lines the user types,
which ends (`EndOfChannel`) at end of input. `run_client` is the core;
`run_with_input` feeds it from a byte stream such as piped stdin (shown with
`PlainUI`), and `GuestClient` from another event loop running trio in guest
mode (the prompt_toolkit terminal, `trio_chat.terminal`). Tests drive
`run_client` directly, with no terminal at all.

One nursery per connection holds three tasks: the server reader, the single
writer (the only task that calls `send_all`) and the input task, which moves
typed lines into a bounded queue. The writer takes from that queue only once
the server is ready for them, so lines typed early are held, not lost, and no
faster than the flood limit the server announced (`trio_chat.pacing`), so a
long paste or a piped file is slowed down rather than dropped for flooding.
Piped input waits while the queue is full; a terminal refuses lines then.
Every wait on something the server owes (connecting, the TLS handshake, the
greeting, the answer to a name, the goodbye after `/quit`) has a deadline.

Rooms: the client follows its current room (from `SWITCH`, `#lobby` after
`WELCOME`) and the rooms it is in (its own `JOIN` and parted `LEAVE` lines),
tells the UI (`set_room`, for the prompt) and renders lines of other rooms
with their room's tag. After a reconnection it joins those rooms again, with
the keys the user gave, and switches back. It keeps a bounded `Roster` of the
rooms and names it has heard of, which the terminal completes from.

Mentions: a line from someone else naming the user is highlighted by the
renderer; the bell (`ClientUI.bell`) rings for mentions, for every line or
never, as the user's local `/bell off|mentions|all` command says.

Multi-line messages: several lines handed over at once (a paste into the
terminal) are one message, all of it text: sent as `/paste N` and its lines
(`trio_chat.paste`), split to the limits the server announced, or line by
line to a server without them; its flood cost is paced like any line's.
Piped input is one line at a time, as ever.

Passwords: when the server asks for one (`PASSWORD`), the client answers
with `ClientConfig.password`, or has the UI ask the user with hidden input
(`ClientUI.set_secret`); a UI that cannot ask (a pipe) ends the client with
a message naming `PASSWORD_VARIABLE`, rather than send a line of its input.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import math
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, Literal, Protocol, TextIO

import trio

from trio_chat import events as ev
from trio_chat.commands import help_lines
from trio_chat.limits import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_LINE_BYTES,
    MAX_SERVER_LINE_BYTES,
    RECEIVE_SIZE,
    TLS_HANDSHAKE_TIMEOUT,
    WRITE_TIMEOUT,
)
from trio_chat.names import name_key
from trio_chat.pacing import TokenBucket, client_bucket
from trio_chat.paste import encode_paste, paste_cost, split_paste, trim_blank_lines
from trio_chat.protocol import (
    LINE_END,
    NEED_DATA,
    EndOfStream,
    Line,
    LineReader,
    LineTooLong,
    ReadQueueExceeded,
    ServerProtocolError,
    decode_event,
    encode_request,
    parse_request,
)
from trio_chat.render import (
    display_width,
    is_mention,
    render_error,
    render_event,
    render_notice,
    render_own,
    render_own_lines,
    render_unreadable,
)
from trio_chat.sanitize import sanitize_text

#: A TCP connection must be up within this many seconds: long enough for a
#: slow network or DNS, short enough that a black-holed address is reported.
CONNECT_TIMEOUT: Final = 10.0
#: The server must greet us (up to its name prompt), and answer a name, within
#: this many seconds; it does both at once, so only a stuck server is slower.
REPLY_TIMEOUT: Final = 10.0
#: After `/quit`, the server's goodbye (or its close) is awaited this long:
#: long enough to flush a backlog of lines, short enough that leaving is quick.
QUIT_TIMEOUT: Final = 5.0
#: First pause before reconnecting: a server restart takes about a second.
RECONNECT_FIRST_DELAY: Final = 1.0
#: Each failed attempt multiplies the pause by this, so a server that is down
#: for long is not hammered ...
RECONNECT_BACKOFF_FACTOR: Final = 2.0
#: ... up to this ceiling, so a returning server is found within half a minute.
RECONNECT_MAX_DELAY: Final = 30.0
#: Typed lines held while the server is not ready (connecting, reconnecting)
#: or while sending is paced: a few screens of typing; past it input waits (a
#: pipe is simply read later, a terminal's lines wait in its own queue).
MAX_HELD_LINES: Final = 100
#: Lines typed (or pasted) into a terminal that the client has not taken yet:
#: far more than anyone types while a connection is made; past it a line is
#: refused with a message rather than queued without bound.
MAX_WAITING_LINES: Final = 256
#: Longest line read from piped input; longer ones are refused unsent. Above
#: the server's own limit, so most long lines get the precise message.
MAX_INPUT_LINE_BYTES: Final = 64 * 1024
#: Names remembered for completion: more people than one user meets in a
#: session on a busy server, yet a bounded few kilobytes however many pass by.
MAX_KNOWN_NAMES: Final = 1000
#: Rooms remembered for completion: the server's default room limit, so a
#: whole /rooms listing fits.
MAX_KNOWN_ROOMS: Final = 1000
#: Keys from /join lines whose answer has not come yet: far more than anyone
#: types before the server answers; the oldest is forgotten past it.
MAX_PENDING_JOIN_KEYS: Final = 64

#: Who comes and goes, and who is renamed: a script has no use for it.
_PRESENCE: Final = (ev.Joined, ev.JoinedMany, ev.Left, ev.LeftMany, ev.Renamed)
#: Refusals of a chat line (or `/me`, or a paste): the user's own copy of
#: it is on the screen already, as if said; the error says it was not.
_CHAT_REFUSALS: Final = frozenset({"muted", "ops-only", "no-room"})
#: Seconds within which a refusal is about a line the client sent: the
#: server answers at once, so only a stalled network takes longer.
REFUSAL_WINDOW: Final = 5.0
#: Characters of a refused line repeated in the error.
MAX_REFUSED_SHOWN: Final = 60
#: Chat lines remembered as seen, so a replay after a reconnection does not
#: show them twice: more than a replay holds.
SEEN_LINES: Final = 512
#: The last line of our server's `/help` reply.
_LAST_HELP_LINE: Final = help_lines()[-1]
#: What the prompt reads while the user is to type a name.
NAME_PROMPT: Final = "your name: "
#: The user is warned this many seconds before the server's name timeout:
#: time to finish typing a name, and enough to notice the warning.
NAME_WARNING: Final = 10.0
#: Name refusals whose text does not say which name: shown with it.
_NAME_ERRORS: Final = frozenset({"name-invalid", "not-registered", "line-too-long"})

#: Refusals (a `BYE` instead of the greeting) that clear up with time: the
#: server is full, or busy with new connections from our address (a
#: classroom behind one NAT address, all reconnecting after a restart).
#: They are tried again with backoff, and not before the server's
#: `retry-after`; every other refusal is final.
TEMPORARY_REFUSALS: Final = frozenset(
    {
        "too-many-connections",
        "too-many-from-address",
        "too-many-new-connections",
        "too-many-unregistered",
    }
)

#: The environment variable the command line takes a registered name's
#: password from (named in messages; a password on the command line would be
#: visible to every user of the machine).
PASSWORD_VARIABLE: Final = "TRIO_CHAT_PASSWORD"
#: ... and the password of a server that asks every connection for one.
SERVER_PASSWORD_VARIABLE: Final = "TRIO_CHAT_SERVER_PASSWORD"

#: What the client shows: everything, what a script needs, nothing.
Shown = Literal["all", "asked", "nothing"]

#: When the bell rings: never, for lines naming the user, for every line
#: from someone else.
BellMode = Literal["off", "mentions", "all"]
BELL_MODES: Final[tuple[BellMode, ...]] = ("off", "mentions", "all")


class ClientError(Exception):
    """The client cannot go on; str() is one line fit to show the user."""


class ConnectError(ClientError):
    """Connecting (TCP or TLS) failed; `permanent` if retrying cannot help,
    `busy` if the server is there and turned us away for now (retried even
    on the first connection)."""

    def __init__(
        self, message: str, *, permanent: bool = False, busy: bool = False
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.busy = busy


class ConnectionLost(ClientError):
    """The connection was lost and the client will not reconnect."""


class Refused(ClientError):
    """The server refused us (our name, or said goodbye before we were in)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Where to connect and how; every timeout defaults to its constant.

    `server_hostname` (default: `host`) is the name the TLS certificate must
    match. `retry_name`: when the server refuses `name`, let the user type
    another (a terminal); if False (a script), a refused `name` is fatal.
    `announce_pacing`: tell the user (once per backlog) when lines queue up
    behind the server's flood limit (a terminal); a script's lines just wait.
    `bell`: when the bell rings at first (the user's `/bell` changes it).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    name: str | None = None
    #: The password of a registered name, sent when the server asks for it
    #: (from the environment, never the command line, where others see it).
    password: str | None = dataclasses.field(default=None, repr=False)
    #: The server's own password (`PASSWORD *`), for closed servers.
    server_password: str | None = dataclasses.field(default=None, repr=False)
    reconnect: bool = True
    retry_name: bool = True
    connect_timeout: float = CONNECT_TIMEOUT
    handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT
    reply_timeout: float = REPLY_TIMEOUT
    quit_timeout: float = QUIT_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    reconnect_delay: float = RECONNECT_FIRST_DELAY
    reconnect_max_delay: float = RECONNECT_MAX_DELAY
    max_held_lines: int = MAX_HELD_LINES
    announce_pacing: bool = False
    #: The SSL context presents a client certificate (`--cert`), for messages.
    client_cert: bool = False
    #: What is shown: everything (a person); what a script asked for and
    #: what is said once it speaks, and errors (`_Client._wanted`); nothing.
    show: Shown = "all"
    bell: BellMode = "mentions"

    @property
    def address(self) -> str:
        """`host:port` for messages (`[host]:port` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _room_key(room: str) -> str:
    """The key a room is compared by; `#` is optional, as for the server."""
    room = room.strip()
    return name_key(room if room.startswith("#") else f"#{room}")


def _remember(known: dict[str, str], key: str, value: str, limit: int) -> None:
    """Put `key` last (most recent) in `known`, forgetting the oldest past `limit`."""
    known.pop(key, None)
    known[key] = value
    while len(known) > limit:
        del known[next(iter(known))]


class Roster:
    """The rooms and people a client has heard of, for completion.

    Bounded: at most `max_names` names and `max_rooms` rooms besides the
    user's own (which are always kept); past that the one heard of longest
    ago is forgotten. Names and rooms are compared through `name_key` and
    kept as last spelt. Nothing here waits.
    """

    def __init__(
        self, *, max_names: int = MAX_KNOWN_NAMES, max_rooms: int = MAX_KNOWN_ROOMS
    ) -> None:
        self._max_names = max_names
        self._max_rooms = max_rooms
        self._names: dict[str, str] = {}
        self._rooms: dict[str, str] = {}
        self._own: dict[str, str] = {}

    def saw_name(self, name: str) -> None:
        """`name` is (still) around."""
        _remember(self._names, name_key(name), name, self._max_names)

    def forget_name(self, name: str) -> None:
        """`name` left the server."""
        self._names.pop(name_key(name), None)

    def renamed(self, old: str, new: str) -> None:
        """`old` is now called `new`."""
        self.forget_name(old)
        self.saw_name(new)

    def saw_room(self, room: str) -> None:
        """`room` exists (or did); "*" and other non-rooms are ignored."""
        if room.startswith("#"):
            _remember(self._rooms, name_key(room), room, self._max_rooms)

    def joined(self, room: str) -> None:
        """The user is in `room`."""
        self._own[name_key(room)] = room
        self.saw_room(room)

    def parted(self, room: str) -> None:
        """The user left `room` (it is still known)."""
        self._own.pop(name_key(room), None)

    def names(self) -> list[str]:
        """The names known, most recently seen last."""
        return list(self._names.values())

    def rooms(self) -> list[str]:
        """The user's rooms, then the other rooms known."""
        others = (room for key, room in self._rooms.items() if key not in self._own)
        return [*self._own.values(), *others]


class ClientUI(Protocol):
    """What the client needs from a user interface (besides its input lines)."""

    @property
    def color(self) -> bool:
        """Whether display lines may carry ANSI colour sequences."""
        ...

    @property
    def columns(self) -> int | None:
        """How wide the display is, in columns (None: no limit, e.g. a pipe)."""
        ...

    def show(self, text: str) -> None:
        """Display one line (without a newline). Must not wait."""
        ...

    def set_name(self, name: str | None) -> None:
        """The user's current name changed (None: not chosen yet)."""
        ...

    def set_room(self, room: str | None) -> None:
        """The user's current room changed (None: in no room)."""
        ...

    def set_roster(self, roster: Roster) -> None:
        """The client keeps `roster` up to date from now on (for completion)."""
        ...

    def bell(self) -> None:
        """Ring the terminal bell, if there is one. Must not wait."""
        ...

    def set_prompt(self, prompt: str | None) -> None:
        """The next line typed answers `prompt` (a name); None: chat again.

        Must not wait.
        """
        ...

    def set_secret(self, prompt: str | None) -> bool:
        """Ask for a secret (a password) with `prompt`; None: no longer.

        While asked, the line being typed is hidden and the line entered is
        kept out of the input history. Returns False if this UI cannot ask
        (input from a pipe: nobody is there to type it). Must not wait.
        """
        ...


Connect = Callable[[], Awaitable[trio.abc.Stream]]


# --------------------------------------------------------------------------
# Connecting


def _os_error_text(exc: OSError) -> str:
    """A short lower-case reason for a failed connect."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    # trio.open_tcp_stream raises one OSError caused by a group of per-address
    # errors; the interesting part is inside.
    causes: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        causes = list(exc.__cause__.exceptions)
    if all(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused"
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    return str(exc)


#: OpenSSL's verify codes for a certificate from a CA we do not trust:
#: self-signed (18, 19), or an issuer not in our store (20, 21).
_UNKNOWN_ISSUER: Final = frozenset({18, 19, 20, 21})


def _tls_error(exc: BaseException, *, where: str, hostname: str) -> ConnectError:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or cause.reason or str(cause)
        if cause.verify_code in _UNKNOWN_ISSUER:
            reason += (
                "; if the server's certificate comes from a CA of its own,"
                " trust that CA with --cafile (its ca.pem)"
            )
        return ConnectError(
            f"TLS certificate verification failed for {hostname}: {reason}",
            permanent=True,
        )
    if cause is None or isinstance(cause, ssl.SSLEOFError | ConnectionError):
        # Closed before the server said a word of TLS: how a TLS port turns
        # a connection away (full, too many new connections from here, an
        # address refused) without spending a handshake on it.
        return ConnectError(
            f"the server at {where} closed the connection before TLS began:"
            " it may be full or busy, or refusing connections from here",
            busy=True,
        )
    if isinstance(cause, ssl.SSLError) and cause.reason != "WRONG_VERSION_NUMBER":
        return ConnectError(
            f"TLS handshake with {where} failed: {cause.reason or cause}"
        )
    # WRONG_VERSION_NUMBER: the answer was not TLS (a plain-text server).
    return ConnectError(
        f"TLS handshake with {where} failed: the server did not answer in TLS"
        " (is it a TLS server?)"
    )


async def open_connection(config: ClientConfig) -> trio.abc.Stream:
    """Connect to the server in `config`, with TLS if it has an SSL context.

    Raises `ConnectError` with a one-line message when the connection is
    refused, the host name cannot be resolved (`permanent`), the server's
    certificate fails verification (`permanent`), or connecting or the
    handshake takes longer than its timeout. Nothing is left open on error
    or cancellation.
    """
    where = config.address
    try:
        with trio.fail_after(config.connect_timeout):
            tcp = await trio.open_tcp_stream(config.host, config.port)
    except trio.TooSlowError:
        raise ConnectError(
            f"cannot connect to {where}: no answer within {config.connect_timeout:g} s"
        ) from None
    except OSError as exc:
        raise ConnectError(
            f"cannot connect to {where}: {_os_error_text(exc)}",
            permanent=isinstance(exc, socket.gaierror),
        ) from None
    if config.ssl_context is None:
        return tcp
    hostname = config.server_hostname or config.host
    stream = trio.SSLStream(tcp, config.ssl_context, server_hostname=hostname)
    try:
        with trio.fail_after(config.handshake_timeout):
            await stream.do_handshake()
    except trio.TooSlowError:
        tcp.socket.close()
        raise ConnectError(
            f"TLS handshake with {where} took longer than"
            f" {config.handshake_timeout:g} s"
        ) from None
    except trio.BrokenResourceError as exc:
        tcp.socket.close()
        raise _tls_error(exc, where=where, hostname=hostname) from None
    except BaseException:
        tcp.socket.close()  # cancelled: close without waiting, then go on
        raise
    return stream


# --------------------------------------------------------------------------
# The pipe UI


class PlainUI:
    """Shows lines on a text stream (stdout for a pipe), colour off by default.

    If the stream's reader goes away (`| head -1`), output stops silently
    and the chat goes on.
    """

    def __init__(self, out: TextIO, *, color: bool = False) -> None:
        self._out = out
        self._color = color
        self._broken = False

    @property
    def color(self) -> bool:
        """Whether lines carry colour."""
        return self._color

    @property
    def columns(self) -> None:
        """A pipe has no width."""
        return None

    def show(self, text: str) -> None:
        """Write `text` and a newline, flushed."""
        if self._broken:
            return
        try:
            self._out.write(text + "\n")
            self._out.flush()
        except BrokenPipeError:
            self._broken = True

    def set_name(self, name: str | None) -> None:
        """Nothing to update: a pipe has no prompt."""

    def set_room(self, room: str | None) -> None:
        """Nothing to update: a pipe has no prompt."""

    def set_roster(self, roster: Roster) -> None:
        """Nothing to complete: a pipe is not typed into."""

    def set_prompt(self, prompt: str | None) -> None:
        """Nothing to update: a pipe has no prompt."""

    def bell(self) -> None:
        """Nothing: a bell character in piped output would only be garbage."""

    def set_secret(self, prompt: str | None) -> bool:
        """Nobody is there to type a password: False."""
        return False


@dataclasses.dataclass(eq=False, slots=True)
class _InputStart:
    """Set once the input's first line, or its end, is there."""

    event: trio.Event = dataclasses.field(default_factory=trio.Event)
    lines: bool = False  # the input has a line


async def read_lines(
    receive_some: Callable[[int], Awaitable[bytes]],
    lines: trio.MemorySendChannel[str],
    ui: ClientUI,
    *,
    max_line_bytes: int = MAX_INPUT_LINE_BYTES,
    start: _InputStart | None = None,
) -> None:
    """Split a byte source (e.g. stdin) into lines and send them to `lines`.

    `receive_some(max_bytes)` returns b"" at end of input; `lines` is closed
    then, which the client sees as end of input. A line over
    `max_line_bytes` is refused with a message. `start` is set when the
    first line is read, or the end. Returns early if the client stopped
    listening. Cancel-safe: a line is either sent or not read.
    """
    start = start if start is not None else _InputStart()
    reader = LineReader(max_line_bytes=max_line_bytes)
    async with lines:
        while True:
            reader.feed(await receive_some(RECEIVE_SIZE))
            while (event := reader.next_event()) is not NEED_DATA:
                match event:
                    case Line(text):
                        start.lines = True
                        start.event.set()
                        try:
                            await lines.send(text)
                        except trio.BrokenResourceError:
                            return
                    case LineTooLong(limit):
                        ui.show(
                            render_error(
                                f"not sent: an input line is over {limit} bytes",
                                color=ui.color,
                            )
                        )
                    case EndOfStream() | ReadQueueExceeded():
                        start.event.set()
                        return


# --------------------------------------------------------------------------
# One connection


class _Phase(enum.Enum):
    GREETING = enum.auto()  # connected; waiting for the server's name prompt
    NAMING = enum.auto()  # the server waits for a name
    NAME_SENT = enum.auto()  # a name was sent; waiting for WELCOME or ERR
    READY = enum.auto()  # in the chat
    QUITTING = enum.auto()  # /quit sent; waiting for BYE and the close


@dataclasses.dataclass(frozen=True, slots=True)
class _Left:
    """The user left (and the server knows, or never needed to)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Lost:
    """The connection broke or timed out; `reason` says how.

    `refused`: the server turned us away for now (it is busy), so trying
    again is worth it, but not before `wait` seconds (0: the usual backoff).
    """

    reason: str
    refused: bool = False
    wait: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Refused:
    """The server refused us for good; `message` is for the user."""

    message: str


_Result = _Left | _Lost | _Refused


class _Close:
    """The writer's verdict: nothing left to say, close without ceremony."""


_CLOSE: Final = _Close()


@dataclasses.dataclass(frozen=True, slots=True)
class _Wait:
    """The writer's verdict: the next line may go at `until` (trio time)."""

    until: float


def _unlimited() -> TokenBucket:
    return client_bucket(0, 0.0)


@dataclasses.dataclass(eq=False, slots=True)
class _Connection:
    stream: trio.abc.Stream
    auto_name: str | None  # the name to answer the prompt with, unasked
    scope: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)
    phase: _Phase = _Phase.GREETING
    max_line_bytes: int = MAX_LINE_BYTES
    # Every line after the name counts against the server's flood limit (a
    # fresh bucket per connection, like the server's).
    pacer: TokenBucket = dataclasses.field(default_factory=_unlimited)
    flood_rate: float = 0.0  # as the server announced it, for messages
    # The most lines and bytes of one multi-line message (0: the server
    # takes none; a paste then goes as lines).
    paste_lines: int = 0
    paste_bytes: int = 0
    sent_name: str = ""
    sent_name_was_auto: bool = False
    password_tried: bool = False  # the configured password was sent once
    server_password_tried: bool = False  # the same for the server password
    # The name to send once the server password is accepted.
    name_after_password: str | None = None
    sending_password: bool = False  # ... and its answer is still awaited
    # Lines held when the user was asked for a password: typed before the
    # question, they are chat for later, never the answer (nor a name).
    typed_ahead: int = 0
    goodbye: ev.Goodbye | None = None
    result: _Result | None = None
    heard: bool = False  # the server has sent a byte on this connection
    banner: list[str] = dataclasses.field(default_factory=list)  # to be shown
    asking_user: bool = False  # the user, not the client, answers the prompt
    nursery: trio.Nursery | None = None  # the connection's tasks
    # Restoring the user's rooms after a reconnection: the lines still to
    # send (they go before anything typed, so typed lines land where the user
    # was), how many sent ones the server has yet to answer (each /join or
    # /switch ends in SWITCH or ERR), and the rooms joined again so far.
    rejoin: deque[str] = dataclasses.field(default_factory=deque)
    # The prompt now is for a name (not a password); `/since` was sent.
    name_asked: bool = False
    since_sent: bool = False
    rejoin_answers: int = 0
    rejoining: bool = False
    rejoined: list[str] = dataclasses.field(default_factory=list)

    def finish(self, result: _Result) -> None:
        """End the connection (the first result given is the one kept)."""
        if self.result is None:
            self.result = result
        self.scope.cancel()

    def expect_reply(self, phase: _Phase, timeout: float) -> None:
        """Enter `phase`, in which the server owes an answer within `timeout`."""
        self.phase = phase
        self.scope.deadline = trio.current_time() + timeout

    def wait_for_user(self, phase: _Phase) -> None:
        """Enter `phase`, in which the server owes nothing: no deadline."""
        self.phase = phase
        self.scope.deadline = math.inf


@dataclasses.dataclass(frozen=True, slots=True)
class _RoomEntry:
    """A room the user is in, and the key it was joined with ("" if none)."""

    room: str
    key: str


def _global_notice(event: ev.ServerEvent) -> tuple[object, ...] | None:
    """What identifies a rename or a quit; None for any other event.

    The server sends those once per room the person shares with the user,
    one after the other, with the same time stamp: the client shows one.
    """
    match event:
        case ev.Renamed(ts, _room, old, new):
            return ("nick", ts, name_key(old), name_key(new))
        case ev.Left(ts, _room, name, how, reason) if how != "parted":
            return ("left", ts, name_key(name), how, reason)
    return None


#: What `/bell` says about each mode.
_BELL_MEANING: Final[dict[BellMode, str]] = {
    "off": "the bell never rings",
    "mentions": "the bell rings when someone names you",
    "all": "the bell rings for every line from someone else",
}


def _no_password(name: str) -> str:
    """Why a client that cannot ask for a password (piped input) stops."""
    if name == "*":
        what, variable = "the server", SERVER_PASSWORD_VARIABLE
    else:
        what, variable = f"the name {sanitize_text(name)}", PASSWORD_VARIABLE
    return f"{what} needs a password and none was given (set {variable} to give it)"


@dataclasses.dataclass(frozen=True, slots=True)
class _Paste:
    """Several lines typed or pasted at once: one message, all of it text."""

    lines: tuple[str, ...]


def _paste_cost(paste: _Paste) -> int:
    """Flood tokens `paste` costs: a line's, or a multi-line message's."""
    return 1 if len(paste.lines) == 1 else paste_cost(len(paste.lines))


def _split_lines(text: str) -> Iterator[str]:
    """The lines in one input (a paste may hold several)."""
    yield from text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


#: What a broken connection raises (TooSlowError: a write timed out).
_TRANSPORT_ERRORS: Final = (trio.BrokenResourceError, trio.TooSlowError)


def _is_eof(exc: BaseException) -> bool:
    """Whether a transport error is the server just closing, not a failure."""
    return isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is None


def _describe(exc: BaseException) -> str:
    """A short reason for a transport error."""
    if isinstance(exc, trio.TooSlowError):
        return "the server stopped reading"
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return "connection broken"


class _Client:
    """The state that outlives a connection: name, held lines, leaving."""

    def __init__(
        self,
        config: ClientConfig,
        ui: ClientUI,
        lines: trio.abc.ReceiveChannel[str],
        connect: Connect,
    ) -> None:
        self._config = config
        self._ui = ui
        self._lines = lines
        self._connect = connect
        # --name, then whatever the server welcomed or renamed us to: what a
        # reconnection answers the name prompt with.
        self._name = config.name or None
        self._held: deque[str | _Paste] = deque()
        self._quit_line: str | None = None  # set once the user is leaving
        self._change = trio.Event()
        self._delay = config.reconnect_delay
        self._connections = 0
        self._pacing_announced = False  # for the current backlog
        self._bell: BellMode = config.bell
        self._room: str | None = None  # where plain lines go, as the server said
        # The rooms the user is in, by key, in the order joined; after a lost
        # connection, the rooms it was in.
        self._rooms: dict[str, _RoomEntry] = {}
        # Rooms to join again after a reconnection, until the server has
        # answered; and the room to end up in. Both survive another loss.
        self._rejoin: dict[str, _RoomEntry] = {}
        self._switch_back: str | None = None
        # Keys typed in /join lines, by room key, until the JOIN comes back;
        # and in /key lines, until the server says the key is set.
        self._join_keys: dict[str, str] = {}
        self._set_keys: dict[str, str] = {}
        self._roster = Roster()
        self._last_global: tuple[object, ...] | None = None
        self._asking_secret = False  # the UI hides typing for a password
        self._greeted = False  # some server has said HELLO to us
        # What is shown of a server line is left out (`_wanted`); the user
        # has sent a line of their own since the welcome.
        self._hushed = False
        self._talking = False
        # Chat lines sent lately, with when: a refusal is about one of them.
        self._said: deque[tuple[float, str]] = deque()
        # /help was sent: the client's own commands are shown after the
        # server's list (once its last line came, or whatever came next).
        self._help_due = False
        self._in_help = False
        # The user asked for a room (/switch): its SWITCH is news, even if
        # the room stays the same.
        self._switch_asked = False
        # The time of the newest line of the chat seen, and the lines seen
        # lately: a reconnection asks the server to replay only from then
        # on (`/since`), and what it replays twice (that second) is not shown.
        self._seen_until: float | None = None
        self._seen: collections.OrderedDict[tuple[object, ...], None] = (
            collections.OrderedDict()
        )
        self._skipping = False  # the replayed line being skipped goes on
        ui.set_roster(self._roster)

    # -- waking each other -------------------------------------------------

    def _changed(self) -> None:
        """Wake every task waiting for the held lines or the phase to change."""
        self._change.set()
        self._change = trio.Event()

    def _show(self, text: str) -> None:
        if not self._hushed:
            self._ui.show(text)

    def _notice(self, text: str) -> None:
        if not self._hushed and self._config.show != "nothing":
            self._ui.show(render_notice(text, color=self._ui.color))

    def _ask_secret(self, name: str) -> bool:
        """Have the UI hide the next line typed: the password for `name`.

        False if it cannot (piped input).
        """
        what = "the server" if name == "*" else sanitize_text(name)
        self._asking_secret = self._ui.set_secret(f"password for {what}: ")
        return self._asking_secret

    def _end_secret(self) -> None:
        """No password is awaited (any more): the UI shows typing again."""
        if self._asking_secret:
            self._asking_secret = False
            self._ui.set_secret(None)

    def _error(self, text: str) -> None:
        if self._config.show != "nothing":
            self._ui.show(render_error(text, color=self._ui.color))

    def _wanted(self, event: ev.ServerEvent) -> bool:
        """Whether what `event` shows is shown (`ClientConfig.show`).

        A script is shown errors, and what comes once it has said something
        (the answers to its commands, what others say), but not the
        greeting, the history replayed on joining, or who comes and goes.
        """
        show = self._config.show
        if show != "asked":
            return show == "all"
        if isinstance(event, ev.Error):
            return True
        if not self._talking or isinstance(event, _PRESENCE):
            return False
        return not (isinstance(event, ev.Goodbye) and event.code == "quit")

    # -- the connection loop -----------------------------------------------

    async def run(self) -> None:
        config = self._config
        while True:
            try:
                stream = await self._connect()
            except ConnectError as exc:
                first = not self._connections and not exc.busy
                if first or exc.permanent or not config.reconnect:
                    raise
                note = f"{exc}; retrying in {self._delay:g} s..."
                wait = self._delay
            else:
                self._connections += 1
                result = await self._session(stream)
                match result:
                    case _Left():
                        return
                    case _Refused(message):
                        raise Refused(message)
                if self._quit_line is not None:
                    # Input is over: there is nobody to reconnect for.
                    self._give_up(result.reason)
                    return
                if not config.reconnect:
                    if result.refused:
                        raise ConnectionLost(result.reason)
                    raise ConnectionLost(
                        f"connection to {config.address} lost: {result.reason}"
                    )
                wait = max(self._delay, result.wait)
                if result.refused:
                    note = f"{result.reason} Trying again in {wait:g} s..."
                else:
                    note = (
                        f"connection lost ({result.reason});"
                        f" reconnecting in {wait:g} s..."
                    )
            self._notice(note)
            with trio.move_on_after(wait):
                await self._read_input()  # returns only if the user leaves
            if self._quit_line is not None:
                self._give_up("not reconnected")
                return
            self._delay = min(
                self._delay * RECONNECT_BACKOFF_FACTOR, config.reconnect_max_delay
            )

    def _give_up(self, reason: str) -> None:
        """Leave after a loss: fine, unless typed lines were never sent."""
        if self._held:
            count = len(self._held)
            raise ConnectionLost(
                f"connection to {self._config.address} lost ({reason});"
                f" {count} line{'s' if count != 1 else ''} not sent"
            )

    async def _session(self, stream: trio.abc.Stream) -> _Result:
        """Talk over one connection until it ends; close it; say how it ended."""
        conn = _Connection(stream, auto_name=self._name)
        self._pacing_announced = False
        self._said.clear()  # refusals are about lines of this connection
        async with stream:
            try:
                async with trio.open_nursery() as nursery:
                    conn.scope = nursery.cancel_scope
                    conn.nursery = nursery
                    conn.expect_reply(_Phase.GREETING, self._config.reply_timeout)
                    nursery.start_soon(self._read_server, conn)
                    nursery.start_soon(self._write_server, conn)
                    nursery.start_soon(self._read_input)
            except* _TRANSPORT_ERRORS as group:
                error = group.exceptions[0]
                conn.finish(self._unheard(conn, error) or _Lost(_describe(error)))
            self._end_secret()
            await trio.aclose_forcefully(stream)
        if conn.result is not None:
            return conn.result
        # Only a deadline ends a connection without a result.
        if conn.phase is _Phase.QUITTING:
            self._notice("the server did not confirm /quit in time; leaving anyway")
            return _Left()
        timeout = self._config.reply_timeout
        return self._unheard(conn) or _Lost(
            f"no answer from the server within {timeout:g} s"
        )

    async def _warn_of_name_deadline(self, conn: _Connection, deadline: float) -> None:
        """Tell the user, a little before `deadline`, if they are still naming.

        The server closes a connection that has no name by then; it says so
        only when it is too late. Returns at once if there is time enough
        for no warning; cancelled with the connection.
        """
        await trio.sleep_until(deadline - NAME_WARNING)
        if conn.asking_user and conn.phase is not _Phase.READY:
            left = max(0.0, deadline - trio.current_time())
            self._notice(
                f"{left:.0f} s left to choose a name; then the server closes"
                " the connection (and the client connects again)"
            )

    def _unheard(
        self, conn: _Connection, error: BaseException | None = None
    ) -> _Refused | None:
        """Why a server that never said a word to us never will, if we can tell.

        A plain client on a TLS port waits for a greeting that never comes
        (the server waits for a TLS handshake): told only while no server
        has ever greeted us. A TLS server that wants a client certificate
        closes the connection, in TLS 1.3 right after the handshake, when it
        gets none or one it does not trust: told whenever it happens (a
        server may be restarted with --client-ca). Retrying cannot help.
        """
        tls = self._config.ssl_context is not None
        cause = None if error is None else error.__cause__
        # A TLS server that closes the connection as soon as its handshake
        # is done turns the client certificate away, even one that greeted
        # us before (restarted with --client-ca): that, retrying cannot fix.
        refused_tls = tls and isinstance(cause, ssl.SSLError)
        if conn.heard or (self._greeted and not refused_tls):
            return None
        if not tls and (error is None or _is_eof(error)):
            return _Refused(
                f"the server at {self._config.address} did not answer;"
                " is it a TLS server? try --tls"
            )
        if tls and error is not None and isinstance(error.__cause__, ssl.SSLError):
            if self._config.client_cert:
                return _Refused(
                    "the server closed the TLS connection at once: it did not"
                    " accept your client certificate (--cert); it takes only"
                    " certificates signed by its own client CA"
                )
            return _Refused(
                "the server closed the TLS connection at once: it wants a"
                " client certificate (--cert FILE --key FILE)"
            )
        return None

    # -- input -------------------------------------------------------------

    async def _read_input(self) -> None:
        """Move typed lines into the held queue until end of input or /quit.

        Returns once the user is leaving. Cancel-safe: a line is either held
        or still in the channel.
        """
        await trio.lowlevel.checkpoint()
        while self._quit_line is None:
            if len(self._held) >= self._config.max_held_lines:
                await self._change.wait()
                continue
            try:
                text = await self._lines.receive()
            except trio.EndOfChannel:
                self._quit_line = "/quit"
                self._changed()
                return
            lines = list(_split_lines(text))
            if len(lines) > 1:  # pasted, or typed on several lines: all text
                lines = trim_blank_lines(lines)
                if len(lines) > 1:
                    self._held.append(_Paste(tuple(lines)))
                    lines = []
            for line in lines:
                if self._local_command(line):
                    continue
                if isinstance(parse_request(line), ev.Quit):
                    self._quit_line = line
                    break
                self._held.append(line)
            self._changed()

    def _local_command(self, line: str) -> bool:
        """Carry out a command for this client alone (`/bell`); False if not one.

        Never sent to the server: it sends every recipient the same lines, and
        whether a terminal beeps is nobody's business but the user's.
        """
        command, _, rest = line.partition(" ")
        if command.lower() != "/bell":
            return False
        wanted = rest.strip().lower()
        if wanted:  # else: just say what the setting is
            mode = next((mode for mode in BELL_MODES if mode == wanted), None)
            if mode is None:
                self._error("usage: /bell off|mentions|all")
                return True
            self._bell = mode
        self._notice(f"bell: {self._bell} ({_BELL_MEANING[self._bell]})")
        return True

    # -- writing -----------------------------------------------------------

    async def _write_server(self, conn: _Connection) -> None:
        """The only task that writes to the server; runs until cancelled.

        Transport errors (and a write timeout) propagate, for `_session` to
        turn into `_Lost`.
        """
        while True:
            item = self._next_outgoing(conn)
            if item is None:
                await self._change.wait()
                continue
            if isinstance(item, _Close):
                conn.finish(_Left())
                await trio.sleep_forever()  # finish() cancelled us
            if isinstance(item, _Wait):
                # Only time can change the verdict: new lines queue behind.
                await trio.sleep_until(item.until)
                continue
            data, echo = item
            with trio.fail_after(self._config.write_timeout):
                await conn.stream.send_all(data)
            if self._config.show == "all":  # a script knows what it said
                for line in [echo] if isinstance(echo, str) else echo or ():
                    self._show(line)

    def _next_outgoing(
        self, conn: _Connection
    ) -> tuple[bytes, str | list[str] | None] | _Close | _Wait | None:
        """What to send next, if anything may be sent now."""
        held = self._held
        if conn.phase is _Phase.READY:
            while held and not self._sendable(conn, held[0]):
                held.popleft()  # refused at once: it costs no token
                self._changed()  # room for the input task
            self._fit_paste(conn)
            now = trio.current_time()
            if conn.pacer.tokens(now) >= conn.pacer.burst:
                # Quiet long enough for a full bucket: a new backlog is news.
                self._pacing_announced = False
            if self._quit_line is not None:
                conn.rejoin.clear()  # leaving: no point in joining rooms again
            if not held and not conn.rejoin and self._quit_line is None:
                return None
            # Chat lines, commands and /quit alike: the server counts them all
            # (a multi-line message by its lines, more gently).
            cost = 1
            if not conn.rejoin and held and isinstance(held[0], _Paste):
                cost = _paste_cost(held[0])
            if now < conn.pacer.ready_at(cost):
                self._announce_pacing(conn)
                return _Wait(conn.pacer.ready_at(cost))
            conn.pacer.take(now, cost)
            if conn.rejoin:
                conn.rejoin_answers += 1
                return self._chat_line(conn.rejoin.popleft())
            if held:
                line = held.popleft()
                self._talking = True
                self._changed()
                if isinstance(line, _Paste):
                    return self._paste_lines(line)
                return self._chat_line(line)
            assert self._quit_line is not None, "nothing held: the quit is next"
            conn.expect_reply(_Phase.QUITTING, self._config.quit_timeout)
            return self._quit_line.encode() + LINE_END, None
        if conn.phase is _Phase.QUITTING:
            return None
        if self._quit_line is not None and len(held) <= conn.typed_ahead:
            return _CLOSE  # leaving before we are in: nothing to deliver
        if conn.phase is _Phase.NAMING:
            if conn.auto_name is not None:
                name, conn.auto_name = conn.auto_name, None
                return self._name_line(conn, name, auto=True)
            while len(held) > conn.typed_ahead:
                typed = held[conn.typed_ahead]
                del held[conn.typed_ahead]
                self._changed()
                if isinstance(typed, _Paste):
                    self._error("not sent: several lines are no name")
                elif typed.strip():  # the server ignores a blank name
                    return self._name_line(conn, typed, auto=False)
        return None

    def _name_line(
        self, conn: _Connection, name: str, *, auto: bool
    ) -> tuple[bytes, None]:
        conn.expect_reply(_Phase.NAME_SENT, self._config.reply_timeout)
        conn.sent_name = name
        conn.sent_name_was_auto = auto
        since = b""
        if conn.name_asked and not conn.since_sent and self._seen_until is not None:
            conn.since_sent = True  # before the name: the lobby's replay too
            since = encode_request(ev.Since(self._seen_until))
        return since + name.encode() + LINE_END, None

    def _announce_pacing(self, conn: _Connection) -> None:
        """Tell a person, once per backlog, that their lines wait their turn."""
        if self._pacing_announced or not self._held:
            return
        self._pacing_announced = True
        if self._config.announce_pacing:
            count = len(self._held)
            self._notice(
                f"sending slowly: {count} line{'s' if count != 1 else ''} queued"
                f" (server limit {conn.flood_rate:g}/s)"
            )

    def _sendable(self, conn: _Connection, line: str | _Paste) -> bool:
        """Whether `line` goes to the server; a refusal is shown to the user."""
        if isinstance(line, _Paste):
            # Each of its lines may end up alone, as a line of text: `//...`.
            sizes = [len(encode_request(ev.Say(text))) - 2 for text in line.lines]
            if max(sizes) > conn.max_line_bytes:
                self._error(
                    f"not sent: line {sizes.index(max(sizes)) + 1} of those"
                    f" {len(sizes)} lines is {max(sizes)} bytes;"
                    f" the server takes at most {conn.max_line_bytes}"
                )
                return False
            return True
        if parse_request(line) is None:
            return False  # a blank line says nothing
        size = len(line.encode())
        if size > conn.max_line_bytes:
            self._error(
                f"not sent: that line is {size} bytes;"
                f" the server takes at most {conn.max_line_bytes}"
            )
            return False
        return True

    def _fit_paste(self, conn: _Connection) -> None:
        """Split the next multi-line message to the server's limits, if it is one.

        Its first part stays first, the rest comes next. A server that takes
        no multi-line messages gets one line at a time (blank ones left out).
        """
        held = self._held
        if not held or not isinstance(held[0], _Paste):
            return
        lines = held[0].lines
        if conn.paste_lines and conn.paste_bytes:
            first, rest = split_paste(
                lines, max_lines=conn.paste_lines, max_bytes=conn.paste_bytes
            )
        else:
            first, rest = list(lines[:1]), list(lines[1:])
        rest = trim_blank_lines(rest)
        if rest:
            held[0] = _Paste(tuple(trim_blank_lines(first)))
            held.insert(1, _Paste(tuple(rest)))

    def _paste_lines(self, paste: _Paste) -> tuple[bytes, list[str]]:
        """The bytes for one multi-line message, and how to show it.

        `/paste N` and its lines, or a plain line of text if it has one line.
        """
        if len(paste.lines) == 1:
            data = encode_request(ev.Say(paste.lines[0]))
        else:
            data = encode_paste(paste.lines)
        more = f" (and {len(paste.lines) - 1} more lines)" if paste.lines[1:] else ""
        self._said_now(paste.lines[0] + more)
        assert self._name is not None, "ready means named"
        echo = render_own_lines(
            paste.lines, me=self._name, ts=time.time(), color=self._ui.color
        )
        return data, echo

    def _said_now(self, line: str) -> None:
        """`line` goes to the room now: shown as said, unless refused soon."""
        said = self._said
        said.append((trio.current_time(), line))
        while len(said) > MAX_HELD_LINES:
            said.popleft()

    def _refused_line(self) -> str | None:
        """The chat line a refusal (`ERR muted`...) is about, if one is.

        The server answers a line as it takes it, and the client paces its
        lines so that it takes them at once: the refusal is about the
        oldest line said within `REFUSAL_WINDOW` and not refused yet.
        """
        said = self._said
        now = trio.current_time()
        while said and said[0][0] < now - REFUSAL_WINDOW:
            said.popleft()
        return said.popleft()[1] if said else None

    def _chat_line(self, line: str) -> tuple[bytes, str | None]:
        """The bytes for one sendable line and how to show it (None: not shown)."""
        request = parse_request(line)
        data = line.encode()
        echo = None
        if isinstance(request, ev.Join):
            # Kept to join again with it after a reconnection.
            _remember(
                self._join_keys,
                _room_key(request.room),
                request.key,
                MAX_PENDING_JOIN_KEYS,
            )
        elif isinstance(request, ev.Switch):
            self._switch_asked = True
        elif isinstance(request, ev.Help):
            self._help_due = True  # ours go with the server's answer
        elif (
            isinstance(request, ev.RoomMode)
            and request.setting == "key"
            and self._room is not None
        ):
            # Kept once the server says it is set: a room that comes back
            # after a restart comes back with it.
            _remember(
                self._set_keys,
                name_key(self._room),
                request.value,
                MAX_PENDING_JOIN_KEYS,
            )
        if isinstance(request, ev.Say | ev.Me):
            self._said_now(line)
        if isinstance(request, ev.Say | ev.Me | ev.PrivateMsg):
            # The server does not echo our own lines back: show them here.
            assert self._name is not None, "ready means named"
            echo = render_own(
                request, me=self._name, ts=time.time(), color=self._ui.color
            )
        return data + LINE_END, echo

    # -- reading -----------------------------------------------------------

    async def _read_server(self, conn: _Connection) -> None:
        """Read and show server lines; runs until cancelled (the connection ends).

        Transport errors propagate, for `_session` to turn into `_Lost`.
        """
        reader = LineReader(max_line_bytes=MAX_SERVER_LINE_BYTES)
        while True:
            data = await conn.stream.receive_some(RECEIVE_SIZE)
            conn.heard = conn.heard or bool(data)
            reader.feed(data)
            while conn.result is None:
                match reader.next_event():
                    case Line(text):
                        self._on_line(conn, text)
                    case LineTooLong(limit):
                        self._error(f"the server sent a line over {limit} bytes")
                    case EndOfStream() | ReadQueueExceeded():
                        self._on_close(conn)
                    case _:
                        break  # NEED_DATA

    def _show_banner(self, conn: _Connection) -> None:
        """Show the server's banner: its art (the lines before the first
        empty one) only if the terminal is wide enough for it."""
        lines, conn.banner = conn.banner, []
        columns = self._ui.columns
        if columns is not None and "" in lines:
            art = lines[: lines.index("")]
            if max(display_width(sanitize_text(line)) for line in art) > columns:
                lines = lines[len(art) + 1 :]  # garbage when wrapped: left out
        for line in lines:
            self._show(self._render(ev.Banner(line)))

    def _render(self, event: ev.ServerEvent) -> str:
        return render_event(event, me=self._name, color=self._ui.color, room=self._room)

    def _on_line(self, conn: _Connection, text: str) -> None:
        try:
            event = decode_event(text)
        except ServerProtocolError:
            self._show(render_unreadable(text, color=self._ui.color))
            return
        if conn.banner and not isinstance(event, ev.Banner):
            self._hushed = not self._wanted(ev.Banner(""))
            self._show_banner(conn)
        self._hushed = not self._wanted(event)
        try:
            self._on_event(conn, event)
        finally:
            self._hushed = False

    def _on_event(self, conn: _Connection, event: ev.ServerEvent) -> None:
        match event:
            case ev.Hello(_protocol, server, max_line_bytes, burst, rate):
                self._greeted = True
                conn.max_line_bytes = max_line_bytes
                conn.pacer = client_bucket(burst, rate)
                conn.flood_rate = rate
                conn.paste_lines = event.paste_lines
                conn.paste_bytes = event.paste_bytes
                if 0 < event.name_timeout < math.inf and conn.nursery is not None:
                    deadline = trio.current_time() + event.name_timeout
                    conn.nursery.start_soon(self._warn_of_name_deadline, conn, deadline)
                tls = ", TLS" if self._config.ssl_context is not None else ""
                self._notice(
                    f"connected to {self._config.address}"
                    f" ({sanitize_text(server)}{tls})"
                )
            case ev.Banner(text):
                if self._connections == 1:  # once is enough
                    conn.banner.append(text)  # shown whole, once it is all here
            case ev.NamePrompt():
                conn.wait_for_user(_Phase.NAMING)
                conn.name_asked = True
                self._end_secret()  # the next line is a name again
                if conn.name_after_password is not None:
                    conn.auto_name = conn.name_after_password
                    conn.name_after_password = None
                if conn.auto_name is None:
                    self._show(self._render(event))
                    self._ui.set_prompt(NAME_PROMPT)
                    conn.asking_user = True
                self._changed()
            case ev.PasswordPrompt(name):
                conn.wait_for_user(_Phase.NAMING)
                conn.name_asked = False
                if name == "*":  # the server's own password, before any name
                    if conn.auto_name is not None:  # the name waits its turn
                        conn.name_after_password = conn.auto_name
                        conn.auto_name = None
                    password = self._config.server_password
                    tried = conn.server_password_tried
                else:
                    password = self._config.password
                    tried = conn.password_tried
                if password and not tried:
                    if name == "*":
                        conn.server_password_tried = True
                    else:
                        conn.password_tried = True
                    conn.sending_password = True
                    conn.auto_name = password
                elif self._ask_secret(name):
                    conn.typed_ahead = len(self._held)
                    conn.asking_user = True
                    self._show(self._render(event))
                else:
                    conn.finish(_Refused(_no_password(name)))
                    return
                self._changed()
            case ev.Error() if conn.phase is _Phase.NAME_SENT and conn.sending_password:
                conn.sending_password = False  # wrong: the user answers from now on
                self._show(self._render(event))
                if not self._config.retry_name:  # a script: its lines are no names
                    conn.finish(
                        _Refused(
                            "the server refused the password:"
                            f" {sanitize_text(event.text)}"
                        )
                    )
            case ev.Error() if conn.phase is _Phase.NAME_SENT:
                if event.code in _NAME_ERRORS:  # say which name: it was not shown
                    shown = f"'{sanitize_text(conn.sent_name)}': {event.text}"
                    self._show(self._render(ev.Error(event.code, shown)))
                else:
                    self._show(self._render(event))
                if conn.sent_name_was_auto and not self._config.retry_name:
                    conn.finish(
                        _Refused(
                            "the server refused the name"
                            f" {sanitize_text(conn.sent_name)}:"
                            f" {sanitize_text(event.text)}"
                        )
                    )
            case ev.Welcome(name):
                self._talking = False  # a script hears nothing until it speaks
                conn.wait_for_user(_Phase.READY)
                conn.asking_user = False
                self._ui.set_prompt(None)
                self._end_secret()
                self._set_name(name)
                self._delay = self._config.reconnect_delay
                self._show(self._render(event))
                self._welcomed(conn)
                self._changed()
            case ev.Goodbye():
                conn.goodbye = event
                if event.code not in TEMPORARY_REFUSALS:  # those: one notice
                    self._show(self._render(event))
            case _:
                self._on_chat_event(conn, event)

    def _seen_before(self, event: ev.ServerEvent) -> bool:
        """Remember chat lines seen; True for a replayed one seen already."""
        replayed = isinstance(event, ev.Replayed)
        line = event.event if isinstance(event, ev.Replayed) else event
        if not isinstance(line, ev.Message | ev.Action | ev.TopicIs | ev.MoreLine):
            return False
        if isinstance(line, ev.MoreLine):
            return replayed and self._skipping  # the rest of a line seen
        key = (type(line), *dataclasses.astuple(line))
        self._skipping = replayed and key in self._seen
        if self._skipping:
            return True
        self._seen[key] = None
        while len(self._seen) > SEEN_LINES:
            self._seen.popitem(last=False)
        if self._seen_until is None or line.ts > self._seen_until:
            self._seen_until = line.ts
        return False

    def _on_chat_event(self, conn: _Connection, event: ev.ServerEvent) -> None:
        """Show a line of the chat; follow rooms, names and mentions in it."""
        if self._help_due:
            self._follow_help(event)
        if self._seen_before(event):
            return  # replayed after a reconnection, but shown already
        notice = _global_notice(event)
        repeated = notice is not None and notice == self._last_global
        self._last_global = notice
        if repeated:
            return  # the same rename or quit again, for another shared room
        roster = self._roster
        match event:
            case ev.Switched(room):
                # News if the room changed, or if the user asked for it; not
                # after /part of another room (the current one stays).
                news = self._switch_asked or self._room is None
                news = news or name_key(room) != name_key(self._room or "")
                self._switch_asked = False
                self._set_room(room)
                if self._rejoin_answered(conn):
                    if news:
                        self._show(self._render(event))
                    self._finish_rejoin(conn)
                return  # a SWITCH that answers a rejoin is not news
            case ev.Error(code, text) if code in _CHAT_REFUSALS:
                # Shown as said by now: say plainly that it was not.
                line = self._refused_line()
                if line is None:
                    self._show(self._render(event))
                else:
                    shown = sanitize_text(line)
                    if len(shown) > MAX_REFUSED_SHOWN:
                        shown = shown[: MAX_REFUSED_SHOWN - 3] + "..."
                    self._error(f"not sent: {shown} ({sanitize_text(text)})")
                return
            case ev.Error():
                self._show(self._render(event))
                if self._rejoin_answered(conn):
                    self._finish_rejoin(conn)
                return
            case ev.Joined(_ts, room, name):
                roster.saw_room(room)
                if self._is_me(name):
                    self._joined(conn, room)
                else:
                    roster.saw_name(name)
            case ev.JoinedMany(_ts, room, names):
                roster.saw_room(room)
                for name in names:
                    if not self._is_me(name):
                        roster.saw_name(name)
            case ev.LeftMany(_ts, _room, names):
                for name in names:
                    roster.forget_name(name)  # quit or cut off: gone
            case ev.Left(_ts, room, name, how, _reason):
                if self._is_me(name):
                    if how == "parted":
                        self._parted(room)
                elif how != "parted":
                    roster.forget_name(name)  # gone from the server
            case ev.Kicked(_ts, room, name):
                if self._is_me(name):
                    self._parted(room)  # out of the room, still online
            case ev.Renamed(_ts, _room, old, new):
                if self._is_me(old):
                    self._set_name(new)
                else:
                    roster.renamed(old, new)
            case ev.TopicIs(room=room) | ev.RoomInfo(room=room):
                roster.saw_room(room)
            case ev.WhoList(room, names):
                roster.saw_room(room)
                for name in names:
                    if not self._is_me(name):
                        roster.saw_name(name)
            case ev.Message(_ts, room, sender) | ev.Action(_ts, room, sender):
                roster.saw_room(room)
                if not self._is_me(sender):
                    roster.saw_name(sender)
            case ev.Private(_ts, sender):
                if not self._is_me(sender):
                    roster.saw_name(sender)
            case ev.Info(text):
                self._key_changed(text)
        self._show(self._render(event))
        if (
            self._in_help
            and isinstance(event, ev.HelpLine)
            and sanitize_text(event.text) == _LAST_HELP_LINE  # no need to wait
        ):
            self._end_help()
        if self._rings(event):
            self._ui.bell()

    def _follow_help(self, event: ev.ServerEvent) -> None:
        """Before `event` is shown: the server's `/help` reply is over if it
        is not a line of it, and the client's own commands follow it."""
        if isinstance(event, ev.HelpLine):
            self._in_help = True
        elif self._in_help:
            self._end_help()

    def _end_help(self) -> None:
        self._help_due = self._in_help = False
        for line in help_lines(client=True):
            self._show(self._render(ev.HelpLine(line)))

    def _rings(self, event: ev.ServerEvent) -> bool:
        """Whether `event` rings the bell (history never does)."""
        if self._bell == "off" or not isinstance(
            event, ev.Message | ev.MoreLine | ev.Action | ev.Private
        ):
            return False
        if self._bell == "all":  # once for a multi-line message, at its MSG
            return not isinstance(event, ev.MoreLine) and not self._is_me(event.sender)
        return is_mention(event, self._name)

    def _is_me(self, name: str) -> bool:
        return self._name is not None and name_key(name) == name_key(self._name)

    def _set_name(self, name: str) -> None:
        self._name = name
        self._ui.set_name(name)

    def _set_room(self, room: str | None) -> None:
        if room != self._room:
            self._room = room
            self._ui.set_room(room)

    # -- rooms -------------------------------------------------------------

    def _welcomed(self, conn: _Connection) -> None:
        """In the chat, and in the lobby only: restore the user's other rooms.

        Queues a /join for each room the user was in before (with the key it
        typed) and a /switch back to where it was, ahead of any typed line.
        """
        lobby = name_key(ev.LOBBY)
        wanted = dict(self._rejoin)
        wanted.update((k, e) for k, e in self._rooms.items() if k != lobby)
        back = self._switch_back or self._room
        self._rooms = {lobby: _RoomEntry(ev.LOBBY, "")}
        self._rejoin = wanted
        self._roster.joined(ev.LOBBY)
        self._set_room(ev.LOBBY)
        lines = [f"/join {e.room} {e.key}".rstrip() for e in wanted.values()]
        # Each /join switches to its room: switch back unless the last one is it.
        if (
            lines
            and back is not None
            and (name_key(back) in wanted or name_key(back) == lobby)
            and name_key(back) != list(wanted)[-1]
        ):
            lines.append(f"/switch {back}")
        self._switch_back = back if lines else None
        conn.rejoin = deque(lines)
        conn.rejoining = bool(lines)

    def _rejoin_answered(self, conn: _Connection) -> bool:
        """A SWITCH or ERR came: count it against the rejoin lines sent.

        True if no rejoin is under way, or if this was its last answer.
        """
        if not conn.rejoining:
            return True
        if conn.rejoin_answers:
            conn.rejoin_answers -= 1
        return not conn.rejoin_answers and not conn.rejoin

    def _finish_rejoin(self, conn: _Connection) -> None:
        """The server answered every rejoin line: say which rooms are back."""
        if not conn.rejoining:
            return
        conn.rejoining = False
        for entry in self._rejoin.values():  # refused: the server said why
            self._roster.parted(entry.room)
        self._rejoin.clear()
        self._switch_back = None
        if conn.rejoined:
            self._notice(f"rejoined {', '.join(map(sanitize_text, conn.rejoined))}")

    def _joined(self, conn: _Connection, room: str) -> None:
        """The user is in `room` (its own JOIN line)."""
        key = name_key(room)
        typed = self._join_keys.pop(key, None)
        before = self._rooms.get(key) or self._rejoin.get(key)
        if typed is None:
            typed = before.key if before is not None else ""
        self._rooms[key] = _RoomEntry(room, typed)
        self._roster.joined(room)
        if self._rejoin.pop(key, None) is not None and conn.rejoining:
            conn.rejoined.append(room)

    def _key_changed(self, text: str) -> None:
        """Follow a room's key from the notice of its change (`ev.key_notice`).

        The user set it: the key it typed is the room's now. Someone removed
        it: the room needs none. Someone else set one: the key is unknown
        here, and the one the user joined with is kept (it may still be it).
        """
        if not text.endswith(".") or self._name is None:
            return
        for key, entry in self._rooms.items():
            if text == ev.key_notice(self._name, entry.room):
                typed = self._set_keys.pop(key, None)
                if typed is not None:
                    self._rooms[key] = _RoomEntry(entry.room, typed)
            elif text.endswith(ev.key_notice("", entry.room, removed=True)):
                self._set_keys.pop(key, None)
                self._rooms[key] = _RoomEntry(entry.room, "")

    def _parted(self, room: str) -> None:
        """The user left `room` (its own parted LEAVE line)."""
        key = name_key(room)
        self._rooms.pop(key, None)
        self._rejoin.pop(key, None)
        self._roster.parted(room)
        if self._room is not None and name_key(self._room) == key:
            self._set_room(None)  # until the server's SWITCH, if another is left

    def _on_close(self, conn: _Connection) -> None:
        """The server closed the connection: decide whether to come back."""
        goodbye = conn.goodbye
        if conn.phase is _Phase.QUITTING or (goodbye and goodbye.code == "quit"):
            conn.finish(_Left())
            return
        if goodbye is None:
            conn.finish(self._unheard(conn) or _Lost("closed by the server"))
            return
        code, text = goodbye.code, sanitize_text(goodbye.text)
        if code == ev.SIGNED_IN_ELSEWHERE:
            # Reconnecting would sign the other place out, and so on for ever.
            conn.finish(
                _Refused(
                    "you signed in from another place, which closed this"
                    " connection; this client does not reconnect (it would"
                    " sign the other one out)"
                )
            )
        elif code in TEMPORARY_REFUSALS:
            conn.finish(
                _Lost(
                    f"the server is busy: {text}",
                    refused=True,
                    wait=goodbye.retry_after,
                )
            )
        elif code == "name-timeout" and self._config.retry_name:
            # Someone at a terminal was slow (or away): a new prompt, not an exit.
            conn.finish(_Lost(f"no name chosen in time: {text}"))
        elif code == "banned" or (
            conn.phase is not _Phase.READY and code != "server-shutdown"
        ):
            # Banned, or sent away before we were in (e.g. too many name
            # attempts): reconnecting would only repeat it.
            conn.finish(_Refused(f"the server closed the connection: {text}"))
        else:
            conn.finish(_Lost(text))


async def run_client(
    config: ClientConfig,
    ui: ClientUI,
    lines: trio.abc.ReceiveChannel[str],
    *,
    connect: Connect | None = None,
) -> None:
    """Chat until the user leaves: returns after /quit or end of input.

    Connects with `connect()` (default: `open_connection(config)`), answers
    the name prompt with `config.name` or the first typed line, then sends
    each typed line once the server is ready, showing the user's own chat
    lines locally. `/quit` or end of `lines` sends `/quit` and waits (up to
    `config.quit_timeout`) for the goodbye, so every line before it arrived.
    A lost connection is shown and retried with exponential backoff, unless
    `config.reconnect` is False; end of input never reconnects.

    Raises `ConnectError` if the first connection fails (or TLS verification
    ever does), `ConnectionLost` if a lost connection is not retried (or lines
    typed were never sent), `Refused` if the server refuses `config.name` and
    `config.retry_name` is False. Each carries a one-line message. Cancelling
    closes the connection at once.
    """
    if connect is None:

        async def connect() -> trio.abc.Stream:
            return await open_connection(config)

    await _Client(config, ui, lines, connect).run()


async def run_with_input(
    config: ClientConfig,
    ui: ClientUI,
    receive_some: Callable[[int], Awaitable[bytes]],
    *,
    connect: Connect | None = None,
) -> bool:
    """`run_client` with the user's lines read from a byte source (a pipe).

    Each line of input is sent in order; at its end the client says /quit and
    waits for the goodbye, so every line was delivered. Nothing connects
    before the first line is there: empty input never connects (nobody sees
    a script join and leave for nothing), and returns False. Raises as
    `run_client` does (a bare `ClientError`, not a group).
    """
    send, receive = trio.open_memory_channel[str](0)
    start = _InputStart()
    error: ClientError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(read_lines, receive_some, send, ui, start=start)
        )
        await start.event.wait()
        try:
            async with receive:
                if start.lines:
                    await run_client(config, ui, receive, connect=connect)
        except ClientError as exc:
            error = exc
        nursery.cancel_scope.cancel()  # stop reading input: nobody listens
    if error is not None:
        raise error
    return start.lines


class GuestClient:
    """`run_client` for a host event loop that runs trio in guest mode.

    The host starts `main` with `trio.lowlevel.start_guest_run` and, from its
    own loop's thread, calls `deliver(line)` for each typed line,
    `end_input()` at end of input (the client then says /quit and finishes)
    and `cancel()` to stop at once. None of them waits; calls made before
    `main` has started are remembered and carried out when it does.
    """

    def __init__(
        self,
        config: ClientConfig,
        ui: ClientUI,
        *,
        max_waiting_lines: int = MAX_WAITING_LINES,
        connect: Connect | None = None,
    ) -> None:
        self._config = config
        self._ui = ui
        self._connect = connect
        self._send, self._receive = trio.open_memory_channel[str](max_waiting_lines)
        self._scope = trio.CancelScope()
        self._token: trio.lowlevel.TrioToken | None = None
        self._early: list[Callable[[], None]] = []

    async def main(self) -> None:
        """Run the client (in trio); returns or raises as `run_client` does."""
        self._token = trio.lowlevel.current_trio_token()
        with self._scope:
            for call in self._early:
                call()
            self._early.clear()
            async with self._receive:
                await run_client(
                    self._config, self._ui, self._receive, connect=self._connect
                )

    def _soon(self, call: Callable[[], None]) -> None:
        """Run `call` in trio: soon, or once `main` starts; never after it ended."""
        if self._token is None:
            self._early.append(call)
            return
        # RunFinishedError: the client is done; nobody is left to tell.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(call)

    def deliver(self, text: str) -> None:
        """Hand one typed line to the client (refused with a message if full)."""
        self._soon(lambda: self._take(text))

    def end_input(self) -> None:
        """The user ended input (Ctrl-D): the client quits politely."""
        self._soon(self._send.close)

    def cancel(self) -> None:
        """Stop the client at once (its connection is closed, not quit)."""
        self._soon(self._scope.cancel)

    def _take(self, text: str) -> None:
        try:
            self._send.send_nowait(text)
        except trio.WouldBlock:
            self._ui.show(
                render_error("not sent: too many lines waiting", color=self._ui.color)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client has stopped reading input: it is finishing
