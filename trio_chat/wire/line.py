"""The line protocol, server side, sans-IO: one `LineSession` per connection.

What `docs/PROTOCOL.md` describes, as a wire session (see `trio_chat.wire`):
framing (`LineReader`), the login dialogue (a line at the server-password
prompt, at a name prompt or at a registered name's password prompt becomes
the login request it answers), multi-line pastes (`PasteCollector`), and
the protocol's own refusals (a line too long, an HTTP request or a TLS
handshake on a plain port). Chat lines and commands become the requests of
`trio_chat.events` (`parse_request`); events become lines (`encode_event`).

The session reads no clock: `tick(now)` tells it the time, for the paste
under way (`deadline`). It imports no trio, ssl or socket and logs nothing.
"""

from __future__ import annotations

from typing import Final

from trio_chat import events as ev
from trio_chat.limits import Limits
from trio_chat.paste import Paste, PasteCollector, PasteError, paste_cost, paste_request
from trio_chat.protocol import (
    NEED_DATA,
    EndOfStream,
    Line,
    LineReader,
    LineTooLong,
    NeedData,
    ReadQueueExceeded,
    encode_event,
    looks_like_http,
    looks_like_tls,
    parse_request,
)
from trio_chat.sanitize import sanitize_text
from trio_chat.wire import NOOP, Closed, Noop, Refused

__all__ = ["LineSession", "request_cost"]

Event = ev.Request | ev.LoginRequest | ev.Since | Noop | Closed | Refused

#: What the protocol says when its peer speaks something else.
NOT_HTTP: Final = "This is a trio-chat server, not an HTTP server."
NOT_TLS: Final = (
    "This is a trio-chat server without TLS on this port; connect without TLS."
)


def request_cost(request: ev.Request | Noop) -> int:
    """The flood tokens `request` costs: a paste (a multi-line `Say`) more."""
    if isinstance(request, ev.Say) and "\n" in request.text:
        return paste_cost(request.text.count("\n") + 1)
    return 1


def _prompt_command(text: str) -> bool:
    """True if a line at the PASSWORD prompt is `/nick NAME` or `/quit`.

    Every other line there is the password, even one starting with `/`.
    """
    stripped = text.strip()
    if not stripped.startswith("/"):
        return False
    return isinstance(parse_request(sanitize_text(stripped)), ev.Nick | ev.Quit)


