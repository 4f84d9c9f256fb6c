"""Rooms in the real terminal client: Tab, the prompt's room, tags, the bell.

As in `test_client_pty`: `python -m trio_chat client` on a pty rendered by
pyte, against the real server, with bob as a raw-protocol peer. The screen
also counts the BEL characters the client writes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import trio
from chatpeer import Peer

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("needs a POSIX pseudo-terminal", allow_module_level=True)


import pyte
from test_client_pty import (
    COLUMNS,
    ROWS,
    TEST_TIMEOUT,
    Terminal,
    open_client_pty,
    server_port,
)

__all__ = ["server_port"]  # the fixture, used by name


class BellScreen(pyte.Screen):
    """A pyte screen that counts bells."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.bells = 0

    def bell(self, *args: Any) -> None:
        self.bells += 1


class BellTerminal(Terminal):
    def __init__(self, master: int) -> None:
        super().__init__(master)
        self.bell_screen = BellScreen(COLUMNS, ROWS)
        self.screen = self.bell_screen
        self._stream = pyte.ByteStream(self.screen)

    def prompt_is(self, text: str) -> bool:
        """Whether the prompt row reads `text`, with the cursor at its end.

        The prompt row is the last row starting with "alice " (a completion
        menu may show below it).
        """
        rows = self.rows()
        prompts = [i for i, row in enumerate(rows) if row.startswith("alice ")]
        if not prompts:
            return False
        cursor = self.screen.cursor
        row = prompts[-1]
        return rows[row] == text.rstrip() and (cursor.y, cursor.x) == (row, len(text))


async def test_tab_completes_the_prompt_shows_the_room_and_mentions_ring(
    server_port: int,
) -> None:
    client, master, slave = await open_client_pty(server_port)
    terminal = BellTerminal(master)
    bob: Peer | None = None
    try:
        with trio.fail_after(TEST_TIMEOUT):
            await terminal.wait_until(
                lambda: terminal.prompt_is("alice #lobby> "), "alice's prompt"
            )
            # Typing only once the screen is quiet: prompt_toolkit prints in
            # cooked mode, where the tty would echo keys typed meanwhile.
            bob = Peer(await trio.open_tcp_stream("127.0.0.1", server_port))
            await bob.join("bob")
            await terminal.wait_until(
                lambda: (
                    terminal.shows("-- bob joined")
                    and terminal.prompt_is("alice #lobby> ")
                ),
                "bob's join notice",
            )

            # Tab completes the command.
            await terminal.type(b"/jo\t")
            await terminal.wait_until(
                lambda: terminal.prompt_is("alice #lobby> /join"), "/join completed"
            )
            await terminal.type(b" #rust\r")
            await terminal.wait_until(
                lambda: terminal.prompt_is("alice #rust> "), "#rust in the prompt"
            )

            # bob is in #lobby: his lines carry its tag.
            await bob.send("just chatting")
            await terminal.wait_until(
                lambda: terminal.shows("#lobby <bob> just chatting"), "a tagged line"
            )

            # Tab completes a name seen, case-insensitively.
            await terminal.type(b"hi BO\t")
            await terminal.wait_until(
                lambda: terminal.prompt_is("alice #rust> hi bob"), "bob completed"
            )
            await terminal.type(b"\x15")  # Ctrl-U: clear the line
            await terminal.wait_until(
                lambda: terminal.prompt_is("alice #rust> "), "the line cleared"
            )

            # Naming alice rings (and nothing before did).
            assert terminal.bell_screen.bells == 0
            await bob.send("hey alice, look")
            await terminal.wait_until(
                lambda: (
                    terminal.shows("#lobby <bob> hey alice, look")
                    and terminal.bell_screen.bells == 1
                ),
                "the mention, and the bell",
            )
            assert any(
                row.startswith("! ") and row.endswith("<bob> hey alice, look")
                for row in terminal.rows()
            )

            await terminal.type(b"\x04")  # Ctrl-D
            assert await client.wait() == 0
    finally:
        if client.returncode is None:
            client.kill()
            with trio.move_on_after(5, shield=True):
                await client.wait()
        if bob is not None:
            await bob.aclose()
        await terminal.aclose()
        os.close(slave)
