"""Soak: three minutes of churn and hostile lines against the real server.

50 clients chat; every second 5 leave (half of them by a TCP reset) and 5
join; a tenth of the lines are hostile (overlong, escape sequences, invalid
UTF-8, garbage commands). Passes if the server's memory stops growing
(RSS between minute 1 and minute 3), its descriptors and tasks return to
their baseline once everyone has gone, and its log holds no Traceback.
Run with `python -m nox -s soak`; the figures are printed.
`TRIO_CHAT_SOAK_SECONDS` shortens the run for trying things out.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import trio
from loadtools import (
    Client,
    PeakRss,
    ServerProcess,
    address,
    chat_server,
    open_socket,
    reset,
)

#: The whole run; the memory check compares its first third with its end.
SOAK_SECONDS = float(os.environ.get("TRIO_CHAT_SOAK_SECONDS", "180"))
#: Clients connected at any time.
CLIENTS = 50
#: Leaves (and as many joins) per second: each client lives ~10 s.
CHURN_PER_SECOND = 5
#: Share of lines that are hostile.
HOSTILE_FRACTION = 0.1
#: Mean seconds between two lines of one client: under the default flood
#: rate (2 lines/s), so nobody is slowed down or dropped for flooding.
CHAT_INTERVAL = 1.0
#: Loopback group of the source addresses: one address per client slot, so
#: the per-address limits stay at their defaults (a slot reconnects about
#: 6 times a minute, under 20).
ADDRESS_GROUP = 20
#: How the leaves go, in turn: half by RST.
LEAVE_MODES = ("rst", "quit", "rst", "close")
#: Ceilings of the pass conditions.
RSS_GROWTH_LIMIT_KIB = 5 * 1024
BASELINE_SLACK = 2

HOSTILE_LINES: tuple[bytes, ...] = (
    b"x" * 5000,  # over the 4096-byte limit: ERR line-too-long
    b"\xff" * 4096,  # at the limit; 4096 U+FFFD, a server line cut to fit
    b"esc \x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J\x1b[H \x9b6n done",
    "bidi \u202eevil\u202c ls\u2028 nel\u0085 zw\u200b".encode(),
    b"bad utf8 \xff\xfe \xe2\x82 \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80",
    b"nul \x00 bell \x07 cr\rmid del \x7f vt\x0b ff\x0c",
    b"/xyzzy",
    b"/",
    b"/nick",
    b"/nick two words",
    b"/nick server",
    b"/msg",
    b"/msg nobody-here hi",
    b"/me",
    b"/NICK \xff\xfe",
    b"/" + b"a" * 100,
    b"//slash",
    b"/help",
    b"/who",
    b"\x16\x03\x01\x02\x00 tls-ish",
    b"GET / HTTP/1.1",
    b"   ",
    b"",
)


class Soak:
    """The clients of one soak run and what happened to them."""

    def __init__(self, server: ServerProcess, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.events: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self._modes = itertools.cycle(LEAVE_MODES)

    def line(self, name: str, number: int) -> bytes:
        if self.rng.random() < HOSTILE_FRACTION:
            self.events["hostile lines"] += 1
            return self.rng.choice(HOSTILE_LINES)
        self.events["chat lines"] += 1
        return f"{name} says hello #{number}, naïve café ☕".encode()

    async def client(self, slot: int, generation: int, leave: trio.Event) -> None:
        """Join, chat until `leave` is set, then go in the next leave mode."""
        name = f"s{slot}g{generation}"
        stream = await open_socket(
            self.server.port, source=address(ADDRESS_GROUP, slot)
        )
        client = Client(stream)
        async with client:
            first = await client.line()
            if first is None or first.startswith("BYE "):
                self.unexpected.append(f"{name} refused: {first}")
                return
            try:
                await client.join(name)
            except AssertionError as exc:
                self.unexpected.append(f"{name} could not join: {exc}")
                return
            self.events["joins"] += 1
            mode = await self._chat(client, leave)
            self.events[f"leaves by {mode}"] += 1
            if mode == "rst":
                await reset(stream)
            elif mode == "quit":
                await client.send("/quit soak over")
                await client.read_to_end()
            elif mode == "lost":
                pass
            byes = [line for line in client.lines if line.startswith("BYE ")]
            if byes not in ([], ["BYE quit Bye!"]):
                self.unexpected.append(f"{name}: {byes}")

    async def _chat(self, client: Client, leave: trio.Event) -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.drain)
            for number in itertools.count():
                with trio.move_on_after(self.rng.uniform(0.5, 1.5) * CHAT_INTERVAL):
                    await leave.wait()
                if leave.is_set() or client.ended:
                    break
                try:
                    await client.send_bytes(self.line(client.name, number) + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            nursery.cancel_scope.cancel()
        if client.ended:
            return "lost"
        return next(self._modes) if leave.is_set() else "close"

    async def run(self, seconds: float) -> None:
        """Keep CLIENTS chatting for `seconds`, churning CHURN_PER_SECOND."""
        live: list[tuple[int, trio.Event]] = []
        generations = [0] * CLIENTS
        async with trio.open_nursery() as nursery:

            def start(slot: int) -> None:
                generations[slot] += 1
                leave = trio.Event()
                live.append((slot, leave))
                nursery.start_soon(self.client, slot, generations[slot], leave)

            for slot in range(CLIENTS):
                start(slot)
            end = trio.current_time() + seconds
            tick = trio.current_time()
            while tick < end:
                tick += 1 / CHURN_PER_SECOND
                await trio.sleep_until(tick)  # pacing the churn
                slot, leave = live.pop(0)  # the oldest goes
                leave.set()
                start(slot)
            self.events["running at the end"] = len(live)
            self._modes = itertools.cycle(["close"])
            for _, leave in live:
                leave.set()


@pytest.mark.slow
async def test_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = random.randrange(2**32)
    with trio.fail_after(SOAK_SECONDS + 120):
        async with chat_server(tmp_path) as server:
            baseline = await server.stats()
            soak = Soak(server, random.Random(seed))
            rss_at: dict[str, int] = {}

            async def measure() -> None:
                await trio.sleep(SOAK_SECONDS / 3)  # the schedule: minute 1
                rss_at["minute 1"] = server.rss_kib()
                await trio.sleep(SOAK_SECONDS * 2 / 3 - 1)  # just before the end
                rss_at["minute 3"] = server.rss_kib()

            peak = PeakRss(server, interval=0.5)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peak.run)
                async with trio.open_nursery() as timed:
                    timed.start_soon(measure)
                    await soak.run(SOAK_SECONDS)
                nursery.cancel_scope.cancel()
            after = await server.wait_stats(
                lambda stats: stats["connections"] == 0 and stats["users"] == 0
            )
            growth = rss_at["minute 3"] - rss_at["minute 1"]
            with capsys.disabled():
                print(
                    f"\nSOAK {SOAK_SECONDS:g} s, seed {seed}:"
                    f" RSS minute 1 {rss_at['minute 1']} KiB,"
                    f" minute 3 {rss_at['minute 3']} KiB, growth {growth} KiB"
                    f" (at the start {peak.baseline} KiB, peak {peak.peak} KiB);"
                    f" fds {baseline['fds']} -> {after['fds']},"
                    f" tasks {baseline['tasks']} -> {after['tasks']};"
                    f" {dict(soak.events)}; unexpected: {soak.unexpected[:10]}"
                )
            assert growth < RSS_GROWTH_LIMIT_KIB
            assert abs(after["fds"] - baseline["fds"]) <= BASELINE_SLACK
            assert abs(after["tasks"] - baseline["tasks"]) <= BASELINE_SLACK
            assert soak.unexpected == []
