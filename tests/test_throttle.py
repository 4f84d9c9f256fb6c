"""The password throttle, sans-IO: counted at the start, spaced, never the owner."""

from __future__ import annotations

import pytest

from trio_chat.limits import (
    LOGIN_FAILURE_WINDOW,
    LOGIN_FREE_FAILURES_PER_ADDRESS,
    LOGIN_FREE_FAILURES_PER_NAME,
    LOGIN_MAX_DELAY,
    LOGIN_MAX_WAIT,
)
from trio_chat.throttle import SERVER_PASSWORD, Attempt, LoginThrottle, TooSoon


def starts(
    throttle: LoginThrottle, tries: list[tuple[str, str]], now: float
) -> list[float | TooSoon]:
    """`begin` for each (name, address) at `now`: each start, or TooSoon."""
    outcomes: list[float | TooSoon] = []
    for name, address in tries:
        attempt = throttle.begin(name, address, now)
        outcomes.append(attempt.start if isinstance(attempt, Attempt) else attempt)
    return outcomes


def test_attempts_count_when_they_start_not_when_they_finish() -> None:
    throttle = LoginThrottle()
    for _ in range(3):
        throttle.begin("alice", "10.0.0.1", 0.0)  # none has finished
    assert throttle.failures("alice") == 3


def test_an_address_gets_its_typos_then_waits_doubling_turns() -> None:
    throttle = LoginThrottle()
    outcomes = starts(throttle, [("alice", "10.0.0.1")] * 8, 0.0)
    free = LOGIN_FREE_FAILURES_PER_ADDRESS + 1  # its first try, then its typos
    assert outcomes[:free] == [0.0] * free
    # Then one turn after another: 1 s, then 2 s, 4 s ... later.
    assert outcomes[free:] == [1.0, 3.0, 7.0, 15.0]


def test_a_turn_too_far_off_is_refused_at_once_and_not_counted() -> None:
    throttle = LoginThrottle()
    outcomes = starts(throttle, [("alice", "10.0.0.1")] * 12, 0.0)
    assert isinstance(outcomes[-1], TooSoon)
    refused = outcomes[-1]
    assert LOGIN_MAX_WAIT < refused.retry_after <= LOGIN_MAX_WAIT + LOGIN_MAX_DELAY
    counted = throttle.failures("alice")
    assert counted == sum(not isinstance(o, TooSoon) for o in outcomes)
    # Later, the turn comes.
    assert isinstance(throttle.begin("alice", "10.0.0.1", refused.retry_after), Attempt)


def test_many_addresses_get_about_as_far_with_a_name_as_one() -> None:
    # 60 tries at once from 12 addresses: each fresh address gets one, a
    # few more go before the name is known to be under attack, and then
    # every failing address waits for the name's turn, which is far off.
    throttle = LoginThrottle()
    tries = [("teacher", f"10.0.0.{n % 12}") for n in range(60)]
    outcomes = starts(throttle, tries, 0.0)
    at_once = sum(o == 0.0 for o in outcomes)
    later = [o for o in outcomes if isinstance(o, float) and o > 0.0]
    refused = sum(isinstance(o, TooSoon) for o in outcomes)
    assert at_once <= 12 + LOGIN_FREE_FAILURES_PER_NAME
    assert len(later) <= 2
    assert refused >= 60 - 12 - LOGIN_FREE_FAILURES_PER_NAME - 2
    assert all(start <= LOGIN_MAX_WAIT for start in later)


def test_the_owner_from_an_address_that_has_not_failed_is_never_held_up() -> None:
    throttle = LoginThrottle()
    for n in range(60):
        throttle.begin("teacher", f"10.0.0.{n % 12}", 0.0)
    assert throttle.begin("teacher", "192.0.2.7", 0.5) == Attempt(
        0.5, "teacher", "192.0.2.7", 0.5
    )


def test_a_right_password_takes_its_count_back() -> None:
    throttle = LoginThrottle()
    for second in range(10):  # the owner logs in every day, right each time
        attempt = throttle.begin("alice", "10.0.0.1", float(second))
        assert isinstance(attempt, Attempt) and attempt.start == second
        throttle.succeeded(attempt)
    assert throttle.failures("alice") == 0


def test_failures_are_forgotten_after_the_window() -> None:
    throttle = LoginThrottle()
    starts(throttle, [("alice", "10.0.0.1")] * 12, 0.0)
    later = LOGIN_FAILURE_WINDOW + LOGIN_MAX_DELAY * 20
    assert throttle.begin("alice", "10.0.0.1", later) == Attempt(
        later, "alice", "10.0.0.1", later
    )
    assert throttle.failures("alice") == 1


def test_the_server_password_is_throttled_the_same_way() -> None:
    throttle = LoginThrottle()
    outcomes = starts(throttle, [(SERVER_PASSWORD, "10.0.0.1")] * 200, 0.0)
    checked = [o for o in outcomes if not isinstance(o, TooSoon)]
    # Today 200 a minute; now a handful, then a turn a minute at most.
    assert len(checked) <= LOGIN_FREE_FAILURES_PER_ADDRESS + 1 + 5
    # Wrong server passwords from elsewhere do not keep a fresh address out.
    assert throttle.begin(SERVER_PASSWORD, "10.0.0.2", 0.0) == Attempt(
        0.0, SERVER_PASSWORD, "10.0.0.2", 0.0
    )


@pytest.mark.parametrize("tracked", [1, 3])
def test_memory_is_bounded(tracked: int) -> None:
    throttle = LoginThrottle(max_tracked=tracked)
    for n in range(100):
        throttle.begin(f"name{n}", f"10.0.{n}.1", 0.0)
    assert len(throttle._names) == tracked
    assert len(throttle._addresses) == tracked
