"""A scripted chat peer for tests: reads and writes raw protocol lines."""

from __future__ import annotations

import unicodedata
from typing import Protocol

import trio
import trio.testing

from trio_chat import events as ev
from trio_chat.limits import MAX_SERVER_LINE_BYTES
from trio_chat.protocol import NEED_DATA, EndOfStream, Line, LineReader, decode_event

#: Generous ceiling for one expected line (virtual time under autojump_clock).
LINE_TIMEOUT = 10.0


class Peer:
    """One end of a connection to the server, driven line by line."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._reader = LineReader(max_line_bytes=MAX_SERVER_LINE_BYTES)
        self.lines: list[str] = []  # every line received, in order
        self.closed = False
        #: Ceiling for one line to arrive (raise it to wait on a real program).
        self.timeout = LINE_TIMEOUT

    async def send(self, text: str) -> None:
        """Send `text` plus CRLF."""
        await self.send_bytes(text.encode() + b"\r\n")

    async def send_bytes(self, data: bytes) -> None:
        """Send raw bytes."""
        await self.stream.send_all(data)

    async def line(self) -> str | None:
        """The next line from the server, or None at end of stream."""
        with trio.fail_after(self.timeout):
            while True:
                event = self._reader.next_event()
                if isinstance(event, Line):
                    self.lines.append(event.text)
                    return event.text
                if isinstance(event, EndOfStream):
                    self.closed = True
                    return None
                assert event is NEED_DATA, event
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                self._reader.feed(data)

    async def expect(self, kind: str) -> str:
        """Read lines until one of `kind` arrives; return it.

        Fails if the stream ends first or another ERR/BYE arrives unexpected.
        """
        while True:
            line = await self.line()
            assert line is not None, f"connection closed while waiting for {kind}"
            if line.split(" ", 1)[0] == kind:
                return line
            assert not line.startswith(("BYE ", "ERR ")) or kind in ("ERR", "BYE"), (
                f"unexpected {line!r} while waiting for {kind}"
            )

    async def event(self, kind: str) -> ev.ServerEvent:
        """Like `expect`, decoded."""
        return decode_event(await self.expect(kind))

    async def join(self, name: str) -> None:
        """Answer the name prompt with `name` and wait until in."""
        await self.expect("NAME")
        await self.send(name)
        welcome = await self.expect("WELCOME")
        assert welcome.split(" ")[1] == unicodedata.normalize("NFC", name)

    async def aclose(self) -> None:
        """Close our end."""
        await self.stream.aclose()

    async def until_closed(self) -> list[str]:
        """Read until end of stream; return the lines read meanwhile."""
        rest: list[str] = []
        while (line := await self.line()) is not None:
            rest.append(line)
        return rest


class Serves(Protocol):
    """Anything that serves a stream (a ChatServer)."""

    async def handle_stream(self, stream: trio.abc.Stream) -> None: ...


async def open_peers(
    nursery: trio.Nursery,
    server: Serves,
    *names: str,
    drain_joins: bool = False,
) -> list[Peer]:
    """Connect one in-memory peer per name to `server` and join each.

    With `drain_joins`, each peer then reads the join notices of those who
    came after it, so their next line is whatever the test does next.
    """
    peers = []
    for name in names:
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        peer = Peer(client)
        await peer.join(name)
        peers.append(peer)
    if drain_joins:
        for index, peer in enumerate(peers):
            for later in names[index + 1 :]:
                assert (await peer.expect("JOIN")).endswith(f" #lobby {later}")
    return peers
