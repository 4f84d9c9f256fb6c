"""A paste in the real terminal client: sent as one message, shown as a block.

As in `test_client_pty`: `python -m trio_chat client` on a pty rendered by
pyte, against the real server, with bob as a raw-protocol peer. The terminal
pastes in bracketed-paste mode, as terminals do once prompt_toolkit asks.
"""

from __future__ import annotations

import os
import sys

import pytest
import trio
from chatpeer import Peer

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("needs a POSIX pseudo-terminal", allow_module_level=True)

from test_client_pty import (
    PROMPT,
    STEP_TIMEOUT,
    TEST_TIMEOUT,
    Terminal,
    bob_joins_alice,
    open_client_pty,
    server_port,
)

from trio_chat.paste import encode_paste

__all__ = ["server_port"]  # the fixture, used by name


async def test_a_paste_goes_as_one_message_and_both_sides_show_a_block(
    server_port: int,
) -> None:
    client, master, slave = await open_client_pty(server_port)
    terminal = Terminal(master)
    bob: Peer | None = None
    try:
        with trio.fail_after(TEST_TIMEOUT):
            bob = await bob_joins_alice(terminal, server_port)

            await terminal.type(b"\x1b[200~if ready:\r    ship()\r\x1b[201~\r")
            received = await bob.expect("MSG")
            assert received.split(" ", 3)[3] == "<alice> if ready:"
            more = await bob.line()
            assert more is not None
            assert more.split(" ", 3)[0] == "MORE"
            assert more.split(" ", 3)[3] == "<alice>     ship()"

            await bob.send_bytes(encode_paste(["def f():", "    return 1"]))

            def blocks_shown() -> bool:
                rows = terminal.rows()
                own = [i for i, r in enumerate(rows) if r.endswith("<alice> if ready:")]
                bobs = [i for i, r in enumerate(rows) if r.endswith("<bob> def f():")]
                if not own or not bobs or bobs[0] + 1 >= len(rows):
                    return False
                mine, theirs = rows[own[0]], rows[bobs[0]]
                return (
                    rows[own[0] + 1] == " " * (mine.index("> ") + 2) + "    ship()"
                    and rows[bobs[0] + 1]
                    == " " * (theirs.index("> ") + 2) + "    return 1"
                    and terminal.prompt_row() is not None
                    and terminal.rows()[terminal.prompt_row() or 0] == PROMPT.rstrip()
                )

            await terminal.wait_until(blocks_shown, "both pastes as blocks")
            await terminal.type(b"\x04")
            assert (await bob.expect("LEAVE")).split(" ")[3:5] == ["alice", "quit"]
            with trio.fail_after(STEP_TIMEOUT):
                assert await client.wait() == 0
    finally:
        if client.returncode is None:
            client.kill()
            with trio.move_on_after(STEP_TIMEOUT, shield=True):
                await client.wait()
        if bob is not None:
            await bob.aclose()
        await terminal.aclose()
        os.close(slave)
