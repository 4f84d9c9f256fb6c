"""Registered names: /register, the password prompt, /identify, ghosts."""

from __future__ import annotations

import hashlib
import io
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from chatpeer import Peer
from trio.testing import wait_all_tasks_blocked

from trio_chat import accounts as accounts_module
from trio_chat import cli
from trio_chat.accounts import KDF, Accounts, hash_password
from trio_chat.chat import Chat
from trio_chat.limits import (
    LOGIN_BASE_DELAY,
    LOGIN_FREE_FAILURES_PER_ADDRESS,
    LOGIN_FREE_FAILURES_PER_NAME,
    LOGIN_MAX_WAIT,
    Limits,
)
from trio_chat.moderation import Moderation
from trio_chat.server import ChatServer
from trio_chat.store import AsyncStore, User

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
        if server.store is not None:
            nursery.start_soon(server.save_behind, server.store)

    async def connect(self, address: str | None = None) -> Peer:
        client, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(
            lambda: self.server.handle_stream(server_end, address_key=address)
        )
        return Peer(client)

    async def join(self, name: str) -> Peer:
        peer = await self.connect()
        await peer.join(name)
        return peer


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that stands still unless a test moves it.

    Threads (hashes, the database) run meanwhile in real time. After 5 idle
    real seconds it jumps anyway, so a forgotten wait fails an assertion on
    the time instead of hanging.
    """
    return trio.testing.MockClock(autojump_threshold=5.0)


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
    alice = await register(chat_server, "alice", "alice pw 1")
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
    ghost = await register(chat_server, "alice", "alice pw 1")
    bob = await chat_server.join("bob")
    peer = await chat_server.connect()
    await peer.expect("NAME")
    await peer.send("alice")
    await peer.expect("PASSWORD")
    await peer.send("alice pw 1")
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


async def test_wrong_passwords_slow_down_the_next_ones_never_refuse_them(
    chat_server: Server, clock: trio.testing.MockClock
) -> None:
    alice = await register(chat_server, "alice", "alice pw 1")
    await alice.send("/identify alice pw 1")
    assert await alice.expect("INFO") == "INFO You are identified as alice."
    for _ in range(LOGIN_FREE_FAILURES_PER_ADDRESS + 1):  # typos: at full speed
        await alice.send("/identify nope")
        assert (await alice.expect("ERR")).startswith("ERR bad-password ")
    assert trio.current_time() == 0
    # The next try waits its turn (1 s); the right password still works.
    await alice.send("/identify alice pw 1")
    await wait_all_tasks_blocked()
    clock.jump(LOGIN_BASE_DELAY)
    assert await alice.expect("INFO") == "INFO You are identified as alice."
    bob = await chat_server.join("bob")
    await bob.send("/identify whatever")
    assert (await bob.expect("ERR")).startswith("ERR not-registered ")
    await bob.send("/register bob pw 12")
    await bob.expect("INFO")
    await bob.send("/register once again")
    assert (await bob.expect("ERR")).startswith("ERR register-failed ")


async def test_guessing_from_twelve_addresses_neither_gets_far_nor_locks_out_the_owner(
    chat_server: Server,
    clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accounts = chat_server.server.accounts
    assert accounts is not None
    await accounts.register("teacher", "teacher's password")
    hashed: list[str] = []

    def counting(password: str, salt: bytes) -> bytes:
        hashed.append(password)
        return hash_password(password, salt)

    monkeypatch.setattr("trio_chat.accounts.hash_password", counting)
    guessers = []
    for n in range(60):
        peer = await chat_server.connect(address=f"10.0.0.{n % 12 + 1}")
        await peer.expect("NAME")
        await peer.send("teacher")
        await peer.expect("PASSWORD")
        guessers.append(peer)
    for n, peer in enumerate(guessers):  # all at once
        await peer.send(f"guess {n}")
    await wait_all_tasks_blocked()  # every try has started (and counted)
    clock.jump(LOGIN_MAX_WAIT)  # the few that wait for a turn get it
    answers = [await peer.expect("ERR") for peer in guessers]
    checked = [a for a in answers if a.startswith("ERR bad-password ")]
    refused = [a for a in answers if a.startswith("ERR login-refused ")]
    assert len(checked) == len(hashed)
    assert len(checked) + len(refused) == 60
    # One try per fresh address, and a few before the name was known to be
    # under attack; not 60.
    print(f"\n60 tries from 12 addresses: {len(hashed)} checked")
    assert len(hashed) <= 12 + LOGIN_FREE_FAILURES_PER_NAME
    assert refused[0].startswith(
        "ERR login-refused Too many wrong passwords lately; try again in "
    )
    # The owner, from an address that has not failed, gets in at once.
    now = trio.current_time()
    owner = await chat_server.connect(address="192.0.2.7")
    await owner.expect("NAME")
    await owner.send("teacher")
    await owner.expect("PASSWORD")
    await owner.send("teacher's password")
    assert (await owner.expect("WELCOME")).startswith("WELCOME teacher ")
    assert trio.current_time() == now


async def test_hashing_never_stalls_the_event_loop(
    chat_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scrypt runs in a worker thread: while a hash is held there, the chat
    goes on (no clock involved, so a busy machine cannot fail this)."""
    release = threading.Event()
    started = trio.Event()
    threads: list[threading.Thread] = []

    def held(password: str, salt: bytes) -> bytes:
        threads.append(threading.current_thread())
        trio.from_thread.run_sync(started.set)
        release.wait()
        return hash_password(password, salt)

    monkeypatch.setattr(accounts_module, "hash_password", held)
    alice, bob, carol = [
        await chat_server.join(name) for name in ("alice", "bob", "carol")
    ]
    try:
        await alice.send("/register hunter22")
        await started.wait()  # the hash is under way, and held
        await bob.send("hello while alice hashes")
        said = await carol.expect("MSG")
        assert said.endswith("<bob> hello while alice hashes")
        assert threads[0] is not threading.main_thread()
    finally:
        release.set()
    while not (await alice.expect("INFO")).startswith("INFO Registered"):
        pass


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


