"""Flood control: the token bucket and the delayed-lines backlog (sans-IO)."""

from __future__ import annotations

import math

import pytest

from trio_chat.flood import FloodControl


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


def test_no_rate_means_no_delay() -> None:
    control = flood(rate=0.0)
    for number in range(1000):
        control.offer(number, 0.0)
    assert len(control.ready(0.0)) == 1000


def test_a_paste_of_a_few_lines_goes_at_once() -> None:
    control = flood()
    for number in range(5):
        control.offer(number, 0.0)
    assert control.ready(0.0) == [0, 1, 2, 3, 4]
    assert control.backlog == 0


def test_admit_lets_a_line_go_at_once_only_within_the_allowance_and_in_order() -> None:
    control = flood()
    assert [control.admit(0.0) for _ in range(6)] == [True] * 5 + [False]
    control.offer(99, 0.0)  # the sixth waits its turn
    assert not control.admit(10.0)  # a later line may not overtake it
    assert control.ready(10.0) == [99]
    assert control.admit(10.0)
    assert flood(rate=0.0).admit(0.0, cost=1000)  # no rate: no limit
