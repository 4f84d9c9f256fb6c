"""The client with piped input, as a bot or a script runs it.

`printf 'build finished\\n' | trio-chat client --name ci-bot`: the real
command line, its input from a pipe, against a real server on port 0. A
script is shown what it asked for and what is said once it speaks, not the
greeting or the history; `-q` shows nothing; empty input connects to
nothing and says so.
"""

from __future__ import annotations

import subprocess
import sys

import trio
from chatpeer import Peer
from test_client import TEST_TIMEOUT, serving


async def _client(
    port: int, stdin: bytes, *options: str
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [
            sys.executable,
            *("-m", "trio_chat", "client", "--port", str(port)),
            *("--name", "ci-bot", *options),
        ],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_a_bot_is_shown_what_it_needs_and_no_banner_or_history() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as port:
            alice = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await alice.join("alice")
            for number in range(20):  # a lobby with history
                await alice.send(f"earlier line {number}")
            said = await _client(port, b"build finished\n")
            assert said.returncode == 0, said.stderr
            assert said.stdout == b"" and said.stderr == b""
            while not (await alice.expect("MSG")).endswith(" <ci-bot> build finished"):
                pass
            asked = await _client(port, b"/who\n")
            assert asked.returncode == 0, asked.stderr
            assert asked.stdout.decode().splitlines() == [
                "-- 2 users in #lobby:",
                "-- in #lobby: alice, ci-bot",
            ]
            quiet = await _client(port, b"/who\n", "-q")
            assert quiet.returncode == 0, quiet.stderr
            assert quiet.stdout == b"" and quiet.stderr == b""
            await alice.aclose()


async def test_empty_input_says_so_and_never_connects() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as port:
            alice = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await alice.join("alice")
            result = await _client(port, b"")
            assert result.returncode == 0
            assert result.stdout == b""
            assert result.stderr.decode() == (
                "trio-chat: the input was empty: nothing to send, so the client"
                " did not connect\n"
            )
            # Nobody joined and left for nothing: up to the answer to her own
            # /who, with her alone, alice hears no JOIN.
            await alice.send("/who")
            lines = [await alice.line()]
            while lines[-1] != "INFO 1 user in #lobby:":
                lines.append(await alice.line())
            assert not any(str(line).startswith(("JOIN", "LEAVE")) for line in lines)
            await alice.aclose()
