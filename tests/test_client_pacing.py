"""Client-side pacing: the token bucket, and the client within a flood limit.

The bucket is checked as plain tables of (send attempts -> send times) and,
with Hypothesis, against a server-side bucket that sees the client's lines
with network jitter. The client runs against a scripted server under
`autojump_clock` (so pacing costs no real time), and once against the real
server with a fast flood rate.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from chatpeer import Peer
from hypothesis import given
from hypothesis import strategies as st
from test_client import ClientRun, FakeNetwork, RecordingUI, ServerEnd, serving

from trio_chat.client import ClientConfig, GuestClient, run_with_input
from trio_chat.limits import Limits
from trio_chat.pacing import RATE_MARGIN, SPARE_TOKENS, TokenBucket, client_bucket

#: Ceiling for a whole test (virtual time under autojump_clock).
TEST_TIMEOUT = 120.0
#: Float slack when comparing times computed along different paths.
EPSILON = 1e-9


def schedule(bucket: TokenBucket, attempts: list[float]) -> list[float]:
    """When each line goes if line i is wanted at attempts[i], in order."""
    sent: list[float] = []
    for wanted in attempts:
        at = max(wanted, bucket.ready_at(), sent[-1] if sent else -math.inf)
        bucket.take(at)
        sent.append(at)
    return sent


# --------------------------------------------------------------------------
# The bucket, as tables


@pytest.mark.parametrize(
    ("burst", "rate", "attempts", "sent"),
    [
        # The burst goes at once, then one line per 1/rate seconds.
        (5, 2.0, [0.0] * 8, [0.0] * 5 + [0.5, 1.0, 1.5]),
        (1, 4.0, [0.0] * 3, [0.0, 0.25, 0.5]),
        # Lines spaced at the rate or slower never wait.
        (2, 1.0, [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]),
        # Quiet time refills the bucket, but never beyond the burst.
        (3, 1.0, [0.0] * 3 + [10.0] * 4, [0.0] * 3 + [10.0] * 3 + [11.0]),
        # Half a refill: 1.5 tokens after 1.5 s, so one goes at once.
        (3, 1.0, [0.0] * 3 + [1.5] * 3, [0.0] * 3 + [1.5, 2.0, 3.0]),
        # Rate 0: no limit at all.
        (0, 0.0, [0.0] * 100, [0.0] * 100),
    ],
)
def test_bucket_schedule(
    burst: int, rate: float, attempts: list[float], sent: list[float]
) -> None:
    assert schedule(TokenBucket(burst, rate), attempts) == pytest.approx(sent)


def test_bucket_tokens_refill_up_to_the_burst() -> None:
    bucket = TokenBucket(5, 2.0)
    assert bucket.tokens(0.0) == 5
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.tokens(0.0) == 0
    assert bucket.ready_at() == 0.5
    assert bucket.tokens(1.0) == pytest.approx(2.0)
    assert bucket.tokens(1000.0) == 5  # never more than the burst
    assert TokenBucket(0, 0.0).tokens(0.0) == math.inf
    assert not TokenBucket(0, 0.0).limited


def test_bucket_refuses_a_line_without_a_token() -> None:
    bucket = TokenBucket(1, 1.0)
    bucket.take(0.0)
    with pytest.raises(ValueError, match="no token"):
        bucket.take(0.5)
    bucket.take(1.0)


@pytest.mark.parametrize(
    ("burst", "rate"), [(5, -1.0), (5, math.inf), (5, math.nan), (0, 2.0)]
)
def test_bucket_rejects_nonsense(burst: int, rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(burst, rate)


@pytest.mark.parametrize(
    ("announced", "paced"),
    [
        ((5, 2.0), (5 - SPARE_TOKENS, 2.0 * RATE_MARGIN)),
        ((1, 2.0), (1, 2.0 * RATE_MARGIN)),  # nothing to spare
        ((0, 0.0), (0, 0.0)),  # the server has no flood limit
        # Nonsense from a server means no limit, never a crash.
        ((5, -2.0), (0, 0.0)),
        ((5, math.nan), (0, 0.0)),
        ((5, math.inf), (0, 0.0)),
        ((-3, 2.0), (1, 2.0 * RATE_MARGIN)),
    ],
)
def test_client_bucket_stays_inside_the_announced_limit(
    announced: tuple[int, float], paced: tuple[int, float]
) -> None:
    bucket = client_bucket(*announced)
    assert (bucket.burst, bucket.rate) == pytest.approx(paced)


@given(
    burst=st.integers(min_value=2, max_value=10),
    rate=st.floats(min_value=0.5, max_value=50.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=60),
    jitters=st.lists(st.floats(min_value=0.0, max_value=0.99), min_size=60),
)
def test_jitter_up_to_one_interval_never_makes_the_server_wait(
    burst: int, rate: float, gaps: list[float], jitters: list[float]
) -> None:
    # Lines wanted at arbitrary times are paced by the client's bucket, then
    # each is delayed on the way by up to 1/rate seconds (arriving in order,
    # as TCP delivers them); the server's own bucket must find every one on
    # time. With a burst of 1 there is no spare token and this does not hold.
    wanted = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    sent = schedule(client_bucket(burst, rate), wanted)
    server = TokenBucket(burst, rate)
    arrived = -math.inf
    for at, jitter in zip(sent, jitters, strict=False):
        arrived = max(arrived, at + jitter / rate)
        assert arrived >= server.ready_at() - EPSILON
        server.take(max(arrived, server.ready_at()))


# --------------------------------------------------------------------------
# The client against a scripted server


async def join_flood_limited(
    server: ServerEnd, name: str, *, burst: int = 5, rate: float = 2.0
) -> float:
    """Greet announcing a flood limit (none if rate is 0), welcome `name`.

    Returns the time of the welcome: the server's bucket starts then.
    """
    flood = f" flood-burst={burst} flood-rate={rate:g}" if rate else ""
    await server.send(
        f"HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096{flood}",
        "NAME Choose a name:",
    )
    assert await server.line() == name
    await server.send(f"WELCOME {name} You are in #lobby as {name}.")
    return trio.current_time()


async def receive_timed(server: ServerEnd, count: int) -> list[tuple[float, str]]:
    """The next `count` lines from the client, each with when it arrived."""
    received: list[tuple[float, str]] = []
    for _ in range(count):
        line = await server.line()
        assert line is not None, f"closed after {len(received)} lines"
        received.append((trio.current_time(), line))
    return received


def piped(data: bytes) -> tuple[list[int], Callable[[int], Awaitable[bytes]]]:
    """A stdin for `run_with_input` holding `data`, one line per read.

    Returns (reads, receive_some); reads[0] counts the reads made so far.
    """
    lines = data.splitlines(keepends=True)
    reads = [0]

    async def receive_some(max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        reads[0] += 1
        return lines.pop(0) if lines else b""

    return reads, receive_some


async def test_piped_lines_are_paced_within_the_announced_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    ui = RecordingUI()
    net = FakeNetwork()
    texts = [f"line {n}" for n in range(1, 31)]
    _reads, stdin = piped("".join(f"{text}\n" for text in texts).encode())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    run_with_input,
                    ClientConfig(name="bot"),
                    ui,
                    stdin,
                    connect=net.connect,
                )
            )
            server = await net.accept()
            welcomed = await join_flood_limited(server, "bot", burst=5, rate=2.0)
            received = await receive_timed(server, 31)
            await server.send("BYE quit Bye!")
            await server.close()

    assert [line for _, line in received] == [*texts, "/quit"]  # all, in order
    times = [at - welcomed for at, _ in received]
    # A burst goes at once (one token kept in reserve), then 90% of the rate.
    at_once = 5 - SPARE_TOKENS
    interval = 1 / (2.0 * RATE_MARGIN)
    assert times[:at_once] == [0.0] * at_once
    for earlier, later in zip(times[at_once - 1 :], times[at_once:], strict=False):
        assert later - earlier == pytest.approx(interval)
    # The server's own bucket (burst 5, 2/s) never had to hold a line back.
    server_bucket = TokenBucket(5, 2.0)
    for at in times:
        assert at >= server_bucket.ready_at()
        server_bucket.take(at)
    # A pipe waits silently: nobody is there to read a notice.
    assert not any("sending slowly" in line for line in ui.lines)


async def test_without_a_flood_limit_everything_goes_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = FakeNetwork()
    texts = [f"line {n}" for n in range(1, 31)]
    _reads, stdin = piped("".join(f"{text}\n" for text in texts).encode())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    run_with_input,
                    ClientConfig(name="bot"),
                    RecordingUI(),
                    stdin,
                    connect=net.connect,
                )
            )
            server = await net.accept()
            welcomed = await join_flood_limited(server, "bot", rate=0.0)
            received = await receive_timed(server, 31)
            await server.send("BYE quit Bye!")
            await server.close()
    assert [line for _, line in received] == [*texts, "/quit"]
    assert {at for at, _ in received} == {welcomed}


async def test_commands_count_but_the_name_and_skipped_lines_do_not(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The server counts every line after the name: /nick and /quit too.
    net = FakeNetwork()
    ui = RecordingUI()
    stdin_text = "".join(
        ["one\n", "\n", "/nick bot2\n", "x" * 5000 + "\n", "/me two\n", "three\n"]
    )
    _reads, stdin = piped(stdin_text.encode())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    run_with_input,
                    ClientConfig(name="bot"),
                    ui,
                    stdin,
                    connect=net.connect,
                )
            )
            server = await net.accept()
            welcomed = await join_flood_limited(server, "bot", burst=2, rate=1.0)
            received = await receive_timed(server, 5)
            await server.send("BYE quit Bye!")
            await server.close()
    assert [line for _, line in received] == [
        "one",
        "/nick bot2",
        "/me two",
        "three",
        "/quit",
    ]
    # Burst 2 - 1 spare: one at once (the name was free), then one per 1/0.9 s;
    # the blank and the overlong line were dropped without waiting a turn.
    interval = 1 / RATE_MARGIN
    assert [at - welcomed for at, _ in received] == pytest.approx(
        [0.0, interval, 2 * interval, 3 * interval, 4 * interval]
    )
    assert any("not sent: that line is 5000 bytes" in line for line in ui.lines)


async def test_piped_input_is_read_only_as_fast_as_it_can_be_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Backpressure, not loss: with the held queue full, stdin is not read.
    net = FakeNetwork()
    texts = [f"line {n}" for n in range(1, 51)]
    reads, stdin = piped("".join(f"{text}\n" for text in texts).encode())
    config = ClientConfig(name="bot", max_held_lines=10)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    run_with_input, config, RecordingUI(), stdin, connect=net.connect
                )
            )
            server = await net.accept()
            await join_flood_limited(server, "bot", burst=5, rate=2.0)
            received = await receive_timed(server, 20)
            await trio.testing.wait_all_tasks_blocked()
            # Sent + held + the one line in hand of the stdin reader.
            assert reads[0] <= len(received) + config.max_held_lines + 1
            received += await receive_timed(server, 31)
            await server.send("BYE quit Bye!")
            await server.close()
    assert [line for _, line in received] == [*texts, "/quit"]


async def test_a_person_is_told_once_per_backlog(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    run = ClientRun(ClientConfig(name="alice", announce_pacing=True), FakeNetwork())
    nursery.start_soon(run.run)
    with trio.fail_after(TEST_TIMEOUT):
        # A paste of ten lines while connecting: four go, six wait their turn.
        await run.type(*(f"paste {n}" for n in range(10)))
        server = await run.net.accept()
        await join_flood_limited(server, "alice", burst=5, rate=2.0)
        assert await run.ui.expect("sending slowly") == (
            "-- sending slowly: 6 lines queued (server limit 2/s)"
        )
        first = await receive_timed(server, 10)
        assert [line for _, line in first] == [f"paste {n}" for n in range(10)]
        await run.ui.expect("<alice> paste 9")  # shown as it goes
        assert sum("sending slowly" in line for line in run.ui.lines) == 1

        await trio.sleep(10)  # quiet: the bucket is full again
        await run.type(*(f"again {n}" for n in range(6)))
        assert await run.ui.expect("sending slowly") == (
            "-- sending slowly: 2 lines queued (server limit 2/s)"
        )
        second = await receive_timed(server, 6)
        assert [line for _, line in second] == [f"again {n}" for n in range(6)]
        assert sum("sending slowly" in line for line in run.ui.lines) == 2


async def test_a_terminal_still_refuses_lines_past_the_queue_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = FakeNetwork()
    ui = RecordingUI()
    guest = GuestClient(
        ClientConfig(name="alice", max_held_lines=2, announce_pacing=True),
        ui,
        max_waiting_lines=3,
        connect=net.connect,
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guest.main)
            server = await net.accept()
            await join_flood_limited(server, "alice", burst=2, rate=1.0)
            texts = [f"line {n}" for n in range(20)]
            for text in texts:
                guest.deliver(text)
            await trio.testing.wait_all_tasks_blocked()
            refused = ui.lines.count("!! not sent: too many lines waiting")
            assert refused > 0
            delivered = [
                line for _, line in await receive_timed(server, len(texts) - refused)
            ]
            guest.end_input()
            assert await server.line() == "/quit"
            await server.send("BYE quit Bye!")
            await server.close()
    # What was taken arrives in order; everything else was refused aloud.
    assert delivered == sorted(delivered, key=texts.index)
    assert len(delivered) + refused == len(texts)


# --------------------------------------------------------------------------
# The real server


async def test_sixty_piped_lines_reach_a_flood_limited_server_without_a_drop() -> None:
    limits = Limits(flood_burst=5, flood_rate=20.0)  # fast: real time stays short
    texts = [f"line {n}" for n in range(60)]
    _reads, stdin = piped("".join(f"{text}\n" for text in texts).encode())
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(limits=limits) as port:
            bob = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await bob.join("bob")
            config = ClientConfig(port=port, name="bot", reconnect=False)
            started = time.monotonic()
            await run_with_input(config, RecordingUI(), stdin)
            elapsed = time.monotonic() - started
            await bob.expect("JOIN")
            said = [(await bob.expect("MSG")).split("<bot> ", 1)[1] for _ in texts]
            leave = await bob.expect("LEAVE")
            await bob.aclose()
    assert said == texts
    assert leave.endswith(" bot quit"), leave  # not dropped for flooding
    # It was paced: 61 lines (with /quit), 4 at once, then 18 a second.
    assert elapsed >= (61 - 4) / (20.0 * RATE_MARGIN) - 0.1
