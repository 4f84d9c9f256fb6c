"""The interactive terminal UI: a prompt_toolkit prompt beside the client.

prompt_toolkit runs on asyncio; the client runs on trio in guest mode on the
same loop and thread (`trio_chat.client.GuestClient`, started by the CLI, the
only module that starts event loops). Typed lines go to the client through
its thread-safe `deliver`; display lines come back as plain calls to
`TerminalUI.show` (trio's tasks run on the loop's thread) and are printed
above the prompt by prompt_toolkit, which then redraws the line being typed,
cursor and all, underneath.

This module is asyncio code only; nothing here knows about trio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import outcome
from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import ANSI
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout


class ClientHandle(Protocol):
    """The running client, as the terminal sees it (a `GuestClient`)."""

    def deliver(self, text: str) -> None:
        """Hand over one typed line. Never waits."""
        ...

    def end_input(self) -> None:
        """The user ended input: the client leaves politely. Never waits."""
        ...

    def cancel(self) -> None:
        """Stop the client at once. Never waits."""
        ...


class TerminalUI:
    """A `trio_chat.client.ClientUI` that prints above a prompt_toolkit prompt.

    `show` and `set_name` are called by the client, on the asyncio loop's
    thread. Output is batched into one redraw per loop iteration, so a burst
    of messages does not flicker the prompt. The prompt keeps its history in
    memory and edits with emacs keys.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, color: bool) -> None:
        self._loop = loop
        self._color = color
        self._name: str | None = None
        self._pending: list[str] = []
        # The typed line is erased when sent: the client shows what was sent,
        # in the chat's own layout, so nothing appears twice.
        self.session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), erase_when_done=True
        )

    @property
    def color(self) -> bool:
        """Whether display lines carry colour."""
        return self._color

    def show(self, text: str) -> None:
        """Print `text` above the prompt, soon. Never waits."""
        if not self._pending:
            self._loop.call_soon_threadsafe(self._flush)
        self._pending.append(text)

    def set_name(self, name: str | None) -> None:
        """Show `name` in the prompt."""
        self._name = name
        self._loop.call_soon_threadsafe(self.session.app.invalidate)

    def _flush(self) -> None:
        text = "\n".join(self._pending)
        self._pending.clear()
        # Above the running prompt (which is redrawn), or plainly if none is.
        print_formatted_text(ANSI(text) if self._color else text)

    def _prompt(self) -> str:
        return f"{self._name}> " if self._name else "> "

    async def read_lines(self, deliver: Callable[[str], None]) -> None:
        """Prompt for lines and `deliver` each, until Ctrl-D or Ctrl-C.

        Cancelling it restores the terminal (prompt_toolkit does).
        """
        while True:
            try:
                text = await self.session.prompt_async(self._prompt)
            except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C
                break
            deliver(text)
        await asyncio.sleep(0)  # a checkpoint on every way out (ASYNC910)


async def _first(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of `futures` is done, without cancelling any."""
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


async def run_terminal(
    ui: TerminalUI,
    client: ClientHandle,
    done: asyncio.Future[outcome.Outcome[None]],
) -> None:
    """Run the prompt beside `client` until the user leaves or it finishes.

    `done` gets the client's outcome (trio's guest-run `done_callback`).
    Ctrl-D and Ctrl-C at the prompt end input, so the client leaves politely
    (`/quit`, then a bounded wait for the goodbye). If this coroutine is
    cancelled (a SIGINT while leaving), the client is cancelled and awaited
    before the cancellation propagates, so it never outlives the loop. The
    terminal is restored in every case.

    Raises what the client raised (`trio_chat.client.ClientError`...).
    """
    try:
        with patch_stdout(raw=True):
            prompt = asyncio.ensure_future(ui.read_lines(client.deliver))
            try:
                await _first(prompt, done)
            finally:
                prompt.cancel()
                await asyncio.wait({prompt})  # it restores the terminal
        if not done.done():
            client.end_input()
            await _first(done)
    finally:
        if not done.done():
            client.cancel()
            await _first(done)
    done.result().unwrap()
