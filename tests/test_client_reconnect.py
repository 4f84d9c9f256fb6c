"""When the client reconnects on its own, and when it must not.

A connection replaced by its own registered name signing in elsewhere stops
(two terminals with the same name would otherwise replace each other for
ever); a server that is busy (full, or too many new connections from one
address) is tried again, no sooner than it asks; a final refusal ends the
client. The terminal cases run the real client on a pty against the real
server (`test_client_pty`); the classroom runs many clients in-process,
on Trio's virtual clock.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from chatpeer import Peer
from test_client import (
    TEST_TIMEOUT,
    RecordingUI,
    _write_leaf,
    ca,
    server_context,
    serving,
    start,
)

from trio_chat import client
from trio_chat.admission import Admission
from trio_chat.chat import Chat
from trio_chat.client import ClientConfig, ConnectionLost, Refused, run_client
from trio_chat.limits import Limits
from trio_chat.server import ChatServer
from trio_chat.tls import client_context
from trio_chat.tls import server_context as tls_server_context

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("needs a POSIX pseudo-terminal", allow_module_level=True)

from test_client_pty import STEP_TIMEOUT, Terminal, open_client_pty, start_server

__all__ = ["ca"]  # the fixture, used by name

#: Ceiling for the terminal tests, which start real processes.
PTY_TEST_TIMEOUT = 90.0


async def _stop(process: trio.Process) -> None:
    """Kill a client if it still runs, and reap it."""
    if process.returncode is None:
        process.kill()
    await process.wait()


async def _stop_server(server: trio.Process) -> None:
    """SIGTERM (a graceful shutdown), then reap it and close its output."""
    server.terminate()
    with trio.move_on_after(STEP_TIMEOUT):
        await server.wait()
    if server.returncode is None:  # pragma: no cover
        server.kill()
        await server.wait()
    assert server.stdout is not None
    await server.stdout.aclose()


async def test_a_name_signed_in_elsewhere_does_not_take_itself_back(
    tmp_path: Path,
) -> None:
    server, port = await start_server(
        tmp_path / "server.log", db=str(tmp_path / "chat.db")
    )
    processes = [server]
    closing: list[Terminal] = []
    slaves: list[int] = []
    try:
        with trio.fail_after(PTY_TEST_TIMEOUT):
            owner = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await owner.join("teacher")
            await owner.send("/register blue giraffe")
            while not (await owner.expect("INFO")).startswith("INFO Registered"):
                pass
            await owner.send("/quit")
            await owner.until_closed()
            await owner.aclose()
            bob = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await bob.join("bob")

            terminals = []
            for _ in range(2):  # two terminals, the same name and password
                process, master, slave = await open_client_pty(
                    port,
                    name="teacher",
                    environ={"TRIO_CHAT_PASSWORD": "blue giraffe"},
                )
                processes.append(process)
                slaves.append(slave)
                terminal = Terminal(master)
                closing.append(terminal)
                terminals.append((process, terminal))
                await terminal.wait_until(
                    functools.partial(terminal.shows, "You are in #lobby as teacher"),
                    "the welcome",
                )
                assert (await bob.expect("JOIN")).endswith(" #lobby teacher")
            first, second = terminals
            # The first is told why, in plain words, and stops.
            await first[1].wait_until(
                lambda: first[1].shows("you signed in from another place"),
                "why the first terminal stopped",
            )
            assert await first[0].wait() == 1
            presence = [
                line.split(" ", 2)[::2]
                for line in bob.lines
                if line.startswith(("JOIN ", "LEAVE "))
            ]
            assert presence == [
                ["JOIN", "#lobby teacher"],
                ["LEAVE", "#lobby teacher disconnected (signed in elsewhere)"],
                ["JOIN", "#lobby teacher"],
            ]
            # The second stays: bob's next line is what it says, not another
            # leave and join.
            await second[1].wait_until(
                lambda: second[1].prompt_is("teacher #lobby> "), "its prompt"
            )
            await second[1].type(b"still here\r")
            line = await bob.line()
            assert line is not None and line.endswith(" <teacher> still here"), line
            await bob.aclose()
    finally:
        with trio.move_on_after(3 * STEP_TIMEOUT, shield=True):
            for process in processes[1:]:
                await _stop(process)
            await _stop_server(server)
            for terminal in closing:
                await terminal.aclose()
        for slave in slaves:
            os.close(slave)


# --------------------------------------------------------------------------
# Busy servers and final refusals, against a scripted server


async def test_a_busy_server_is_tried_again_when_it_says(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()  # the very first connection, refused
        await server.send(
            "BYE too-many-new-connections retry-after=20 Too many new connections"
            " from your address (the most is 20 a minute); wait a little."
        )
        await server.close()
        await run.ui.expect(
            "-- the server is busy: Too many new connections from your address"
            " (the most is 20 a minute); wait a little. Trying again in 20 s..."
        )
        server = await run.net.accept()
        first, second = run.net.attempts
        assert second - first == pytest.approx(20.0)  # not sooner
        await server.join("alice")
        # Without a hint: the usual backoff.
        await server.send("BYE server-shutdown The server is shutting down.")
        await server.close()
        server = await run.net.accept()
        await server.send("BYE too-many-connections The server is full.")
        await server.close()
        await run.ui.expect("Trying again in 2 s...")
        server = await run.net.accept()
        await server.join("alice")


@pytest.mark.parametrize(
    ("goodbye", "message"),
    [
        (
            "BYE banned You are banned from this server.",
            "the server closed the connection: You are banned from this server.",
        ),
        (
            "BYE signed-in-elsewhere You signed in from another place.",
            "you signed in from another place, which closed this connection;"
            " this client does not reconnect (it would sign the other one out)",
        ),
    ],
)
async def test_a_final_goodbye_in_the_chat_ends_the_client(
    nursery: trio.Nursery, goodbye: str, message: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await server.send(goodbye)
        await server.close()
        error = await run.finished()
        assert isinstance(error, Refused)
        assert str(error) == message
        assert len(run.net.attempts) == 1


async def test_a_busy_server_without_reconnecting_is_one_clear_error(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice", reconnect=False)
        server = await run.net.accept()
        await server.send("BYE too-many-connections The server is full.")
        await server.close()
        error = await run.finished()
        assert isinstance(error, ConnectionLost)
        assert str(error) == "the server is busy: The server is full."


# --------------------------------------------------------------------------
# A classroom behind one NAT address, after a server restart


CLASS_SIZE = 8
#: New connections a minute from one address: fewer than the class.
NEW_PER_MINUTE = 5


async def test_a_classroom_behind_one_address_gets_back_in_after_a_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Each server, and the scopes its connections run in (cancelled: it died).
    servers: list[tuple[ChatServer, list[trio.CancelScope]]] = []
    attempts: list[float] = []
    nursery_box: list[trio.Nursery] = []

    def new_server(limits: Limits) -> None:
        chat = Chat(clock=trio.current_time, limits=limits)
        servers.append((ChatServer(chat, limits=limits), []))

    async def serve(stream: trio.abc.Stream) -> None:
        server, scopes = servers[-1]
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await server.handle_stream(
                stream, peer="192.0.2.1:5000", address_key="192.0.2.1"
            )

    async def connect() -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        attempts.append(trio.current_time())
        ours, theirs = trio.testing.memory_stream_pair()
        nursery_box[0].start_soon(serve, theirs)
        return ours

    limits = Limits(
        max_new_per_minute=NEW_PER_MINUTE,
        max_per_address=0,
        max_unregistered_per_address=CLASS_SIZE,
        flood_rate=0,
    )
    # The first server started with no limit on new connections.
    new_server(
        dataclasses.replace(
            limits, max_new_per_minute=0, max_unregistered_per_address=0
        )
    )
    uis = [RecordingUI() for _ in range(CLASS_SIZE)]
    with trio.fail_after(10 * 60):
        async with trio.open_nursery() as nursery:
            nursery_box.append(nursery)
            inputs = []
            for number, ui in enumerate(uis):
                send, receive = trio.open_memory_channel[str](10)
                inputs.append(send)
                config = ClientConfig(name=f"student{number}")
                nursery.start_soon(
                    functools.partial(run_client, config, ui, receive, connect=connect)
                )
            for ui in uis:
                await ui.expect("You are in #lobby")
            attempts.clear()
            restarted = trio.current_time()
            _old, connections = servers[-1]
            new_server(limits)  # with a limit on new connections, at last
            for scope in connections:  # the old one dies: every connection cut
                scope.cancel()
            for ui in uis:  # a minute or so: longer than one expect's step
                while sum("You are in #lobby" in line for line in ui.lines) < 2:
                    await ui._changed.wait()
            everyone_back = trio.current_time() - restarted
            for send in inputs:
                await send.aclose()
    # Some had to wait for the window; none hammered the server meanwhile.
    waited = [ui for ui in uis if any("the server is busy" in s for s in ui.lines)]
    assert len(waited) == CLASS_SIZE - NEW_PER_MINUTE
    assert len(attempts) <= CLASS_SIZE + 2 * len(waited)
    assert everyone_back < 2 * 60
    assert all(not any("!!" in line for line in ui.lines) for ui in uis)
    # Each was told once, in one line.
    assert all(sum("wait a little" in s for s in ui.lines) == 1 for ui in waited)


def test_refusals_that_clear_up_are_the_servers_temporary_ones() -> None:
    codes = set()
    admission = Admission(Limits(max_connections=1, max_per_address=1))
    assert admission.admit("192.0.2.1", 0.0) is None
    for key in ("192.0.2.1", "192.0.2.2"):
        refusal = admission.admit(key, 0.0)
        assert refusal is not None
        codes.add(refusal.code)
    assert codes <= client.TEMPORARY_REFUSALS


# --------------------------------------------------------------------------
# The wrong kind of connection for the server: told how, never retried


async def test_a_plain_client_on_a_tls_port_is_told_to_try_tls(
    ca: trustme.CA,
) -> None:
    _send, lines = trio.open_memory_channel[str](1)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_context(ca, "127.0.0.1")) as port:
            # The server waits for a TLS handshake, the client for a greeting.
            config = ClientConfig(port=port, name="alice", reply_timeout=1.0)
            with pytest.raises(Refused) as caught:
                await run_client(config, RecordingUI(), lines)
    assert str(caught.value) == (
        f"the server at 127.0.0.1:{port} did not answer; is it a TLS server? try --tls"
    )


async def test_a_tls_server_wanting_a_client_certificate_says_so_and_no_loop(
    ca: trustme.CA, tmp_path: Path
) -> None:
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_ctx = tls_server_context(
        *_write_leaf(ca, tmp_path, "server", "127.0.0.1"),
        client_ca=tmp_path / "clients-ca.pem",
    )
    stranger = _write_leaf(trustme.CA(), tmp_path, "eve", "eve.example")
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_ctx) as port:
            results = []
            for certificate in ([], ["--cert", stranger[0], "--key", stranger[1]]):
                results.append(
                    await trio.run_process(
                        [
                            sys.executable,
                            *("-m", "trio_chat", "client", "--port", str(port)),
                            *("--tls", "--cafile", str(tmp_path / "ca.pem")),
                            *(*certificate, "--name", "alice"),
                        ],
                        stdin=b"hello\n",
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                )
    without, wrong = results
    assert without.returncode == 1
    assert without.stderr.decode() == (
        "trio-chat: the server closed the TLS connection at once: it wants a"
        " client certificate (--cert FILE --key FILE)\n"
    )
    assert wrong.returncode == 1
    assert wrong.stderr.decode() == (
        "trio-chat: the server closed the TLS connection at once: it did not"
        " accept your client certificate (--cert); it takes only certificates"
        " signed by its own client CA\n"
    )
    assert b"TLS error" not in without.stdout + wrong.stdout


async def test_a_server_with_a_ca_of_its_own_suggests_cafile(ca: trustme.CA) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(server_context(ca, "127.0.0.1")) as port:
            config = ClientConfig(port=port, ssl_context=client_context())
            with pytest.raises(client.ConnectError) as caught:
                await client.open_connection(config)
    assert str(caught.value) == (
        "TLS certificate verification failed for 127.0.0.1: unable to get local"
        " issuer certificate; if the server's certificate comes from a CA of its"
        " own, trust that CA with --cafile (its ca.pem)"
    )


# --------------------------------------------------------------------------
# Rooms come back as they were


class Restartable:
    """A chat server that can die and come back (fresh, as after a restart).

    `connect` is the client's: an in-memory connection to the server of the
    moment.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: list[trio.CancelScope] = []
        self.server = ChatServer(Chat(clock=trio.current_time))

    async def _serve(self, stream: trio.abc.Stream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            await self.server.handle_stream(stream)

    async def connect(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        ours, theirs = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._serve, theirs)
        return ours

    async def peer(self, name: str) -> Peer:
        peer = Peer(await self.connect())
        await peer.join(name)
        return peer

    def cut(self) -> None:
        """Every connection is cut; the server carries on (a network glitch)."""
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()

    def restart(self) -> None:
        """Every connection is cut; the new server knows nothing of the old."""
        self.cut()
        self.server = ChatServer(Chat(clock=trio.current_time))


async def test_a_key_set_with_key_survives_a_server_restart(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        chat = Restartable(nursery)
        ui = RecordingUI()
        typed, lines = trio.open_memory_channel[str](10)
        config = ClientConfig(name="alice")
        nursery.start_soon(
            functools.partial(run_client, config, ui, lines, connect=chat.connect)
        )
        await ui.expect("You are in #lobby as alice")
        await typed.send("/join #study")
        await ui.expect("now talking in #study")
        await typed.send("/key s3cret")
        await ui.expect("alice set a key on #study.")
        chat.restart()
        await ui.expect("rejoined #study")
        bob = await chat.peer("bob")
        await bob.send("/join #study")
        assert await bob.expect("ERR") == "ERR bad-room-key #study needs the right key."
        await bob.send("/join #study s3cret")
        assert await bob.expect("SWITCH") == "SWITCH #study"
        # Removed, it stays removed: after the next restart the room is open.
        await typed.send("/key")
        await ui.expect("alice removed the key on #study.")
        await bob.aclose()
        chat.restart()
        await ui.expect("rejoined #study")
        carol = await chat.peer("carol")
        await carol.send("/join #study")
        assert await carol.expect("SWITCH") == "SWITCH #study"
        await typed.aclose()


async def test_a_reconnection_replays_only_what_was_not_seen(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        chat = Restartable(nursery)
        bob = await chat.peer("bob")
        await bob.send("before alice came")
        ui = RecordingUI()
        typed, lines = trio.open_memory_channel[str](10)
        config = ClientConfig(name="alice")
        nursery.start_soon(
            functools.partial(run_client, config, ui, lines, connect=chat.connect)
        )
        await ui.expect("before alice came")  # history, as she joins
        await bob.expect("JOIN")
        await bob.send("one")
        await ui.expect("one")
        await trio.sleep(5)  # (virtual) seconds pass between the lines
        await bob.send("two")
        await ui.expect("two")
        chat.cut()  # bob too: he comes back while alice waits to reconnect
        bob = await chat.peer("bob")
        await bob.send("while alice was away")
        await ui.expect("You are in #lobby as alice")  # in again
        await ui.expect("while alice was away")
        await bob.send("three")
        await ui.expect("three")
        shown = [line for line in ui.lines if "<bob>" in line]
        for text in ("before alice came", "one", "two", "while alice was away"):
            assert sum(line.endswith(text) for line in shown) == 1, (text, shown)
        await typed.aclose()


# --------------------------------------------------------------------------
# The name prompt, in a terminal


async def test_the_name_prompt_says_what_it_wants_and_survives_the_deadline(
    tmp_path: Path,
) -> None:
    # A short name timeout: the warning comes 10 s before it, at once here.
    server, port = await start_server(tmp_path / "server.log", "--name-timeout", "11")
    process, master, slave = await open_client_pty(port, name=None)
    terminal = Terminal(master)
    try:
        with trio.fail_after(PTY_TEST_TIMEOUT):
            await terminal.wait_until(
                lambda: (
                    terminal.shows("Choose a name:") and terminal.shows("your name:")
                ),
                "a prompt for the name, in words",
            )
            await terminal.wait_until(
                lambda: terminal.prompt_is("your name: "), "the prompt drawn"
            )
            await terminal.type(b"bob smith\r")
            await terminal.wait_until(
                lambda: terminal.shows(
                    "!! 'bob smith': A name may hold only letters, digits"
                ),
                "which name was refused, and why",
            )
            await terminal.wait_until(
                lambda: terminal.shows("s left to choose a name"),
                "a warning before the deadline",
            )
            await terminal.wait_until(
                lambda: (
                    terminal.shows("no name chosen in time")
                    and terminal.shows("reconnecting in 1 s")
                ),
                "the deadline passing, and the client staying",
            )
            await terminal.wait_until(
                lambda: (
                    terminal.prompt_is("your name: ")
                    and sum("Choose a name:" in row for row in terminal.rows()) >= 3
                    # (and its warning printed: keys typed meanwhile would echo)
                    and sum("s left to choose" in row for row in terminal.rows()) >= 2
                ),
                "the prompt for a name again, after reconnecting",
            )
            await terminal.type(b"bob\r")
            await terminal.wait_until(
                lambda: terminal.shows("You are in #lobby as bob"), "the welcome"
            )
            assert process.returncode is None
    finally:
        with trio.move_on_after(3 * STEP_TIMEOUT, shield=True):
            await _stop(process)
            await _stop_server(server)
            await terminal.aclose()
        os.close(slave)


async def test_parting_another_room_is_no_news_about_the_current_one(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        chat = Restartable(nursery)
        ui = RecordingUI()
        typed, lines = trio.open_memory_channel[str](10)
        config = ClientConfig(name="alice")
        nursery.start_soon(
            functools.partial(run_client, config, ui, lines, connect=chat.connect)
        )
        await ui.expect("Nobody is online.")
        await ui.expect("You are in #lobby as alice")
        await typed.send("/join #dev")
        await ui.expect("-- now talking in #dev")
        await typed.send("/switch #lobby")
        await ui.expect("-- now talking in #lobby")
        await typed.send("/part #dev")
        await ui.expect("alice left #dev")
        await typed.send("/who *")
        assert await ui.expect("alice") == "-- online: alice"
        assert ui.lines.count("-- now talking in #lobby") == 1
        await typed.send("/switch #lobby")  # asked for: said, though the same
        await ui.expect("-- now talking in #lobby")
        await typed.aclose()


async def test_a_tls_port_that_turns_the_first_connection_away_is_tried_again(
    tmp_path: Path, ca: trustme.CA
) -> None:
    """A TLS port refuses (full, busy) by closing before the handshake: even
    the first connection is tried again, with a word on why."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    accepted = 0
    twice = trio.Event()

    async def turn_away(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        if accepted == 2:
            twice.set()
        await stream.aclose()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, turn_away, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    [
                        sys.executable,
                        *("-m", "trio_chat", "client", "--port", str(port)),
                        *("--tls", "--cafile", str(tmp_path / "ca.pem")),
                        *("--name", "alice"),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
            # A line to send, and the input kept open: a bot waiting to talk.
            await process.stdin.send_all(b"hello\n")
            await twice.wait()  # it came back after the first refusal
            process.terminate()
            output = b""
            while chunk := await process.stdout.receive_some(4096):
                output += chunk
            await process.wait()
            nursery.cancel_scope.cancel()
    assert b"closed the connection before TLS began" in output
    assert b"retrying in" in output
