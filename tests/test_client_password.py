"""Passwords in the client: asked for hidden, never shown or kept.

When the server asks for a registered name's password and none was given
($TRIO_CHAT_PASSWORD), a terminal asks the user with hidden input, and the
line typed is kept out of the input history; piped input cannot be asked,
so the client stops and says what to set. `/register` and `/identify` are
masked as they are typed and never kept in the history either. The client
core runs against a scripted server (`test_client`); the terminal runs on an
asyncio loop with a pipe for input, its output rendered on a pyte screen.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator

import pyte
import pytest
import trio
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output
from test_client import ClientRun, ServerEnd, start

from trio_chat.client import PASSWORD_VARIABLE, SERVER_PASSWORD_VARIABLE, Refused
from trio_chat.terminal import SecretlessHistory, TerminalUI, secret_start

#: Ceiling for a whole test.
TEST_TIMEOUT = 30.0
#: Ceiling for the terminal to show something, in seconds.
SCREEN_TIMEOUT = 5.0
PROMPT_LINE = "PASSWORD alice This name is registered: send its password."


async def asked_for_password(run: ClientRun) -> ServerEnd:
    """Greet, take alice's name, ask for its password."""
    server = await run.net.accept()
    await server.greet()
    assert await server.line() == "alice"
    await server.send(PROMPT_LINE)
    return server


