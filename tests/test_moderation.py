"""Server-wide moderation: operators, bans, the MOTD and closed servers."""

from __future__ import annotations

import contextlib
import io
import math
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import chatpeer
import pytest
import trio
import trio.testing
import trustme
from chatpeer import Peer

from trio_chat import cli
from trio_chat import events as ev
from trio_chat.accounts import Accounts
from trio_chat.chat import Chat
from trio_chat.limits import LOGIN_MAX_WAIT, MAX_TOPICS_PER_ADDRESS, Limits
from trio_chat.moderation import (
    MAX_MOTD_BYTES,
    MAX_MOTD_LINES,
    BanRecord,
    Moderation,
    ban_target,
    motd_lines,
)
from trio_chat.protocol import parse_request
from trio_chat.server import ChatServer
from trio_chat.store import AsyncStore, Store, StoreError

NOW = 1_795_475_428.0
OP_PASSWORD = "correct horse"


# -- the rules, without a server ---------------------------------------------


def test_ban_targets_are_addresses_or_names() -> None:
    assert ban_target("10.0.0.5") == ("address", "10.0.0.5")
    # IPv6 hosts get a whole /64, so a ban covers it, like the connection limits.
    assert ban_target("2001:db8::1") == ("address", "2001:db8::/64")
    assert ban_target("Bob") == ("name", "bob")


def test_ban_commands_parse() -> None:
    assert parse_request("/ban bob") == ev.Ban("bob", math.inf, "")
    assert parse_request("/ban bob 2h spamming links") == ev.Ban(
        "bob", 7200.0, "spamming links", "2h"
    )
    assert parse_request("/ban bob being rude") == ev.Ban("bob", math.inf, "being rude")
    assert parse_request("/ban 10.0.0.5 7d") == ev.Ban(
        "10.0.0.5", 7 * 86400.0, "", "7d"
    )
    assert parse_request("/ban") == ev.BadCommand(
        "usage", "Usage: /ban NAME|ADDRESS [DURATION] [REASON]"
    )
    assert parse_request("/unban bob") == ev.Unban("bob")
    assert parse_request("/motd") == ev.Motd(None)
    assert parse_request("/motd Exams on Friday") == ev.Motd("Exams on Friday")
    assert parse_request("/certadd") == ev.CertBinding(add=True)
    assert parse_request("/certdel") == ev.CertBinding(add=False)


def test_bans_expire() -> None:
    moderation = Moderation()
    moderation.add(BanRecord("name", "bob", "", "teacher", 0.0, 60.0))
    moderation.add(BanRecord("address", "10.0.0.5", "", "teacher", 0.0, None))
    assert moderation.find("name", "bob", 59.0) is not None
    assert moderation.find("name", "bob", 60.0) is None
    assert [ban.target_key for ban in moderation.active(1e9)] == ["10.0.0.5"]


def test_motd_is_sanitised_and_bounded() -> None:
    lines, cut = motd_lines("Welcome!\x1b[2J\nExams Friday\n\n\n")
    assert lines == ("Welcome!", "Exams Friday") and not cut
    lines, cut = motd_lines("\n".join(f"line {n}" for n in range(50)))
    assert len(lines) == MAX_MOTD_LINES and cut
    lines, cut = motd_lines("\n".join("x" * 1000 for _ in range(10)))
    assert sum(len(line) + 1 for line in lines) <= MAX_MOTD_BYTES and cut


# -- a server with accounts ------------------------------------------------


class Server:
    """A ChatServer over memory streams, each connection from `address`.

    With `port`, connections are real sockets to that port instead.
    """

    def __init__(
        self, server: ChatServer, nursery: trio.Nursery, port: int | None = None
    ) -> None:
        self.server = server
        self.nursery = nursery
        self.port = port
        if server.store is not None and port is None:
            nursery.start_soon(server.save_behind, server.store)

    async def connect(self, address: str = "10.0.0.1") -> Peer:
        if self.port is not None:
            return Peer(await trio.open_tcp_stream("127.0.0.1", self.port))
        client, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(
            lambda: self.server.handle_stream(
                server_end, peer=f"{address}:5000", address_key=address
            )
        )
        return Peer(client)

    async def join(self, name: str, address: str = "10.0.0.1") -> Peer:
        peer = await self.connect(address)
        await peer.join(name)
        return peer

    async def login(self, name: str, password: str, address: str = "10.0.0.1") -> Peer:
        peer = await self.connect(address)
        await peer.expect("NAME")
        await peer.send(name)
        await peer.expect("PASSWORD")
        await peer.send(password)
        await peer.expect("WELCOME")
        return peer


