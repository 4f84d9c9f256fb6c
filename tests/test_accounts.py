"""Registered names: /register, the password prompt, /identify, ghosts."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from chatpeer import Peer

from trio_chat.accounts import KDF, MAX_FAILURES, Accounts, hash_password
from trio_chat.chat import Chat
from trio_chat.limits import Limits
from trio_chat.server import ChatServer
from trio_chat.store import AsyncStore

NOW = 1_795_475_428.0
STAMP = "2026-11-23T23:10:28Z"


def test_hashes_are_salted_and_repeatable() -> None:
    salt, other = b"s" * 16, b"t" * 16
    assert hash_password("secret", salt) == hash_password("secret", salt)
    assert hash_password("secret", salt) != hash_password("secret", other)
    assert hash_password("secret", salt) != hash_password("Secret", salt)
    assert len(hash_password("secret", salt)) == 32
    assert KDF.startswith("scrypt:")


class Server:
    def __init__(self, server: ChatServer, nursery: trio.Nursery) -> None:
        self.server = server
        self.nursery = nursery

    async def connect(self) -> Peer:
        client, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.server.handle_stream, server_end)
        return Peer(client)

    async def join(self, name: str) -> Peer:
        peer = await self.connect()
        await peer.join(name)
        return peer


@pytest.fixture
async def chat_server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Server]:
    async with AsyncStore.open(str(tmp_path / "accounts.db")) as store:
        accounts = await Accounts.load(store)
        chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
        yield Server(ChatServer(chat, store=store, accounts=accounts), nursery)
        nursery.cancel_scope.cancel()


async def register(server: Server, name: str, password: str) -> Peer:
    peer = await server.join(name)
    await peer.send(f"/register {password}")
    info = await peer.expect("INFO")
    while not info.startswith("INFO Registered"):
        info = await peer.expect("INFO")
    assert info == (
        f"INFO Registered {name}: from now on, connecting as {name}"
        " needs this password."
    )
    return peer


async def test_a_registered_name_asks_for_its_password(chat_server: Server) -> None:
    alice = await register(chat_server, "alice", "correct horse")
    await alice.send("/quit")
    await alice.until_closed()
    peer = await chat_server.connect()
    await peer.expect("NAME")
    await peer.send("ALICE")
    prompt = await peer.expect("PASSWORD")
    assert prompt.startswith("PASSWORD ALICE This name is registered")
    await peer.send("wrong")
    assert await peer.expect("ERR") == "ERR bad-password Wrong password for ALICE."
    await peer.expect("NAME")
    await peer.send("alice")
    await peer.expect("PASSWORD")
    await peer.send("correct horse")
    assert (await peer.expect("WELCOME")).startswith("WELCOME alice ")


async def test_another_name_instead_of_the_password(chat_server: Server) -> None:
    alice = await register(chat_server, "alice", "pw")
    peer = await chat_server.connect()
    await peer.expect("NAME")
    await peer.send("alice")
    await peer.expect("PASSWORD")
    await peer.send("/nick bob")
    assert (await peer.expect("WELCOME")).startswith("WELCOME bob ")
    await peer.send("/nick alice")
    assert (await peer.expect("ERR")).startswith("ERR name-")
    await alice.send("/nick alice")  # your own name stays yours
    await alice.expect("INFO")


async def test_the_right_password_replaces_a_ghost(chat_server: Server) -> None:
    ghost = await register(chat_server, "alice", "pw")
    bob = await chat_server.join("bob")
    peer = await chat_server.connect()
    await peer.expect("NAME")
    await peer.send("alice")
    await peer.expect("PASSWORD")
    await peer.send("pw")
    assert (await peer.expect("WELCOME")).startswith("WELCOME alice ")
    assert (await ghost.until_closed())[-1] == (
        "BYE signed-in-elsewhere You signed in from another place;"
        " this connection is closed."
    )
    assert (
        await bob.expect("LEAVE")
        == f"LEAVE {STAMP} #lobby alice disconnected (signed in elsewhere)"
    )
    assert await bob.expect("JOIN") == f"JOIN {STAMP} #lobby alice"


async def test_identify_and_failed_attempts_are_limited(chat_server: Server) -> None:
    alice = await register(chat_server, "alice", "pw")
    await alice.send("/identify pw")
    assert await alice.expect("INFO") == "INFO You are identified as alice."
    for _ in range(MAX_FAILURES):
        await alice.send("/identify nope")
        assert (await alice.expect("ERR")).startswith("ERR bad-password ")
    await alice.send("/identify pw")
    assert (await alice.expect("ERR")).startswith("ERR identify-failed Too many")
    bob = await chat_server.join("bob")
    await bob.send("/identify whatever")
    assert (await bob.expect("ERR")).startswith("ERR not-registered ")
    await bob.send("/register pw")
    await bob.expect("INFO")
    await bob.send("/register again")
    assert (await bob.expect("ERR")).startswith("ERR register-failed ")


async def test_hashing_never_stalls_the_event_loop(chat_server: Server) -> None:
    peers = [await chat_server.join(f"user{n}") for n in range(4)]
    longest = 0.0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = trio.current_time()
        while not done.is_set():
            await trio.sleep(0.001)
            now = trio.current_time()
            longest = max(longest, now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        for peer in peers:
            await peer.send("/register hunter2")
        for peer in peers:
            while not (await peer.expect("INFO")).startswith("INFO Registered"):
                pass
        done.set()
    assert longest < 0.1  # a generous ceiling: scrypt runs in worker threads


async def test_no_accounts_without_a_store(nursery: trio.Nursery) -> None:
    server = ChatServer(Chat(clock=lambda: NOW))
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    peer = Peer(client)
    await peer.join("alice")
    await peer.send("/register pw")
    assert (await peer.expect("ERR")).startswith("ERR no-accounts ")


async def login(server: Server, name: str, password: str) -> Peer:
    peer = await server.connect()
    await peer.expect("NAME")
    await peer.send(name)
    await peer.expect("PASSWORD")
    await peer.send(password)
    return peer


@pytest.mark.parametrize("lookalike", ["a1ice", "aIice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞"])
async def test_a_registered_names_lookalikes_are_not_for_others(
    chat_server: Server, lookalike: str
) -> None:
    alice = await register(chat_server, "alice", "pw")
    await alice.send("/quit")
    await alice.until_closed()
    peer = await chat_server.connect()
    await peer.expect("NAME")
    await peer.send(lookalike)
    assert await peer.expect("ERR") == (
        f"ERR name-taken The name {lookalike} looks too much like alice,"
        " a registered name."
    )
    await peer.expect("NAME")
    await peer.send("bob")
    await peer.expect("WELCOME")
    await peer.send(f"/nick {lookalike}")
    assert (await peer.expect("ERR")).startswith(
        f"ERR name-taken The name {lookalike} looks too much like alice,"
    )
    # alice's right password still gets her name, and bob stays bob.
    owner = await login(chat_server, "alice", "pw")
    assert (await owner.expect("WELCOME")).startswith("WELCOME alice ")


async def test_registering_a_lookalike_of_a_registered_name_fails(
    chat_server: Server,
) -> None:
    # a1ice was online before alice registered (the names never met online).
    early = await chat_server.join("a1ice")
    await chat_server.server.accounts.register("alice", "pw")  # type: ignore[union-attr]
    await early.send("/register mine")
    assert await early.expect("ERR") == (
        "ERR register-failed The name a1ice looks too much like alice,"
        " a registered name."
    )


async def test_the_owner_always_gets_the_name_a_lookalike_is_renamed(
    chat_server: Server,
) -> None:
    bob = await chat_server.join("bob")
    early = await chat_server.join("a1ice")
    await bob.expect("JOIN")
    await early.send("/join #dev")
    await early.expect("SWITCH")
    # An account made while a1ice was online (e.g. with adduser).
    await chat_server.server.accounts.register("alice", "pw")  # type: ignore[union-attr]
    owner = await login(chat_server, "alice", "pw")
    assert (await owner.expect("WELCOME")).startswith("WELCOME alice ")
    assert await early.expect("INFO") == (
        "INFO The name a1ice looks too much like alice, a registered name whose"
        " owner just logged in: you are guest-c2 now (/nick to choose another)."
    )
    assert await early.expect("NICK") == f"NICK {STAMP} #lobby a1ice -> guest-c2"
    assert await early.expect("NICK") == f"NICK {STAMP} #dev a1ice -> guest-c2"
    assert await bob.expect("NICK") == f"NICK {STAMP} #lobby a1ice -> guest-c2"
    assert await bob.expect("JOIN") == f"JOIN {STAMP} #lobby alice"
    await early.send("/nick a1ice")
    assert (await early.expect("ERR")).startswith("ERR name-taken ")


async def test_a_bound_certificate_gets_its_name_past_a_lookalike(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("chat.test").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_OPTIONAL
    alice_cert = ca.issue_cert("alice@chat.test")
    fingerprint = hashlib.sha256(
        ssl.PEM_cert_to_DER_cert(alice_cert.cert_chain_pems[0].bytes().decode())
    ).hexdigest()
    async with AsyncStore.open(str(tmp_path / "accounts.db")) as store:
        accounts = await Accounts.load(store)
        chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
        server = ChatServer(
            chat, ssl_context=server_context, store=store, accounts=accounts
        )

        async def connect(*, cert: bool) -> Peer:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            ca.configure_trust(context)
            if cert:
                alice_cert.configure_cert(context)
            client, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, server_end)
            return Peer(trio.SSLStream(client, context, server_hostname="chat.test"))

        early = await connect(cert=False)
        await early.join("a1ice")
        await accounts.register("alice", "pw")  # made while a1ice was online
        await store.set_cert(fingerprint, "alice", NOW)
        owner = await connect(cert=True)
        assert (await owner.expect("WELCOME")).startswith("WELCOME alice ")
        while not (line := await early.expect("INFO")).startswith("INFO The name"):
            pass
        assert line.startswith("INFO The name a1ice looks too much like alice,")
        assert await early.expect("NICK") == f"NICK {STAMP} #lobby a1ice -> guest-c1"
        nursery.cancel_scope.cancel()


async def test_registered_lookalikes_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "accounts.db")
    async with AsyncStore.open(path) as store:
        await (await Accounts.load(store)).register("aIice", "pw")
    async with AsyncStore.open(path) as store:
        accounts = await Accounts.load(store)
    # Loaded as registered (with its capital I), not only by its key.
    assert accounts.lookalike("alice") == "aIice"
    assert accounts.lookalike("AIICE") is None  # the same name, not a lookalike
    assert accounts.lookalike("bob") is None
