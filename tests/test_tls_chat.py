"""Chatting over TLS: in memory and over real sockets, and TLS faults."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing
import trustme
from chatpeer import Peer

from trio_chat import tls
from trio_chat.chat import Chat
from trio_chat.limits import Limits
from trio_chat.server import ChatServer


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("chat.test").configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = tls.client_context()
    ca.configure_trust(context)
    return context


def tls_server(context: ssl.SSLContext, **limits: float) -> ChatServer:
    chat = Chat(clock=lambda: 0.0, limits=Limits(**limits))  # type: ignore[arg-type]
    return ChatServer(chat, ssl_context=context)


async def test_chat_over_tls_in_memory(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = tls_server(server_context)
    peers = []
    for name in ("alice", "bob"):
        client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, server_end)
        stream = trio.SSLStream(client_end, client_context, server_hostname="chat.test")
        peer = Peer(stream)
        await peer.join(name)
        peers.append(peer)
    alice, bob = peers
    await alice.expect("JOIN")
    await alice.send("secret hello")
    assert (await bob.expect("MSG")).endswith(" #lobby <alice> secret hello")
    await bob.send("/quit")
    assert (await bob.expect("BYE")).startswith("BYE quit")
    assert (await alice.expect("LEAVE")).endswith(" bob quit")


async def test_chat_over_tls_sockets_with_the_dev_certificate(
    nursery: trio.Nursery,
) -> None:
    cert, key = tls.dev_cert_paths()
    server = tls_server(tls.server_context(cert, key))
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    context = tls.client_context(tls.dev_ca_path())
    peers = []
    for name in ("alice", "bob"):
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=context
        )
        peer = Peer(stream)
        await peer.join(name)
        peers.append(peer)
    alice, bob = peers
    await alice.expect("JOIN")
    await bob.send("over TLS")
    assert (await alice.expect("MSG")).endswith(" <bob> over TLS")
    server.shutdown()
    for peer in peers:
        assert (await peer.until_closed())[-1].startswith("BYE server-shutdown ")
        await trio.aclose_forcefully(peer.stream)


async def test_plaintext_client_on_tls_port_is_closed_and_others_served(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = tls_server(server_context)
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    plain = await trio.open_tcp_stream("127.0.0.1", port)
    await plain.send_all(b"alice\r\n")
    with trio.fail_after(5):
        while await plain.receive_some(1024):
            pass  # the server may answer with a TLS alert, then closes
    await plain.aclose()
    # The certificate is for chat.test; connecting by address needs the name.
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port),
        client_context,
        server_hostname="chat.test",
    )
    peer = Peer(stream)
    await peer.join("alice")
    server.shutdown()
    await peer.until_closed()
    await trio.aclose_forcefully(stream)


async def test_silent_tls_client_is_closed_at_the_handshake_deadline(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
) -> None:
    server = tls_server(server_context, tls_handshake_timeout=10.0)
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    start = trio.current_time()
    with trio.fail_after(60):
        assert await client_end.receive_some(1024) == b""
    assert 10.0 <= trio.current_time() - start < 11.0
    assert server.connection_count == 0


async def test_client_gone_mid_handshake_costs_nothing(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = tls_server(server_context)
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    await client_end.send_all(b"\x16\x03\x01\x00\x05hello")  # half a ClientHello
    await client_end.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert server.connection_count == 0
    other_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    peer = Peer(trio.SSLStream(other_end, client_context, server_hostname="chat.test"))
    await peer.join("alice")


async def test_client_refuses_a_server_it_does_not_trust(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    server = tls_server(server_context)
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    stream = trio.SSLStream(
        client_end, tls.client_context(), server_hostname="chat.test"
    )
    with pytest.raises(trio.BrokenResourceError) as info:
        await stream.do_handshake()
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    await trio.aclose_forcefully(stream)
    await trio.testing.wait_all_tasks_blocked()
    assert server.connection_count == 0
