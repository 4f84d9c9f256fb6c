"""End to end: a crowd pasting at once costs the readers who keep up nothing.

The real server, its default limits (each client from an address of its
own), real sockets: several people send a maximum-size multi-line message,
or a line that becomes the longest the server sends, at the same moment,
into a room of readers that keep reading. Every reader gets everything,
once and in order, and nobody is dropped; a reader that stopped reading
goes alone. Waits are on lines arriving, never on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from loadtools import Client, Closer, address, chat_server, joined_client, open_socket

#: Ceiling for a whole test: nothing here should take a fraction of it.
TEST_TIMEOUT = 120.0
#: A maximum-size paste: 40 lines of 400 bytes (16000 of the 16384 allowed).
PASTE_LINES = 40
PASTE_LINE = "p" * 399


def paste(sender: str) -> bytes:
    """The lines of a paste, each naming its sender and its place."""
    lines = [f"/paste {PASTE_LINES}"]
    lines += [f"{sender} {n:02d} {PASTE_LINE}"[:400] for n in range(PASTE_LINES)]
    return "".join(line + "\r\n" for line in lines).encode()


async def read_pastes(reader: Client, senders: list[str], got: dict[str, int]) -> None:
    """Read until every sender's paste is in whole; no goodbye on the way."""
    lines = {sender: 0 for sender in senders}
    while any(count < PASTE_LINES for count in lines.values()):
        line = await reader.next_line()
        assert line is not None, f"{reader.name} lost: {reader.lines[-3:]}"
        assert not line.startswith(("BYE ", "ERR ")), (reader.name, line)
        kind = line.split(" ", 1)[0]
        if kind in ("MSG", "MORE"):
            sender = line.split(" ", 4)[3][1:-1]
            text = line.split(" ", 4)[4]
            assert text.startswith(f"{sender} {lines[sender]:02d} "), (
                reader.name,
                line,
            )
            lines[sender] += 1
    got[reader.name] = sum(lines.values())


@pytest.mark.parametrize(
    ("variant", "args"),
    [
        ("plain", ()),
        ("tls", ("--tls",)),
        ("file store", ("--db", "DB")),
    ],
)
async def test_six_pastes_at_once_into_twenty_readers_drop_nobody(
    tmp_path: Path, variant: str, args: tuple[str, ...]
) -> None:
    use_tls = variant == "tls"
    args = tuple(str(tmp_path / "burst.db") if arg == "DB" else arg for arg in args)
    readers_count, senders_count = 20, 6
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(
                tmp_path, *(a for a in args if a != "--tls"), tls=use_tls
            ) as server,
            Closer() as closer,
        ):
            readers = [
                closer.add(
                    await joined_client(
                        server.port,
                        f"r{i}",
                        source=address(1, i),
                        use_tls=use_tls,
                    )
                )
                for i in range(readers_count)
            ]
            senders = [
                closer.add(
                    await joined_client(
                        server.port,
                        f"s{i}",
                        source=address(2, i),
                        use_tls=use_tls,
                    )
                )
                for i in range(senders_count)
            ]
            names = [sender.name for sender in senders]
            got: dict[str, int] = {}
            async with trio.open_nursery() as nursery:
                for reader in readers:
                    nursery.start_soon(read_pastes, reader, names, got)
                await trio.testing.wait_all_tasks_blocked()
                # All at once: one write each, as close together as sockets go.
                data = [paste(sender.name) for sender in senders]
                async with trio.open_nursery() as pasting:
                    for sender, lines in zip(senders, data, strict=True):
                        pasting.start_soon(sender.send_bytes, lines)
            assert got == {
                reader.name: senders_count * PASTE_LINES for reader in readers
            }
            assert server.count(r"dropped: send queue exceeded") == 0


async def test_a_dozen_longest_lines_at_once_into_240_readers_drop_nobody(
    tmp_path: Path,
) -> None:
    # 4096 bytes of invalid UTF-8: each becomes an 8 KiB line, 192 KiB in
    # all to every reader at once.
    readers_count, senders_count, lines_each = 240, 12, 2
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path) as server, Closer() as closer:
            readers = [
                closer.add(
                    await joined_client(
                        server.port, f"r{i}", source=address(1 + i // 200, i % 200)
                    )
                )
                for i in range(readers_count)
            ]
            senders = [
                closer.add(
                    await joined_client(server.port, f"s{i}", source=address(3, i))
                )
                for i in range(senders_count)
            ]
            counts = {reader.name: 0 for reader in readers}

            async def read(reader: Client) -> None:
                while counts[reader.name] < senders_count * lines_each:
                    line = await reader.next_line()
                    assert line is not None, f"{reader.name} lost: {reader.lines[-3:]}"
                    assert not line.startswith("BYE "), (reader.name, line)
                    if line.startswith("MSG "):
                        assert len(line.encode()) > 8000  # the longest there are
                        counts[reader.name] += 1

            async with trio.open_nursery() as nursery:
                for reader in readers:
                    nursery.start_soon(read, reader)
                await trio.testing.wait_all_tasks_blocked()
                garbage = b"\xff" * 4096 + b"\r\n"
                async with trio.open_nursery() as sending:
                    for sender in senders:
                        sending.start_soon(sender.send_bytes, garbage * lines_each)
            assert set(counts.values()) == {senders_count * lines_each}
            assert server.count(r"dropped: send queue exceeded") == 0


async def test_in_a_long_run_of_bursts_only_the_reader_that_stopped_goes(
    tmp_path: Path,
) -> None:
    # Round after round, six pastes at once; the readers take each round
    # before the next comes, the one that never reads falls behind by all
    # of them (more than its 1 MiB) and goes, alone.
    readers_count, senders_count, rounds = 20, 6, 12
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, "--flood-rate", "0") as server,
            Closer() as closer,
        ):
            stalled = Client(
                closer.add(
                    await open_socket(server.port, source=address(4, 0), rcvbuf=4096)
                )
            )
            await stalled.join("stalled")
            readers = [
                closer.add(
                    await joined_client(server.port, f"r{i}", source=address(1, i))
                )
                for i in range(readers_count)
            ]
            senders = [
                closer.add(
                    await joined_client(server.port, f"s{i}", source=address(2, i))
                )
                for i in range(senders_count)
            ]
            names = [sender.name for sender in senders]
            for round_ in range(1, rounds + 1):
                got: dict[str, int] = {}
                async with trio.open_nursery() as nursery:
                    for reader in readers:
                        nursery.start_soon(read_pastes, reader, names, got)
                    await trio.testing.wait_all_tasks_blocked()
                    async with trio.open_nursery() as pasting:
                        for sender in senders:
                            pasting.start_soon(sender.send_bytes, paste(sender.name))
                lines = senders_count * PASTE_LINES
                assert got == {reader.name: lines for reader in readers}, round_
            await server.expect_count(r"\[c1\] dropped: send queue exceeded", 1)
            assert server.count(r"dropped: send queue exceeded") == 1
            # Its connection is closed: what its socket held, then the end (a
            # goodbye too, unless a line was half out when it went).
            rest = await stalled.read_to_end()
            assert stalled.ended and len(rest) < 4096
