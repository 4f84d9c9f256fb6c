"""The server in-process over memory streams: chatting, commands, faults."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from chatpeer import Peer, open_peers

from trio_chat import events as ev
from trio_chat.chat import BANNER, HELP_LINES, Chat
from trio_chat.limits import (
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES,
    MIN_OUTBOX_MESSAGES,
    Limits,
)
from trio_chat.protocol import decode_event, encode_event
from trio_chat.server import ChatServer

NOW = 1_795_475_428.0  # 2026-11-23T23:10:28Z
STAMP = "2026-11-23T23:10:28Z"

Connect = Callable[[], Awaitable[Peer]]


def make_server(**limits: float) -> ChatServer:
    return ChatServer(Chat(clock=lambda: NOW, limits=Limits(**limits)))  # type: ignore[arg-type]


@pytest.fixture
def server() -> ChatServer:
    return make_server()


@pytest.fixture
def connect(server: ChatServer, nursery: trio.Nursery) -> Connect:
    """Open an in-memory connection to `server`."""

    async def open_peer() -> Peer:
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        return Peer(client)

    return open_peer


async def joined(connect: Connect, *names: str) -> list[Peer]:
    peers = []
    for name in names:
        peer = await connect()
        await peer.join(name)
        peers.append(peer)
    for index, peer in enumerate(peers):  # drain the join notices of later peers
        for later in names[index + 1 :]:
            assert await peer.expect("JOIN") == f"JOIN {STAMP} #lobby {later}"
    return peers


async def test_server_speaks_first_hello_banner_count_and_prompt(
    connect: Connect,
) -> None:
    peer = await connect()
    assert await peer.line() == (
        "HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096 flood-burst=5 flood-rate=2"
        " paste-lines=50 paste-bytes=16384 name-timeout=30"
    )
    banner = [await peer.line() for _ in BANNER]
    assert all(line is not None and line.startswith("BANNER ") for line in banner)
    assert len(banner) >= 5
    assert await peer.line() == "INFO Nobody is online."
    prompt = await peer.line()
    assert prompt is not None and prompt.startswith("NAME Choose a name")
    # Read on an 80-column terminal through nc: no line wraps but HELLO, and
    # none ends in spaces (the empty BANNER line is its kind and one space).
    for line in [*banner, prompt]:
        assert line is not None and len(line) <= 80, line
        assert line == "BANNER " or not line.endswith(" "), line
    await peer.send("someone")
    await peer.expect("WELCOME")
    await peer.send("/help")
    for _ in HELP_LINES:
        line = await peer.expect("HELP")
        assert len(line) <= 80 and not line.endswith(" "), line


async def test_online_count_counts_joined_users(connect: Connect) -> None:
    await joined(connect, "alice", "bob")
    carol = await connect()
    assert await carol.expect("INFO") == "INFO 2 users online."


async def test_chat_line_reaches_everyone_else_tagged_not_echoed(
    connect: Connect,
) -> None:
    alice, bob, carol = await joined(connect, "alice", "bob", "carol")
    await alice.send("hello, world")
    expected = f"MSG {STAMP} #lobby <alice> hello, world"
    assert await bob.expect("MSG") == expected
    assert await carol.expect("MSG") == expected
    # alice's next line is bob's answer: her own line was not echoed.
    await bob.send("hi alice")
    assert await alice.expect("MSG") == f"MSG {STAMP} #lobby <bob> hi alice"


async def test_welcome_names_the_others(connect: Connect) -> None:
    await joined(connect, "alice", "bob")
    carol = await connect()
    await carol.join("carol")
    assert await carol.expect("INFO") == "INFO 2 other users here: alice, bob"


@pytest.mark.parametrize(
    ("attempt", "code"),
    [
        ("ALICE", "name-taken"),
        ("Alice", "name-taken"),
        ("server", "name-invalid"),
        ("a b", "name-invalid"),
        ("x" * 25, "name-invalid"),
        ("-dash", "name-invalid"),
        ("evil\x1b[31m", "name-invalid"),
    ],
)
async def test_bad_name_is_explained_and_prompted_again(
    connect: Connect, attempt: str, code: str
) -> None:
    await joined(connect, "alice")
    peer = await connect()
    await peer.expect("NAME")
    await peer.send(attempt)
    error = await peer.expect("ERR")
    assert error.startswith(f"ERR {code} ")
    await peer.expect("NAME")
    await peer.send("bob")
    assert (await peer.expect("WELCOME")).startswith("WELCOME bob ")


async def test_name_is_nfc_normalised(connect: Connect) -> None:
    alice, peer = await joined(connect, "alice"), await connect()
    await peer.join("A\u030asa")  # decomposed Å
    # Normalised before it was announced.
    assert await alice[0].expect("JOIN") == f"JOIN {STAMP} #lobby \u00c5sa"


async def test_who_and_names_list_everyone(connect: Connect) -> None:
    alice, _bob = await joined(connect, "alice", "bob")
    for command in ("/who", "/names", "/WHO"):
        await alice.send(command)
        assert await alice.expect("WHO") == "WHO #lobby alice bob"


async def test_help_lists_every_command(connect: Connect) -> None:
    (alice,) = await joined(connect, "alice")
    await alice.send("/help")
    text = []
    for _ in HELP_LINES:
        text.append(await alice.expect("HELP"))
    for command in (
        "/help",
        "/who",
        "/nick",
        "/me",
        "/msg",
        "/quit",
        "//",
        "/join",
        "/part",
        "/switch",
        "/rooms",
        "/topic",
    ):
        assert any(line.startswith(f"HELP {command}") for line in text), command


async def test_help_fits_the_smallest_outbox(nursery: trio.Nursery) -> None:
    # More HELP lines than the smallest outbox holds messages: one message.
    limits = Limits(outbox_max_messages=MIN_OUTBOX_MESSAGES)
    assert len(HELP_LINES) > MIN_OUTBOX_MESSAGES
    server = ChatServer(Chat(clock=lambda: 0.0, limits=limits), limits=limits)
    (alice,) = await open_peers(nursery, server, "alice")
    await alice.send("/help")
    assert [await alice.expect("HELP") for _ in HELP_LINES] == [
        f"HELP {line}" for line in HELP_LINES
    ]


async def test_me_is_an_action(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send("/me waves")
    assert await bob.expect("ACTION") == f"ACTION {STAMP} #lobby alice waves"


async def test_private_message_only_reaches_recipient(connect: Connect) -> None:
    alice, bob, carol = await joined(connect, "alice", "bob", "carol")
    await alice.send("/msg BOB psst")
    assert await bob.expect("PRIV") == f"PRIV {STAMP} @bob <alice> psst"
    await alice.send("public")
    # carol's next chat line is the public one: she never saw the private one.
    assert await carol.expect("MSG") == f"MSG {STAMP} #lobby <alice> public"
    assert not any(line.startswith("PRIV") for line in carol.lines)
    await alice.send("/msg nobody hi")
    assert (await alice.expect("ERR")).startswith("ERR no-such-user ")


async def test_nick_is_announced_to_all_and_takes_effect(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send("/nick Alicia")
    notice = f"NICK {STAMP} #lobby alice -> Alicia"
    assert await alice.expect("NICK") == notice
    assert await bob.expect("NICK") == notice
    await alice.send("hi")
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <Alicia> hi"
    await bob.send("/nick ALICIA")
    assert (await bob.expect("ERR")).startswith("ERR name-taken ")
    carol = await connect()
    await carol.join("alice")  # the old name is free again


async def test_quit_with_reason(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send("/quit see you")
    assert (await alice.expect("BYE")).startswith("BYE quit ")
    assert await alice.until_closed() == []
    assert await bob.expect("LEAVE") == f"LEAVE {STAMP} #lobby alice quit (see you)"


async def test_unknown_command_names_help(connect: Connect) -> None:
    (alice,) = await joined(connect, "alice")
    await alice.send("/frobnicate now")
    error = await alice.expect("ERR")
    assert error.startswith("ERR unknown-command ") and "/help" in error


async def test_double_slash_sends_a_line_starting_with_slash(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send("//shrug")
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> /shrug"


async def test_escape_sequences_never_reach_other_terminals(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send_bytes(b"\x1b[2J\x1b]0;pwned\x07red \x1b[31malert\x1b[0m\ttab\r\n")
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> red alert tab"


async def test_forged_server_line_stays_a_chat_line(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send(f"\rLEAVE {STAMP} #lobby bob quit")
    line = await bob.expect("MSG")
    assert decode_event(line) == ev.Message(
        NOW, "#lobby", "alice", f"LEAVE {STAMP} #lobby bob quit"
    )


async def test_line_too_long_is_refused_and_the_next_line_works(
    connect: Connect,
) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send("x" * 4097)
    assert (await alice.expect("ERR")).startswith("ERR line-too-long ")
    await alice.send("y" * 4096)
    assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> {'y' * 4096}"


async def test_eof_is_a_disconnect_announced_once(connect: Connect) -> None:
    alice, bob = await joined(connect, "alice", "bob")
    await alice.send_bytes(b"half a li")  # a partial line is discarded
    await alice.stream.aclose()
    assert (
        await bob.expect("LEAVE")
        == f"LEAVE {STAMP} #lobby alice disconnected (connection closed)"
    )
    await bob.send("/who")
    assert await bob.expect("WHO") == "WHO #lobby bob"
    assert sum(line.startswith("LEAVE") for line in bob.lines) == 1
    assert not any(line.startswith("MSG") for line in bob.lines)


async def test_disconnect_at_the_name_prompt_is_silent(connect: Connect) -> None:
    (alice,) = await joined(connect, "alice")
    peer = await connect()
    await peer.expect("NAME")
    await peer.send_bytes(b"bo")
    await peer.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    await alice.send("/who")
    assert await alice.expect("WHO") == "WHO #lobby alice"
    assert not any(line.startswith("LEAVE") for line in alice.lines)


async def test_quit_and_nick_at_the_name_prompt(connect: Connect) -> None:
    peer = await connect()
    await peer.expect("NAME")
    await peer.send("/who")
    assert (await peer.expect("ERR")).startswith("ERR not-registered ")
    await peer.send("/nick carol")
    assert (await peer.expect("WELCOME")).startswith("WELCOME carol ")
    other = await connect()
    await other.expect("NAME")
    await other.send("/quit")
    assert (await other.expect("BYE")).startswith("BYE quit ")
    assert await other.until_closed() == []


async def test_name_timeout(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = make_server(name_timeout=5.0)
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    peer = Peer(client)
    await peer.expect("NAME")
    start = trio.current_time()
    bye = await peer.expect("BYE")
    assert bye.startswith("BYE name-timeout ")
    assert 5.0 <= trio.current_time() - start < 5.5
    assert await peer.until_closed() == []


async def test_http_request_gets_one_line_and_close(connect: Connect) -> None:
    peer = await connect()
    await peer.send("GET / HTTP/1.1")
    assert (await peer.expect("BYE")).startswith("BYE not-http ")
    assert await peer.until_closed() == []


async def test_tls_client_hello_on_plain_port_gets_one_line_and_close(
    connect: Connect,
) -> None:
    peer = await connect()
    await peer.send_bytes(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert (await peer.expect("BYE")).startswith("BYE tls-not-enabled ")
    assert await peer.until_closed() == []


async def test_slow_reader_is_evicted_and_nobody_else_waits(
    nursery: trio.Nursery,
) -> None:
    # The smallest outbox there may be: too small for a paste, so none.
    server = make_server(
        outbox_max_messages=16, outbox_max_bytes=8192, flood_rate=0, max_paste_lines=0
    )
    connect_peers = []
    for name in ("alice", "bob"):
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        peer = Peer(client)
        await peer.join(name)
        connect_peers.append(peer)
    alice, bob = connect_peers
    # The victim's stream only moves bytes when it reads, and it never does
    # after joining.
    victim_end, server_victim_end = trio.testing.lockstep_stream_pair()
    nursery.start_soon(server.handle_stream, server_victim_end)
    victim = Peer(victim_end)
    await victim.join("victim")
    await alice.expect("JOIN")
    await bob.expect("JOIN")
    for number in range(40):
        await alice.send(f"line {number}")
    for number in range(40):
        assert await bob.expect("MSG") == f"MSG {STAMP} #lobby <alice> line {number}"
    leave = f"LEAVE {STAMP} #lobby victim disconnected (send queue exceeded)"
    assert bob.lines.count(leave) == 1
    assert await alice.expect("LEAVE") == leave


async def test_write_timeout_drops_a_stalled_reader(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = make_server(write_timeout=2.0)
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    alice = Peer(client)
    await alice.join("alice")
    stalled_client, stalled_end = trio.testing.lockstep_stream_pair()
    nursery.start_soon(server.handle_stream, stalled_end)
    stalled = Peer(stalled_client)
    await stalled.join("stalled")
    await alice.expect("JOIN")
    start = trio.current_time()
    await alice.send("are you there?")  # the write to `stalled` never completes
    leave = await alice.expect("LEAVE")
    assert leave == f"LEAVE {STAMP} #lobby stalled disconnected (write timeout)"
    assert 2.0 <= trio.current_time() - start < 3.0


async def test_a_bug_in_one_connection_closes_only_that_one(
    connect: Connect,
    server: ChatServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob, carol = await joined(connect, "alice", "bob", "carol")
    real_handle = Chat.handle

    def buggy_handle(self: Chat, member: object, request: ev.Request) -> None:
        if request == ev.Say("boom"):
            raise RuntimeError("injected bug")
        real_handle(self, member, request)  # type: ignore[arg-type]

    monkeypatch.setattr(Chat, "handle", buggy_handle)
    with caplog.at_level(logging.INFO, logger="trio_chat"):
        await alice.send("boom")
        assert await alice.until_closed() == []
    assert (
        await bob.expect("LEAVE")
        == f"LEAVE {STAMP} #lobby alice disconnected (server error)"
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "internal error" in errors[0].getMessage()
    await bob.send("still here")
    assert await carol.expect("MSG") == f"MSG {STAMP} #lobby <bob> still here"


async def test_shutdown_tells_everyone_and_closes(nursery: trio.Nursery) -> None:
    server = make_server()
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    peers = []
    for name in ("alice", "bob"):
        peer = Peer(await trio.open_tcp_stream("127.0.0.1", port))
        await peer.join(name)
        peers.append(peer)
    waiting = Peer(await trio.open_tcp_stream("127.0.0.1", port))
    await waiting.expect("NAME")
    server.shutdown()
    for peer in (*peers, waiting):
        rest = await peer.until_closed()
        assert rest[-1].startswith("BYE server-shutdown ")
        assert not any(line.startswith("LEAVE") for line in rest)
        await peer.aclose()
    with trio.fail_after(5):
        await server.closed.wait()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_serve_tcp_port_zero_and_real_sockets(nursery: trio.Nursery) -> None:
    server = make_server()
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    assert port != 0
    alice = Peer(await trio.open_tcp_stream("127.0.0.1", port))
    bob = Peer(await trio.open_tcp_stream("127.0.0.1", port))
    await alice.join("alice")
    await bob.join("bob")
    await alice.expect("JOIN")
    await bob.send("over TCP")
    assert await alice.expect("MSG") == f"MSG {STAMP} #lobby <bob> over TCP"
    server.shutdown()
    for peer in (alice, bob):
        await peer.until_closed()
        await peer.aclose()


def test_encoded_lines_match_the_events_sent() -> None:
    # The server only ever sends what encode_event makes: one CRLF line.
    line = encode_event(ev.Message(NOW, "#lobby", "alice", "hi"))
    assert line == f"MSG {STAMP} #lobby <alice> hi\r\n".encode()


async def test_reset_connection_is_a_disconnect(nursery: trio.Nursery) -> None:
    server = make_server()
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    alice = Peer(await trio.open_tcp_stream("127.0.0.1", port))
    reset = await trio.open_tcp_stream("127.0.0.1", port)
    await alice.join("alice")
    rude = Peer(reset)
    await rude.join("rude")
    await alice.expect("JOIN")
    await rude.send_bytes(b"half a line")
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await reset.aclose()
    leave = await alice.expect("LEAVE")
    assert leave in (
        f"LEAVE {STAMP} #lobby rude disconnected (connection reset)",
        # The RST may overtake nothing to read and look like an orderly EOF.
        f"LEAVE {STAMP} #lobby rude disconnected (connection closed)",
    )
    assert not any(line.startswith("MSG") for line in alice.lines)
    await alice.send("/who")
    assert await alice.expect("WHO") == "WHO #lobby alice"
    assert server.connection_count == 1
    server.shutdown()
    await alice.until_closed()
    await alice.aclose()


@pytest.mark.parametrize(
    ("attempt", "reason"),
    [
        ("\u0430\u04cf\u0456\u0441\u0435", "looks too much like alice"),  # all Cyrillic
        ("ALICE", "is taken"),
        ("ＡＬＩＣＥ", "looks too much like alice"),  # fullwidth
    ],
)
async def test_lookalike_of_an_online_name_is_refused(
    connect: Connect, attempt: str, reason: str
) -> None:
    (alice,) = await joined(connect, "alice")
    peer = await connect()
    await peer.expect("NAME")
    await peer.send(attempt)
    error = await peer.expect("ERR")
    assert error.startswith("ERR name-") and reason in error
    await peer.send("bob")
    await peer.expect("WELCOME")
    await peer.send(f"/nick {attempt}")
    assert reason in await peer.expect("ERR")
    await alice.send("/quit")
    await peer.expect("LEAVE")
    await peer.send(f"/nick {attempt}")  # free once alice has gone
    assert (await peer.expect("NICK")).endswith(f"bob -> {attempt}")


async def test_accepted_sockets_probe_a_silent_peer_within_minutes(
    nursery: trio.Nursery,
) -> None:
    # A peer that vanished (a laptop shut) holds its name until TCP notices:
    # two hours with the system's keepalive, minutes with the server's.
    server = make_server()
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    peer = Peer(await trio.open_tcp_stream("127.0.0.1", port))
    await peer.join("alice")
    (connection,) = server._connections
    sock = connection.transport.sock  # type: ignore[attr-defined]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
    probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
    assert (idle, interval, probes) == (
        KEEPALIVE_IDLE,
        KEEPALIVE_INTERVAL,
        KEEPALIVE_PROBES,
    )
    assert idle + interval * probes <= 3 * 60  # gone within about 3 minutes
    await peer.send("still here, quietly")  # a quiet peer is never dropped
    server.shutdown()
    await peer.until_closed()
    await peer.aclose()
