"""Chart the paced runs: latency percentiles against offered load, per server.

    python benchmarks/chart.py benchmarks/results/latest.jsonl \
        -o benchmarks/results/paced-latency.png

Reads the JSON lines `run.py` wrote, takes the plain-TCP paced runs that
completed, and plots the median (over repeats) of their p50 and p99
latency, measured from each line's scheduled send time, against the lines
per second offered to the room. Needs matplotlib (the `bench` dependency
group).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

#: Line colour per server variant (the table's labels).
COLOURS = {
    "trio-chat :memory:": "tab:blue",
    "trio-chat file db": "tab:green",
    "ngircd": "tab:red",
}
#: Percentiles drawn, and their line styles.
PERCENTILES = (
    ("p50", "latency_p50_ms", "-", "o"),
    ("p99", "latency_p99_ms", "--", "^"),
)


def load(path: Path) -> list[dict[str, Any]]:
    """The completed plain-TCP paced runs in a JSON lines file."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("scenario") == "paced" and record.get("ok") and not record["tls"]:
            records.append(record)
    return records


def medians(
    records: list[dict[str, Any]], key: str
) -> dict[str, list[tuple[float, float]]]:
    """Per variant: (rate, median of `key`) sorted by rate."""
    values: dict[str, dict[float, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for record in records:
        value = record["figures"].get(key)
        if value is not None:
            values[record["variant"]][float(record["params"]["rate"])].append(value)
    return {
        variant: sorted((rate, statistics.median(v)) for rate, v in by_rate.items())
        for variant, by_rate in values.items()
    }


def chart(records: list[dict[str, Any]], output: Path) -> None:
    """Draw the latency chart into `output` (PNG)."""
    figure, axes = plt.subplots(figsize=(8.0, 5.0), dpi=150)
    for name, key, style, marker in PERCENTILES:
        for variant, points in medians(records, key).items():
            rates = [rate for rate, _ in points]
            latencies = [latency for _, latency in points]
            axes.plot(
                rates,
                latencies,
                linestyle=style,
                marker=marker,
                color=COLOURS.get(variant, "tab:gray"),
                label=f"{variant} {name}",
            )
    first = records[0]
    params = first["params"]
    machine = first.get("machine", {})
    axes.set_xscale("log")
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    axes.set_xlabel(f"offered load: lines/s into a {params['clients']}-member room")
    axes.set_ylabel("latency from scheduled send, ms")
    axes.set_title(
        f"paced: {params['duration']:g} s per rate, medians of repeats,"
        f" server on 1 CPU ({machine.get('cpu') or 'unknown CPU'})",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)


def main(argv: Sequence[str]) -> int:
    """Read the results, write the chart."""
    parser = argparse.ArgumentParser(description="Chart the paced benchmark runs.")
    parser.add_argument("results", type=Path, help="JSON lines from run.py")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "paced-latency.png",
    )
    args = parser.parse_args(argv)
    records = load(args.results)
    if not records:
        print(f"no completed paced runs in {args.results}", file=sys.stderr)
        return 1
    chart(records, args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
