"""A member's side of fan-out: cursors into logs, and writing what is new.

A `Reader` has a cursor in each log it reads: its rooms' and a small one of
its own (replies, private messages, history). `flush` gathers everything
from its cursors to the heads, in the server's one order (entries' sequence
numbers), and hands it to its `Sink` in one non-blocking call; the cursors
then move by what the sink took. Nothing is copied per reader: a room's
lines are the same bytes for everyone.

Slow means behind, after writing: a reader is evicted only when, after the
sink took what it would, it is still more than its bound behind the heads
(in bytes or in lines), and the server evicts one that made no progress for
its write timeout. A burst that a reader drains in time never evicts it,
however it comes.

Sans-IO: no trio, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final, Protocol

from trio_chat.fanout.log import Encoded, Encoder, Entries, Log, OwnLog

#: Eviction reason for a reader too far behind.
SEND_QUEUE_EXCEEDED: Final = "send queue exceeded"

#: Most buffers one write hands the kernel (`sendmsg` takes at most 1024).
WRITE_BATCH_BUFFERS: Final = 512
#: Most bytes one write gathers; a reader behind by more writes again.
WRITE_BATCH_BYTES: Final = 256 * 1024
#: Writes one flush makes before leaving the rest to the next pass, so one
#: reader with a deep backlog and a fast socket cannot hog a pass.
WRITES_PER_FLUSH: Final = 4

Buffer = bytes | memoryview


#: Whom a new reader ignores: shared (an empty frozenset of its own would
#: cost every member 216 bytes).
_NOBODY: Final[frozenset[str]] = frozenset()


class SinkError(Exception):
    """The peer is gone (reset, broken pipe): `str(error)` says why."""


class Sink(Protocol):
    """Where a reader's bytes go: a socket, or what stands for one."""

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        """Send what the kernel takes now of `buffers`, in order; never wait.

        Returns the bytes taken (0 if none fit). Raises SinkError if the
        peer is gone.
        """

    @property
    def holding(self) -> bool:
        """True if the sink holds bytes it took but could not pass on yet.

        (TLS records the kernel did not take, a batch a task is sending.)
        The reader then waits as if refused, so someone sees them out.
        """


class Cursor:
    """A reader's place in one log.

    `pos` is the absolute index of the next entry to send and `offset` the
    bytes of it already sent. `skip` holds absolute indexes (sorted, all at
    or after `pos`) this reader does not hear: its own lines, lines of
    people it ignores, presence it learnt otherwise. `until`, once set, is
    where the cursor stops (the reader left the room: what was said before
    still reaches it).
    """

    __slots__ = ("log", "offset", "pos", "reader", "scanned", "skip", "until")

    def __init__(self, log: Entries, reader: Reader, pos: int) -> None:
        self.log = log
        self.reader = reader
        self.pos = pos
        self.offset = 0
        #: A list once there is something to skip (most readers' cursors
        #: never have: an empty list of their own would cost each 56 bytes).
        self.skip: list[int] | tuple[()] = ()
        self.until: int | None = None
        self.scanned = pos  # entries checked against the reader's ignores

    def end(self) -> int:
        """Where this cursor's reading ends now."""
        head = self.log.head
        return head if self.until is None or self.until > head else self.until

    def settle(self) -> None:
        """Forget skips behind the cursor, and step over those at it."""
        skip = self.skip
        if not isinstance(skip, list):
            return
        if skip[0] < self.pos:
            del skip[: bisect.bisect_left(skip, self.pos)]
        if not self.offset:
            count = 0
            pos = self.pos
            while count < len(skip) and skip[count] == pos:
                count += 1
                pos += 1
            if count:
                del skip[:count]
                self.pos = pos
        if not skip:
            self.skip = ()


#: A run of consecutive entries of one cursor: (cursor, start, stop).
_Segment = tuple[Cursor, int, int]


class Owner(Protocol):
    """Who serves a reader (its connection), told what needs its tasks."""

    def blocked(self) -> None:
        """The sink refused data: wait for it to take more, then `flush`
        again (and clear `blocked`). Called once per refusal; never waits."""

    def evicted(self, reason: str) -> None:
        """The reader was evicted (too far behind, its sink failed): end
        the connection. Called once; never waits."""