async def info(peer: Peer, start: str) -> str:
    """The next INFO line starting with `start` (others skipped)."""
    while not (line := await peer.expect("INFO")).startswith(start):
        pass
    return line


async def register(server: Server, name: str, password: str) -> Peer:
    peer = await server.join(name)
    await peer.send(f"/register {password}")
    while not (await peer.expect("INFO")).startswith("INFO Registered"):
        pass
    return peer


def open_server(
    store: AsyncStore,
    accounts: Accounts,
    nursery: trio.Nursery,
    *,
    clock: Callable[[], float] = lambda: NOW,
    **settings: object,
) -> Server:
    moderation = Moderation(operators=["teacher"], **settings)  # type: ignore[arg-type]
    chat = Chat(clock=clock, limits=Limits(flood_rate=0), moderation=moderation)
    return Server(ChatServer(chat, store=store, accounts=accounts), nursery)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    async with AsyncStore.open(str(tmp_path / "chat.db")) as store:
        yield store


@pytest.fixture
async def server(store: AsyncStore, nursery: trio.Nursery) -> AsyncIterator[Server]:
    server = open_server(store, await Accounts.load(store), nursery)
    yield server
    nursery.cancel_scope.cancel()


async def operator(server: Server) -> Peer:
    """`teacher`, registered and identified: a server operator."""
    root = await register(server, "teacher", OP_PASSWORD)
    await root.aclose()
    return await server.login("teacher", OP_PASSWORD)


async def test_an_operator_bans_a_name_and_lifts_it(server: Server) -> None:
    root = await operator(server)
    assert await root.expect("INFO") == "INFO You are a server operator here."
    bob = await server.join("bob", address="10.0.0.2")
    carol = await server.join("carol", address="10.0.0.3")
    await root.send("/ban bob 2h spamming links")
    assert await bob.expect("BYE") == "BYE banned Disconnected: banned."
    assert await carol.expect("LEAVE") == (
        "LEAVE 2026-11-23T23:10:28Z #lobby bob disconnected (banned)"
    )
    assert await info(carol, "INFO teacher") == (
        "INFO teacher banned bob for 2h: spamming links"
    )
    # The name stays banned, from any address; other names are welcome.
    again = await server.connect(address="10.0.0.9")
    await again.expect("NAME")
    await again.send("Bob")
    assert await again.expect("ERR") == (
        "ERR banned The name Bob is banned from this server until"
        " 2026-11-24 01:10 UTC: spamming links"
    )
    await again.expect("NAME")
    await root.send("/bans")
    assert await info(root, "INFO 1 ban") == "INFO 1 ban in force:"
    assert await root.expect("INFO") == (
        "INFO name bob until 2026-11-24 01:10 UTC by teacher: spamming links"
    )
    await root.send("/unban bob")
    assert await root.expect("INFO") == "INFO teacher lifted the ban on bob."
    await again.send("bob")
    await again.expect("WELCOME")


@pytest.mark.parametrize(
    "line", ["/ban dummy 10min flooding", "/ban dummy 5 flooding", "/ban dummy 0m"]
)
def test_a_mistyped_ban_duration_is_a_usage_error(line: str) -> None:
    # Not a ban until lifted with the reason "10min flooding".
    assert parse_request(line) == ev.BadCommand(
        "usage",
        "Usage: /ban NAME|ADDRESS [DURATION] [REASON]"
        " (DURATION: a number and s, m, h or d: 90s, 10m, 2h, 7d)",
    )


async def test_a_mistyped_ban_duration_bans_nobody(server: Server) -> None:
    root = await operator(server)
    dummy = await server.join("dummy", address="10.0.0.2")
    await root.send("/ban dummy 10min flooding")
    assert (await root.expect("ERR")).startswith("ERR usage Usage: /ban ")
    await root.send("/bans")
    assert await info(root, "INFO No bans") == "INFO No bans in force."
    await dummy.send("/who")
    assert await info(dummy, "INFO 2 users") == "INFO 2 users in #lobby:"


async def test_ban_durations_are_shown_as_given(server: Server) -> None:
    root = await operator(server)
    for target, duration in [("bob", "90s"), ("carol", "150s"), ("dave", "90m")]:
        await root.send(f"/ban {target} {duration}")
        assert await info(root, "INFO teacher banned") == (
            f"INFO teacher banned {target} for {duration}."
        )


