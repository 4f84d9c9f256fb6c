"""The server with IRC clients: registration, chat beside line-protocol users,
pings, limits and logins, through the real connection code.

In-process servers over memory streams (virtual time, so deadlines are
tested without waiting for them), plus one end-to-end run of the real
program with an IRC, an IRC-over-TLS and a line listener at once.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from chatpeer import Peer

from trio_chat import tls
from trio_chat.accounts import Accounts
from trio_chat.chat import Chat
from trio_chat.limits import Limits
from trio_chat.server import ChatServer, ListenerKind
from trio_chat.store import AsyncStore

NOW = 1_700_000_000.0
#: Ceiling for one expected line (virtual time).
LINE_TIMEOUT = 10.0
#: Generous ceiling for a subprocess to start or stop (CI machines are slow).
PROCESS_TIMEOUT = 30.0


class IrcPeer:
    """An IRC client, as raw lines: what irssi or weechat would send and see."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = b""
        self.lines: list[str] = []
        self.closed = False
        #: Ceiling for one line to arrive (virtual time: raise it for pings).
        self.timeout = LINE_TIMEOUT

    async def send(self, *lines: str) -> None:
        await self.stream.send_all(b"".join(line.encode() + b"\r\n" for line in lines))

    async def line(self) -> str | None:
        """The next line (without CRLF), or None at the end of the stream."""
        with trio.fail_after(self.timeout):
            while b"\r\n" not in self._buffer:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    self.closed = True
                    return None
                self._buffer += data
        raw, self._buffer = self._buffer.split(b"\r\n", 1)
        text = raw.decode()
        self.lines.append(text)
        return text

    async def expect(self, match: Callable[[list[str]], bool] | str) -> str:
        """Read until a line matches (`str`: its command or numeric)."""
        while True:
            line = await self.line()
            assert line is not None, f"closed while waiting for {match!r}: {self.lines}"
            words = line.split(" ")
            if isinstance(match, str):
                command = words[1] if line.startswith(":") else words[0]
                if command == match:
                    return line
            elif match(words):
                return line

    async def register(self, nick: str, *, caps: bool = True) -> None:
        """CAP LS, NICK and USER, CAP END: until the welcome's end (376/422)."""
        if caps:
            await self.send("CAP LS 302")
        await self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick} here")
        if caps:
            await self.expect("CAP")
            await self.send("CAP END")
        welcome = await self.expect("001")
        assert welcome.split(" ")[2] == nick
        # In: the lobby's JOIN and its names end the welcome.
        await self.expect(lambda words: words[1] == "366" and words[3] == "#lobby")

    async def until_closed(self) -> list[str]:
        rest = []
        while (line := await self.line()) is not None:
            rest.append(line)
        return rest


class Server:
    def __init__(self, server: ChatServer, nursery: trio.Nursery) -> None:
        self.server = server
        self.nursery = nursery
        self.addresses = 0

    def _open(self, kind: ListenerKind) -> trio.abc.Stream:
        client, server_end = trio.testing.memory_stream_pair()
        self.addresses += 1
        address = f"10.0.0.{self.addresses}"
        self.nursery.start_soon(
            lambda: self.server.handle_stream(
                server_end, address_key=address, kind=kind
            )
        )
        return client

    def irc(self) -> IrcPeer:
        return IrcPeer(self._open("irc"))

    async def line(self, name: str) -> Peer:
        peer = Peer(self._open("line"))
        await peer.join(name)
        return peer


def make_server(nursery: trio.Nursery, **limits: float) -> Server:
    settings = Limits(**limits)  # type: ignore[arg-type]
    chat = Chat(clock=lambda: NOW, limits=settings)
    return Server(ChatServer(chat, limits=settings), nursery)


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    return make_server(nursery, flood_rate=0)


async def test_an_irc_client_registers_and_is_put_in_the_lobby(server: Server) -> None:
    alice = server.irc()
    await alice.register("alice")
    joined = alice.lines[
        alice.lines.index(next(x for x in alice.lines if " JOIN " in x))
    ]
    assert joined == ":alice!alice@trio-chat JOIN #lobby"
    assert any(" 005 alice " in line and "CASEMAPPING=" in line for line in alice.lines)
    names = [line for line in alice.lines if " 353 " in line]
    assert names == [":trio-chat 353 alice = #lobby :alice"]