class LineSession:
    """One line-protocol client's protocol state (see the module docstring).

    `limits` are the limits in force (line and paste sizes, attempts at
    the prompt); `tls` says the connection is already inside TLS (a TLS
    handshake in the clear is then not a mistake to point out).
    """

    # Slots: a session per connection, so every byte counts.
    __slots__ = (
        "_attempts",
        "_closed",
        "_events",
        "_first_data",
        "_first_line",
        "_limits",
        "_logging_in",
        "_name_prompt",
        "_now",
        "_out",
        "_pastes",
        "_prompt",
        "_reader",
        "_registered",
        "_tls",
    )

    #: Pings are IRC's: people on nc cannot answer them.
    keepalive: Final = False
    #: Replays are the same bytes for every line member (cached per event).
    shared_replay: Final = True
    #: A client certificate names the account before any line is read.
    certificate_login: Final = True

    def __init__(
        self,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen, shared safely
        tls: bool = False,
    ) -> None:
        self._limits = limits
        self._tls = tls
        self._reader = LineReader(
            max_line_bytes=limits.max_line_bytes,
            max_unterminated_bytes=limits.max_unterminated_bytes or None,
        )
        self._pastes = PasteCollector(
            max_lines=limits.max_paste_lines if limits.pastes else 0,
            max_bytes=limits.max_paste_bytes,
            timeout=limits.paste_timeout,
        )
        self._now = 0.0
        self._first_data = True
        self._first_line = True
        self._attempts = 0  # lines at the prompts
        self._registered = False
        self._closed = False
        # The last prompt sent: what a line before the welcome answers.
        self._prompt: ev.NamePrompt | ev.PasswordPrompt | None = None
        self._name_prompt: ev.NamePrompt | None = None
        self._logging_in: str | None = None  # a LogIn asked for this name
        # A list, not a deque: a deque's first block costs 760 bytes, and
        # this holds one or two events at a time; none (a shared empty
        # tuple, not a list of its own) while the connection is idle.
        self._events: list[Event] | tuple[()] = ()
        self._out = b""  # a few lines between drains: no buffer of its own

    # -- the interface --------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True once the chat welcomed the client (it has a name)."""
        return self._registered

    @property
    def awaiting_pong(self) -> bool:
        """Never: the line protocol has no pings."""
        return False

    def ping(self, token: str) -> bool:
        """The line protocol has no pings: nothing is sent, False."""
        return False

    @property
    def deadline(self) -> float:
        """When the paste under way times out (`tick` then refuses it)."""
        return self._pastes.deadline

    def tick(self, now: float) -> None:
        """The time is `now`: a paste past its deadline is refused."""
        self._now = now
        self._paste_error(self._pastes.expire(now))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; `b""` marks the end of the stream."""
        if self._first_data and data:
            self._first_data = False
            if not self._tls and looks_like_tls(data):
                self._refuse("tls-not-enabled", NOT_TLS)
                return
        if not self._closed:
            self._reader.feed(data)

    def next_event(self) -> Event | NeedData:
        """The next request (or login request), a `Closed` or `Refused`, or
        `NEED_DATA`. Answers the session gives itself go to `data_to_send`.
        """
        while True:
            if isinstance(self._events, list):
                event = self._events.pop(0)
                if not self._events:
                    self._events = ()
                return event
            if self._closed:
                return NEED_DATA
            framed = self._reader.next_event()
            if framed is NEED_DATA:
                return NEED_DATA
            match framed:
                case Line(text):
                    if self._registered:
                        self._chat_line(text)
                    else:
                        self._login_line(text)
                case LineTooLong(limit):
                    self._too_long(limit)
                case ReadQueueExceeded():
                    self._closed = True
                    self._emit(Closed("read queue exceeded"))
                case EndOfStream():
                    self._closed = True
                    self._emit(Closed("connection closed"))

    def data_to_send(self) -> bytes:
        """What the session produced on its own since the last call."""
        if not self._out:
            return b""
        data, self._out = self._out, b""
        return data

    def send(self, event: ev.ServerEvent) -> bytes:
        """`event`, from the chat for this client, as protocol lines.

        Prompts and the welcome move the login dialogue on. Never raises.
        """
        match event:
            case ev.NamePrompt():
                self._prompt = self._name_prompt = event
            case ev.PasswordPrompt():
                self._prompt = event
            case ev.Welcome():
                self._registered = True
                self._prompt = None
            case ev.LoggedIn(name):
                # The password proved the name: in with it. (Nothing to
                # show: the welcome follows.)
                if self._logging_in is not None:
                    self._logging_in = None
                    self._emit(ev.ChooseName(name, True))
                return b""
            case ev.Error() if self._logging_in is not None:
                # The password did not prove the name: back to the name.
                self._logging_in = None
                data = encode_event(event)
                if self._name_prompt is not None:
                    self._prompt = self._name_prompt
                    data += encode_event(self._name_prompt)
                return data
        return encode_event(event)

    # -- before the welcome: the login dialogue ------------------------------

    def _login_line(self, text: str) -> None:
        if self._first_line:
            self._first_line = False
            if looks_like_http(text):
                self._refuse("not-http", NOT_HTTP)
                return
        if not self._counted():
            return
        prompt = self._prompt
        if isinstance(prompt, ev.PasswordPrompt) and prompt.name == "*":
            if text.strip() == "/quit":
                self._refuse("quit", "Bye!")
            else:
                self._emit(ev.ServerPassword(text))
        elif isinstance(prompt, ev.PasswordPrompt) and not _prompt_command(text):
            self._logging_in = prompt.name
            self._prompt = None  # answered: another line waits for the chat
            self._emit(ev.LogIn(prompt.name, text))
        else:
            self._choose(text.strip())

    def _counted(self) -> bool:
        """Count a line at the prompt; False (and refused) past the most."""
        self._attempts += 1
        most = self._limits.max_name_attempts
        if most and self._attempts > most:
            self._refuse("too-many-attempts", f"No valid name in {most} tries; bye.")
            return False
        return True

    def _choose(self, text: str) -> None:
        if not text:
            self._reprompt()  # an empty line: ask again
            return
        if text.startswith("/"):
            request = parse_request(sanitize_text(text))
            if isinstance(request, ev.Quit):
                self._refuse("quit", "Bye!")
                return
            if isinstance(request, ev.Since):  # for the lobby's replay
                self._emit(request)
                return
            if not isinstance(request, ev.Nick):
                self._out += encode_event(
                    ev.Error("not-registered", "Choose a name first.")
                )
                self._reprompt()
                return
            text = request.name
        self._emit(ev.ChooseName(text, False))

    def _reprompt(self) -> None:
        prompt = self._name_prompt if self._prompt is None else self._prompt
        if prompt is not None:
            self._out += encode_event(prompt)

    def _emit(self, event: Event) -> None:
        if isinstance(self._events, list):
            self._events.append(event)
        else:
            self._events = [event]

    def _refuse(self, code: str, text: str) -> None:
        self._closed = True
        self._emit(Refused(code, text))

    # -- after the welcome: chat ---------------------------------------------

    def _chat_line(self, text: str) -> None:
        match self._pastes.line(text, self._now):
            case str() as line:
                request = parse_request(sanitize_text(line))
                self._emit(NOOP if request is None else request)
            case Paste() as paste:
                said = paste_request(paste)
                if said is not None:
                    self._emit(said)
            case PasteError() as error:
                self._paste_error(error)

    def _paste_error(self, error: PasteError | None) -> None:
        if error is not None:
            self._out += encode_event(ev.Error(error.code, error.text))

    def _too_long(self, limit: int) -> None:
        if self._registered:
            self._paste_error(self._pastes.expire(self._now))
            if self._pastes.collecting:
                self._paste_error(self._pastes.line_too_long(limit))
                return
        elif not self._counted():
            return
        self._out += encode_event(
            ev.Error(
                "line-too-long",
                f"Line too long (the most is {limit} bytes); it was not sent.",
            )
        )
        if not self._registered:
            self._reprompt()