async def test_only_identified_operators_may_ban(server: Server) -> None:
    await register(server, "alice", "alice's secret")
    mallory = await server.join("mallory")
    await mallory.send("/ban alice")
    assert await mallory.expect("ERR") == (
        "ERR not-operator Only server operators may do that."
    )
    for command in ("/unban alice", "/bans", "/motd pwned"):
        await mallory.send(command)
        assert (await mallory.expect("ERR")).startswith("ERR not-operator")
    # Taking an operator's name (not yet registered) does not make an op.
    fake = await server.join("teacher")
    await fake.send("/ban mallory")
    assert (await fake.expect("ERR")).startswith("ERR not-operator")


async def test_an_address_ban_refuses_connections_from_it(server: Server) -> None:
    root = await operator(server)
    bob = await server.join("bob", address="10.0.0.2")
    bobby = await server.join("bobby", address="10.0.0.2")
    await root.send("/whois bob")
    whois = await root.expect("INFO")
    while "bob:" not in whois:
        whois = await root.expect("INFO")
    assert whois.endswith("; from 10.0.0.2")
    await root.send("/ban 10.0.0.2 1d")
    assert await info(root, "INFO teacher banned") == (
        "INFO teacher banned 10.0.0.2 for 1d (bob, bobby disconnected)."
    )
    assert await bob.expect("BYE") == "BYE banned Disconnected: banned."
    assert await bobby.expect("BYE") == "BYE banned Disconnected: banned."
    refused = await server.connect(address="10.0.0.2")
    assert await refused.until_closed() == [
        "BYE banned You are banned from this server until 2026-11-24 23:10 UTC."
    ]
    # Others, and non-operators asking /whois, see no address.
    carol = await server.join("carol", address="10.0.0.3")
    await carol.send("/whois root")
    assert "from" not in await carol.expect("INFO")


async def test_bans_topics_and_motd_survive_a_restart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = str(tmp_path / "chat.db")
    async with AsyncStore.open(path) as store:
        moderation = Moderation(operators=["teacher"])
        chat = Chat(clock=lambda: NOW, limits=Limits(), moderation=moderation)
        first = ChatServer(chat, store=store, accounts=await Accounts.load(store))
        listeners = await nursery.start(first.serve_tcp, 0, "127.0.0.1")
        server = Server(first, nursery, port=listeners[0].socket.getsockname()[1])
        root = await operator(server)
        await root.send("/ban bob 1h")
        await root.send("/ban 10.0.0.7")
        await root.send("/motd Exams on Friday.")
        await root.expect("MOTD")
        await root.send("/join #dev")
        await root.expect("SWITCH")
        await root.send("/topic ship it")
        await root.expect("TOPIC")
        first.shutdown()  # writes what is queued before it returns
        await first.closed.wait()
        await root.aclose()
    async with AsyncStore.open(path) as store:
        chat = Chat(clock=lambda: NOW + 60, limits=Limits(flood_rate=0))
        await cli._load_moderation(store, chat)
        server = Server(
            ChatServer(chat, store=store, accounts=await Accounts.load(store)), nursery
        )
        refused = await server.connect(address="10.0.0.7")
        assert (await refused.until_closed())[0].startswith("BYE banned")
        bob = await server.connect()
        await bob.expect("NAME")
        await bob.send("bob")
        assert (await bob.expect("ERR")).startswith("ERR banned The name bob")
        alice = await server.join("alice")
        assert await alice.expect("MOTD") == "MOTD Exams on Friday."
        await alice.send("/join #dev")
        assert (await alice.expect("TOPIC")).endswith(" #dev teacher ship it")
    # An hour later the name ban has expired; the address ban has not.
    async with AsyncStore.open(path) as store:
        chat = Chat(clock=lambda: NOW + 3601, limits=Limits(flood_rate=0))
        await cli._load_moderation(store, chat)
        assert [ban.target_key for ban in chat.moderation.active(NOW + 3601)] == [
            "10.0.0.7"
        ]
    nursery.cancel_scope.cancel()


