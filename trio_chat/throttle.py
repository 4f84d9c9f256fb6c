"""Password attempts: counted when they start, spaced per address and per name.

Sans-IO: no trio, no clock of its own (the caller passes the time), no
waiting. `LoginThrottle.begin` says when an attempt may check its password
(the caller waits until then), or that it must not be made now.

The rules, with the limits of `trio_chat.limits`:

* **Counted when it starts.** An attempt counts as a failure, for its
  address and for its name, from the moment it is let through; a right
  password takes its own count back (`succeeded`). Sixty attempts made at
  once are sixty failures before the first hash finishes, not after.
* **The owner is not held up.** An address with no failure in the window
  (`LOGIN_FAILURE_WINDOW`) tries at once, whatever happens to the name
  elsewhere: someone guessing a name from other addresses cannot keep its
  owner out. (The price: each fresh address gets one try at once.)
* **Per address.** After `LOGIN_FREE_FAILURES_PER_ADDRESS` failures, each
  attempt from the address waits for a turn: 1 s after the one before,
  then 2, 4 ... up to `LOGIN_MAX_DELAY`, whatever the names.
* **Per name.** On a name with `LOGIN_FREE_FAILURES_PER_NAME` failures in
  the window, attempts from addresses that have failed also queue for the
  name's turn, spaced the same way: many such addresses together get
  about as many tries at a name as one.
* **Delay, then refuse.** An attempt whose turn is more than `max_wait`
  off is refused at once (`TooSoon`, with how long until a turn may come)
  and not counted: nothing is checked for it.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Final

from trio_chat.limits import (
    LOGIN_BASE_DELAY,
    LOGIN_FAILURE_WINDOW,
    LOGIN_FREE_FAILURES_PER_ADDRESS,
    LOGIN_FREE_FAILURES_PER_NAME,
    LOGIN_MAX_DELAY,
    LOGIN_MAX_WAIT,
    MAX_TRACKED_LOGINS,
)

#: The name the server password is throttled under (no name key is "*").
SERVER_PASSWORD: Final = "*"


@dataclasses.dataclass(slots=True)
class _Record:
    """Recent failures (start times) of one address or name, and its next turn."""

    failures: collections.deque[float] = dataclasses.field(
        default_factory=collections.deque
    )
    next_turn: float = float("-inf")


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt let through: check its password at `start`, not before."""

    start: float
    name: str
    address: str
    counted_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class TooSoon:
    """An attempt refused (and not counted): no turn for `retry_after` seconds."""

    retry_after: float


class LoginThrottle:
    """The password attempts of one server, by address and by name (see above).

    Names are name keys, or `SERVER_PASSWORD`; addresses are admission keys
    (or anything that stands for the peer). Memory is bounded: at most
    `max_tracked` addresses and as many names are remembered.
    """

    def __init__(
        self,
        *,
        window: float = LOGIN_FAILURE_WINDOW,
        free_per_address: int = LOGIN_FREE_FAILURES_PER_ADDRESS,
        free_per_name: int = LOGIN_FREE_FAILURES_PER_NAME,
        base_delay: float = LOGIN_BASE_DELAY,
        max_delay: float = LOGIN_MAX_DELAY,
        max_wait: float = LOGIN_MAX_WAIT,
        max_tracked: int = MAX_TRACKED_LOGINS,
    ) -> None:
        self._window = window
        self._free_per_address = free_per_address
        self._free_per_name = free_per_name
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._max_wait = max_wait
        self._max_tracked = max_tracked
        self._addresses: collections.OrderedDict[str, _Record] = (
            collections.OrderedDict()
        )
        self._names: collections.OrderedDict[str, _Record] = collections.OrderedDict()

    def begin(self, name: str, address: str, now: float) -> Attempt | TooSoon:
        """Count an attempt on `name` from `address` at `now`, or refuse it.

        The Attempt's `start` is `now` or later: the caller waits until then
        before checking the password, and calls `succeeded` if it was right.
        """
        by_address = self._record(self._addresses, address, now)
        by_name = self._record(self._names, name, now)
        failed_here = len(by_address.failures)
        failed_on_name = len(by_name.failures)
        start = now
        if failed_here:
            start = max(start, by_address.next_turn)
            if failed_on_name >= self._free_per_name:
                start = max(start, by_name.next_turn)
        if start - now > self._max_wait:
            return TooSoon(start - now)
        by_address.failures.append(now)
        by_name.failures.append(now)
        by_address.next_turn = max(
            by_address.next_turn,
            start + self._spacing(failed_here + 1, self._free_per_address),
        )
        by_name.next_turn = max(
            by_name.next_turn,
            start + self._spacing(failed_on_name + 1, self._free_per_name),
        )
        return Attempt(start, name, address, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt's password was right: it was not a failure after all."""
        for table, key in (
            (self._addresses, attempt.address),
            (self._names, attempt.name),
        ):
            record = table.get(key)
            if record is not None and attempt.counted_at in record.failures:
                record.failures.remove(attempt.counted_at)

    def failures(self, name: str) -> int:
        """Failures counted on `name` now (for logs and tests)."""
        record = self._names.get(name)
        return 0 if record is None else len(record.failures)

    def _spacing(self, failures: int, free: int) -> float:
        over = failures - free
        if over <= 0:
            return 0.0
        return min(self._max_delay, self._base_delay * 2.0 ** (over - 1))

    def _record(
        self, table: collections.OrderedDict[str, _Record], key: str, now: float
    ) -> _Record:
        record = table.get(key)
        if record is None:
            record = table[key] = _Record()
            while len(table) > self._max_tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        failures = record.failures
        while failures and now - failures[0] > self._window:
            failures.popleft()
        return record
