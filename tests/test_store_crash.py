"""The history store survives its process being killed: a real SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from trio_chat import events as ev
from trio_chat.store import Store

#: Generous ceiling for the child to start, write and die (CI machines are slow).
PROCESS_TIMEOUT = 60.0
#: Appends the child must report before it is killed.
REPORTED_BEFORE_KILL = 2000

#: Writers append as fast as they can and print each row id only once its
#: `append` has returned, the moment a chat would fan the line out.
CHILD = """
import sys
import trio
from trio_chat.events import Message
from trio_chat.store import AsyncStore

async def writer(store, n):
    i = 0
    while True:
        text = f"{n}-{i}"
        event = Message(ts=float(i), room="#crash", sender=f"w{n}", text=text)
        row_id = await store.append("#crash", event)
        sys.stdout.write(f"{row_id} {text}\\n")
        sys.stdout.flush()
        i += 1

async def main(path):
    async with AsyncStore.open(path) as store:
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(writer, store, n)

trio.run(main, sys.argv[1])
"""


def stored_rows(path: Path) -> dict[int, str]:
    """Every message in #crash, paging back through the history."""
    rows: dict[int, str] = {}
    with Store(path) as store:
        before: int | None = None
        while page := store.history("#crash", 200, before_id=before):
            for row_id, event in page:
                assert isinstance(event, ev.Message)
                rows[row_id] = event.text
            before = page[0][0]
    return rows


async def test_every_reported_append_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    with (tmp_path / "child.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CHILD, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(PROCESS_TIMEOUT):
        while output.count(b"\n") < REPORTED_BEFORE_KILL:
            chunk = await process.stdout.receive_some(65536)
            assert chunk, (tmp_path / "child.log").read_text()
            output += chunk
        process.send_signal(signal.SIGKILL)  # mid-stream, no cleanup at all
        while chunk := await process.stdout.receive_some(65536):
            output += chunk
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    # Only whole lines were reported; a line cut by the kill was not.
    lines = output.decode().split("\n")[:-1]
    reported = [line.split(" ", 1) for line in lines]
    assert len(reported) >= REPORTED_BEFORE_KILL - 1
    # The writer never closed the database: the WAL still holds its commits.
    assert (tmp_path / "crash.db-wal").exists()

    stored = stored_rows(path)
    missing = [
        (row_id, text) for row_id, text in reported if stored.get(int(row_id)) != text
    ]
    assert missing == []
    print(
        f"\nkilled after {len(reported)} reported appends;"
        f" {len(stored)} rows recovered, none of the reported ones missing"
    )
