"""Flood control: a token bucket per user, sans-IO (the clock is passed in).

The bucket is `trio_chat.pacing.TokenBucket`, the same one our client paces
itself with.

A user may send `burst` lines at once, then `rate` lines per second. Lines
over the allowance are not dropped but delayed; the connection keeps a
bounded backlog of them, and a user whose backlog grows too long or too old
is dropped for "excess flood" (see `FloodControl`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final, Generic, TypeVar

from trio_chat.pacing import TokenBucket

#: Reason given when a user is dropped for flooding.
EXCESS_FLOOD: Final = "excess flood"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Held(Generic[T]):
    item: T
    since: float
    cost: int


class FloodControl(Generic[T]):
    """Admit items (lines) at the bucket's pace, holding the excess in order.

    `offer` queues an item; `ready` returns the items that may go now, in
    order; `next_time` says when to call `ready` again. `over_limit` turns
    true when more than `max_backlog` items are held or the oldest has waited
    more than `max_delay` seconds (0 switches either check off).
    """

    def __init__(
        self,
        *,
        burst: int,
        rate: float,
        max_backlog: int,
        max_delay: float,
        now: float,
    ) -> None:
        del now  # the bucket starts full whenever it starts
        self._bucket = TokenBucket(burst, rate)
        # A list: it holds at most the backlog limit (20 by default), and a
        # deque's first block alone costs 760 bytes on every connection.
        self._held: list[_Held[T]] | tuple[()] = ()  # a list only when used
        self._max_backlog = max_backlog
        self._max_delay = max_delay

    @property
    def backlog(self) -> int:
        """Items held back."""
        return len(self._held)

    def offer(self, item: T, now: float, *, cost: int = 1) -> None:
        """Queue `item`, which arrived at `now` and costs `cost` tokens.

        An item of several lines (a multi-line message) costs more than one
        line, and may cost more than the burst (see `TokenBucket`).
        """
        if isinstance(self._held, list):
            self._held.append(_Held(item, now, cost))
        else:
            self._held = [_Held(item, now, cost)]

    def admit(self, now: float, *, cost: int = 1) -> bool:
        """Take the tokens for an item arriving at `now`, if it may go at once.

        True only if nothing is held (order is kept) and the bucket allows
        it now; False leaves everything as it was (then `offer` it).
        """
        if self._held or now < self._bucket.ready_at(cost):
            return False
        self._bucket.take(now, cost)
        return True

    def ready(self, now: float) -> list[T]:
        """Items that may go now, oldest first (each takes its tokens)."""
        out: list[T] = []
        held_back = self._held
        if not isinstance(held_back, list):
            return out
        while held_back and now >= self._bucket.ready_at(held_back[0].cost):
            held = held_back.pop(0)
            self._bucket.take(now, held.cost)
            out.append(held.item)
        if not held_back:
            self._held = ()
        return out

    def next_time(self, now: float) -> float:
        """When the next held item may go (`math.inf` if none is held)."""
        if not self._held:
            return math.inf
        return max(now, self._bucket.ready_at(self._held[0].cost))

    def over_limit(self, now: float) -> bool:
        """True if the held items are too many or the oldest waited too long."""
        if not self._held:
            return False
        if self._max_backlog and len(self._held) > self._max_backlog:
            return True
        return bool(self._max_delay) and now - self._held[0].since > self._max_delay
