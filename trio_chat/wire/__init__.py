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
- `send(event)` gives the bytes of a chat event for this client.

`trio_chat.wire.irc` is the IRC session. The line protocol's framing and
requests live in `trio_chat.protocol`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from trio_chat import events as ev
from trio_chat.protocol import NEED_DATA, NeedData

__all__ = ["NEED_DATA", "Closed", "NeedData", "WireSession"]


@dataclasses.dataclass(frozen=True, slots=True)
class Closed:
    """The connection must end: the peer closed its side, or broke a limit.

    `reason` is for the others' leave notice ("connection closed", "read
    queue exceeded"). Whatever the session had to say about it is in
    `data_to_send()` already; nothing follows this event.
    """

    reason: str


class WireSession(Protocol):
    """What a connection needs of a session, whatever the protocol."""

    @property
    def registered(self) -> bool:
        """True once the client is in the chat (until then a deadline runs)."""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; `b""` means it closed its side."""

    def next_event(
        self,
    ) -> ev.Request | ev.LoginRequest | Closed | NeedData:
        """The next request from the peer, or `NEED_DATA`."""

    def data_to_send(self) -> bytes:
        """The bytes the session produced on its own since the last call."""

    def send(self, event: ev.ServerEvent) -> bytes:
        """`event`, from the chat for this client, as bytes (maybe none)."""
