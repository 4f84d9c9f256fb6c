"""Every resource limit and timeout, as named constants and one config object.

The constants are the defaults; `Limits` carries the values in force and is
passed down explicitly (no module-level mutable state). The README's limits
table lists each one with its command-line flag.
"""

from __future__ import annotations

import dataclasses
from typing import Final

#: Default TCP port for `serve` and `client` (plain and TLS alike).
DEFAULT_PORT: Final = 7777
#: Default address to listen on / connect to: loopback, safe by default.
DEFAULT_HOST: Final = "127.0.0.1"

#: Longest line a client may send, in bytes before decoding, line ending
#: excluded. Long enough for a pasted paragraph, short enough that a screen of
#: garbage is refused rather than relayed.
MAX_LINE_BYTES: Final = 4096
#: Bytes without a newline after which a connection is dropped: a client that
#: streams endless garbage is not chatting.
MAX_UNTERMINATED_BYTES: Final = 64 * 1024
#: Longest line the server ever sends, CRLF included. Chat text is cut at a
#: character boundary to fit (only lines full of U+FFFD can reach it).
MAX_SERVER_LINE_BYTES: Final = 8192
#: Largest single read from a socket.
RECEIVE_SIZE: Final = 64 * 1024

#: Messages a client's outbox holds before the client counts as too slow.
OUTBOX_MAX_MESSAGES: Final = 1024
#: Bytes a client's outbox holds (by the hub's own accounting): about a
#: minute of busy chat; past it the reader is evicted, nobody else waits.
OUTBOX_MAX_BYTES: Final = 256 * 1024
#: Smallest outbox allowed: the greeting (hello, banner, prompt) and /help
#: are queued at once and must fit.
MIN_OUTBOX_MESSAGES: Final = 16
#: Smallest outbox in bytes: the longest line the server sends must fit.
MIN_OUTBOX_BYTES: Final = MAX_SERVER_LINE_BYTES
#: Most bytes one write to a socket gathers from the outbox.
WRITE_BATCH_BYTES: Final = 64 * 1024

#: A TLS handshake must finish within this many seconds.
TLS_HANDSHAKE_TIMEOUT: Final = 10.0
#: A connection must pick a name within this many seconds of connecting.
NAME_TIMEOUT: Final = 30.0
#: Every write to a peer must complete within this many seconds: a peer that
#: stopped reading (or vanished) does not hold a task and buffers forever.
WRITE_TIMEOUT: Final = 30.0
#: Closing a connection (TLS close_notify included) gets this long before the
#: socket is closed forcefully.
CLOSE_TIMEOUT: Final = 2.0
#: On SIGINT/SIGTERM, connections get this long to receive the shutdown
#: notice before they are closed forcefully.
SHUTDOWN_GRACE: Final = 3.0
#: Pause before retrying accept() when the process is out of file
#: descriptors or memory.
ACCEPT_BACKOFF: Final = 0.1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The limits a server enforces; every field defaults to its constant."""

    max_line_bytes: int = MAX_LINE_BYTES
    max_unterminated_bytes: int = MAX_UNTERMINATED_BYTES
    outbox_max_messages: int = OUTBOX_MAX_MESSAGES
    outbox_max_bytes: int = OUTBOX_MAX_BYTES
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT
    name_timeout: float = NAME_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    shutdown_grace: float = SHUTDOWN_GRACE

    def __post_init__(self) -> None:
        if self.outbox_max_messages < MIN_OUTBOX_MESSAGES:
            raise ValueError(
                f"the outbox must hold at least {MIN_OUTBOX_MESSAGES} messages"
            )
        if self.outbox_max_bytes < MIN_OUTBOX_BYTES:
            raise ValueError(f"the outbox must hold at least {MIN_OUTBOX_BYTES} bytes")
        if self.max_line_bytes < 1:
            raise ValueError("the line limit must be at least 1 byte")
