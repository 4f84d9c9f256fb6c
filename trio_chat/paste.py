"""Multi-line messages (pastes), sans-IO: `/paste N` and the N lines after it.

A client sends a paste as the line `/paste N` followed by exactly N lines,
which are taken as they are, as text, never as commands. The server's
reader collects them with a `PasteCollector` into one `Paste`, before flood
control, so the paste is one item there (costing `paste_cost` tokens) and
one event in the chat: the others receive it as a `MSG` line followed by a
`MORE` line for each further line, in one piece, never interleaved with
anyone else's lines. Our client frames a paste with `encode_paste`, split by
`split_paste` to fit the limits the server announced in `HELLO`.

Nothing here reads a clock, waits or logs: the caller passes the time in.
The wire format is documented in docs/PROTOCOL.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Final

from trio_chat import events as ev
from trio_chat.protocol import LINE_END, LocalProtocolError
from trio_chat.sanitize import sanitize_text

#: The command word that starts a paste (compared ignoring case).
PASTE_COMMAND: Final = "/paste"
#: A paste costs one flood token, plus one for every this many lines: much
#: less than its lines would cost one by one (a paste is one message), yet a
#: stream of long pastes is still slowed down like a stream of lines.
LINES_PER_TOKEN: Final = 10
#: Digits accepted in `N`: any longer number is nonsense, not a paste.
_MAX_COUNT_DIGITS: Final = 6


def paste_cost(lines: int) -> int:
    """The flood tokens a paste of `lines` lines costs: 1 + 1 per 10 lines."""
    return 1 + lines // LINES_PER_TOKEN


@dataclasses.dataclass(frozen=True, slots=True)
class Paste:
    """The lines of one multi-line message, as received (not yet sanitised)."""

    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class PasteError:
    """A paste the peer got wrong; `code` and `text` go back in an `ERR` line."""

    code: str
    text: str


def _lines(count: int) -> str:
    return f"{count} line" if count == 1 else f"{count} lines"


class PasteCollector:
    """Collect the lines of each `/paste N` into one `Paste`, in bounded memory.

    Feed every line the peer sends to `line` (after calling `expire`), and
    tell `line_too_long` about a line over the line limit while
    `collecting`. At most `max_lines` lines and `max_bytes` bytes of text
    (UTF-8, line endings excluded) are held; a paste over either limit is
    refused with one `PasteError` and the rest of its N lines are consumed
    and discarded, so they never pass for ordinary lines. A paste whose lines
    have not all arrived `timeout` seconds after its `/paste` line (0: no
    limit) is discarded by `expire`, and the lines after that are ordinary
    lines again. A `max_lines` or `max_bytes` of 0 turns pastes off: `/paste`
    is then refused and nothing is collected.
    """

    # Slots: one per connection.
    __slots__ = (
        "_announced",
        "_bytes",
        "_deadline",
        "_expected",
        "_failed",
        "_lines",
        "_max_bytes",
        "_max_lines",
        "_timeout",
    )

    def __init__(self, *, max_lines: int, max_bytes: int, timeout: float) -> None:
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._timeout = timeout if timeout > 0 else math.inf
        self._expected = 0  # lines still to come in the paste under way
        self._announced = 0  # N of the paste under way
        # A list only while a paste is collected (idle, no list of its own).
        self._lines: list[str] | tuple[()] = ()
        self._bytes = 0
        self._failed = False  # refused already: its lines are discarded
        self._deadline = math.inf

    @property
    def collecting(self) -> bool:
        """True while the lines of a paste are awaited."""
        return self._expected > 0

    @property
    def deadline(self) -> float:
        """When the paste under way times out (`math.inf`: none under way)."""
        return self._deadline if self.collecting else math.inf

    def line(self, text: str, now: float) -> str | Paste | PasteError | None:
        """Take one line from the peer, received at `now`.

        Returns `text` itself if it is an ordinary line (no paste under way,
        and not a `/paste` line); the `Paste` when its last line arrives; a
        `PasteError` for the peer when a `/paste` line is malformed or a
        paste goes over a limit; None when the line was taken into a paste
        (or discarded with a refused one).
        """
        if not self.collecting:
            return self._start(text, now)
        self._expected -= 1
        error = None
        if not self._failed:
            self._bytes += len(text.encode("utf-8"))
            if self._bytes > self._max_bytes:
                self._fail()
                error = PasteError(
                    "paste-too-long",
                    f"A paste may hold at most {self._max_bytes} bytes of text;"
                    " it was not sent.",
                )
            else:
                if isinstance(self._lines, list):
                    self._lines.append(text)
                else:
                    self._lines = [text]
        if self.collecting:
            return error
        if self._failed:
            self._reset()
            return error
        paste = Paste(tuple(self._lines))
        self._reset()
        return paste

    def line_too_long(self, limit: int) -> PasteError | None:
        """A line of the paste under way was over the line limit, `limit` bytes.

        That line counts as one of the N, and the paste is refused: returns
        the error for the peer (None if it was refused already). Call it only
        while `collecting` (otherwise the long line is no paste's business):
        raises `LocalProtocolError` if not.
        """
        if not self.collecting:
            raise LocalProtocolError("line_too_long() with no paste under way")
        self._expected -= 1
        already = self._failed
        self._fail()
        if not self.collecting:
            self._reset()
        if already:
            return None
        return PasteError(
            "paste-too-long",
            f"A line of the paste is over {limit} bytes; the paste was not sent.",
        )

    def expire(self, now: float) -> PasteError | None:
        """Discard the paste under way if its time ran out by `now`.

        Returns the error for the peer (None if nothing expired, or the paste
        had been refused already).
        """
        if not self.collecting or now < self._deadline:
            return None
        announced, failed = self._announced, self._failed
        received = announced - self._expected
        self._reset()
        if failed:
            return None
        return PasteError(
            "paste-timeout",
            f"Only {received} of the paste's {_lines(announced)} arrived"
            f" within {self._timeout:g} seconds; it was not sent.",
        )

    def _start(self, text: str, now: float) -> str | PasteError | None:
        command, _, rest = sanitize_text(text).strip().partition(" ")
        if command.lower() != PASTE_COMMAND:
            return text
        if not (self._max_lines and self._max_bytes):
            return PasteError(
                "bad-paste", "Multi-line messages are off on this server."
            )
        count = rest.strip()
        if (
            not count.isascii()
            or not count.isdigit()
            or len(count) > _MAX_COUNT_DIGITS
            or int(count) < 1
        ):
            return PasteError(
                "bad-paste",
                f"Usage: /paste N, then the N lines (N from 1 to {self._max_lines}).",
            )
        self._expected = self._announced = int(count)
        self._deadline = now + self._timeout
        if self._expected > self._max_lines:
            self._fail()
            return PasteError(
                "paste-too-long",
                f"A paste may have at most {self._max_lines} lines;"
                f" its {self._expected} lines were not sent.",
            )
        return None

    def _fail(self) -> None:
        self._failed = True
        self._lines = ()

    def _reset(self) -> None:
        self._expected = self._announced = 0
        self._lines = ()
        self._bytes = 0
        self._failed = False
        self._deadline = math.inf


def trim_blank_lines(lines: Sequence[str]) -> list[str]:
    """`lines` without the blank (empty or all-space) lines at either end."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return list(lines[start:end])


def paste_request(paste: Paste) -> ev.Say | None:
    """What a paste says: its sanitised lines as one chat message.

    Every line is sanitised (as any line is); blank lines at either end are
    dropped. None if nothing is left; one line left is a plain chat line.
    """
    lines = trim_blank_lines([sanitize_text(line) for line in paste.lines])
    return ev.Say("\n".join(lines)) if lines else None


def split_paste(
    lines: Sequence[str], *, max_lines: int, max_bytes: int
) -> tuple[list[str], list[str]]:
    """The first paste's worth of `lines`, and the rest, for a client.

    The first part has at least one line, at most `max_lines`, and at most
    `max_bytes` bytes of text unless its one line alone is longer.
    """
    size = 0
    taken = 0
    for line in lines[:max_lines]:
        size += len(line.encode("utf-8"))
        if taken and size > max_bytes:
            break
        taken += 1
    taken = max(taken, 1)
    return list(lines[:taken]), list(lines[taken:])


def encode_paste(lines: Sequence[str]) -> bytes:
    """The client lines that send `lines` as one message: `/paste N`, then them."""
    body = b"".join(line.encode("utf-8") + LINE_END for line in lines)
    return f"{PASTE_COMMAND} {len(lines)}".encode() + LINE_END + body