class Reader:
    """One member's reading of its logs, and its writes to its sink."""

    __slots__ = (
        "blocked",
        "closed",
        "cursors",
        "ignoring",
        "max_bytes",
        "max_lines",
        "more",
        "own",
        "owner",
        "sent_total",
        "shared",
        "sink",
    )

    def __init__(
        self,
        *,
        shared: Encoder,
        max_bytes: int,
        max_lines: int,
        owner: Owner | None = None,
        sink: Sink | None = None,
    ) -> None:
        #: Encodes the lines of the room logs read (shared by every reader
        #: with the same encoder).
        self.shared = shared
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        #: Replies and private lines: a log with this reader alone.
        self.own = OwnLog()
        #: A cursor per log read, its own log's first (a list, not a dict
        #: by log: a few of them, and a dict costs twice as much per member).
        self.cursors: list[Cursor] = [Cursor(self.own, self, 0)]
        #: Name keys whose lines this reader does not hear.
        self.ignoring: set[str] | frozenset[str] = _NOBODY
        self.sink = sink
        #: Told when the sink refused data, and when this reader is evicted.
        self.owner = owner
        self.blocked = False
        #: `flush` stopped with more waiting that the sink would take: flush
        #: again at the next pass (one reader cannot hog a pass).
        self.more = False
        self.closed = False
        self.sent_total = 0  # bytes the sink has taken, ever

    def _blocked(self) -> None:
        if self.owner is not None:
            self.owner.blocked()

    # -- following logs -----------------------------------------------------

    def follow(self, log: Log) -> Cursor:
        """Start reading `log` at its head (what comes from now on)."""
        cursor = self.cursor(log)
        if cursor is not None:
            # Back before the lines said while it was there reached it: what
            # was said while it was away is not for it.
            assert cursor.until is not None
            for index in range(max(cursor.until, cursor.pos), log.head):
                self.skip(log, index)
            cursor.until = None
            return cursor
        cursor = Cursor(log, self, log.head)
        self.cursors.append(cursor)
        log.readers[cursor] = None
        return cursor

    def cursor(self, log: Entries) -> Cursor | None:
        """This reader's cursor in `log`, if it reads it."""
        for cursor in self.cursors:
            if cursor.log is log:
                return cursor
        return None

    def unfollow(self, log: Log) -> None:
        """Stop reading `log` once what is in it now has reached this reader."""
        cursor = self.cursor(log)
        if cursor is None:
            return
        cursor.until = log.head
        if cursor.pos >= cursor.until:
            self._forget(cursor)

    def _forget(self, cursor: Cursor) -> None:
        self.cursors.remove(cursor)
        if isinstance(cursor.log, Log):
            cursor.log.readers.pop(cursor, None)

    def skip(self, log: Entries, index: int) -> None:
        """Do not send this reader the entry at absolute `index` of `log`."""
        cursor = self.cursor(log)
        if cursor is not None and index >= cursor.pos:
            skip = cursor.skip
            if not isinstance(skip, list):
                cursor.skip = [index]
            elif skip[-1] < index:
                skip.append(index)
            elif index not in skip:
                bisect.insort(skip, index)

    # -- what is waiting ----------------------------------------------------

    def _scan_ignored(self, cursor: Cursor) -> None:
        """Skip what people this reader ignores said since the last scan."""
        log = cursor.log
        if not isinstance(log, Log):
            return  # its own lines: nobody else's
        stop = cursor.end()
        start = max(cursor.scanned, cursor.pos, log.base)
        if start < stop:
            ignoring = self.ignoring
            senders = log.senders
            base = log.base
            for index in range(start, stop):
                if senders[index - base] in ignoring:
                    self.skip(log, index)
        cursor.scanned = stop

    def behind(self) -> tuple[int, int]:
        """(bytes, lines) not yet taken by the sink, in every log."""
        total = lines = 0
        encode = self.shared
        for cursor in self.cursors:
            stop = cursor.end()
            if cursor.pos >= stop:
                continue
            log = cursor.log
            encoded = log.encoded(encode)
            total += log.size(encoded, cursor.pos, stop) - cursor.offset
            lines += stop - cursor.pos
            for index in cursor.skip:
                if index >= stop:
                    break
                if index >= cursor.pos:
                    total -= log.size(encoded, index, index + 1)
                    lines -= 1
        return total, lines

    def over_bound(self) -> bool:
        """True if this reader is further behind than it may be."""
        size, lines = self.behind()
        return size > self.max_bytes or lines > self.max_lines

    def _segments(self, max_buffers: int) -> list[_Segment]:
        """The next runs of entries to send, in sequence order."""
        active: list[Cursor] = []
        for cursor in list(self.cursors):
            if self.ignoring:
                self._scan_ignored(cursor)
            cursor.settle()
            if cursor.pos < cursor.end():
                active.append(cursor)
            elif cursor.until is not None:
                self._forget(cursor)
        segments: list[_Segment] = []
        if not active:
            return segments
        budget = max_buffers
        if len(active) == 1:
            cursor = active[0]
            self._runs(cursor, cursor.pos, cursor.end(), segments, budget)
            return segments
        # Several logs: merge by sequence number, a run at a time.
        place = {cursor: cursor.pos for cursor in active}
        while place and budget > 0:
            first = min(place, key=lambda c: c.log.seqs[place[c] - c.log.base])
            start = place[first]
            stop = first.end()
            log = first.log
            others = [
                c.log.seqs[place[c] - c.log.base] for c in place if c is not first
            ]
            if others:
                limit = min(others)
                stop = log.base + bisect.bisect_left(
                    log.seqs, limit, start - log.base, stop - log.base
                )
            budget = self._runs(first, start, stop, segments, budget)
            if stop >= first.end() or budget <= 0:
                del place[first]
            else:
                place[first] = stop
        return segments

    @staticmethod
    def _runs(
        cursor: Cursor,
        start: int,
        stop: int,
        segments: list[_Segment],
        budget: int,
    ) -> int:
        """Append the runs of `cursor` in [start, stop) around its skips.

        Returns the budget (in entries) left.
        """
        skip = cursor.skip
        at = bisect.bisect_left(skip, start) if skip else 0
        while start < stop and budget > 0:
            while at < len(skip) and skip[at] == start:
                start += 1
                at += 1
            if start >= stop:
                break
            run_stop = skip[at] if at < len(skip) and skip[at] < stop else stop
            run_stop = min(run_stop, start + budget)
            segments.append((cursor, start, run_stop))
            budget -= run_stop - start
            start = run_stop
        return budget

    def _buffers(self, segments: list[_Segment]) -> tuple[list[Buffer], int]:
        """The bytes of `segments`, and their size."""
        buffers: list[Buffer] = []
        size = 0
        encode = self.shared
        for cursor, start, stop in segments:
            log = cursor.log
            encoded = log.encoded(encode)
            base = log.base
            first = len(buffers)
            buffers.extend(encoded.lines[start - base : stop - base])
            size += log.size(encoded, start, stop)
            if start == cursor.pos and cursor.offset:
                buffers[first] = memoryview(buffers[first])[cursor.offset :]
                size -= cursor.offset
        return buffers, size

    def _advance(self, segments: list[_Segment], taken: int) -> None:
        """Move the cursors over the first `taken` bytes of `segments`."""
        encode = self.shared
        for cursor, start, stop in segments:
            log = cursor.log
            encoded: Encoded = log.encoded(encode)
            offset = cursor.offset if start == cursor.pos else 0
            size = log.size(encoded, start, stop) - offset
            if taken >= size:
                taken -= size
                cursor.pos = stop
                cursor.offset = 0
                continue
            if taken > 0:
                base = log.base
                target = encoded.end(start - 1 - base) + offset + taken
                index = bisect.bisect_right(
                    encoded.ends, target, start - base, stop - base
                )
                cursor.pos = base + index
                cursor.offset = target - encoded.end(index - 1)
            break
        for cursor in list(self.cursors):
            cursor.settle()
            if cursor.until is not None and cursor.pos >= cursor.until:
                self._forget(cursor)
        own = self.own
        cursor = self.cursors[0]
        if cursor.pos == own.head and len(own) and not cursor.offset:
            own.clear()

    # -- writing ------------------------------------------------------------

    def take(self, max_bytes: int = WRITE_BATCH_BYTES) -> bytes:
        """Everything waiting (up to about `max_bytes`), as taken by the sink.

        For a writer that waits itself (a stream without a non-blocking
        send) and for tests: the cursors move past what is returned.
        """
        segments = self._segments(WRITE_BATCH_BUFFERS)
        buffers, size = self._buffers(segments)
        if size > max_bytes:
            kept: list[Buffer] = []
            size = 0
            for buffer in buffers:
                if kept and size + len(buffer) > max_bytes:
                    break
                kept.append(buffer)
                size += len(buffer)
            buffers = kept
        self._advance(segments, size)
        self.sent_total += size
        return b"".join(buffers)

    def flush(self) -> str | None:
        """Write what is waiting, as far as the sink takes it now.

        Returns None, or why this reader must be evicted: it is still over
        its bound after writing (`SEND_QUEUE_EXCEEDED`), or its sink failed
        (the `SinkError`'s text). While `blocked` (someone waits for the
        sink), or without a sink, nothing is written and only the bound is
        checked. A closed reader still writes what waits.
        """
        sink = self.sink
        if sink is None or self.blocked:
            return SEND_QUEUE_EXCEEDED if self.over_bound() else None
        fast = self._one_run()
        if fast is not None:
            return fast if fast else None
        for _ in range(WRITES_PER_FLUSH):
            segments = self._segments(WRITE_BATCH_BUFFERS)
            if not segments:
                return None
            buffers, size = self._buffers(segments)
            try:
                taken = sink.send_now(buffers)
            except SinkError as exc:
                return str(exc)
            if taken:
                self._advance(segments, taken)
                self.sent_total += taken
            if taken < size or sink.holding:
                self.blocked = True
                self._blocked()
                break
        else:  # the sink took all it was given: the rest at the next flush
            self.more = bool(self._segments(1))
        return SEND_QUEUE_EXCEEDED if self.over_bound() else None

    def _one_run(self) -> str | None:
        """The usual flush, made quick: one log has something new, and that
        is one run of whole lines (nothing skipped, no line half out).

        Returns None if that is not so (the general way then), "" if the
        sink took it all, else what `flush` returns.
        """
        found: Cursor | None = None
        for cursor in self.cursors:
            if cursor.pos < cursor.end():
                if found is not None:
                    return None
                found = cursor
        if found is None:
            return ""  # nothing new
        if found.skip or found.offset or found.until is not None or self.ignoring:
            return None
        log = found.log
        start = found.pos
        stop = log.head
        if stop - start > WRITE_BATCH_BUFFERS:
            return None
        encoded = log.encoded(self.shared)
        base = log.base
        size = encoded.ends[stop - 1 - base] - encoded.end(start - 1 - base)
        sink = self.sink
        assert sink is not None
        try:
            taken = sink.send_now(encoded.lines[start - base : stop - base])
        except SinkError as exc:
            return str(exc)
        if taken == size and not sink.holding:
            found.pos = stop
            self.sent_total += taken
            if log is self.own:
                log.clear()
            return ""
        if taken:
            self._advance([(found, start, stop)], taken)
            self.sent_total += taken
        self.blocked = True
        self._blocked()
        return SEND_QUEUE_EXCEEDED if self.over_bound() else ""

    @property
    def waiting(self) -> bool:
        """True if anything is not yet taken by the sink."""
        return self.behind()[1] > 0

    @property
    def mid_line(self) -> bool:
        """True if part of a line is out: nothing else may be written now."""
        return any(cursor.offset for cursor in self.cursors)

    def drop_everything(self) -> None:
        """Stop reading every log (evicted or gone): its memory comes back."""
        for cursor in self.cursors[1:]:
            self._forget(cursor)
        self.own.clear()
        own_cursor = self.cursors[0]
        own_cursor.pos = self.own.head
        own_cursor.offset = 0
        own_cursor.skip = ()
