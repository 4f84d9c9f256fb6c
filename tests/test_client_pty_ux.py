"""What a new user sees in the real terminal client: refusals, narrow
terminals, long lines.

As in `test_client_pty`: `python -m trio_chat client` on a pty rendered by
pyte, against the real server, with bob as a raw-protocol peer.
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
    STEP_TIMEOUT,
    TEST_TIMEOUT,
    Terminal,
    bob_joins_alice,
    open_client_pty,
    server_port,
)

__all__ = ["server_port"]  # the fixture, used by name


async def _close(client: trio.Process, terminal: Terminal) -> None:
    """Kill the client if it still runs, reap it, close its terminal."""
    if client.returncode is None:
        client.kill()
    await client.wait()
    await terminal.aclose()


async def test_a_line_refused_by_the_server_is_shown_as_not_sent(
    server_port: int,
) -> None:
    client, master, slave = await open_client_pty(server_port)
    terminal = Terminal(master)
    bob: Peer | None = None
    try:
        with trio.fail_after(TEST_TIMEOUT):
            bob = await bob_joins_alice(terminal, server_port)
            await bob.send("/join #class")  # bob made it: bob is its op
            await bob.expect("SWITCH")
            await terminal.wait_until(
                lambda: terminal.prompt_is("alice #lobby> "), "the prompt"
            )
            await terminal.type(b"/join #class\r")
            await terminal.wait_until(
                lambda: terminal.shows("alice #class>"), "alice in #class"
            )
            await bob.expect("JOIN")
            await bob.send("/mute alice")
            await terminal.wait_until(
                lambda: (
                    terminal.shows("bob muted alice in #class.")
                    and terminal.prompt_is("alice #class> ")
                ),
                "the mute",
            )
            await terminal.type(b"can I talk now?\r")
            await terminal.wait_until(
                lambda: terminal.shows(
                    "!! not sent: can I talk now? (You are muted in #class.)"
                ),
                "the line marked as not sent",
            )
    finally:
        with trio.move_on_after(STEP_TIMEOUT, shield=True):
            if bob is not None:
                await bob.aclose()
            await _close(client, terminal)
        os.close(slave)


NARROW = 40


async def test_a_narrow_terminal_gets_no_banner_art_and_lines_wrap_at_words(
    server_port: int,
) -> None:
    client, master, slave = await open_client_pty(server_port, columns=NARROW)
    terminal = Terminal(master, columns=NARROW)
    bob: Peer | None = None
    try:
        with trio.fail_after(TEST_TIMEOUT):
            bob = await bob_joins_alice(terminal, server_port)
            # The art would be garbage at 40 columns; the words are kept.
            assert not any("|_" in row or "__" in row for row in terminal.rows())
            assert terminal.shows("Welcome to trio-chat: say hello, be")
            await bob.send("a rather long line that cannot fit in forty columns at all")
            await terminal.wait_until(
                lambda: terminal.shows("<bob> a rather long line that"),
                "bob's line",
            )
            rows = terminal.rows()
            first = next(i for i, row in enumerate(rows) if "<bob> a rather" in row)
            text_at = rows[first].index("a rather")
            assert rows[first].endswith("that")  # cut at a space
            # ... and the rest under the text, not at column 0, whole words.
            rest = " ".join(row.strip() for row in rows[first + 1 : first + 3])
            assert rest == "cannot fit in forty columns at all"
            assert rows[first + 1].startswith(" " * text_at + "cannot")
    finally:
        with trio.move_on_after(STEP_TIMEOUT, shield=True):
            if bob is not None:
                await bob.aclose()
            await _close(client, terminal)
        os.close(slave)