async def test_irc_and_line_users_chat_in_one_room(server: Server) -> None:
    bob = await server.line("bob")
    await bob.send("/join #dev")
    await bob.expect("SWITCH")
    alice = server.irc()
    await alice.register("alice")
    await alice.send("JOIN #dev")
    await alice.expect(lambda w: w[1] == "366" and w[3] == "#dev")
    assert (await bob.expect("JOIN")).endswith(" #lobby alice")
    assert (await bob.expect("JOIN")).endswith(" #dev alice")

    await alice.send(
        "PRIVMSG #dev :hello from irc", "PRIVMSG #dev :\x01ACTION waves\x01"
    )
    assert (await bob.expect("MSG")).endswith(" #dev <alice> hello from irc")
    assert (await bob.expect("ACTION")).endswith(" #dev alice waves")

    await bob.send("hello from the line")
    await bob.send("/me bows")
    said = await alice.expect("PRIVMSG")
    assert said == ":bob!bob@trio-chat PRIVMSG #dev :hello from the line"
    acted = await alice.expect("PRIVMSG")
    assert acted == ":bob!bob@trio-chat PRIVMSG #dev :\x01ACTION bows\x01"

    # Private messages cross between the wires, both ways.
    await alice.send("PRIVMSG bob :psst")
    assert (await bob.expect("PRIV")).endswith("<alice> psst")
    await bob.send("/msg alice hush")
    assert await alice.expect("PRIVMSG") == ":bob!bob@trio-chat PRIVMSG alice :hush"

    # A topic from the line is an IRC TOPIC; a part from IRC a line LEAVE.
    await bob.send("/topic ship it")
    assert await alice.expect("TOPIC") == ":bob!bob@trio-chat TOPIC #dev :ship it"
    await alice.send("PART #dev :later")
    await alice.expect("PART")
    left = await bob.expect("LEAVE")
    assert " #dev alice " in left and "later" in left

    # QUIT: ERROR on the way out, and the line user sees it go.
    await alice.send("QUIT :bye now")
    rest = await alice.until_closed()
    assert rest[-1].startswith("ERROR :")
    assert "bye now" in await bob.expect("LEAVE")


async def test_a_taken_name_or_lookalike_is_433_and_another_nick_goes_on(
    server: Server,
) -> None:
    await server.line("alice")
    irc = server.irc()
    await irc.send("NICK a1ice", "USER x 0 * :x")
    refused = await irc.expect("433")
    assert " a1ice " in refused
    await irc.send("NICK carol")
    assert (await irc.expect("001")).split(" ")[2] == "carol"


async def test_irc_nick_change_is_seen_by_line_users(server: Server) -> None:
    bob = await server.line("bob")
    alice = server.irc()
    await alice.register("alice")
    await bob.expect("JOIN")
    await alice.send("NICK alicia")
    assert await alice.expect("NICK") == ":alice!alice@trio-chat NICK alicia"
    renamed = await bob.expect("NICK")
    assert "alice" in renamed and "alicia" in renamed


async def test_commands_before_registration_get_451(server: Server) -> None:
    irc = server.irc()
    await irc.send("JOIN #dev")
    assert " 451 " in await irc.expect("451")


async def test_an_overlong_line_is_417_and_the_client_stays(server: Server) -> None:
    alice = server.irc()
    await alice.register("alice")
    await alice.send("PRIVMSG #lobby :" + "x" * 600)
    await alice.expect("417")
    await alice.send("PING still-here")
    assert (await alice.expect("PONG")).endswith("still-here")


