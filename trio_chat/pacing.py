"""Pacing lines within a flood limit: a token bucket, sans-IO.

The server announces its flood limit in HELLO (`flood-burst`, `flood-rate`):
per user, `burst` lines may come at once, then `rate` lines per second; it
delays lines beyond that and drops a user whose backlog grows too long. The
client paces itself with the same kind of bucket, set a little inside that
limit (`client_bucket`), so the server never has to delay (let alone drop)
it. Nothing here reads a clock or waits: the caller passes the time in.
"""

from __future__ import annotations

import math
from typing import Final

#: The client sends at this fraction of the announced rate. Sent lines can
#: reach the server bunched (a delayed packet releases several at once), so
#: the server may count them closer together than they were sent; running
#: 10% slower lets the server's bucket regain what such jitter cost it (0.1 ×
#: rate tokens per second, up to full), so lateness never accumulates over a
#: long run, at a cost no one notices.
RATE_MARGIN: Final = 0.9
#: Burst tokens the client leaves unused: it sends at most burst − 1 lines
#: back to back, so one more line may arrive early, by up to 1 / rate seconds
#: (half a second at 2 lines/s), without the server delaying it. With a burst
#: of 1 nothing can be spared: the client sends one line at a time then.
SPARE_TOKENS: Final = 1


class TokenBucket:
    """A token bucket: `burst` lines at once, then `rate` lines per second.

    It starts full. Each line spends a token; tokens come back at `rate` per
    second, up to `burst`. A `rate` of 0 means no limit: every line may go at
    any time. Times are seconds on any clock that never goes back, passed in
    by the caller.

    Kept as the time at which the bucket is full again (the "theoretical
    arrival time" of the generic cell rate algorithm), so `ready_at` is exact:
    a caller that sleeps until it may then `take` without rounding trouble.

    A line may cost more than one token (a multi-line message does). One
    that costs more than `burst` may go once the bucket is full, and leaves
    it in debt: the lines after it wait until the rate has paid that back.
    """

    __slots__ = ("_full_at", "_interval", "burst", "rate")

    def __init__(self, burst: int, rate: float) -> None:
        """Raises ValueError (a caller's mistake) for a negative or infinite rate,
        or for a limit (rate > 0) with a burst under 1.
        """
        if not (rate >= 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be finite and 0 or more, not {rate}")
        if rate > 0 and burst < 1:
            raise ValueError(f"burst must be at least 1 with a rate, not {burst}")
        self.burst = burst
        self.rate = rate
        self._interval = 1 / rate if rate else 0.0
        self._full_at = -math.inf

    @property
    def limited(self) -> bool:
        """False if every line may go at once (rate 0)."""
        return self.rate > 0

    def ready_at(self, cost: int = 1) -> float:
        """The earliest time the next line, of `cost` tokens, may go (-inf: any)."""
        if not self.limited:
            return -math.inf
        return self._full_at - max(self.burst - cost, 0) * self._interval

    def tokens(self, now: float) -> float:
        """Lines that may go at `now`, fractional (inf without a limit)."""
        if not self.limited:
            return math.inf
        return self.burst - max(0.0, self._full_at - now) / self._interval

    def take(self, now: float, cost: int = 1) -> None:
        """Spend `cost` tokens on a line that goes at `now`.

        Raises ValueError (a caller's mistake) if too few tokens are left,
        that is if `now < ready_at(cost)`.
        """
        if now < self.ready_at(cost):
            raise ValueError(
                f"no token left at {now}: the next line may go at {self.ready_at(cost)}"
            )
        if self.limited:
            self._full_at = max(self._full_at, now) + cost * self._interval


def client_bucket(burst: int, rate: float) -> TokenBucket:
    """The bucket a client paces itself with, inside a server's announced limit.

    `rate` × `RATE_MARGIN`, `burst` − `SPARE_TOKENS` (at least 1). A rate that
    is not a positive, finite number (0: the server has no flood limit) gives
    a bucket that never holds a line back. Never raises: the values come from
    the server, and nonsense from it must not crash the client.
    """
    if not (rate > 0 and math.isfinite(rate)):
        return TokenBucket(0, 0.0)
    return TokenBucket(max(1, burst - SPARE_TOKENS), rate * RATE_MARGIN)
