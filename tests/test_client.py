"""The client core against scripted servers, a real server, and no server.

The client runs with a `RecordingUI` (what the user would see) and a memory
channel of typed lines; a scripted server sits on the other end of an
in-memory stream (`FakeNetwork`), or a real `ChatServer` on 127.0.0.1 port 0.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from chatpeer import Peer

from trio_chat import client
from trio_chat.chat import Chat
from trio_chat.client import (
    ClientConfig,
    ConnectError,
    ConnectionLost,
    GuestClient,
    Refused,
    open_connection,
    run_client,
    run_with_input,
)
from trio_chat.limits import MAX_LINE_BYTES, Limits
from trio_chat.protocol import NEED_DATA, EndOfStream, Line, LineReader
from trio_chat.server import ChatServer
from trio_chat.tls import client_context
from trio_chat.tls import server_context as tls_server_context

#: Ceiling for one expected step (virtual time under autojump_clock).
STEP_TIMEOUT = 30.0
#: Ceiling for a whole test.
TEST_TIMEOUT = 90.0
TS = "2026-11-23T23:10:28Z"


class RecordingUI:
    """A `ClientUI` that records what the user would see."""

    color = False
    columns: int | None = None

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: list[str | None] = []
        self.rooms: list[str | None] = []
        self.roster: client.Roster | None = None
        self.bells: list[int] = []  # len(lines) when each bell rang
        self.secrets: list[str | None] = []  # each set_secret prompt
        self.prompts: list[str | None] = []  # each set_prompt prompt
        self.can_ask_secrets = True  # like a terminal (False: like a pipe)
        self._seen = 0
        self._changed = trio.Event()

    def show(self, text: str) -> None:
        self.lines.append(text)
        self._changed.set()
        self._changed = trio.Event()

    def set_name(self, name: str | None) -> None:
        self.names.append(name)

    def set_room(self, room: str | None) -> None:
        self.rooms.append(room)

    def set_roster(self, roster: client.Roster) -> None:
        self.roster = roster

    def bell(self) -> None:
        self.bells.append(len(self.lines))

    def set_prompt(self, prompt: str | None) -> None:
        self.prompts.append(prompt)

    def set_secret(self, prompt: str | None) -> bool:
        self.secrets.append(prompt)
        return self.can_ask_secrets

    async def expect(self, text: str) -> str:
        """The next shown line containing `text` (earlier ones are skipped)."""
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                for index in range(self._seen, len(self.lines)):
                    if text in self.lines[index]:
                        self._seen = index + 1
                        return self.lines[index]
                self._seen = len(self.lines)
                await self._changed.wait()


class ServerEnd:
    """The server's end of one in-memory connection, scripted line by line."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._reader = LineReader(max_line_bytes=MAX_LINE_BYTES)

    async def send(self, *lines: str) -> None:
        await self.stream.send_all(b"".join(line.encode() + b"\r\n" for line in lines))

    async def greet(self, *, max_line: int = MAX_LINE_BYTES) -> None:
        await self.send(
            f"HELLO trio-chat/1 trio-chat/0.1.0 max-line={max_line}",
            "BANNER  trio-chat ",
            "INFO 1 user online.",
            "NAME Choose a name:",
        )

    async def join(self, name: str, **greeting: int) -> None:
        """Greet, expect `name` as the answer, welcome it."""
        await self.greet(**greeting)
        assert await self.line() == name
        await self.send(f"WELCOME {name} You are in #lobby as {name}.", "INFO hi")

    async def line(self) -> str | None:
        """The next line from the client; None once it closed."""
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                event = self._reader.next_event()
                if isinstance(event, Line):
                    return event.text
                if isinstance(event, EndOfStream):
                    return None
                assert event is NEED_DATA, event
                try:
                    data = await self.stream.receive_some()
                except trio.BrokenResourceError:
                    data = b""
                self._reader.feed(data)

    async def close(self) -> None:
        await self.stream.aclose()


