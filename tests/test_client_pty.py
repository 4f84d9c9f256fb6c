"""The real client in a pseudo-terminal, against the real server.

`python -m trio_chat client` runs on a pty (80x24, TERM=xterm) whose output
feeds a pyte screen, so the assertions are about what a person would see:
a message from someone else arrives while a line is half typed, and the
half-typed line, cursor included, is still there; editing in the middle of
the line sends exactly the edited text; Ctrl-D leaves cleanly and restores
the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from chatpeer import Peer

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("needs a POSIX pseudo-terminal", allow_module_level=True)

import fcntl
import struct
import termios

import pyte

#: Ceiling for one expected change on the screen or the wire.
STEP_TIMEOUT = 20.0
#: Ceiling for the whole test.
TEST_TIMEOUT = 90.0
COLUMNS, ROWS = 80, 24
#: alice's prompt: her name and her current room.
PROMPT = "alice #lobby> "


class Terminal:
    """The pty's master side, rendered on a pyte screen."""

    def __init__(self, master: int, columns: int = COLUMNS) -> None:
        self.screen = pyte.Screen(columns, ROWS)
        self._stream = pyte.ByteStream(self.screen)
        self._pty = trio.lowlevel.FdStream(master)

    async def type(self, data: bytes) -> None:
        await self._pty.send_all(data)

    def rows(self) -> list[str]:
        return [row.rstrip() for row in self.screen.display]

    def prompt_row(self) -> int | None:
        """The row holding alice's prompt (the last one, if several)."""
        rows = [
            index
            for index, row in enumerate(self.rows())
            if row == PROMPT.rstrip() or row.startswith(PROMPT)
        ]
        return rows[-1] if rows else None

    def shows(self, text: str) -> bool:
        return any(text in row for row in self.rows())

    def prompt_is(self, prompt: str) -> bool:
        """Whether the cursor's row reads `prompt` alone, the cursor after it.

        Then prompt_toolkit has drawn its prompt again after printing: keys
        typed before that may be echoed by the terminal, in cooked mode.
        """
        cursor = self.screen.cursor
        return self.rows()[cursor.y] == prompt.rstrip() and cursor.x == len(prompt)

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Read the pty until `condition()` holds, for at most STEP_TIMEOUT."""
        with trio.move_on_after(STEP_TIMEOUT):
            while not condition():
                try:
                    data = await self._pty.receive_some(65536)
                except trio.BrokenResourceError:  # EIO: nobody has the pty open
                    break
                if not data:
                    break
                self._stream.feed(data)
        if not condition():
            screen = "\n".join(self.rows())
            pytest.fail(f"the screen never showed {what}; it shows:\n{screen}")

    async def aclose(self) -> None:
        await self._pty.aclose()


async def start_server(
    log: Path, *options: str, db: str = ":memory:"
) -> tuple[trio.Process, int]:
    """`python -m trio_chat serve --port 0 [options]`; returns it and its port."""
    with log.open("wb") as stderr:
        server = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "trio_chat",
                "serve",
                "--port",
                "0",
                "--db",
                db,
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert server.stdout is not None
    received = b""
    with trio.fail_after(STEP_TIMEOUT):
        while b"\n" not in received:
            chunk = await server.stdout.receive_some()
            assert chunk, "the server exited before listening"
            received += chunk
    line = received.split(b"\n")[0].decode()
    assert line.startswith("listening on 127.0.0.1:"), line
    return server, int(line.rsplit(":", 1)[1].split()[0])


@pytest.fixture
async def server_port(tmp_path: Path) -> AsyncIterator[int]:
    server, port = await start_server(tmp_path / "server.log")
    try:
        yield port
    finally:
        server.terminate()  # SIGTERM: the server shuts down gracefully
        with trio.move_on_after(STEP_TIMEOUT, shield=True):
            await server.wait()
        if server.returncode is None:  # pragma: no cover
            server.kill()
        assert server.stdout is not None
        await server.stdout.aclose()


async def open_client_pty(
    server_port: int,
    *options: str,
    name: str | None = "alice",
    environ: dict[str, str] | None = None,
    columns: int = COLUMNS,
) -> tuple[trio.Process, int, int]:
    """The real client as `name`, on a new ROWS x `columns` pseudo-terminal.

    `options` are more of its arguments, `environ` more of its environment.
    Returns the process and the terminal's master and slave descriptors.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))
    env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    env.pop("NO_COLOR", None)
    env.pop("PROMPT_TOOLKIT_BELL", None)
    for variable in ("TRIO_CHAT_PASSWORD", "TRIO_CHAT_SERVER_PASSWORD"):
        env.pop(variable, None)
    env.update(environ or {})
    naming = ("--name", name) if name is not None else ()
    client = await trio.lowlevel.open_process(
        [
            sys.executable,
            *("-m", "trio_chat", "client"),
            *("--port", str(server_port), *naming, *options),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    return client, master, slave


async def bob_joins_alice(terminal: Terminal, server_port: int) -> Peer:
    """Wait for alice's welcome and prompt; join bob (a raw-protocol peer,
    like nc: NAME prompt, "bob", WELCOME) and wait until alice sees him."""
    await terminal.wait_until(
        lambda: (
            terminal.shows("You are in #lobby as alice")
            and terminal.prompt_row() is not None
        ),
        "alice's welcome and prompt",
    )
    bob = Peer(await trio.open_tcp_stream("127.0.0.1", server_port))
    await bob.join("bob")
    await terminal.wait_until(
        lambda: terminal.shows("-- bob joined"), "bob's join notice"
    )
    return bob


@pytest.mark.parametrize("leave_key", [b"\x04", b"\x03"], ids=["ctrl-d", "ctrl-c"])
async def test_typing_survives_incoming_messages_and_leaving_is_clean(
    server_port: int, leave_key: bytes
) -> None:
    client, master, slave = await open_client_pty(server_port)
    cooked = termios.tcgetattr(slave)
    terminal = Terminal(master)
    bob: Peer | None = None
    try:
        with trio.fail_after(TEST_TIMEOUT):
            bob = await bob_joins_alice(terminal, server_port)

            # Half a line typed, then bob speaks.
            await terminal.type(b"hello wor")
            await terminal.wait_until(
                lambda: terminal.shows(PROMPT + "hello wor"), "the half-typed line"
            )
            await bob.send("hi from bob")

            def bob_shown_above_intact_prompt() -> bool:
                row = terminal.prompt_row()
                cursor = terminal.screen.cursor
                return (
                    terminal.shows("<bob> hi from bob")
                    and row is not None
                    and terminal.rows()[row] == PROMPT + "hello wor"
                    and (cursor.y, cursor.x) == (row, len(PROMPT + "hello wor"))
                    and all("<bob>" not in line for line in terminal.rows()[row:])
                )

            await terminal.wait_until(
                bob_shown_above_intact_prompt,
                "bob's message above the intact half-typed line",
            )

            # Edit in the middle: three to the left, insert, then to the end.
            await terminal.type(b"\x1b[D\x1b[D\x1b[D" + b"big ")

            def edited_mid_line() -> bool:
                row = terminal.prompt_row()
                cursor = terminal.screen.cursor
                return (
                    row is not None
                    and terminal.rows()[row] == PROMPT + "hello big wor"
                    and (cursor.y, cursor.x) == (row, len(PROMPT + "hello big "))
                )

            await terminal.wait_until(edited_mid_line, "the line edited mid-way")
            await terminal.type(b"\x05" + b"ld\r")  # Ctrl-E, "ld", Enter

            received = await bob.expect("MSG")
            kind, _ts, room, text = received.split(" ", 3)
            assert (kind, room, text) == ("MSG", "#lobby", "<alice> hello big world")

            def both_lines_and_empty_prompt() -> bool:
                row = terminal.prompt_row()
                rows = terminal.rows()
                own = [i for i, r in enumerate(rows) if "<alice> hello big world" in r]
                theirs = [i for i, r in enumerate(rows) if "<bob> hi from bob" in r]
                return (
                    row is not None
                    and rows[row] == PROMPT.rstrip()
                    and len(own) == 1
                    and len(theirs) == 1
                    and theirs[0] < own[0] < row
                )

            await terminal.wait_until(
                both_lines_and_empty_prompt, "bob's line, then alice's, then the prompt"
            )

            # Ctrl-D or Ctrl-C: /quit, the goodbye, exit 0.
            await terminal.type(leave_key)
            leave = await bob.expect("LEAVE")
            assert leave.split(" ")[3:5] == ["alice", "quit"]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    terminal.wait_until,
                    lambda: terminal.shows("-- Bye!"),
                    "the server's goodbye",
                )
                assert await client.wait() == 0
        # prompt_toolkit put the terminal back the way it found it.
        assert termios.tcgetattr(slave) == cooked
    finally:
        if client.returncode is None:
            client.kill()
            with trio.move_on_after(STEP_TIMEOUT, shield=True):
                await client.wait()
        if bob is not None:
            await bob.aclose()
        await terminal.aclose()
        os.close(slave)