async def test_a_ban_expires_on_time(autojump_clock: trio.testing.MockClock) -> None:
    # No store: bans loaded as at start-up, checked against the virtual clock.
    moderation = Moderation()
    now = trio.current_time()
    moderation.add(BanRecord("name", "bob", "cool off", "teacher", now, now + 600))
    limits = Limits(name_timeout=0)  # bob may take all day
    chat = Chat(clock=trio.current_time, limits=limits, moderation=moderation)
    server = ChatServer(chat)
    async with trio.open_nursery() as nursery:
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        bob = Peer(client)
        await bob.expect("NAME")
        await bob.send("bob")
        assert (await bob.expect("ERR")).endswith(": cool off")
        await trio.sleep(599)
        await bob.send("bob")
        assert (await bob.expect("ERR")).startswith("ERR banned")
        await trio.sleep(1)
        await bob.send("bob")
        await bob.expect("WELCOME")
        nursery.cancel_scope.cancel()


async def test_motd_from_file_and_set_by_an_operator(
    store: AsyncStore, nursery: trio.Nursery
) -> None:
    server = open_server(
        store, await Accounts.load(store), nursery, motd=("Be kind.", "No spoilers.")
    )
    root = await operator(server)
    assert [await root.expect("MOTD"), await root.expect("MOTD")] == [
        "MOTD Be kind.",
        "MOTD No spoilers.",
    ]
    alice = await server.join("alice")
    await alice.send("/motd")
    assert await alice.expect("MOTD") == "MOTD Be kind."
    await root.send("/motd Exams on Friday.")
    assert await info(alice, "INFO teacher") == (
        "INFO teacher set the message of the day."
    )
    assert await alice.expect("MOTD") == "MOTD Exams on Friday."
    await root.send("/motd -")
    assert await alice.expect("INFO") == "INFO teacher reset the message of the day."
    assert await alice.expect("MOTD") == "MOTD Be kind."


async def test_a_server_password_comes_before_the_name(
    store: AsyncStore, nursery: trio.Nursery
) -> None:
    server = open_server(
        store, await Accounts.load(store), nursery, server_password="open sesame"
    )
    peer = await server.connect()
    assert await peer.expect("PASSWORD") == (
        "PASSWORD * This server needs a password: send it."
    )
    await peer.send("guess")
    assert await peer.expect("ERR") == "ERR bad-password Wrong server password."
    await peer.expect("PASSWORD")
    await peer.send("alice")  # a name is not the password either
    await peer.expect("ERR")
    await peer.send("open sesame")
    await peer.expect("NAME")
    await peer.send("alice")
    await peer.expect("WELCOME")
    quitter = await server.connect()
    await quitter.expect("PASSWORD")
    await quitter.send("/quit")
    assert await quitter.until_closed() == ["BYE quit Bye!"]


async def test_an_allowlist_admits_only_its_names(
    store: AsyncStore, nursery: trio.Nursery
) -> None:
    server = open_server(
        store, await Accounts.load(store), nursery, allow=["Alice", "bob"]
    )
    peer = await server.connect()
    await peer.expect("NAME")
    await peer.send("mallory")
    assert await peer.expect("ERR") == (
        "ERR not-allowed The name mallory is not on this server's list."
    )
    await peer.expect("NAME")
    await peer.send("alice")
    await peer.expect("WELCOME")
    await peer.send("/nick mallory")
    assert (await peer.expect("ERR")).startswith("ERR not-allowed")
    await peer.send("/nick bob")
    assert (await peer.expect("NICK")).endswith("alice -> bob")