class FakeNetwork:
    """`connect` for the client: each call makes an in-memory connection."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[ServerEnd](10)
        self.failures: list[ConnectError] = []  # raised by the next connects
        self.attempts: list[float] = []  # when each connect was made

    async def connect(self) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.failures:
            raise self.failures.pop(0)
        client_end, server_end = trio.testing.memory_stream_pair()
        await self._send.send(ServerEnd(server_end))
        return client_end

    async def accept(self) -> ServerEnd:
        with trio.fail_after(STEP_TIMEOUT):
            return await self._receive.receive()


class ClientRun:
    """`run_client` in the background: its lines, and how it ended."""

    def __init__(self, config: ClientConfig, net: FakeNetwork) -> None:
        self.config = config
        self.net = net
        self.ui = RecordingUI()
        self.typed, self._lines = trio.open_memory_channel[str](100)
        self.done = trio.Event()
        self.error: client.ClientError | None = None

    async def run(self) -> None:
        try:
            await run_client(
                self.config, self.ui, self._lines, connect=self.net.connect
            )
        except client.ClientError as exc:
            self.error = exc
        finally:
            self.done.set()

    async def type(self, *lines: str) -> None:
        for line in lines:
            await self.typed.send(line)

    async def finished(self) -> client.ClientError | None:
        with trio.fail_after(STEP_TIMEOUT):
            await self.done.wait()
        return self.error


def start(nursery: trio.Nursery, **config: object) -> ClientRun:
    run = ClientRun(ClientConfig(**config), FakeNetwork())  # type: ignore[arg-type]
    nursery.start_soon(run.run)
    return run


# --------------------------------------------------------------------------
# Joining, chatting, leaving


async def test_joins_with_name_shows_lines_and_quits_at_end_of_input(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.ui.expect("You are in #lobby as alice.")
        assert run.ui.names == ["alice"]
        # --name answered the prompt: the user was not asked.
        assert not any("Choose a name" in line for line in run.ui.lines)

        await run.type("hello everyone")
        assert await server.line() == "hello everyone"
        # The server does not echo our lines: the client shows them itself.
        await run.ui.expect("<alice> hello everyone")

        await server.send(f"MSG {TS} #lobby <bob> hi alice")
        await run.ui.expect("<bob> hi alice")

        await run.type("/me waves", "/msg bob psst", "//slash", "/who")
        assert await server.line() == "/me waves"
        assert await server.line() == "/msg bob psst"
        assert await server.line() == "//slash"
        assert await server.line() == "/who"
        await run.ui.expect("* alice waves")
        await run.ui.expect("[private to bob] <alice> psst")
        await run.ui.expect("<alice> /slash")
        assert not any("/who" in line for line in run.ui.lines)

        run.typed.close()  # Ctrl-D / end of input
        assert await server.line() == "/quit"
        await trio.testing.wait_all_tasks_blocked()
        assert not run.done.is_set(), "left before the server said goodbye"
        await server.send("BYE quit Bye!")
        await server.close()
        assert await run.finished() is None
        await run.ui.expect("-- Bye!")


async def test_lines_typed_early_are_held_and_all_delivered_before_quit(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        # Like `printf 'one\n...' | trio-chat client --name bot`: the whole
        # input, end included, is there before the server has said a word.
        run = start(nursery, name="bot", max_held_lines=2)
        await run.type("one", "two", "/me three", "", "four")
        run.typed.close()
        server = await run.net.accept()
        await server.join("bot")
        received = [await server.line() for _ in range(5)]
        assert received == ["one", "two", "/me three", "four", "/quit"]
        await server.send("BYE quit Bye!")
        await server.close()
        assert await run.finished() is None


async def test_without_name_the_first_typed_line_answers_the_prompt(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery)
        await run.type("", "carol")  # typed before the prompt arrived; blank skipped
        server = await run.net.accept()
        await server.greet()
        assert await server.line() == "carol"
        await server.send("WELCOME carol You are in #lobby as carol.")
        await run.ui.expect("Choose a name:")  # asked, since no --name
        await run.ui.expect("You are in #lobby as carol.")
        await run.type("hi")
        assert await server.line() == "hi"
        await run.ui.expect("<carol> hi")


async def test_a_refused_name_lets_the_user_type_another(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="bob")
        server = await run.net.accept()
        await server.greet()
        assert await server.line() == "bob"
        await server.send(
            "ERR name-taken The name bob is taken; choose another.",
            "NAME Choose a name:",
        )
        await run.ui.expect("!! The name bob is taken; choose another.")
        await run.ui.expect("-- Choose a name:")
        await run.type("bobby")
        assert await server.line() == "bobby"
        await server.send("WELCOME bobby You are in #lobby as bobby.")
        await run.ui.expect("You are in")
        assert run.ui.names == ["bobby"]


async def test_a_refused_name_is_fatal_for_a_script() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            run = start(nursery, name="bob", retry_name=False)
            await run.type("this is chat, not a name")
            server = await run.net.accept()
            await server.greet()
            assert await server.line() == "bob"
            await server.send("ERR name-taken The name bob is taken.", "NAME Again:")
            error = await run.finished()
            assert isinstance(error, Refused)
            assert (
                str(error) == "the server refused the name bob: The name bob is taken."
            )
            assert await server.line() is None  # the chat line was never sent


async def test_quit_command_waits_for_the_goodbye(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.type("/quit see you", "typed after quitting")
        assert await server.line() == "/quit see you"
        await trio.testing.wait_all_tasks_blocked()
        assert not run.done.is_set()
        await server.send(f"LEAVE {TS} #lobby alice quit (see you)", "BYE quit Bye!")
        await server.stream.send_stream.aclose()  # type: ignore[attr-defined]
        assert await server.line() is None  # nothing was sent after /quit
        assert await run.finished() is None


async def test_quit_gives_up_on_a_server_that_never_says_goodbye(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        run.typed.close()
        assert await server.line() == "/quit"
        quit_sent = trio.current_time()
        assert await run.finished() is None  # the server stays silent
        assert trio.current_time() - quit_sent == pytest.approx(client.QUIT_TIMEOUT)
        await run.ui.expect("did not confirm /quit in time")


async def test_ctrl_d_before_joining_just_leaves(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery)
        server = await run.net.accept()
        await server.greet()
        await run.ui.expect("Choose a name:")
        run.typed.close()
        assert await run.finished() is None
        assert await server.line() is None  # closed, nothing to deliver


# --------------------------------------------------------------------------
# Lines the client refuses, lines the server sends


async def test_an_overlong_line_is_refused_locally(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice", max_line=16)
        await run.type("é" * 9)  # 9 characters, 18 bytes: bytes are what count
        await run.ui.expect(
            "!! not sent: that line is 18 bytes; the server takes at most 16"
        )
        await run.type("x" * 16)
        assert await server.line() == "x" * 16  # the long one never went


async def test_server_text_is_sanitised_and_garbage_reported(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await server.send(
            f"MSG {TS} #lobby <eve> \x1b[2J\x1b]0;owned\x07hello",
            "WHAT is this",
            "HIST " * 700 + f"MSG {TS} #lobby <eve> deep",  # recursion bomb
            f"MSG {TS} #lobby <eve> still here",
        )
        assert (await run.ui.expect("<eve>")).endswith("<eve> hello")
        await run.ui.expect("!! unreadable line from the server: WHAT is this")
        await run.ui.expect("!! unreadable line from the server: HIST HIST")
        await run.ui.expect("<eve> still here")
        assert not any("\x1b" in line for line in run.ui.lines)


# --------------------------------------------------------------------------
# Losing the connection


async def test_lost_connection_reconnects_with_backoff_and_the_same_name(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await server.send(f"NICK {TS} #lobby alice -> alicia")
        await run.ui.expect("alice is now known as alicia")
        run.net.failures.append(
            ConnectError("cannot connect to 127.0.0.1:7777: connection refused")
        )
        await server.close()  # the connection drops
        await run.ui.expect(
            "-- connection lost (closed by the server); reconnecting in 1 s..."
        )
        await run.type("typed while away")
        await run.ui.expect("connection refused; retrying in 2 s...")
        server = await run.net.accept()
        first, second, third = run.net.attempts
        assert second - first == pytest.approx(client.RECONNECT_FIRST_DELAY)
        assert third - second == pytest.approx(2 * client.RECONNECT_FIRST_DELAY)
        await server.join("alicia")  # the name we had, sent again
        assert await server.line() == "typed while away"
        assert run.ui.lines.count(" trio-chat ") == 1  # the banner, once only


async def test_lost_connection_without_reconnect_is_an_error() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            run = start(nursery, name="alice", reconnect=False)
            server = await run.net.accept()
            await server.join("alice")
            await server.send("BYE server-shutdown The server is shutting down.")
            await server.close()
            error = await run.finished()
            assert isinstance(error, ConnectionLost)
            assert str(error) == (
                "connection to 127.0.0.1:7777 lost: The server is shutting down."
            )
            assert len(run.net.attempts) == 1


async def test_end_of_input_never_reconnects(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        run.typed.close()
        assert await server.line() == "/quit"
        await server.close()  # closed without a goodbye: still, we were leaving
        assert await run.finished() is None
        assert len(run.net.attempts) == 1


async def test_sent_away_before_joining_is_not_retried(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery)
        server = await run.net.accept()
        await server.greet()
        await server.send("BYE too-many-attempts No valid name in 10 tries; bye.")
        await server.close()
        error = await run.finished()
        assert isinstance(error, Refused)
        assert str(error) == (
            "the server closed the connection: No valid name in 10 tries; bye."
        )
        assert len(run.net.attempts) == 1


async def test_a_silent_server_times_out(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")  # it has greeted us once ...
        await server.close()
        await run.net.accept()  # ... and now never says a word
        await run.ui.expect(
            "-- connection lost (no answer from the server within 10 s);"
            " reconnecting in 2 s..."
        )


# --------------------------------------------------------------------------
# Real sockets: refused, TLS, a real server


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_refused_first_connection_is_one_clear_error(refusing_port: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        _send, lines = trio.open_memory_channel[str](1)
        config = ClientConfig(host="127.0.0.1", port=refusing_port, name="x")
        with pytest.raises(ConnectError) as caught:
            await run_client(config, RecordingUI(), lines)
        assert str(caught.value) == (
            f"cannot connect to 127.0.0.1:{refusing_port}: connection refused"
        )


async def test_cli_refused_connection_prints_one_line_and_exits_1(
    refusing_port: int,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        result = await trio.run_process(
            [
                sys.executable,
                *("-m", "trio_chat", "client"),
                *("--port", str(refusing_port), "--name", "x"),
            ],
            stdin=b"hello\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"trio-chat: cannot connect to 127.0.0.1:{refusing_port}: connection refused\n"
    )


async def test_unknown_host_is_a_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_such_host(host: str, port: int) -> trio.SocketStream:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(trio, "open_tcp_stream", no_such_host)
    with trio.fail_after(TEST_TIMEOUT), pytest.raises(ConnectError) as caught:
        await open_connection(ClientConfig(host="nosuch.invalid", port=7777))
    assert caught.value.permanent
    assert str(caught.value) == (
        "cannot connect to nosuch.invalid:7777: cannot resolve the host name"
        " (Name or service not known)"
    )


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    return context


@contextlib.asynccontextmanager
async def serving(
    ssl_context: ssl.SSLContext | None = None, *, limits: Limits | None = None
) -> AsyncIterator[int]:
    """A real chat server on 127.0.0.1 port 0 for the block; yields its port."""
    limits = Limits() if limits is None else limits
    server = ChatServer(
        Chat(clock=time.time, limits=limits), ssl_context=ssl_context, limits=limits
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
        yield listeners[0].socket.getsockname()[1]
        server.shutdown()


async def test_tls_certificate_from_an_unknown_ca_is_refused(ca: trustme.CA) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_context(ca, "127.0.0.1")) as port:
            context = client_context()
            trustme.CA().configure_trust(context)  # some other CA
            config = ClientConfig(host="127.0.0.1", port=port, ssl_context=context)
            with pytest.raises(ConnectError) as caught:
                await open_connection(config)
    assert caught.value.permanent
    assert str(caught.value).startswith(
        "TLS certificate verification failed for 127.0.0.1: "
    )


async def test_tls_host_name_mismatch_is_refused(ca: trustme.CA) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_context(ca, "chat.example")) as port:
            context = client_context()
            ca.configure_trust(context)
            config = ClientConfig(host="127.0.0.1", port=port, ssl_context=context)
            with pytest.raises(ConnectError) as caught:
                await open_connection(config)
    assert str(caught.value).startswith(
        "TLS certificate verification failed for 127.0.0.1: IP address mismatch"
    )


async def test_tls_to_a_plain_server_says_so() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as port:
            config = ClientConfig(port=port, ssl_context=client_context())
            with pytest.raises(ConnectError) as caught:
                await open_connection(config)
    assert str(caught.value) == (
        f"TLS handshake with 127.0.0.1:{port} failed:"
        " the server did not answer in TLS (is it a TLS server?)"
    )


async def test_piped_lines_reach_a_real_server_over_tls_in_order(
    ca: trustme.CA,
) -> None:
    context = client_context()
    ca.configure_trust(context)
    # stdin arrives in chunks that cut lines anywhere.
    chunks = [b"hel", b"lo\nsecond li", b"ne\n/me waves\n", b""]

    async def stdin(max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return chunks.pop(0)

    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_context(ca, "127.0.0.1")) as port:
            bob = Peer(
                await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", port, ssl_context=context
                )
            )
            await bob.join("bob")
            config = ClientConfig(
                host="127.0.0.1", port=port, ssl_context=context, name="alice"
            )
            ui = RecordingUI()
            await run_with_input(config, ui, stdin)
            assert (await bob.expect("JOIN")).endswith(" alice")
            assert (await bob.expect("MSG")).endswith(" <alice> hello")
            assert (await bob.expect("MSG")).endswith(" <alice> second line")
            assert (await bob.expect("ACTION")).endswith(" alice waves")
            assert (await bob.expect("LEAVE")).endswith(" alice quit")
            await ui.expect("(trio-chat/0.1.0, TLS)")
            await ui.expect("-- Bye!")
            await bob.aclose()


def _write_leaf(ca: trustme.CA, directory: Path, name: str, host: str) -> list[str]:
    """Issue a certificate for `host`; write it as `name`.pem and `name`.key."""
    leaf = ca.issue_cert(host)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return [str(cert), str(key)]


async def test_cli_client_presents_its_certificate_to_a_server_requiring_one(
    ca: trustme.CA, tmp_path: Path
) -> None:
    # `client --tls --cafile --cert --key` against a server that only lets in
    # clients with a certificate from its client CA.
    client_ca = trustme.CA()
    files = {"ca": tmp_path / "ca.pem", "client-ca": tmp_path / "client-ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client_ca.cert_pem.write_to_path(str(files["client-ca"]))
    server_ctx = tls_server_context(
        *_write_leaf(ca, tmp_path, "server", "127.0.0.1"), client_ca=files["client-ca"]
    )
    alice = _write_leaf(client_ca, tmp_path, "alice", "alice.example")
    bob_ctx = client_context(files["ca"], certfile=alice[0], keyfile=alice[1])
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_ctx) as port:
            bob = Peer(
                await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", port, ssl_context=bob_ctx
                )
            )
            await bob.join("bob")
            result = await trio.run_process(
                [
                    sys.executable,
                    *("-m", "trio_chat", "client", "--port", str(port)),
                    *("--tls", "--cafile", str(files["ca"])),
                    *("--cert", alice[0], "--key", alice[1], "--name", "alice"),
                ],
                stdin=b"hello with a certificate\n",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            line = await bob.expect("MSG")
            assert line.endswith(" <alice> hello with a certificate")
            await bob.aclose()


async def test_a_client_without_a_certificate_cannot_join(
    ca: trustme.CA, tmp_path: Path
) -> None:
    client_ca = tmp_path / "client-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(client_ca))
    server_ctx = tls_server_context(
        *_write_leaf(ca, tmp_path, "server", "127.0.0.1"), client_ca=client_ca
    )
    context = client_context()
    ca.configure_trust(context)
    chunks = [b"hello\n", b""]

    async def stdin(max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return chunks.pop(0)

    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_ctx) as port:
            config = ClientConfig(
                port=port, ssl_context=context, name="alice", reconnect=False
            )
            ui = RecordingUI()
            # The server refuses it in the handshake (TLS 1.2) or right after
            # (1.3); trio sends no alert, so the client sees a closed connection.
            with pytest.raises(client.ClientError):
                await run_with_input(config, ui, stdin)
    assert not any("You are in" in line for line in ui.lines)


# --------------------------------------------------------------------------
# The guest-mode handle the terminal uses


async def test_guest_client_takes_early_lines_and_refuses_overflow() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        net = FakeNetwork()
        ui = RecordingUI()
        guest = GuestClient(
            ClientConfig(name="alice"), ui, max_waiting_lines=1, connect=net.connect
        )
        guest.deliver("one")  # before the client runs: remembered
        guest.deliver("two")  # no room: refused, with a message
        guest.end_input()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guest.main)
            server = await net.accept()
            await server.join("alice")
            assert await server.line() == "one"
            assert await server.line() == "/quit"
            await server.send("BYE quit Bye!")
            await server.close()
        assert "!! not sent: too many lines waiting" in ui.lines


async def test_guest_client_cancel_stops_it_at_once() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        net = FakeNetwork()
        guest = GuestClient(
            ClientConfig(name="alice"), RecordingUI(), connect=net.connect
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guest.main)
            server = await net.accept()
            await server.join("alice")
            guest.cancel()
        assert await server.line() is None  # closed, no /quit


def test_config_address_brackets_ipv6() -> None:
    assert ClientConfig(host="::1", port=7777).address == "[::1]:7777"
    assert ClientConfig(host="chat.example", port=1).address == "chat.example:1"


# --------------------------------------------------------------------------
# /help: the server's commands, then the client's own


async def test_help_shows_the_servers_commands_then_the_clients(
    nursery: trio.Nursery,
) -> None:
    from trio_chat.chat import HELP_LINES

    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.type("/help")
        assert await server.line() == "/help"
        await server.send(*(f"HELP {line}" for line in HELP_LINES))
        bell = await run.ui.expect("/bell off|mentions|all")
        at = run.ui.lines.index(bell)
        assert run.ui.lines[at - 1].endswith(HELP_LINES[-1])  # right after the list
        await run.ui.expect("when the terminal bell rings")
        # Another server's list, with another last line: ours come after it,
        # before whatever comes next.
        await run.type("/help")
        assert await server.line() == "/help"
        await server.send("HELP /quit  leave", f"MSG {TS} #lobby <bob> hi")
        await run.ui.expect("/quit  leave")
        await run.ui.expect("/bell off|mentions|all")
        await run.ui.expect("<bob> hi")


async def test_refused_chat_lines_are_shown_as_not_sent_in_order(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.type("one", "/me two", "/who")
        for line in ("one", "/me two", "/who"):
            assert await server.line() == line
        await server.send(
            "ERR muted You are muted in #lobby.",
            "ERR muted You are muted in #lobby.",
            "ERR no-room You are in no room.",  # nothing left to be about
        )
        await run.ui.expect("!! not sent: one (You are muted in #lobby.)")
        await run.ui.expect("!! not sent: /me two (You are muted in #lobby.)")
        assert await run.ui.expect("!!") == "!! You are in no room."
