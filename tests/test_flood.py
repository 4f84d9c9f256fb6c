"""Flood control: the token bucket and the delayed-lines backlog (sans-IO)."""

from __future__ import annotations

import math

import pytest

from trio_chat.flood import FloodControl, TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(burst=5, rate=2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait(0.0) == pytest.approx(0.5)
    assert not bucket.take(0.49)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)


def test_bucket_refills_but_never_past_the_burst() -> None:
    bucket = TokenBucket(burst=3, rate=1.0, now=0.0)
    for _ in range(3):
        assert bucket.take(0.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_rate_zero_means_no_limit() -> None:
    bucket = TokenBucket(burst=1, rate=0.0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(1000))
    assert bucket.wait(0.0) == 0.0


def flood(**overrides: float) -> FloodControl[int]:
    settings: dict[str, float] = {
        "burst": 5,
        "rate": 2.0,
        "max_backlog": 20,
        "max_delay": 10.0,
        "now": 0.0,
    } | overrides
    return FloodControl(**settings)  # type: ignore[arg-type]


def test_excess_lines_are_delayed_in_order_not_dropped() -> None:
    control = flood()
    for number in range(8):
        control.offer(number, 0.0)
    assert control.ready(0.0) == [0, 1, 2, 3, 4]
    assert control.backlog == 3
    assert control.next_time(0.0) == pytest.approx(0.5)
    assert control.ready(0.5) == [5]
    assert control.ready(1.0) == [6]
    assert control.ready(1.5) == [7]
    assert control.next_time(1.5) == math.inf
    assert not control.over_limit(1.5)


def test_backlog_over_the_limit_is_a_flood() -> None:
    control = flood()
    for number in range(26):
        control.offer(number, 0.0)
    control.ready(0.0)  # 5 go, 21 held
    assert control.backlog == 21
    assert control.over_limit(0.0)


def test_a_line_held_too_long_is_a_flood() -> None:
    control = flood(rate=0.05, max_backlog=0)  # one line every 20 s
    for number in range(7):
        control.offer(number, 0.0)
    control.ready(0.0)
    assert not control.over_limit(10.0)
    assert control.over_limit(10.1)


def test_a_paste_of_a_few_lines_goes_at_once() -> None:
    control = flood()
    for number in range(5):
        control.offer(number, 0.0)
    assert control.ready(0.0) == [0, 1, 2, 3, 4]
    assert control.backlog == 0