async def test_registered_only_with_accounts_made_by_adduser(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.db"
    monkeypatch.setattr("sys.stdin", io.StringIO("student one's password\n"))
    assert cli.main(["adduser", "student1", "--db", str(path)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("again and again\n"))
    assert cli.main(["adduser", "Student1", "--db", str(path)]) == 1
    async with AsyncStore.open(str(path)) as store:
        server = open_server(
            store, await Accounts.load(store), nursery, registered_only=True
        )
        peer = await server.connect()
        await peer.expect("NAME")
        await peer.send("visitor")
        assert await peer.expect("ERR") == (
            "ERR not-allowed Only registered names may join this server;"
            " ask an operator for an account."
        )
        await peer.expect("NAME")
        await peer.send("student1")
        await peer.expect("PASSWORD")
        await peer.send("student one's password")
        await peer.expect("WELCOME")
        nursery.cancel_scope.cancel()


async def test_registrations_per_address_are_limited(
    store: AsyncStore, nursery: trio.Nursery
) -> None:
    chat = Chat(clock=lambda: NOW, limits=Limits(max_registrations_per_address=1))
    server = Server(
        ChatServer(chat, store=store, accounts=await Accounts.load(store)), nursery
    )
    await register(server, "alice", "first password")
    bob = await server.join("bob")
    await bob.send("/register second password")
    assert await bob.expect("ERR") == (
        "ERR register-failed Too many names were registered from your address"
        " today; try again tomorrow."
    )
    carol = await server.join("carol", address="10.0.0.9")
    await carol.send("/register third password")
    await info(carol, "INFO Registered carol")


async def test_room_ops_and_mutes_follow_the_person_not_the_name(
    server: Server,
) -> None:
    alice = await server.join("alice")
    await alice.send("/join #dev")
    await alice.expect("SWITCH")
    bob = await server.join("bob")
    await bob.send("/join #dev")
    await bob.expect("SWITCH")
    await alice.send("/mute bob")
    await bob.expect("INFO")
    await bob.send("/nick bobby")
    await bob.expect("NICK")
    await bob.send("still here")
    assert await bob.expect("ERR") == "ERR muted You are muted in #dev."
    # alice renames: still the op. She leaves; whoever takes her name is not.
    await alice.send("/nick alice2")
    await alice.expect("NICK")
    await alice.send("/unmute bobby")
    await bob.expect("INFO")
    await alice.send("/quit")
    await alice.until_closed()
    impostor = await server.join("alice2")
    await impostor.send("/join #dev")
    await impostor.expect("SWITCH")
    await impostor.send("/kick bobby")
    assert (await impostor.expect("ERR")).startswith("ERR not-op")


async def test_an_operator_runs_every_room(server: Server) -> None:
    alice = await server.join("alice")
    await alice.send("/join #dev")
    await alice.expect("SWITCH")
    bob = await server.join("bob")
    await bob.send("/join #dev")
    await bob.expect("SWITCH")
    root = await operator(server)
    await root.send("/join #dev")
    await root.expect("SWITCH")
    await root.send("/kick bob off topic")
    assert (
        await bob.expect("KICK")
        == "KICK 2026-11-23T23:10:28Z #dev bob teacher off topic"
    )


async def test_a_registered_users_ignores_are_kept(server: Server) -> None:
    alice = await register(server, "alice", "alice's secret")
    await alice.send("/ignore bob")
    await alice.expect("INFO")
    await alice.send("/quit")
    await alice.until_closed()
    alice = await server.login("alice", "alice's secret")
    await alice.send("/ignore")
    assert await info(alice, "INFO You ignore") == "INFO You ignore bob."
    start = len(alice.lines)
    bob = await server.join("bob")
    await bob.send("hello alice")
    await bob.send("/quit")
    await bob.until_closed()
    while not (await alice.expect("LEAVE")).endswith(" bob quit"):
        pass
    assert not any(line.startswith("MSG") for line in alice.lines[start:])


def test_the_database_is_kept_under_its_size_cap(tmp_path: Path) -> None:
    with Store(tmp_path / "chat.db") as store:
        for n in range(5000):
            store.append(
                "#lobby", ev.Message(float(n), "#lobby", "alice", f"line {n} " * 20)
            )
        before = store.size()
        assert store.shrink(before // 2, batch=500) > 0
        assert store.size() <= before // 2
        oldest = store.history("#lobby", 1, before_id=None)
        assert oldest  # the newest lines are kept
        first = store._conn.execute("SELECT min(id) FROM messages").fetchone()[0]
        assert first > 1
        # A hard cap: past it SQLite refuses to grow the file.
        store.set_max_size(store.size())
        with pytest.raises(StoreError, match="full"):
            for _ in range(5000):
                store.append("#lobby", ev.Message(0.0, "#lobby", "alice", "x" * 1000))


# -- client certificates -----------------------------------------------------


async def test_certadd_logs_in_by_certificate(
    store: AsyncStore, nursery: trio.Nursery
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("chat.test").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
    server = ChatServer(
        chat,
        ssl_context=server_context,
        store=store,
        accounts=await Accounts.load(store),
    )
    alice_cert = ca.issue_cert("alice@chat.test")

    async def connect() -> Peer:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(context)
        alice_cert.configure_cert(context)
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        return Peer(trio.SSLStream(client, context, server_hostname="chat.test"))

    alice = await connect()
    await alice.join("alice")
    await alice.send("/certadd")
    assert (await alice.expect("ERR")).startswith("ERR not-identified")
    await alice.send("/register alice's secret")
    await alice.expect("INFO")
    await alice.send("/certadd")
    assert await alice.expect("INFO") == (
        "INFO This certificate now logs you in as alice; /certdel undoes it."
    )
    # The next connection with that certificate is alice at once: no prompt,
    # and the hanging old connection is replaced.
    again = await connect()
    welcome = await again.expect("WELCOME")
    assert welcome.startswith("WELCOME alice ")
    assert not any(line.startswith("NAME") for line in again.lines)
    assert (await alice.expect("BYE")).startswith("BYE signed-in-elsewhere ")
    await again.send("/certdel")
    assert await info(again, "INFO This cert") == (
        "INFO This certificate no longer logs you in."
    )
    third = await connect()
    await third.expect("NAME")
    nursery.cancel_scope.cancel()


async def test_server_password_guesses_are_throttled_not_the_newcomers(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No store and no threads: virtual time runs every wait at once. A try
    # may wait its turn longer than a peer waits for a line by default.
    monkeypatch.setattr(chatpeer, "LINE_TIMEOUT", LOGIN_MAX_WAIT + 1)
    limits = Limits(
        flood_rate=0,
        name_timeout=0,
        max_per_address=0,
        max_new_per_minute=0,
        max_unregistered=0,
        max_unregistered_per_address=0,
    )
    moderation = Moderation(server_password="open sesame")
    chat = Chat(clock=lambda: NOW, limits=limits, moderation=moderation)
    server = Server(ChatServer(chat, limits=limits), nursery)
    guessers = [await server.connect(address="10.0.0.66") for _ in range(20)]
    for peer in guessers:
        await peer.expect("PASSWORD")
    started = trio.current_time()
    for n, peer in enumerate(guessers):  # 200 guesses at once
        await peer.send_bytes(b"".join(b"guess %d-%d\n" % (n, i) for i in range(10)))
    answers = []
    for peer in guessers:
        for _ in range(10):
            answers.append(await peer.expect("ERR"))
            await peer.expect("PASSWORD")
    checked = sum(a == "ERR bad-password Wrong server password." for a in answers)
    refused = sum(a.startswith("ERR login-refused Too many wrong") for a in answers)
    assert checked + refused == 200
    elapsed = trio.current_time() - started
    print(f"\n200 server-password guesses: {checked} checked in {elapsed:.0f} s")
    assert checked <= 15
    # Someone new, from another address, is let in at once.
    now = trio.current_time()
    newcomer = await server.connect(address="10.0.0.67")
    await newcomer.expect("PASSWORD")
    await newcomer.send("open sesame")
    await newcomer.expect("NAME")
    assert trio.current_time() == now


async def test_registrations_made_at_once_all_count(
    store: AsyncStore, nursery: trio.Nursery
) -> None:
    chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
    server = Server(
        ChatServer(chat, store=store, accounts=await Accounts.load(store)), nursery
    )
    peers = [await server.join(f"user{n}", address="10.0.0.5") for n in range(10)]
    for peer in peers:  # all at once: none has finished hashing yet
        await peer.send("/register a good password")
    answers = []
    for peer in peers:
        while not (line := await peer.line() or "").startswith(("INFO Reg", "ERR ")):
            pass
        answers.append(line)
    registered = [a for a in answers if a.startswith("INFO Registered ")]
    refused = [a for a in answers if a.startswith("ERR register-failed Too many")]
    assert (len(registered), len(refused)) == (5, 5)


async def test_the_daily_registration_limit_outlives_a_restart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = str(tmp_path / "chat.db")
    limits = Limits(flood_rate=0, max_registrations_per_address=2)
    async with AsyncStore.open(path) as store:
        chat = Chat(clock=lambda: NOW, limits=limits)
        server = Server(
            ChatServer(chat, store=store, accounts=await Accounts.load(store)), nursery
        )
        for name in ("ann", "ben"):
            peer = await server.join(name, address="10.0.0.5")
            await peer.send("/register a good password")
            await info(peer, "INFO Registered")
    async with AsyncStore.open(path) as store:  # the next morning, almost
        chat = Chat(clock=lambda: NOW + 86000, limits=limits)
        restarted = ChatServer(chat, store=store, accounts=await Accounts.load(store))
        await restarted.load_registrations()
        server = Server(restarted, nursery)
        cat = await server.join("cat", address="10.0.0.5")
        await cat.send("/register a good password")
        assert (await cat.expect("ERR")).startswith("ERR register-failed Too many")
        dan = await server.join("dan", address="10.0.0.6")
        await dan.send("/register a good password")
        await info(dan, "INFO Registered dan")
    async with AsyncStore.open(path) as store:  # a day after the first two
        chat = Chat(clock=lambda: NOW + 86401, limits=limits)
        restarted = ChatServer(chat, store=store, accounts=await Accounts.load(store))
        await restarted.load_registrations()
        server = Server(restarted, nursery)
        cat = await server.join("cat", address="10.0.0.5")
        await cat.send("/register a good password")
        await info(cat, "INFO Registered cat")
        assert await store.registrations(0.0) == [
            ("10.0.0.5", NOW),
            ("10.0.0.5", NOW),
            ("10.0.0.6", NOW + 86000),
            ("10.0.0.5", NOW + 86401),
        ]
        # Addresses are kept no longer than the limit needs them.
        await restarted.prune_history(store)
        assert [when for _, when in await store.registrations(0.0)] == [
            NOW + 86000,
            NOW + 86401,
        ]
    nursery.cancel_scope.cancel()


# -- what is announced is kept first -------------------------------------------

T = TypeVar("T")
NOT_SAVED = (
    "ERR not-saved That did not take: the server could not save it; try again later."
)


class FullStore(AsyncStore):
    """A store on a full disk: while `full`, every write fails as SQLite's does."""

    full = False

    async def _call(self, op: Callable[[Store], T], *, write: bool) -> T:
        if write and self.full:
            await trio.lowlevel.checkpoint()
            raise StoreError("cannot save a setting: database or disk is full")
        return await super()._call(op, write=write)


async def test_moderation_that_could_not_be_saved_is_neither_done_nor_announced(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with FullStore.open(str(tmp_path / "full.db")) as store:
        assert isinstance(store, FullStore)
        server = open_server(store, await Accounts.load(store), nursery)
        root = await operator(server)
        alice = await register(server, "alice", "alice's secret")
        bob = await server.join("bob", address="10.0.0.2")
        for peer in (root, alice, bob):
            await peer.send("/join #dev")
            await peer.expect("SWITCH")
        store.full = True
        for command in (
            "/ban bob",
            "/ban 10.0.0.2 1h",
            "/motd exams are cancelled",
            "/topic pwned",
            "/key sesame",
            "/lecture on",
            "/mute bob",
            "/op alice",
        ):
            await root.send(command)
            assert await root.expect("ERR") == NOT_SAVED, command
        await alice.send("/ignore bob")
        assert await alice.expect("ERR") == NOT_SAVED
        # Nothing of it happened.
        await bob.send("still here, and not muted")
        assert (await root.expect("MSG")).endswith(" <bob> still here, and not muted")
        assert (await alice.expect("MSG")).endswith(" <bob> still here, and not muted")
        await root.send("/bans")
        assert await info(root, "INFO No") == "INFO No bans in force."
        await root.send("/topic")
        assert await root.expect("INFO") == "INFO #dev has no topic."
        await root.send("/motd")
        assert await root.expect("INFO") == "INFO There is no message of the day."
        await alice.send("/ignore")
        assert await info(alice, "INFO You ignore") == "INFO You ignore nobody."
        carol = await server.join("carol", address="10.0.0.3")
        await carol.send("/join #dev")  # no key was set
        await carol.expect("SWITCH")
        await alice.send("/kick bob")  # alice was not made an op
        assert (await alice.expect("ERR")).startswith("ERR not-op ")
        told = [
            line for line in bob.lines if line.startswith(("INFO teacher", "TOPIC"))
        ]
        assert told == []
        # Once the disk has room again, the same command works.
        store.full = False
        await root.send("/ban bob")
        assert await bob.expect("BYE") == "BYE banned Disconnected: banned."
    nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def restarted(path: str, nursery: trio.Nursery) -> AsyncIterator[Server]:
    """A new server on the database at `path`, loaded as `trio-chat serve` does."""
    async with AsyncStore.open(path) as store:
        moderation = Moderation(operators=["teacher"])
        chat = Chat(
            clock=lambda: NOW, limits=Limits(flood_rate=0), moderation=moderation
        )
        await cli._load_moderation(store, chat)
        accounts = await Accounts.load(store)
        yield Server(ChatServer(chat, store=store, accounts=accounts), nursery)
        nursery.cancel_scope.cancel()


async def test_an_open_rooms_settings_survive_a_restart_and_go_when_it_empties(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = str(tmp_path / "rooms.db")
    async with AsyncStore.open(path) as store:
        moderation = Moderation(operators=["teacher"])
        chat = Chat(
            clock=lambda: NOW, limits=Limits(flood_rate=0), moderation=moderation
        )
        serving = ChatServer(chat, store=store, accounts=await Accounts.load(store))
        listeners = await nursery.start(serving.serve_tcp, 0, "127.0.0.1")
        first = Server(serving, nursery, port=listeners[0].socket.getsockname()[1])
        alice = await register(first, "alice", "alice's secret")
        bob = await register(first, "bob", "bob's secret!")
        carol = await first.join("carol")
        await alice.send("/join #dev sesame")
        await alice.expect("SWITCH")
        for peer in (bob, carol):
            await peer.send("/join #dev sesame")
            await peer.expect("SWITCH")
        for command, said in (
            ("/op bob", "INFO alice made bob"),
            ("/mute carol", "INFO alice muted carol"),
            ("/lecture on", "INFO alice says"),
        ):
            await alice.send(command)
            await info(carol, said)
        await alice.send("/topic behind closed doors")
        await carol.expect("TOPIC")
        await alice.send("/join #tmp")  # a room that empties before the end
        await alice.expect("SWITCH")
        await alice.send("/key temporary")
        await alice.expect("INFO")
        await alice.send("/part #tmp")
        await alice.expect("LEAVE")
        serving.shutdown()  # a graceful stop keeps the open rooms' settings
        await serving.closed.wait()
        for peer in (alice, bob, carol):
            await peer.aclose()
    async with restarted(path, nursery) as server:
        # #tmp emptied, and went with its key; #dev was open, and is as it was.
        tmp = await server.join("dave")
        await tmp.send("/join #tmp")
        await tmp.expect("SWITCH")
        carol = await server.join("carol", address="10.0.0.3")
        await carol.send("/join #dev")
        assert await carol.expect("ERR") == "ERR bad-room-key #dev needs the right key."
        await carol.send("/join #dev sesame")
        assert (await carol.expect("TOPIC")).endswith(" #dev alice behind closed doors")
        await carol.expect("SWITCH")
        await carol.send("/topic mine now")  # the first back is not an op
        assert (await carol.expect("ERR")).startswith("ERR not-op ")
        bob = await server.login("bob", "bob's secret!")  # an op, by account
        await bob.send("/join #dev")
        assert (await bob.expect("ERR")).startswith("ERR bad-room-key")
        await bob.send("/join #dev sesame")
        await bob.expect("SWITCH")
        await carol.send("may I?")
        assert (
            await carol.expect("ERR") == "ERR ops-only Only ops may speak in #dev now."
        )
        await bob.send("/lecture off")
        await info(carol, "INFO bob says")
        await carol.send("may I now?")
        assert await carol.expect("ERR") == "ERR muted You are muted in #dev."


async def test_topics_of_rooms_that_are_gone_cannot_push_history_out(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # 3000 times /join, /topic, /part under a 1 MB cap (a megabyte of
    # topics, were they all kept): the topics left behind stay few, and the
    # lobby's history is all there.
    async with AsyncStore.open(str(tmp_path / "cap.db")) as store:
        limits = Limits(flood_rate=0, max_db_mb=1, history_rows=0, history_days=0)
        chat = Chat(clock=lambda: NOW, limits=limits)
        served = ChatServer(chat, limits=limits, store=store)
        await store.set_max_size(limits.max_db_mb * 2**20)
        server = Server(served, nursery)
        alice = await server.join("alice", address="10.0.0.8")
        bob = await server.join("bob", address="10.0.0.9")
        for n in range(200):
            await alice.send(f"line {n} of what was said")
        for n in range(3000):
            await alice.send(f"/join #r{n}")
            await alice.send(f"/topic {n} " + "x" * 300)
            await alice.send(f"/part #r{n}")
            while await alice.expect("SWITCH") != "SWITCH #lobby":  # parted
                pass
        await served.prune_history(store)
        kept = await store.topics(10_000)
        assert len(kept) <= MAX_TOPICS_PER_ADDRESS
        assert kept[-1][1].startswith("2999 ")  # the newest are the ones kept
        said: list[str] = []
        before: int | None = None
        while page := await store.history("#lobby", 200, before_id=before):
            said[:0] = [e.text for _, e in page if isinstance(e, ev.Message)]
            before = page[0][0]
        assert said == [f"line {n} of what was said" for n in range(200)]
        assert await store.size() < limits.max_db_mb * 2**20 * 0.9
        await bob.aclose()
    nursery.cancel_scope.cancel()
