"""Wire sessions: one sans-IO session per protocol a client may speak.

A session turns the bytes one client sends into requests for the chat
(`trio_chat.events`) and the chat's events for that client into bytes, in
the manner of h11's `Connection`: it imports no trio, ssl or socket, reads
no clock and logs nothing. The connection that owns it moves bytes between
its socket and the session, and requests between the session and the chat:

- `receive_data(data)` feeds what arrived (`b""`: the peer closed its side);
- `next_event()` gives the next request, or `NEED_DATA` when the bytes fed
  so far hold no more (call it until then before feeding more, so that
  what is buffered stays bounded);
- `data_to_send()` gives the bytes the session produced on its own (answers
  it gives without the chat, errors for bad input): write them out;
- `send(event)` gives the bytes of a chat event for this client;
- `tick(now)` tells it the time (it reads no clock), and `deadline` when it
  next needs telling (a paste under way times out).

`trio_chat.wire.line` is the line protocol's session (its framing and
requests are in `trio_chat.protocol`), `trio_chat.wire.irc` the IRC one.
"""

from __future__ import annotations

import dataclasses
from typing import Final, Protocol

from trio_chat import events as ev
from trio_chat.protocol import NEED_DATA, NeedData

__all__ = ["NEED_DATA", "NOOP", "Closed", "NeedData", "Noop", "Refused", "WireSession"]


@dataclasses.dataclass(frozen=True, slots=True)
class Closed:
    """The connection must end: the peer closed its side, or broke a limit.

    `reason` is for the others' leave notice ("connection closed", "read
    queue exceeded"). Whatever the session had to say about it is in
    `data_to_send()` already; nothing follows this event.
    """

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """The session will not go on before the client is in: the connection
    says goodbye (`code`, `text`) and closes, with no leave notice (the peer
    never joined). An HTTP request on a chat port, `/quit` at the prompt,
    too many tries at a name.
    """

    code: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Noop:
    """A line of a client's that asks the chat for nothing: blank, or one
    the session answered itself (an IRC PING, a malformed command). It
    counts against the flood allowance all the same, as every line a
    client sends does, so no stream of such lines goes unthrottled.
    """


#: The one `Noop` (it carries nothing).
NOOP: Final = Noop()


class WireSession(Protocol):
    """What a connection needs of a session, whatever the protocol."""

    @property
    def keepalive(self) -> bool:
        """The server pings the client when it is silent (`ping`)."""

    @property
    def shared_replay(self) -> bool:
        """History replayed to the client is the same bytes for every client
        of this protocol (so a replay is encoded once for all who join)."""

    @property
    def certificate_login(self) -> bool:
        """A client certificate naming an account logs the client in at
        once, before anything is read (else its first login request does)."""

    @property
    def awaiting_pong(self) -> bool:
        """True while a PING sent by `ping` is unanswered."""

    @property
    def deadline(self) -> float:
        """When `tick` must next be called (math.inf: no need)."""

    def ping(self, token: str) -> bool:
        """Ask the peer for an answer; False if one is still awaited."""

    def tick(self, now: float) -> None:
        """The time is `now` (for what the session times itself)."""

    @property
    def registered(self) -> bool:
        """True once the client is in the chat (until then a deadline runs)."""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; `b""` means it closed its side."""

    def next_event(
        self,
    ) -> ev.Request | ev.LoginRequest | ev.Since | Noop | Closed | Refused | NeedData:
        """The next request from the peer, or `NEED_DATA`."""

    def data_to_send(self) -> bytes:
        """The bytes the session produced on its own since the last call."""

    def send(self, event: ev.ServerEvent) -> bytes:
        """`event`, from the chat for this client, as bytes (maybe none)."""