async def test_a_silent_client_is_pinged_and_stays_if_it_answers(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(nursery, irc_ping_interval=120, irc_ping_timeout=60)
    alice = server.irc()
    await alice.register("alice")
    alice.timeout = 300
    start = trio.current_time()
    ping = await alice.expect("PING")
    assert 120 <= trio.current_time() - start < 121
    await alice.send(f"PONG {ping.split(' ', 1)[1]}")
    # Answered: the next PING comes a whole interval later, no drop.
    await alice.expect("PING")
    assert trio.current_time() - start >= 240


async def test_a_client_that_does_not_answer_a_ping_is_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(nursery, irc_ping_interval=120, irc_ping_timeout=60)
    bob = await server.line("bob")
    alice = server.irc()
    await alice.register("alice")
    alice.timeout = 300
    await bob.expect("JOIN")
    start = trio.current_time()
    rest = await alice.until_closed()
    assert any(line.startswith("PING") for line in rest)
    assert rest[-1].startswith("ERROR :") and "ping timeout" in rest[-1]
    assert 180 <= trio.current_time() - start < 182
    assert "ping timeout" in await bob.expect("LEAVE")


async def test_no_registration_within_the_name_timeout_is_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(nursery, name_timeout=30)
    irc = server.irc()
    irc.timeout = 60
    await irc.send("NICK alice")  # and never USER
    rest = await irc.until_closed()
    assert rest[-1].startswith("ERROR :") and "30 seconds" in rest[-1]


async def test_a_flood_from_irc_is_held_to_the_flood_limit(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(nursery, flood_burst=5, flood_rate=1, flood_max_backlog=10)
    bob = await server.line("bob")
    alice = server.irc()
    await alice.register("alice")
    await bob.expect("JOIN")
    await alice.send(*(f"PRIVMSG #lobby :line {n}" for n in range(40)))
    rest = await alice.until_closed()
    assert "flood" in rest[-1].lower()
    got = []
    while (line := await bob.line()) is not None and not line.startswith("LEAVE"):
        if line.startswith("MSG"):
            got.append(line.rsplit(" ", 1)[1])
    assert got == [str(n) for n in range(len(got))] and len(got) < 40


async def test_history_reaches_an_irc_client_joining_a_room(server: Server) -> None:
    bob = await server.line("bob")
    await bob.send("/join #dev")
    await bob.expect("SWITCH")
    await bob.send("said before you came")
    alice = server.irc()
    await alice.register("alice")
    await alice.send("JOIN #dev")
    replayed = await alice.expect(lambda w: "said" in w[-1] or "before" in w)
    assert "said before you came" in replayed and "bob" in replayed


@pytest.fixture
async def accounts_server(
    tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Server]:
    async with AsyncStore.open(str(tmp_path / "accounts.db")) as store:
        accounts = await Accounts.load(store)
        chat = Chat(clock=lambda: NOW, limits=Limits(flood_rate=0))
        yield Server(ChatServer(chat, store=store, accounts=accounts), nursery)
        nursery.cancel_scope.cancel()


async def register_name(server: Server, name: str, password: str) -> None:
    peer = await server.line(name)
    await peer.send(f"/register {password}")
    while not (await peer.expect("INFO")).startswith("INFO Registered"):
        pass
    await peer.send("/quit")
    await peer.until_closed()


def sasl_plain(name: str, password: str) -> str:
    return base64.b64encode(f"{name}\0{name}\0{password}".encode()).decode()


async def test_sasl_plain_logs_a_registered_name_in(accounts_server: Server) -> None:
    await register_name(accounts_server, "alice", "correct horse")
    irc = accounts_server.irc()
    await irc.send("CAP LS 302", "NICK alice", "USER alice 0 * :a")
    caps = await irc.expect("CAP")
    assert "sasl" in caps
    await irc.send("CAP REQ :sasl")
    await irc.expect(lambda w: w[1] == "CAP" and w[3] == "ACK")
    await irc.send("AUTHENTICATE PLAIN")
    await irc.expect("AUTHENTICATE")
    await irc.send(f"AUTHENTICATE {sasl_plain('alice', 'correct horse')}")
    await irc.expect("903")
    await irc.send("CAP END")
    assert (await irc.expect("001")).split(" ")[2] == "alice"


async def test_wrong_sasl_password_is_904_and_the_name_stays_closed(
    accounts_server: Server,
) -> None:
    await register_name(accounts_server, "alice", "correct horse")
    irc = accounts_server.irc()
    await irc.send("CAP LS 302", "NICK alice", "USER alice 0 * :a", "CAP REQ :sasl")
    await irc.expect(lambda w: w[1] == "CAP" and w[3] == "ACK")
    await irc.send("AUTHENTICATE PLAIN")
    await irc.expect("AUTHENTICATE")
    await irc.send(f"AUTHENTICATE {sasl_plain('alice', 'wrong')}")
    await irc.expect("904")
    await irc.send("CAP END")
    # Without the password the registered name is not given: 433, not 001.
    refused = await irc.expect(lambda w: w[1] in ("433", "001"))
    assert refused.split(" ")[1] == "433"


async def test_pass_logs_a_registered_nick_in(accounts_server: Server) -> None:
    await register_name(accounts_server, "alice", "correct horse")
    irc = accounts_server.irc()
    await irc.send("PASS :correct horse", "NICK alice", "USER alice 0 * :a")
    assert (await irc.expect("001")).split(" ")[2] == "alice"


async def test_irc_ircs_and_line_listeners_serve_one_chat(tmp_path: Path) -> None:
    """The real program: `--listen` three kinds, one chat across them."""
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
                "irc:127.0.0.1:0",
                "--listen",
                "ircs:127.0.0.1:0",
                "--listen",
                "line:127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
        )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(PROCESS_TIMEOUT):
            while output.count(b"\n") < 3:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, f"server exited early: {log.read_text()}"
                output += chunk
        ports = {}
        for line in output.decode().splitlines()[:3]:
            address, kind = line.removeprefix("listening on ").split(" ")
            ports[kind.strip("()")] = int(address.rsplit(":", 1)[1])
        assert set(ports) == {"irc", "ircs", "line"}
        with trio.fail_after(PROCESS_TIMEOUT):
            alice = IrcPeer(await trio.open_tcp_stream("127.0.0.1", ports["irc"]))
            await alice.register("alice")
            context = tls.client_context(tls.dev_ca_path())
            carol = IrcPeer(
                await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1",
                    ports["ircs"],
                    ssl_context=context,
                    https_compatible=False,
                )
            )
            await carol.register("carol")
            bob = Peer(await trio.open_tcp_stream("127.0.0.1", ports["line"]))
            await bob.join("bob")
            await alice.send("PRIVMSG #lobby :plain irc")
            await carol.send("PRIVMSG #lobby :irc over tls")
            # Two connections: either may be read first.
            heard = {(await bob.expect("MSG")).split(" ", 3)[3] for _ in range(2)}
            assert heard == {"<alice> plain irc", "<carol> irc over tls"}
            await bob.send("from the line")
            for irc in (alice, carol):
                said = await irc.expect(lambda w: w[1] == "PRIVMSG" and "bob" in w[0])
                assert said == ":bob!bob@trio-chat PRIVMSG #lobby :from the line"
            await alice.send("QUIT")
            await carol.send("QUIT")
            for irc in (alice, carol):
                assert (await irc.until_closed())[-1].startswith("ERROR :")
                await irc.stream.aclose()
            await bob.aclose()
    finally:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
    assert "Traceback" not in log.read_text()
