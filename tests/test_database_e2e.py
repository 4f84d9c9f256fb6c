"""The database file as the real server meets it: damaged, shared, killed."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from chatpeer import Peer
from loadtools import chat_server, open_socket

from trio_chat import events as ev
from trio_chat.store import DatabaseDamaged, Store

#: Generous ceiling for a subprocess to start or stop (CI machines are slow).
PROCESS_TIMEOUT = 30.0


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `trio-chat serve` that is expected to stop at start-up."""
    return subprocess.run(
        [sys.executable, "-m", "trio_chat", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def scramble_pages(path: Path, *, seed: int = 1, share: float = 0.3) -> None:
    """Overwrite 64 random bytes in about `share` of the file's pages."""
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    page = 4096
    for number in range(2, len(data) // page):
        if rng.random() < share:
            offset = number * page + rng.randrange(page - 64)
            data[offset : offset + 64] = rng.randbytes(64)
    path.write_bytes(data)


def fill(path: Path, rows: int = 3000) -> None:
    with Store(path) as store:
        for n in range(rows):
            text = f"line {n} " * 10
            store.append("#lobby", ev.Message(float(n), "#lobby", "alice", text))


def test_a_database_with_scrambled_pages_is_named_and_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.db"
    fill(path)
    scramble_pages(path)
    result = serve_once("--db", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"trio-chat: history database {path} is damaged (")
    assert lines[0].endswith(
        "; restore it from a backup, or move it away to start with an empty one"
    )
    assert "Traceback" not in result.stderr


def test_text_that_is_not_utf8_is_damage_of_that_file(tmp_path: Path) -> None:
    # Damage the quick check cannot see: bytes inside a row's text.
    path = tmp_path / "chat.db"
    fill(path, rows=50)
    data = bytearray(path.read_bytes())
    at = data.rindex(b"line 49 ")
    data[at : at + 2] = b"\x8c\xff"
    path.write_bytes(data)
    with Store(path) as store, pytest.raises(DatabaseDamaged) as caught:
        store.history("#lobby", 5)
    assert str(caught.value) == (
        f"history database {path} is damaged (text that is not UTF-8); restore"
        " it from a backup, or move it away to start with an empty one"
    )
    result = serve_once("--db", str(path), "--history", "5")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"trio-chat: {caught.value}"


async def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PROCESS_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "trio_chat", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_a_second_server_on_the_same_database_is_refused(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "chat.db")
    async with chat_server(tmp_path, "--db", db) as first:
        second = await run("serve", "--port", "0", "--db", db)
        assert second.returncode == 2
        assert second.stderr.decode().strip() == (
            f"trio-chat: history database {db} is in use by trio-chat process"
            f" {first.pid}: stop it first, or use another file"
        )
        # The first one carries on.
        peer = Peer(await open_socket(first.port))
        await peer.join("alice")
        await peer.aclose()


async def test_adduser_refuses_while_a_server_holds_the_database(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "chat.db")
    password = b"newbie's password\n"
    async with chat_server(tmp_path, "--db", db) as server:
        added = await run("adduser", "newbie", "--db", db, stdin=password)
        assert added.returncode == 1
        assert added.stderr.decode().strip() == (
            f"trio-chat: {db} is in use by a running server (process"
            f" {server.pid}): stop it first, or register newbie in the chat"
            " with /register"
        )
        assert added.stdout == b""  # nothing claims the name was registered
    # Stopped (even by SIGKILL: the lock goes with the process), it works,
    # and the next server asks for the password.
    added = await run("adduser", "newbie", "--db", db, stdin=password)
    assert added.returncode == 0, added.stderr
    async with chat_server(tmp_path, "--db", db) as server:
        peer = Peer(await open_socket(server.port))
        await peer.expect("NAME")
        await peer.send("newbie")
        assert (await peer.expect("PASSWORD")).startswith("PASSWORD newbie ")
        await peer.send("newbie's password")
        await peer.expect("WELCOME")
        await peer.aclose()


# -- kill -9 right after an announcement: what was announced is there -------


async def login(port: int, name: str, password: str) -> Peer:
    peer = Peer(await open_socket(port))
    await peer.expect("NAME")
    await peer.send(name)
    await peer.expect("PASSWORD")
    await peer.send(password)
    await peer.expect("WELCOME")
    return peer


async def until(peer: Peer, start: str) -> str:
    """Read until a line starting with `start`; return it."""
    while True:
        line = await peer.line()
        assert line is not None, f"closed before {start!r}"
        if line.startswith(start):
            return line


async def kill_after(
    tmp_path: Path,
    db: str,
    command: str,
    announced: str,
    *,
    room: str = "",
    others: tuple[str, ...] = (),
) -> None:
    """Have the operator send `command` (in `room`); kill -9 once `announced`.

    `others` join the lobby first.
    """
    options = ("--db", db, "--operator", "teacher", "--flood-rate", "0")
    async with chat_server(tmp_path, *options) as server:
        present = [Peer(await open_socket(server.port)) for _ in others]
        for peer, name in zip(present, others, strict=True):
            await peer.join(name)
        teacher = await login(server.port, "teacher", TEACHER_PASSWORD)
        if room:
            await teacher.send(f"/join {room}")
            await until(teacher, "SWITCH")
        await teacher.send(command)
        await until(teacher, announced)
        server.process.kill()  # SIGKILL: the moment it was announced
        await server.process.wait()
        for peer in (teacher, *present):
            await peer.aclose()


TEACHER_PASSWORD = "teacher's password"


@pytest.fixture
async def teachers_db(tmp_path: Path) -> str:
    db = str(tmp_path / "class.db")
    added = await run("adduser", "teacher", "--db", db, stdin=b"teacher's password\n")
    assert added.returncode == 0, added.stderr
    return db


async def test_a_ban_announced_survives_kill_9(
    tmp_path: Path, teachers_db: str
) -> None:
    await kill_after(tmp_path, teachers_db, "/ban bob 1d rude", "INFO teacher banned")
    async with chat_server(tmp_path, "--db", teachers_db) as server:
        bob = Peer(await open_socket(server.port))
        await bob.expect("NAME")
        await bob.send("bob")
        assert (await bob.expect("ERR")).startswith("ERR banned The name bob is")
        await bob.aclose()


async def test_a_topic_announced_survives_kill_9(
    tmp_path: Path, teachers_db: str
) -> None:
    await kill_after(tmp_path, teachers_db, "/topic exams", "TOPIC", room="#dev")
    async with chat_server(tmp_path, "--db", teachers_db) as server:
        alice = Peer(await open_socket(server.port))
        await alice.join("alice")
        await alice.send("/join #dev")
        assert (await until(alice, "TOPIC")).endswith(" #dev teacher exams")
        await alice.aclose()


async def test_a_motd_announced_survives_kill_9(
    tmp_path: Path, teachers_db: str
) -> None:
    await kill_after(tmp_path, teachers_db, "/motd no class today", "MOTD")
    async with chat_server(tmp_path, "--db", teachers_db) as server:
        alice = Peer(await open_socket(server.port))
        await alice.join("alice")
        assert await until(alice, "MOTD") == "MOTD no class today"
        await alice.aclose()


async def test_a_key_announced_survives_kill_9(
    tmp_path: Path, teachers_db: str
) -> None:
    await kill_after(
        tmp_path, teachers_db, "/key sesame", "INFO teacher set a key", room="#staff"
    )
    async with chat_server(tmp_path, "--db", teachers_db) as server:
        # The first one back needs the key, and does not run the room.
        alice = Peer(await open_socket(server.port))
        await alice.join("alice")
        await alice.send("/join #staff")
        assert (
            await until(alice, "ERR") == "ERR bad-room-key #staff needs the right key."
        )
        await alice.send("/join #staff sesame")
        await until(alice, "SWITCH")
        await alice.send("/key")
        assert (await until(alice, "ERR")).startswith("ERR not-op ")
        await alice.aclose()


async def test_a_mute_announced_survives_kill_9(
    tmp_path: Path, teachers_db: str
) -> None:
    await kill_after(
        tmp_path, teachers_db, "/mute bob", "INFO teacher muted", others=("bob",)
    )
    async with chat_server(tmp_path, "--db", teachers_db) as server:
        bob = Peer(await open_socket(server.port))
        await bob.join("bob")
        await bob.send("hello?")  # the name's mute, in #lobby, until lifted
        assert await until(bob, "ERR") == "ERR muted You are muted in #lobby."
        await bob.aclose()
