"""End to end: many rooms, long topics, and who may hold the rooms.

The real server (`python -m trio_chat serve --port 0`) over loopback
sockets, with its default outbox: a listing of a full server comes in pages
and never drops whoever asks, and a few addresses cannot take every room.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio
from loadtools import Client, Closer, address, chat_server, joined_client

#: Ceiling for a whole test: nothing here should take a fraction of it.
TEST_TIMEOUT = 120.0
#: The answer to `/motd` on a server without one: the end of a batch.
END = "INFO There is no message of the day."
#: 300 characters of four bytes each: the longest topic there may be.
TOPIC = "𝄞" * 300


async def batch(client: Client, *lines: str) -> list[str]:
    """Send `lines` at once; the lines received up to the end of their answers."""
    await client.send_bytes(
        "".join(f"{line}\r\n" for line in (*lines, "/motd")).encode()
    )
    got: list[str] = []
    with trio.fail_after(30):
        while (line := await client.next_line()) != END:
            assert line is not None, f"{client.name} was closed: {client.lines[-3:]}"
            got.append(line)
    return got


async def every_page(client: Client) -> tuple[list[str], int]:
    """All the ROOM lines of `/rooms`, page after page, and how many pages."""
    rooms: list[str] = []
    page = 1
    while True:
        lines = await batch(client, f"/rooms {page}")
        assert not any(line.startswith(("BYE", "ERR")) for line in lines), lines[-3:]
        rooms += [line for line in lines if line.startswith("ROOM ")]
        more = re.search(r"/rooms (\d+) for the next page\.$", lines[-1])
        if more is None:
            return rooms, page
        page += 1
        assert int(more.group(1)) == page


async def test_a_thousand_rooms_with_long_topics_come_in_pages(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(
                tmp_path,
                "--flood-rate",
                "0",
                "--max-rooms-per-address",
                "0",
                "--max-rooms-per-user",
                "21",
            ) as server,
            Closer() as closer,
        ):
            made = 0
            for host in range(5):
                for index in range(10):
                    name = f"maker{host}x{index}"
                    maker = closer.add(
                        await joined_client(
                            server.port, name, source=address(20 + host, 0)
                        )
                    )
                    lines: list[str] = []
                    for room in range(made, made + 20):
                        lines += [f"/join #r{room}", f"/topic {TOPIC}"]
                    answers = await batch(maker, *lines)
                    made += 20
                    errors = [line for line in answers if line.startswith("ERR")]
                    if made < 1000:
                        assert not errors, errors
            # The lobby and 999 more: the server's 1000 rooms.
            assert errors == ["ERR too-many-rooms No more rooms may be created."]
            asker = closer.add(
                await joined_client(server.port, "asker", source=address(30, 0))
            )
            rooms, pages = await every_page(asker)
            assert len(rooms) == len({line.split(" ")[1] for line in rooms}) == 1000
            assert sum(line.endswith(f" 1 open {TOPIC}") for line in rooms) == 999
            assert pages > 1
            print(f"FIGURES 1000 rooms: {pages} pages of /rooms")
            # Still here, and still answered.
            assert (await batch(asker, "/who *"))[0] == "INFO 51 users online:"


async def test_a_few_addresses_cannot_take_every_room(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, "--flood-rate", "0") as server,
            Closer() as closer,
        ):
            # 53 connections from 6 addresses, each trying to make 20 rooms.
            attackers: list[Client] = []
            refused = 0
            made = 0
            for host in range(6):
                for index in range(9 if host < 5 else 8):
                    client = closer.add(
                        await joined_client(
                            server.port,
                            f"a{host}x{index}",
                            source=address(40 + host, 0),
                        )
                    )
                    attackers.append(client)
                    rooms = [f"/join #h{host}c{index}r{room}" for room in range(20)]
                    answers = await batch(client, *rooms)
                    refused += sum(
                        line.startswith("ERR too-many-rooms") for line in answers
                    )
                    made += sum(line.startswith("SWITCH") for line in answers)
            assert len(attackers) == 53
            assert made == 6 * 50  # --max-rooms-per-address, by default
            assert refused == 53 * 20 - made
            assert any(
                line == "ERR too-many-rooms Your address has created 50 rooms that are"
                " still open, the most there may be."
                for client in attackers
                for line in client.lines
            )
            # Someone else still makes a room, and lists them all at once.
            carol = closer.add(
                await joined_client(server.port, "carol", source=address(50, 0))
            )
            assert (await batch(carol, "/join #mine"))[-1] == "SWITCH #mine"
            rooms, pages = await every_page(carol)
            assert len(rooms) == 6 * 50 + 2 and pages == 1
            # The attackers go: so do their rooms.
            for client in attackers:
                await client.send("/quit")
                await client.read_to_end()
            rooms, _ = await every_page(carol)
            assert [line.split(" ")[1] for line in rooms] == ["#lobby", "#mine"]
