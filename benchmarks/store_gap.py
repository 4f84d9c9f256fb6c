"""How long the event loop waits while the store writes: the group-commit gap.

    python benchmarks/store_gap.py [--writers 50] [--appends 200] [--repeat 3]
                                   [--json FILE]

Opens an `AsyncStore` on a fresh file in a temporary directory, starts
`--writers` tasks that each append `--appends` chat lines as fast as they
may (10,000 by default), and beside them a ticker that sleeps 1 ms at a
time and records how long each sleep really took. SQLite runs on the
store's own thread, so the loop should stay responsive however busy the
disk is; the longest gap says how responsive, on this machine, now.

Prints one JSON object per run: appends, seconds, commits, appends per
commit, ticks and the ticker's gaps (median, p99, longest) in ms. It is a
measurement, not a test: its figures depend on what else the machine is
doing, which is why the test suite checks the same property without a
clock (`test_the_event_loop_is_not_blocked_while_10k_rows_are_written`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from trio_chat import events as ev
from trio_chat.store import AsyncStore


async def one_run(path: Path, writers: int, appends: int) -> dict[str, object]:
    """Write `writers` x `appends` lines beside the ticker; its figures."""
    gaps: list[float] = []
    writing = True

    async def ticker() -> None:
        last = trio.current_time()
        while writing:
            await trio.sleep(0.001)
            now = trio.current_time()
            gaps.append(now - last)
            last = now

    async with AsyncStore.open(path) as store:

        async def writer(n: int) -> None:
            for i in range(appends):
                line = ev.Message(float(i), "#bench", f"w{n}", f"{n}-{i}")
                await store.append("#bench", line)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            async with trio.open_nursery() as writing_tasks:
                for n in range(writers):
                    writing_tasks.start_soon(writer, n)
            writing = False
        elapsed = time.perf_counter() - started
    ordered = sorted(gaps)
    return {
        "appends": store.writes,
        "seconds": round(elapsed, 3),
        "commits": store.commits,
        "appends_per_commit": round(store.writes / max(store.commits, 1), 1),
        "ticks": len(gaps),
        "gap_median_ms": round(statistics.median(ordered) * 1000, 2),
        "gap_p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
        "gap_longest_ms": round(ordered[-1] * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurement `--repeat` times; print one JSON line per run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=50, help="writing tasks")
    parser.add_argument("--appends", type=int, default=200, help="lines per task")
    parser.add_argument("--repeat", type=int, default=3, help="runs")
    parser.add_argument("--json", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    lines = []
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="trio-chat-gap-") as directory:
            figures = trio.run(
                one_run, Path(directory) / "gap.db", args.writers, args.appends
            )
        line = json.dumps({"scenario": "store-gap", "run": run + 1, **figures})
        print(line, flush=True)
        lines.append(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