async def test_the_password_is_asked_for_hidden_and_sent(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await asked_for_password(run)
        await run.ui.expect("This name is registered: send its password.")
        assert run.ui.secrets == ["password for alice: "]
        await run.type("hunter2")
        assert await server.line() == "hunter2"
        await server.send("WELCOME alice You are in #lobby as alice.")
        await run.ui.expect("You are in #lobby as alice.")
        assert run.ui.secrets == ["password for alice: ", None]
        assert not any("hunter2" in line for line in run.ui.lines)


async def test_lines_typed_before_the_question_are_chat_not_the_password(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        await run.type("typed early")
        server = await asked_for_password(run)
        await run.ui.expect("send its password")
        await run.type("hunter2")
        assert await server.line() == "hunter2"
        await server.send("WELCOME alice You are in #lobby as alice.")
        assert await server.line() == "typed early"


async def test_a_wrong_password_then_a_name_again(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await asked_for_password(run)
        await run.ui.expect("send its password")  # asked: typing answers it
        await run.type("wrong")
        assert await server.line() == "wrong"
        await server.send("ERR bad-password Wrong password for alice.", "NAME Name?")
        await run.ui.expect("Wrong password for alice.")
        await run.ui.expect("Name?")
        assert run.ui.secrets == ["password for alice: ", None]  # a name: shown
        await run.type("alice2")
        assert await server.line() == "alice2"


async def test_the_configured_password_is_sent_without_asking(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice", password="from-the-environment")
        server = await asked_for_password(run)
        assert await server.line() == "from-the-environment"
        await server.send("WELCOME alice You are in #lobby as alice.")
        await run.ui.expect("You are in #lobby as alice.")
        assert run.ui.secrets == []
        assert not any("registered" in line for line in run.ui.lines)


async def test_a_wrong_configured_password_stops_a_script(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice", password="stale", retry_name=False)
        await run.type("a chat line, not a name")
        server = await asked_for_password(run)
        assert await server.line() == "stale"
        await server.send("ERR bad-password Wrong password for alice.", "NAME Name?")
        error = await run.finished()
        assert isinstance(error, Refused)
        assert str(error) == (
            "the server refused the password: Wrong password for alice."
        )
        assert await server.line() is None  # the chat line was never sent


async def test_piped_input_is_not_asked_and_the_client_says_what_to_set(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        run.ui.can_ask_secrets = False  # like PlainUI: nobody to ask
        await run.type("hello")  # a chat line: never taken for the password
        server = await asked_for_password(run)
        error = await run.finished()
        assert isinstance(error, Refused)
        assert str(error) == (
            "the name alice needs a password and none was given"
            f" (set {PASSWORD_VARIABLE} to give it)"
        )
        assert await server.line() is None


async def test_the_server_password_is_asked_for_too(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.send(
            "HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096",
            "PASSWORD * This server needs a password: send it.",
        )
        await run.ui.expect("This server needs a password")
        assert run.ui.secrets == ["password for the server: "]
        await run.type("open sesame")
        assert await server.line() == "open sesame"  # not the name
        await server.send("NAME Choose a name.")
        assert await server.line() == "alice"
        await server.close()


async def test_the_configured_server_password_comes_before_the_name(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice", server_password="open sesame")
        server = await run.net.accept()
        await server.send(
            "HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096",
            "PASSWORD * This server needs a password: send it.",
        )
        assert await server.line() == "open sesame"
        await server.send("ERR bad-password Wrong server password.")
        await server.send("PASSWORD * This server needs a password: send it.")
        await run.ui.expect("Wrong server password.")
        await run.ui.expect("This server needs a password")
        assert run.ui.secrets == ["password for the server: "]  # now asked
        await run.type("the right one")
        assert await server.line() == "the right one"
        await server.send("NAME Choose a name.")
        assert await server.line() == "alice"
        await server.close()


async def test_a_script_without_the_server_password_says_what_to_set(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        run.ui.can_ask_secrets = False
        server = await run.net.accept()
        await server.send(
            "HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096",
            "PASSWORD * This server needs a password: send it.",
        )
        error = await run.finished()
        assert str(error) == (
            "the server needs a password and none was given"
            f" (set {SERVER_PASSWORD_VARIABLE} to give it)"
        )


async def test_a_lost_connection_stops_hiding_the_typing(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice", reconnect=False)
        server = await asked_for_password(run)
        await run.ui.expect("send its password")
        await server.close()
        await run.finished()
        assert run.ui.secrets == ["password for alice: ", None]


# --------------------------------------------------------------------------
# The terminal


@pytest.mark.parametrize(
    ("text", "start_at"),
    [
        ("/register hunter2", 10),
        ("/IDENTIFY  two words", 10),
        ("/identify", None),  # nothing secret typed yet
        ("/registered x", None),
        ("register hunter2", None),
        ("/msg bob /register x", None),
    ],
)
def test_secret_start(text: str, start_at: int | None) -> None:
    assert secret_start(text) == start_at


def test_the_history_keeps_no_secret() -> None:
    asking = [False]
    history = SecretlessHistory(lambda: asking[0])
    history.append_string("hello")
    history.append_string("/register hunter2")
    history.append_string("/Identify hunter2")
    asking[0] = True
    history.append_string("s3cret")
    asking[0] = False
    history.append_string("/who")
    assert list(history.get_strings()) == ["hello", "/who"]


class Screen:
    """A TerminalUI reading from a pipe, its output on a pyte screen."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: PipeInput) -> None:
        self.loop = loop
        self.pipe = pipe
        self.written = io.StringIO()
        output = Vt100_Output(
            self.written, lambda: Size(rows=24, columns=80), term="xterm"
        )
        self.ui = TerminalUI(loop, color=False, input=pipe, output=output)
        self.ui.set_name("alice")
        self.delivered: list[str] = []

    def rows(self) -> list[str]:
        screen = pyte.Screen(80, 24)
        pyte.Stream(screen).feed(self.written.getvalue())
        return [row.rstrip() for row in screen.display]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Let prompt_toolkit work until `condition()` holds."""
        for _ in range(int(SCREEN_TIMEOUT / 0.01)):
            if condition():
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"never {what}; the screen shows {self.rows()}")


@pytest.fixture
def screen() -> Iterator[Screen]:
    loop = asyncio.new_event_loop()
    try:
        with create_pipe_input() as pipe:
            yield Screen(loop, pipe)
    finally:
        loop.close()


def run_typing(screen: Screen, typing: Callable[[], Awaitable[None]]) -> None:
    """Run the prompt while `typing` types; then Ctrl-D."""

    async def main() -> None:
        prompt = asyncio.ensure_future(screen.ui.read_lines(screen.delivered.append))
        await typing()
        screen.pipe.send_text("\x04")
        await asyncio.wait_for(prompt, SCREEN_TIMEOUT)

    screen.loop.run_until_complete(main())


def test_register_is_masked_as_typed_and_never_kept(screen: Screen) -> None:
    async def typing() -> None:
        await screen.until(lambda: "alice>" in screen.rows(), "the prompt")
        screen.pipe.send_text("/register hunter2")
        await screen.until(
            lambda: "alice> /register *******" in screen.rows(), "the masked line"
        )
        screen.pipe.send_text("\r")
        await screen.until(lambda: bool(screen.delivered), "the line delivered")

    run_typing(screen, typing)
    assert screen.delivered == ["/register hunter2"]
    assert "hunter2" not in screen.written.getvalue()
    assert list(screen.ui.session.history.get_strings()) == []


def test_a_password_asked_for_is_typed_hidden(screen: Screen) -> None:
    async def typing() -> None:
        await screen.until(lambda: "alice>" in screen.rows(), "the prompt")
        screen.ui.set_secret("password for alice: ")
        await screen.until(
            lambda: "password for alice:" in screen.rows(), "the password prompt"
        )
        screen.pipe.send_text("s3cret")
        await screen.until(
            lambda: "password for alice: ******" in screen.rows(), "the hidden line"
        )
        screen.pipe.send_text("\r")
        await screen.until(lambda: bool(screen.delivered), "the password delivered")
        # One line answers it: the next is typed in the open again.
        screen.pipe.send_text("hello")
        await screen.until(lambda: "alice> hello" in screen.rows(), "plain typing")
        screen.pipe.send_text("\r")
        await screen.until(lambda: len(screen.delivered) == 2, "the next line")

    run_typing(screen, typing)
    assert screen.delivered == ["s3cret", "hello"]
    assert "s3cret" not in screen.written.getvalue()
    assert list(screen.ui.session.history.get_strings()) == ["hello"]
    assert not screen.ui.asking_secret


def test_a_paste_and_alt_enter_deliver_several_lines_at_once(
    screen: Screen,
) -> None:
    async def typing() -> None:
        await screen.until(lambda: "alice>" in screen.rows(), "the prompt")
        screen.pipe.send_text("\x1b[200~def f():\r\n    pass\x1b[201~\r")
        await screen.until(lambda: len(screen.delivered) == 1, "the paste")
        screen.pipe.send_text("first\x1b\rsecond\r")  # Alt-Enter between
        await screen.until(lambda: len(screen.delivered) == 2, "two lines")

    run_typing(screen, typing)
    assert screen.delivered == ["def f():\n    pass", "first\nsecond"]
