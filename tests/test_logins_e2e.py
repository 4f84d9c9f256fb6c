"""Accounts on the real server: guessing and registering, from loopback addresses."""

from __future__ import annotations

import sys
from pathlib import Path

import chatpeer
import pytest
import trio
from chatpeer import LINE_TIMEOUT, Peer
from loadtools import PROCESS_TIMEOUT, address, chat_server, open_socket

from trio_chat.limits import LOGIN_MAX_WAIT


async def test_sixty_wrong_passwords_at_once_do_not_lock_the_operator_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A try may wait for its turn (at most LOGIN_MAX_WAIT) before its answer.
    monkeypatch.setattr(chatpeer, "LINE_TIMEOUT", LOGIN_MAX_WAIT + LINE_TIMEOUT)
    db = str(tmp_path / "chat.db")
    with trio.fail_after(PROCESS_TIMEOUT):
        added = await trio.run_process(
            [sys.executable, "-m", "trio_chat", "adduser", "teacher", "--db", db],
            stdin=b"teacher's password\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert added.returncode == 0, added.stderr
    async with chat_server(tmp_path, "--db", db, "--operator", "teacher") as server:
        guessers: list[Peer] = []
        try:
            for n in range(60):  # 5 from each of 12 addresses
                peer = Peer(await open_socket(server.port, source=address(7, n % 12)))
                guessers.append(peer)
                await peer.expect("NAME")
                await peer.send("teacher")
                await peer.expect("PASSWORD")
            for n, peer in enumerate(guessers):
                await peer.send(f"guess number {n}")
            answers = [await peer.expect("ERR") for peer in guessers]
            assert all(
                a.startswith(("ERR bad-password ", "ERR login-refused "))
                for a in answers
            )
            checked = sum(a.startswith("ERR bad-password ") for a in answers)
            print(f"\n60 wrong passwords from 12 addresses: {checked} checked")
            assert checked < 30
            # Right after: the operator, from an address that has not failed.
            owner = Peer(await open_socket(server.port, source=address(8, 0)))
            await owner.expect("NAME")
            await owner.send("teacher")
            await owner.expect("PASSWORD")
            await owner.send("teacher's password")
            assert (await owner.expect("WELCOME")).startswith("WELCOME teacher ")
            assert await owner.expect("INFO") == "INFO You are a server operator here."
            await owner.aclose()
        finally:
            for peer in guessers:
                await peer.aclose()


async def test_registrations_from_one_address_are_counted_across_a_restart(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "chat.db")
    options = ("--db", db, "--max-registrations-per-address", "2")
    source = address(9, 0)

    async def register(port: int, name: str) -> str:
        peer = Peer(await open_socket(port, source=source))
        await peer.join(name)
        await peer.send("/register a good password")
        while True:
            line = await peer.line()
            assert line is not None
            if line.startswith(("INFO Registered", "ERR ")):
                await peer.aclose()
                return line

    async with chat_server(tmp_path, *options) as server:
        for name in ("ann", "ben"):
            assert (await register(server.port, name)).startswith("INFO Registered")
    async with chat_server(tmp_path, *options) as server:
        assert await register(server.port, "cat") == (
            "ERR register-failed Too many names were registered from your address"
            " today; try again tomorrow."
        )
