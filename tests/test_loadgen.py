"""The benchmark generator counts what it receives right.

It counts in bulk, over whatever pieces the kernel hands it: a line (or a
marker) split between two reads must count once, and only once.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st


def _load() -> ModuleType:
    path = Path(__file__).parent.parent / "benchmarks" / "loadgen.py"
    spec = importlib.util.spec_from_file_location("loadgen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = module
    spec.loader.exec_module(module)
    return module


loadgen = _load()

TS = "2026-11-24T05:12:40Z"
STREAM = (
    f"HELLO trio-chat/1 x\r\nJOIN {TS} #lobby a\r\nJOINS {TS} #lobby b c d\r\n"
    f"MSG {TS} #lobby <a> JOINS {TS} #lobby not a join\r\n"
    f"JOINS {TS} #lobby e f\r\nHIST JOIN {TS} #lobby old\r\n"
    f"JOINS {TS} #lobby g h i j\r\n"
).encode()
JOINS_IN_STREAM = 1 + 3 + 2 + 4


class _Counting:
    """What `TrioChatDialect.count_joins` keeps per client."""

    def __init__(self) -> None:
        self.tail = b"\n"
        self.joins_carry: bytes | None = None


@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12, unique=True))
def test_joins_are_counted_once_however_the_stream_is_cut(cuts: list[int]) -> None:
    dialect = loadgen.TrioChatDialect()
    client = _Counting()
    edges = [0, *sorted(cuts), len(STREAM)]
    total = 0
    for start, end in itertools.pairwise(edges):
        data = STREAM[start:end]
        total += dialect.count_joins(client, data)
        tail = client.tail + data
        client.tail = tail[-loadgen.TAIL :]
    assert total == JOINS_IN_STREAM


def test_parsed_lines_count_joins_and_leaves() -> None:
    dialect = loadgen.TrioChatDialect()
    assert dialect.joins_in(f"JOINS {TS} #lobby a b c".encode()) == 3
    assert dialect.joins_in(f"JOIN {TS} #lobby a".encode()) == 1
    assert dialect.joins_in(f"HIST JOIN {TS} #lobby a".encode()) == 0
    assert dialect.leaves_in(f"LEAVE {TS} #lobby a quit".encode()) == 1
    assert dialect.leaves_in(f"LEAVE {TS} #lobby a parted (lunch)".encode()) == 0
    leaves = f"LEAVES {TS} #lobby disconnected a b c (connection (closed))"
    assert dialect.leaves_in(leaves.encode()) == 3
    irc = loadgen.IRCDialect("bench", "bench")
    assert irc.leaves_in(b":u1!~u1@127.0.0.1 QUIT :Client closed connection") == 1
    assert irc.joins_in(b":u1!~u1@127.0.0.1 JOIN :#bench") == 1
