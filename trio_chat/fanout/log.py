"""A room's log: every line said there, once, read by its members' cursors.

An entry is appended once, with a sequence number from one counter for the
whole server (`Sequence`): a member reads several logs (its rooms' and its
own) and merges them in that order, so what it hears is one sequence.
Entries are encoded lazily, once per wire format that someone reading the
log speaks, and the encoded lines are shared by every reader: a line costs
the same whoever receives it.

The log is trimmed behind its slowest reader (and behind the history it
keeps for replay, `History`), so its memory is bounded by how far behind a
member may fall before it is evicted. Positions are absolute indexes that
never go back, so the log stands behind a small interface that a stream in
another store (a Redis stream, later) can implement too.

Sans-IO: no trio, no clock, no logging.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from trio_chat import events as ev

if TYPE_CHECKING:
    from trio_chat.fanout.reader import Cursor

#: Turns an event into the bytes of one wire format.
Encoder = Callable[[ev.ServerEvent], bytes]

#: Entries a log holds beyond what it must before it is trimmed: trimming
#: walks the readers, so it is done in steps, not per line.
TRIM_SLACK: Final = 256


class Sequence:
    """The server's one counter of entries: every log's order in one.

    Numbers go up by 2, so that a line meant for one member only can be
    placed just before or after a shared one (`Log.append_at`).
    """

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        self._counter = itertools.count(2, 2)

    def next(self) -> int:
        """The next number (even, greater than every one given before)."""
        return next(self._counter)


class Encoded:
    """One wire format's lines of a log, with the running total of bytes."""

    __slots__ = ("ends", "lines", "origin")

    def __init__(self, origin: int) -> None:
        # Lists once there are lines (a member's own log is empty most of
        # the time: an empty list of its own would cost it 56 bytes each).
        self.lines: list[bytes] | tuple[()] = ()
        #: Bytes of all entries up to and including each one, counted from
        #: the log's first entry ever (trimmed ones included).
        self.ends: list[int] | tuple[()] = ()
        #: Bytes of the entries trimmed away.
        self.origin = origin

    def end(self, index: int) -> int:
        """Running total up to and including the entry at list index `index`."""
        return self.ends[index] if index >= 0 else self.origin


def _lists(encoded: Encoded) -> tuple[list[bytes], list[int]]:
    """`encoded`'s lines and their ends, as lists (made if need be)."""
    lines, ends = encoded.lines, encoded.ends
    if isinstance(lines, list) and isinstance(ends, list):
        return lines, ends
    new_lines: list[bytes] = []
    new_ends: list[int] = []
    encoded.lines, encoded.ends = new_lines, new_ends
    return new_lines, new_ends


class Entries:
    """What every log has: entries' sequence numbers, from `base` on.

    `base` is the absolute index of the first entry held; `head` the index
    the next entry will get.
    """

    __slots__ = ("base", "seqs")

    def __init__(self) -> None:
        self.base = 0
        self.seqs: list[int] | tuple[()] = ()  # a list once there are entries

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def head(self) -> int:
        """The absolute index of the next entry."""
        return self.base + len(self.seqs)

    def encoded(self, encoder: Encoder) -> Encoded:
        """Every entry held, in `encoder`'s format."""
        raise NotImplementedError

    def size(self, encoded: Encoded, start: int, stop: int) -> int:
        """Bytes of the absolute entries `start` to `stop` (excluded)."""
        base = self.base
        return encoded.end(stop - 1 - base) - encoded.end(start - 1 - base)

    def trim(self, upto: int) -> None:
        """Forget the entries before absolute index `upto`."""
        raise NotImplementedError

    def clear(self) -> None:
        """Forget every entry (all were read)."""
        self.trim(self.head)


class OwnLog(Entries):
    """A member's own log: one reader, one format, lines given encoded.

    (Replies, private lines, history: the small log every member has, so
    it holds no events, no senders and no other readers.)
    """

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        super().__init__()
        self._lines = Encoded(0)

    def append_data(self, seq: int, data: bytes) -> int:
        """Add `data` as entry number `seq`; return its absolute index."""
        lines = self._lines
        end = lines.end(len(lines.ends) - 1) + len(data)
        if isinstance(self.seqs, list):
            self.seqs.append(seq)
        else:
            self.seqs = [seq]
        if isinstance(lines.lines, list) and isinstance(lines.ends, list):
            lines.lines.append(data)
            lines.ends.append(end)
        else:
            lines.lines, lines.ends = [data], [end]
        return self.base + len(self.seqs) - 1

    def encoded(self, encoder: Encoder) -> Encoded:
        """The lines (in the one format there is)."""
        return self._lines

    def trim(self, upto: int) -> None:
        """Forget the entries before absolute index `upto`."""
        count = min(upto - self.base, len(self.seqs))
        if count <= 0:
            return
        lines = self._lines
        lines.origin = lines.ends[count - 1]
        self.base += count
        if count == len(self.seqs):  # all read (the usual case): no lists
            self.seqs = lines.lines = lines.ends = ()
            return
        assert isinstance(self.seqs, list)
        assert isinstance(lines.lines, list) and isinstance(lines.ends, list)
        del self.seqs[:count]
        del lines.lines[:count]
        del lines.ends[:count]


class Log(Entries):
    """A room's entries in order: sequence numbers, events, sender keys.

    Readers register their cursors in `readers`.
    """

    __slots__ = ("_encoded", "events", "readers", "senders")

    def __init__(self) -> None:
        super().__init__()
        self.seqs: list[int] = []
        #: The event of each entry.
        self.events: list[ev.ServerEvent] = []
        #: The name key of who said each entry, for those who /ignore them.
        self.senders: list[str | None] = []
        self._encoded: dict[Encoder, Encoded] = {}
        self.readers: dict[Cursor, None] = {}

    def append(
        self, seq: int, event: ev.ServerEvent, sender_key: str | None = None
    ) -> int:
        """Add `event` as entry number `seq`; return its absolute index."""
        self.seqs.append(seq)
        self.events.append(event)
        self.senders.append(sender_key)
        return self.base + len(self.seqs) - 1

    def encoded(self, encoder: Encoder) -> Encoded:
        """Every entry held, in `encoder`'s format (encoding what is new)."""
        encoded = self._encoded.get(encoder)
        if encoded is None:
            encoded = self._encoded[encoder] = Encoded(0)
        count = len(encoded.lines)
        events = self.events
        if count < len(events):
            lines, ends = _lists(encoded)
            total = encoded.end(count - 1)
            for event in itertools.islice(events, count, None):
                data = encoder(event)
                lines.append(data)
                total += len(data)
                ends.append(total)
        return encoded

    def trim(self, upto: int) -> None:
        """Forget the entries before absolute index `upto`."""
        count = upto - self.base
        if count <= 0:
            return
        count = min(count, len(self.seqs))
        del self.seqs[:count]
        del self.events[:count]
        del self.senders[:count]
        for encoded in self._encoded.values():
            done = min(count, len(encoded.lines))
            if done:
                encoded.origin = encoded.ends[done - 1]
                lines, ends = _lists(encoded)
                del lines[:done]
                del ends[:done]
        self.base += count

    def slowest(self) -> int:
        """The position of the reader furthest behind (the head if none)."""
        head = self.head
        return min((cursor.pos for cursor in self.readers), default=head)

    def entries(self, start: int) -> Iterator[tuple[int, ev.ServerEvent]]:
        """(absolute index, event) from `start` to the head."""
        first = max(start, self.base) - self.base
        for index in range(first, len(self.events)):
            yield self.base + index, self.events[index]
