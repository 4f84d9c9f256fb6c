"""Real IRC clients against the real program: weechat and irssi.

Each joins through the IRC listener, says a line that a line-protocol user
in the lobby receives, and quits with a reason that user is told. weechat runs
headless, set up with `-r` commands and driven through its FIFO; irssi runs
in a tmux session, driven with `send-keys`. Every step waits for what the
line user is told, never for a fixed time.

`.ci/run` installs the clients from Debian when they are missing. Where
they cannot be had, the tests skip and say so; where `.ci/run` could have
installed them (TRIO_CHAT_REQUIRE_CLIENTS) they fail instead, so a missing
client never passes silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from chatpeer import Peer

#: Set (by .ci/run, where apt-get can install them): a missing client fails.
REQUIRE_CLIENTS = "TRIO_CHAT_REQUIRE_CLIENTS"
#: Generous ceiling for a program to start, answer or stop (CI is slow).
PROGRAM_TIMEOUT = 60.0


def need(program: str) -> str:
    """The path of `program`; skip (fail under CI) where it is missing."""
    path = shutil.which(program)
    if path is not None:
        return path
    message = (
        f"{program} is not installed: apt-get install {program}"
        " (.ci/run installs it when it can)"
    )
    if os.environ.get(REQUIRE_CLIENTS):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Program:
    """The real server, with an IRC and a line listener."""

    irc_port: int
    line_port: int
    log: Path

    async def line_user(self, name: str) -> Peer:
        peer = Peer(await trio.open_tcp_stream("127.0.0.1", self.line_port))
        peer.timeout = PROGRAM_TIMEOUT
        await peer.join(name)
        return peer


@pytest.fixture
async def program(tmp_path: Path) -> AsyncIterator[Program]:
    log = tmp_path / "server.log"
    config = tmp_path / "empty.toml"
    config.write_text("")
    argv = [sys.executable, "-m", "trio_chat", "--config", str(config), "serve"]
    argv += ["--db", ":memory:", "--listen", "irc:127.0.0.1:0"]
    argv += ["--listen", "line:127.0.0.1:0"]
    with log.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL
        )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(PROGRAM_TIMEOUT):
            while output.count(b"\n") < 2:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, f"server exited early: {log.read_text()}"
                output += chunk
        ports = {}
        for line in output.decode().splitlines()[:2]:
            address, kind = line.removeprefix("listening on ").split(" ")
            ports[kind.strip("()")] = int(address.rsplit(":", 1)[1])
        yield Program(ports["irc"], ports["line"], log)
    finally:
        process.terminate()
        with trio.move_on_after(PROGRAM_TIMEOUT, shield=True):
            await process.wait()
            await stop(process)


async def stop(process: trio.Process) -> None:
    """Kill `process` if it still runs, and reap it."""
    if process.returncode is None:
        process.kill()
    with trio.move_on_after(PROGRAM_TIMEOUT, shield=True):
        await process.wait()


async def until(peer: Peer, wanted: Callable[[str], bool]) -> str:
    """The first line `peer` receives that is `wanted`."""
    while True:
        line = await peer.line()
        assert line is not None, "the line user was disconnected"
        if wanted(line):
            return line


def said_by(name: str, text: str) -> Callable[[str], bool]:
    return lambda line: line.startswith("MSG ") and line.endswith(f"<{name}> {text}")


def joined(name: str) -> Callable[[str], bool]:
    return lambda line: line.startswith("JOIN ") and line.endswith(f" {name}")


def left(name: str) -> Callable[[str], bool]:
    return lambda line: line.startswith("LEAVE ") and f" {name} quit" in line


async def test_weechat_joins_talks_and_quits(program: Program, tmp_path: Path) -> None:
    weechat = need("weechat-headless")
    bob = await program.line_user("bob")
    home = tmp_path / "weechat"
    home.mkdir()
    setup = ";".join(
        [
            "/set weechat.look.buffer_time_format ''",
            f"/server add trio 127.0.0.1/{program.irc_port} -nicks=wee",
            "/set irc.server.trio.autojoin ''",
            "/connect trio",
        ]
    )
    process = await trio.lowlevel.open_process(
        [weechat, "--dir", str(home), "--no-script", "--run-command", setup],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # weechat is registered and in the lobby (the server puts it there).
        await until(bob, joined("wee"))
        fifo = home / f"weechat_fifo_{process.pid}"
        assert fifo.exists(), f"no FIFO in {sorted(p.name for p in home.iterdir())}"

        def command(line: str) -> None:
            descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(descriptor, line.encode() + b"\n")
            finally:
                os.close(descriptor)

        command("irc.server.trio */msg #lobby hello from weechat")
        await until(bob, said_by("wee", "hello from weechat"))
        command("*/quit bye")
        line = await until(bob, left("wee"))
        assert line.endswith("(bye)"), line
        with trio.fail_after(PROGRAM_TIMEOUT):
            assert await process.wait() == 0
    finally:
        with trio.move_on_after(PROGRAM_TIMEOUT, shield=True):
            await stop(process)
            await bob.aclose()


async def test_irssi_joins_talks_and_quits(program: Program, tmp_path: Path) -> None:
    irssi = need("irssi")
    tmux = need("tmux")
    bob = await program.line_user("bob")
    home = tmp_path / "irssi"
    home.mkdir()
    (home / "config").write_text(
        'settings = { core = { real_name = "irssi user"; user_name = "irs"; }; };\n'
    )
    session = f"trio-chat-irssi-{os.getpid()}"
    socket = str(tmp_path / "tmux.sock")
    base = [tmux, "-S", socket]
    argv = [irssi, f"--home={home}", "-c", "127.0.0.1"]
    argv += ["-p", str(program.irc_port), "-n", "irs"]
    await trio.run_process(
        [*base, "new-session", "-d", "-s", session, "-x", "120", "-y", "40", *argv],
        env={**os.environ, "TERM": "xterm-256color"},
    )

    async def keys(text: str) -> None:
        await trio.run_process([*base, "send-keys", "-t", session, text, "Enter"])

    try:
        await until(bob, joined("irs"))
        await keys("/msg #lobby hello from irssi")
        await until(bob, said_by("irs", "hello from irssi"))
        await keys("/quit bye")
        line = await until(bob, left("irs"))
        assert line.endswith("(bye)"), line
    finally:
        with trio.move_on_after(PROGRAM_TIMEOUT, shield=True):
            await trio.run_process([*base, "kill-server"], check=False)
            await bob.aclose()
