"""Chat lines with the file store: committed in groups while their senders
read on, fanned out once committed, and always in order with what follows.

These run the server as `trio-chat serve` does (`serve_tcp`, so the group
committer runs) on real sockets and a real database file.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from chatpeer import Peer

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.limits import MAX_HISTORY_FETCH, Limits
from trio_chat.server import ChatServer
from trio_chat.store import AsyncStore

NOW = 1_795_475_428.0
STAMP = "2026-11-23T23:10:28Z"
HOST = "127.0.0.1"


class Served:
    """A server on a file store, listening on a port of loopback."""

    def __init__(self, server: ChatServer, store: AsyncStore, port: int) -> None:
        self.server = server
        self.store = store
        self.port = port

    async def peer(self, name: str) -> Peer:
        peer = Peer(await trio.open_tcp_stream(HOST, self.port))
        await peer.join(name)
        return peer

    async def said(self, room: str = "#lobby") -> list[str]:
        """The texts of the chat lines stored for `room`, oldest first."""
        texts: list[str] = []
        before: int | None = None
        while rows := await self.store.history(room, MAX_HISTORY_FETCH, before):
            page = [event.text for _, event in rows if isinstance(event, ev.Message)]
            texts[:0] = page
            before = rows[0][0]
        return texts


@contextlib.asynccontextmanager
async def served(tmp_path: Path, **limits: float) -> AsyncIterator[Served]:
    async with AsyncStore.open(tmp_path / "chat.db") as store:
        chat = Chat(clock=lambda: NOW, limits=Limits(**limits))  # type: ignore[arg-type]
        server = ChatServer(chat, store=store)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve_tcp, 0, HOST)
            yield Served(server, store, listeners[0].socket.getsockname()[1])
            server.shutdown()


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[Served]:
    async with served(tmp_path, flood_rate=0) as it:
        yield it


async def messages(peer: Peer, count: int) -> list[str]:
    return [await peer.expect("MSG") for _ in range(count)]


async def test_lines_from_many_senders_at_once_are_all_stored_and_in_order(
    serving: Served,
) -> None:
    peers = [await serving.peer(name) for name in ("reader", "a", "b", "c", "d")]
    reader, *senders = peers
    for index, sender in enumerate(senders):  # 100 lines: more than an INSERT takes
        await sender.send_bytes(
            b"".join(f"{index}-{n}\r\n".encode() for n in range(100))
        )
    got = await messages(reader, 400)
    for index, name in enumerate("abcd"):
        own = [line for line in got if f" <{name}> " in line]
        assert own == [f"MSG {STAMP} #lobby <{name}> {index}-{n}" for n in range(100)]
    stored = await serving.said()
    assert sorted(stored) == sorted(f"{i}-{n}" for i in range(4) for n in range(100))
    for index in range(4):
        mine = [text for text in stored if text.startswith(f"{index}-")]
        assert mine == [f"{index}-{n}" for n in range(100)]
    for peer in peers:
        await peer.aclose()


async def test_a_command_after_lines_takes_effect_after_they_are_out(
    serving: Served,
) -> None:
    alice = await serving.peer("alice")
    bob = await serving.peer("bob")
    await alice.expect("JOIN")
    lines = b"".join(f"line {n}\r\n".encode() for n in range(100))
    await alice.send_bytes(lines + b"/topic after the lines\r\n/part lobby bye all\r\n")
    assert await bob.expect("TOPIC") == f"TOPIC {STAMP} #lobby alice after the lines"
    said = [line for line in bob.lines if line.startswith("MSG")]
    assert said == [f"MSG {STAMP} #lobby <alice> line {n}" for n in range(100)]
    assert await bob.expect("LEAVE") == f"LEAVE {STAMP} #lobby alice parted (bye all)"
    assert await serving.said() == [f"line {n}" for n in range(100)]
    for peer in (alice, bob):
        await peer.aclose()


async def test_lines_just_before_a_reset_go_out_before_the_leave(
    serving: Served,
) -> None:
    alice = await serving.peer("alice")
    stream = await trio.open_tcp_stream(HOST, serving.port)
    rude = Peer(stream)
    await rude.join("rude")
    await alice.expect("JOIN")
    await rude.send_bytes(b"".join(f"last {n}\r\n".encode() for n in range(50)))
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    leave = await alice.expect("LEAVE")
    assert leave.startswith(f"LEAVE {STAMP} #lobby rude disconnected (")
    # The reset may overtake lines the server had not read yet; those it
    # read are out, in order, before the leave, and stored.
    said = [line for line in alice.lines if line.startswith("MSG")]
    assert said == [f"MSG {STAMP} #lobby <rude> last {n}" for n in range(len(said))]
    assert await serving.said() == [f"last {n}" for n in range(len(said))]
    await alice.aclose()


async def test_lines_accepted_before_a_flood_drop_are_stored_and_go_out_first(
    tmp_path: Path,
) -> None:
    async with served(
        tmp_path, flood_burst=5, flood_rate=1.0, flood_max_backlog=10
    ) as serving:
        alice = await serving.peer("alice")
        bob = await serving.peer("bob")
        await alice.expect("JOIN")
        await alice.send_bytes(b"".join(f"spam {n}\r\n".encode() for n in range(40)))
        assert (await alice.until_closed())[-1].startswith("BYE excess-flood ")
        leave = await bob.expect("LEAVE")
        assert leave == f"LEAVE {STAMP} #lobby alice disconnected (excess flood)"
        said = [line for line in bob.lines if line.startswith("MSG")]
        assert said == [f"MSG {STAMP} #lobby <alice> spam {n}" for n in range(5)]
        assert await serving.said() == [f"spam {n}" for n in range(5)]
        for peer in (alice, bob):
            await peer.aclose()