# -- one password, whichever way it comes in -----------------------------------


async def answer(server: Server, name: str, password: str) -> str:
    """Answer the prompts as `name` with `password`; the line that follows."""
    peer = await server.connect()
    await peer.expect("NAME")
    await peer.send(name)
    await peer.expect("PASSWORD")
    await peer.send(password)
    line = await peer.line()
    assert line is not None
    await peer.aclose()
    return line


async def test_what_register_accepts_works_at_the_prompt(chat_server: Server) -> None:
    # /register takes its line sanitised and stripped; the prompt takes the
    # same text the same way, however it is padded or tabbed.
    alice = await chat_server.join("alice")
    await alice.send("/register   correct\thorse  ")
    while not (await alice.expect("INFO")).startswith("INFO Registered alice"):
        pass
    await alice.send("/identify \tcorrect horse")
    assert await alice.expect("INFO") == "INFO You are identified as alice."
    for typed in ("  correct\thorse  ", "correct horse", "correct\thorse\x1b[0m"):
        assert (await answer(chat_server, "alice", typed)).startswith("WELCOME alice ")
    assert await answer(chat_server, "alice", "correcthorse") == (
        "ERR bad-password Wrong password for alice."
    )


async def test_new_passwords_are_refused_up_front_with_a_reason(
    chat_server: Server,
) -> None:
    bob = await chat_server.join("bob")
    refusals = {
        "/register short": "A password needs at least 8 characters.",
        "/register " + "x" * 257: "A password may have at most 256 characters.",
        "/register /nick mallory": (
            "A password may not start with / (the password prompt reads commands)."
        ),
    }
    for line, reason in refusals.items():
        await bob.send(line)
        assert await bob.expect("ERR") == f"ERR register-failed {reason}"
    await bob.send("/register 8 chars!")
    while not (await bob.expect("INFO")).startswith("INFO Registered bob"):
        pass


async def test_a_password_starting_with_a_slash_is_a_password_at_the_prompt(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # Made before the rule against them: only /nick and /quit are commands.
    salt = b"s" * 16
    user = User("carol", "carol", hash_password("/etc/passwd", salt), salt, KDF, 0, 0)
    async with AsyncStore.open(str(tmp_path / "old.db")) as store:
        assert await store.add_user(user)
        chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
        server = Server(
            ChatServer(chat, store=store, accounts=await Accounts.load(store)), nursery
        )
        assert (await answer(server, "carol", "/etc/passwd")).startswith(
            "WELCOME carol"
        )
        peer = await server.connect()
        await peer.expect("NAME")
        await peer.send("carol")
        await peer.expect("PASSWORD")
        await peer.send("/NICK dave")
        assert (await peer.expect("WELCOME")).startswith("WELCOME dave ")
        nursery.cancel_scope.cancel()


async def test_adduser_takes_the_password_as_the_prompt_does(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "added.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["adduser", "erin", "--db", db]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("  spaced\tout pass  \n"))
    assert cli.main(["adduser", "erin", "--db", db]) == 0
    async with AsyncStore.open(db) as store:
        chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
        server = Server(
            ChatServer(chat, store=store, accounts=await Accounts.load(store)), nursery
        )
        for typed in ("spaced out pass", "  spaced\tout pass"):
            assert (await answer(server, "erin", typed)).startswith("WELCOME erin ")
        nursery.cancel_scope.cancel()


async def test_the_server_password_is_compared_normalised(
    nursery: trio.Nursery,
) -> None:
    moderation = Moderation(server_password="open sesame")
    server = Server(ChatServer(Chat(clock=lambda: NOW, moderation=moderation)), nursery)
    peer = await server.connect()
    await peer.expect("PASSWORD")
    await peer.send("  open\tsesame ")
    await peer.expect("NAME")


@pytest.mark.parametrize("lookalike", ["a1ice", "aIice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞"])
async def test_a_registered_names_lookalikes_are_not_for_others(
    chat_server: Server, lookalike: str
) -> None:
    alice = await register(chat_server, "alice", "alice pw 1")
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
    owner = await login(chat_server, "alice", "alice pw 1")
    assert (await owner.expect("WELCOME")).startswith("WELCOME alice ")


async def test_registering_a_lookalike_of_a_registered_name_fails(
    chat_server: Server,
) -> None:
    # a1ice was online before alice registered (the names never met online).
    early = await chat_server.join("a1ice")
    await chat_server.server.accounts.register("alice", "alice pw 1")  # type: ignore[union-attr]
    await early.send("/register mine, all mine")
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
    await chat_server.server.accounts.register("alice", "alice pw 1")  # type: ignore[union-attr]
    owner = await login(chat_server, "alice", "alice pw 1")
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
        await accounts.register("alice", "alice pw 1")  # made while a1ice was online
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
        await (await Accounts.load(store)).register("aIice", "aIice pw 1")
    async with AsyncStore.open(path) as store:
        accounts = await Accounts.load(store)
    # Loaded as registered (with its capital I), not only by its key.
    assert accounts.lookalike("alice") == "aIice"
    assert accounts.lookalike("AIICE") is None  # the same name, not a lookalike
    assert accounts.lookalike("bob") is None
