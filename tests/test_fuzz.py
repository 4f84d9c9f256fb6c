"""Fuzz: a minute of random bytes from 10 connections while a canary chats.

About 100 KB/s in all: pure random bytes, random bytes dense with line
ends, and soups of protocol fragments (commands, escape sequences, invalid
UTF-8, TLS and HTTP openings). Half the fuzzers join first, so their bytes
reach the chat, not just the name prompt; dropped fuzzers reconnect.
Passes if the server is alive at the end, the canary's round trip p99 is
under 100 ms, RSS grows by less than 20 MiB and the log holds no Traceback.
Run with `python -m nox -s fuzz`; the figures are printed.
`TRIO_CHAT_FUZZ_SECONDS` and `TRIO_CHAT_FUZZ_SEED` shorten or replay a run.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
import trio
from loadtools import (
    Canary,
    Client,
    PeakRss,
    ServerProcess,
    address,
    chat_server,
    open_socket,
    percentile,
)

FUZZ_SECONDS = float(os.environ.get("TRIO_CHAT_FUZZ_SECONDS", "60"))
FUZZERS = 10
#: All fuzzers together.
BYTES_PER_SECOND = 100_000
CHUNK_BYTES = 1000
#: Seconds between two canary round trips.
CANARY_INTERVAL = 0.1
ADDRESS_GROUP = 30
#: Fuzzers are dropped and reconnect several times a second: the rate limit
#: on new connections would stop the fuzzing, so it is off. The flood limit
#: is raised so the canary's 10 lines a second pass; fuzzers exceed it.
SERVER_LIMITS = (
    "--max-new-per-minute",
    "0",
    "--flood-rate",
    "20",
    "--flood-burst",
    "10",
)
P99_LIMIT = 0.1
RSS_GROWTH_LIMIT_KIB = 20 * 1024

FRAGMENTS: tuple[bytes, ...] = (
    b"/nick ",
    b"/msg ",
    b"/m ",
    b"/me ",
    b"/who\n",
    b"/help\n",
    b"/quit ",
    b"//",
    b"\x1b[",
    b"\x1b]0;",
    b"\x07",
    b"\x9b",
    b"\r",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\xc0\xaf",
    b"\xe2\x80\xae",
    b"\xf0\x9f\x98",
    b"\x16\x03\x01",
    b"GET / HTTP/1.1\r\n",
    b"\x00",
    b" ",
    b"fz",
    b"canaryA",
)


def payload(rng: random.Random) -> bytes:
    """One chunk of garbage."""
    kind = rng.random()
    if kind < 0.4:
        return rng.randbytes(CHUNK_BYTES)
    if kind < 0.7:
        data = bytearray(rng.randbytes(CHUNK_BYTES))
        for _ in range(20):
            data[rng.randrange(CHUNK_BYTES)] = ord("\n")
        return bytes(data)
    soup = bytearray()
    while len(soup) < CHUNK_BYTES:
        soup += rng.choice(FRAGMENTS) + rng.randbytes(rng.randrange(8))
    return bytes(soup[:CHUNK_BYTES])


class Fuzz:
    def __init__(self, server: ServerProcess, seed: int) -> None:
        self.server = server
        self.seed = seed
        self.counts: Counter[str] = Counter()

    async def fuzzer(self, index: int, stop_at: float) -> None:
        """Connect, maybe join, send garbage at its share of the rate; repeat."""
        rng = random.Random(self.seed * 1000 + index)
        interval = CHUNK_BYTES / (BYTES_PER_SECOND / FUZZERS)
        next_send = trio.current_time()
        for generation in range(1_000_000):
            if trio.current_time() >= stop_at:
                return
            stream = await open_socket(
                self.server.port, source=address(ADDRESS_GROUP, index)
            )
            self.counts["connections"] += 1
            async with Client(stream) as client, trio.open_nursery() as nursery:

                async def drain(client: Client = client) -> None:
                    await client.drain()
                    nursery.cancel_scope.cancel()  # dropped: reconnect

                if index % 2:
                    try:
                        await client.join(f"fz{index}n{generation}")
                        self.counts["joined"] += 1
                    except (AssertionError, trio.BrokenResourceError):
                        self.counts["join failed"] += 1
                nursery.start_soon(drain)
                next_send = max(next_send, trio.current_time())
                while next_send < stop_at:
                    await trio.sleep_until(next_send)  # pacing the load
                    next_send += interval
                    data = payload(rng)
                    try:
                        await client.send_bytes(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    self.counts["bytes sent"] += len(data)
                nursery.cancel_scope.cancel()
            for line in client.lines:
                if line.startswith("BYE "):
                    self.counts[f"BYE {line.split(' ')[1]}"] += 1


@pytest.mark.slow
async def test_fuzz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("TRIO_CHAT_FUZZ_SEED", random.randrange(2**32)))
    with trio.fail_after(FUZZ_SECONDS + 120):
        async with chat_server(tmp_path, *SERVER_LIMITS) as server:
            canary = await Canary.join(server.port)
            rss = PeakRss(server, interval=0.1)
            fuzz = Fuzz(server, seed)
            start = trio.current_time()
            stop_at = start + FUZZ_SECONDS
            async with (
                canary.speaker,
                canary.listener,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(canary.speaker.drain)
                nursery.start_soon(rss.run)
                async with trio.open_nursery() as fuzzing:
                    for index in range(FUZZERS):
                        fuzzing.start_soon(fuzz.fuzzer, index, stop_at)
                    while trio.current_time() < stop_at:
                        await canary.round_trip()
                        await trio.sleep(CANARY_INTERVAL)  # pacing the canary
                elapsed = trio.current_time() - start
                rss.sample()
                assert server.alive()
                stats = await server.stats()
                nursery.cancel_scope.cancel()
            trips = canary.round_trips
            p50, p99 = percentile(trips, 0.5), percentile(trips, 0.99)
            with capsys.disabled():
                print(
                    f"\nFUZZ {FUZZ_SECONDS:g} s, seed {seed}:"
                    f" {fuzz.counts['bytes sent'] / elapsed / 1000:.1f} KB/s,"
                    f" canary {len(trips)} round trips p50 {p50 * 1000:.1f} ms"
                    f" p99 {p99 * 1000:.1f} ms max {max(trips) * 1000:.1f} ms;"
                    f" RSS {rss.baseline} -> peak {rss.peak} KiB"
                    f" (growth {rss.growth_kib} KiB); stats at the end {stats};"
                    f" {dict(fuzz.counts)}"
                )
            assert p99 < P99_LIMIT
            assert rss.growth_kib < RSS_GROWTH_LIMIT_KIB
