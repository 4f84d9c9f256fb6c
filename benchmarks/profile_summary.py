"""Summarise a py-spy profile: the functions with the most self and total time.

    python benchmarks/profile_summary.py PROFILE.txt [--top 25] [--under FUNC]

PROFILE.txt is py-spy's `--format raw` output (collapsed stacks: frames
joined by `;`, then a sample count), as `run.py --profile DIR` writes it.
Self time is the share of samples in which a function was the innermost
frame; total time, the share in which it was anywhere on the stack.
Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Sequence
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`func (path/file.py:12)` -> `func (path/file.py)`: lines merged."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(
    path: Path, under: str | None = None
) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Samples, and self and total sample counts per function."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        frames = [frame_name(f) for f in match["stack"].split(";")]
        if under is not None:
            hits = [i for i, f in enumerate(frames) if under in f]
            if not hits:
                continue
            frames = frames[hits[0] :]
        count = int(match["count"])
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return samples, own, total


def main(argv: Sequence[str]) -> int:
    """Print the top functions by self and by total time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--under", help="only samples with a frame containing this text"
    )
    args = parser.parse_args(argv)
    samples, own, total = summarise(args.profile, args.under)
    if not samples:
        print("no samples")
        return 1
    for title, counter in (("self", own), ("total", total)):
        print(f"top {args.top} by {title} time ({samples} samples)")
        for name, count in counter.most_common(args.top):
            print(f"  {100 * count / samples:5.1f}%  {name}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
