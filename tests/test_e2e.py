"""End to end: the real `python -m trio_chat` in subprocesses, real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from chatpeer import Peer

from trio_chat import __version__, tls

#: Generous ceiling for a subprocess to start or stop (CI machines are slow).
PROCESS_TIMEOUT = 30.0


class Server:
    def __init__(self, process: trio.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log


async def start_server(tmp_path: Path, *args: str) -> Server:
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_chat", "serve", "--port", "0", *args]
            + ([] if "--db" in args else ["--db", str(tmp_path / "history.db")]),
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
        )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(PROCESS_TIMEOUT):
        while b"\n" not in output:
            chunk = await process.stdout.receive_some(1024)
            assert chunk, f"server exited early: {log.read_text()}"
            output += chunk
    first = output.split(b"\n", 1)[0].decode()
    assert first.startswith("listening on 127.0.0.1:"), first
    return Server(process, int(first.rsplit(":", 1)[1].split()[0]), log)


@pytest.fixture
async def plain_server(tmp_path: Path) -> AsyncIterator[Server]:
    server = await start_server(tmp_path)
    yield server
    await kill(server)


async def kill(server: Server) -> None:
    if server.process.returncode is None:
        server.process.kill()
    await server.process.wait()


async def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    with trio.fail_after(PROCESS_TIMEOUT):
        return await server.process.wait()


async def test_nc_style_clients_chat_and_sigterm_is_clean(plain_server: Server) -> None:
    alice = Peer(await trio.open_tcp_stream("127.0.0.1", plain_server.port))
    bob = Peer(await trio.open_tcp_stream("127.0.0.1", plain_server.port))
    await alice.join("alice")
    await bob.join("bob")
    assert (await alice.expect("JOIN")).endswith(" #lobby bob")
    await alice.send("hello bob")
    assert (await bob.expect("MSG")).endswith(" #lobby <alice> hello bob")
    await bob.send_bytes(b"hi alice\n")  # bare LF works too
    assert (await alice.expect("MSG")).endswith(" #lobby <bob> hi alice")
    assert await stop(plain_server) == 0
    for peer in (alice, bob):
        assert (await peer.until_closed())[-1].startswith("BYE server-shutdown ")
        await peer.aclose()
    log = plain_server.log.read_text()
    assert "Traceback" not in log
    assert "SIGTERM received" in log


async def test_sigint_also_shuts_down_cleanly(plain_server: Server) -> None:
    peer = Peer(await trio.open_tcp_stream("127.0.0.1", plain_server.port))
    await peer.join("alice")
    plain_server.process.send_signal(signal.SIGINT)
    with trio.fail_after(PROCESS_TIMEOUT):
        assert await plain_server.process.wait() == 0
    assert (await peer.until_closed())[-1].startswith("BYE server-shutdown ")
    await peer.aclose()


async def test_tls_server_with_the_committed_certificates(tmp_path: Path) -> None:
    server = await start_server(tmp_path, "--tls")
    try:
        context = tls.client_context(tls.dev_ca_path())
        peers = []
        for name in ("alice", "bob"):
            stream = await trio.open_ssl_over_tcp_stream(
                "localhost" if name == "alice" else "127.0.0.1",
                server.port,
                ssl_context=context,
            )
            peer = Peer(stream)
            await peer.join(name)
            peers.append(peer)
        alice, bob = peers
        await alice.expect("JOIN")
        await bob.send("encrypted")
        assert (await alice.expect("MSG")).endswith(" <bob> encrypted")
        assert await stop(server) == 0
        for peer in peers:
            assert (await peer.until_closed())[-1].startswith("BYE server-shutdown ")
            await trio.aclose_forcefully(peer.stream)
        assert "development certificate" in server.log.read_text()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            await kill(server)


async def test_piped_client_sends_every_line_then_quits(plain_server: Server) -> None:
    watcher = Peer(await trio.open_tcp_stream("127.0.0.1", plain_server.port))
    await watcher.join("watcher")
    env = {**os.environ, "NO_COLOR": "1"}
    with trio.fail_after(PROCESS_TIMEOUT):
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "trio_chat",
                "client",
                "--port",
                str(plain_server.port),
                "--name",
                "bot",
            ],
            stdin=b"first line\nsecond line\n/me waves\n",
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert (await watcher.expect("JOIN")).endswith(" #lobby bot")
    assert (await watcher.expect("MSG")).endswith(" <bot> first line")
    assert (await watcher.expect("MSG")).endswith(" <bot> second line")
    assert (await watcher.expect("ACTION")).endswith(" bot waves")
    assert (await watcher.expect("LEAVE")).endswith(" bot quit")
    assert b"\x1b[" not in result.stdout  # no colour on a pipe
    await watcher.aclose()


async def test_client_reports_a_refused_connection_in_one_line() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    with trio.fail_after(PROCESS_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_chat", "client", "--port", str(port)],
            stdin=b"hi\n",  # something to send: empty input connects to nothing
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    errors = result.stderr.decode().strip().splitlines()
    assert len(errors) == 1 and "refused" in errors[0]
    assert "Traceback" not in result.stderr.decode()


def test_version_and_help() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trio_chat", *args],
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )

    assert run("--version").stdout.strip() == f"trio-chat {__version__}"
    serve_help = run("serve", "--help").stdout
    for option in ("--host", "--port", "--tls", "--cert", "--key", "--log-level"):
        assert option in serve_help
    client_help = run("client", "--help").stdout
    for option in ("--host", "--port", "--tls", "--cafile", "--name", "--no-reconnect"):
        assert option in client_help


def test_half_configured_tls_fails_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_chat",
            "serve",
            "--port",
            "0",
            "--tls",
            "--cert",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("trio-chat: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_limit_is_in_the_readme() -> None:
    from trio_chat.limits import LIMIT_OPTIONS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for option in LIMIT_OPTIONS:
        assert f"`{option.flag}`" in readme, option.flag


def test_client_ca_without_tls_fails_with_one_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_chat",
            "serve",
            "--port",
            "0",
            "--client-ca",
            "certs/ca.pem",
        ],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "trio-chat: --client-ca needs --tls (or a tls or ircs listener)"
    )


async def test_history_survives_kill_9(tmp_path: Path) -> None:
    db = str(tmp_path / "kept.db")
    server = await start_server(tmp_path, "--db", db, "--flood-rate", "0")
    try:
        alice = Peer(await trio.open_tcp_stream("127.0.0.1", server.port))
        bob = Peer(await trio.open_tcp_stream("127.0.0.1", server.port))
        await alice.join("alice")
        await bob.join("bob")
        seen = []
        for number in range(30):
            await alice.send(f"line {number}")
            seen.append(await bob.expect("MSG"))  # bob saw it: it must survive
        server.process.kill()  # SIGKILL: no shutdown, no flush
        await server.process.wait()
        await alice.aclose()
        await bob.aclose()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            await kill(server)
    again = await start_server(tmp_path, "--db", db, "--history", "50")
    try:
        carol = Peer(await trio.open_tcp_stream("127.0.0.1", again.port))
        await carol.join("carol")
        await carol.send("/who")
        await carol.expect("WHO")
        replayed = [
            line[len("HIST ") :] for line in carol.lines if line.startswith("HIST ")
        ]
        for line in seen:
            assert line in replayed
        await carol.send("/history 200")
        await carol.expect("INFO")
        await carol.aclose()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            await kill(again)


async def test_names_bans_topics_and_history_survive_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "class.db")
    with trio.fail_after(PROCESS_TIMEOUT):
        adduser = await trio.run_process(
            [sys.executable, "-m", "trio_chat", "adduser", "teacher", "--db", db],
            stdin=b"teacher's password\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert adduser.returncode == 0, adduser.stderr
    options = ("--db", db, "--operator", "teacher", "--flood-rate", "0")
    server = await start_server(tmp_path, *options)
    try:
        teacher = Peer(await trio.open_tcp_stream("127.0.0.1", server.port))
        await teacher.expect("NAME")
        await teacher.send("teacher")
        await teacher.expect("PASSWORD")
        await teacher.send("teacher's password")
        await teacher.expect("WELCOME")
        alice = Peer(await trio.open_tcp_stream("127.0.0.1", server.port))
        await alice.join("alice")
        await alice.send("/register alice's password")
        await alice.send("/join #dev")
        await alice.send("/topic exams on Friday")
        await alice.expect("TOPIC")
        await alice.send("see you all on Friday")
        await teacher.send("/ban bob 1d rude")
        await teacher.send("/ban 10.1.2.3")
        await teacher.send("/bans")
        while not (await teacher.expect("INFO")).startswith("INFO address 10.1.2.3"):
            pass
        assert await stop(server) == 0
        await teacher.aclose()
        await alice.aclose()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            await kill(server)
    again = await start_server(tmp_path, *options)
    try:
        bob = Peer(await trio.open_tcp_stream("127.0.0.1", again.port))
        await bob.expect("NAME")
        await bob.send("bob")
        assert (await bob.expect("ERR")).endswith(": rude")
        await bob.send("alice")  # registered: asks for alice's password
        assert (await bob.expect("PASSWORD")).startswith("PASSWORD alice ")
        await bob.send("/nick carol")
        await bob.expect("WELCOME")
        await bob.send("/join #dev")
        assert (await bob.expect("TOPIC")).endswith(" #dev alice exams on Friday")
        await bob.send("/history")
        await bob.expect("INFO")
        history = await bob.expect("HIST")
        while "MSG" not in history:
            history = await bob.expect("HIST")
        assert history.endswith(" #dev <alice> see you all on Friday")
        await bob.aclose()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            await kill(again)


async def test_plain_and_tls_listeners_serve_one_chat(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "trio_chat",
                "serve",
                "--db",
                ":memory:",
                "--listen",
                "line:127.0.0.1:0",
                "--listen",
                "tls:127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
        )
    server = Server(process, 0, log)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(PROCESS_TIMEOUT):
            while output.count(b"\n") < 2:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, f"server exited early: {log.read_text()}"
                output += chunk
        plain_line, tls_line = output.decode().splitlines()[:2]
        assert plain_line.startswith("listening on 127.0.0.1:")
        assert plain_line.endswith(" (line)") and tls_line.endswith(" (tls)")
        plain_port = int(plain_line.rsplit(":", 1)[1].split()[0])
        tls_port = int(tls_line.rsplit(":", 1)[1].split()[0])
        with trio.fail_after(PROCESS_TIMEOUT):
            alice = Peer(await trio.open_tcp_stream("127.0.0.1", plain_port))
            await alice.join("alice")
            context = tls.client_context(tls.dev_ca_path())
            bob = Peer(
                await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", tls_port, ssl_context=context, https_compatible=False
                )
            )
            await bob.join("bob")
            await alice.expect("JOIN")
            await bob.send("hello over TLS")
            assert (await alice.expect("MSG")).endswith("<bob> hello over TLS")
            await alice.aclose()
            await bob.aclose()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            await kill(server)
