"""Byte transports for the server: a plain socket, TLS over one, any stream.

Each transport is a `fanout.reader.Sink`: `send_now` hands the kernel what
it takes at once and never waits, so fan-out writes straight from the
flusher, with no task switch per line. Only a connection the kernel has
refused waits (`wait_writable`), in a task of its own that exists only
while it is refused.

* `SocketTransport`: a non-blocking socket, `sendmsg` of every line waiting.
* `SocketTLSTransport`: TLS on a socket of our own, by a non-blocking
  `ssl.SSLSocket`: records are encrypted and written in `send_now`, so TLS
  goes the same fast road, with no buffers of its own between writes.
* `TLSTransport`: TLS through `ssl.SSLObject` and memory BIOs over another
  transport (a stream that is not a socket): what the inner transport does
  not take waits as ciphertext.
* `StreamTransport`: any `trio.abc.Stream` (memory streams in tests), whose
  sends need a task: one batch at a time is in flight.

Every transport failure becomes one `TransportError` with a short reason.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import trio

from trio_chat.fanout.reader import Buffer, SinkError
from trio_chat.limits import RECEIVE_SIZE

#: Plaintext bytes one TLS write encrypts at most: what waits as ciphertext
#: while the kernel is full is bounded by it.
TLS_WRITE_CHUNK: Final = 64 * 1024


#: Reads of unread input, at most, before a TLS socket closes (see close_now).
UNREAD_CHUNKS: Final = 4


class TransportError(SinkError):
    """The peer is gone or broke the transport; `str()` says why, briefly."""


def describe(exc: BaseException) -> str:
    """A short, human reason for a transport failure, for logs and notices."""
    if isinstance(exc, TransportError):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return "write timeout"
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ConnectionResetError):
        return "connection reset"
    if isinstance(cause, BrokenPipeError):
        return "connection lost"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return "connection lost"


class Transport(Protocol):
    """A connection's bytes: received by one task, sent from anywhere."""

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        """Send what can be sent now of `buffers`; the bytes taken (see Sink)."""

    @property
    def holding(self) -> bool:
        """True if bytes taken are not yet in the kernel (see Sink)."""

    async def wait_writable(self) -> None:
        """Wait until `send_now` may take more. Raises TransportError."""

    async def receive(self) -> bytes:
        """The next bytes from the peer; b"" at the end. Raises TransportError."""

    async def flushed(self) -> None:
        """Wait until what `send_now` took is handed to the kernel (not only
        taken by a task or waiting as ciphertext). Raises TransportError."""

    async def close(self) -> None:
        """Close, with a goodbye (TLS close_notify) if one is due; bounded by
        the caller's deadline, then forceful. Never raises for the peer."""


async def send_all(transport: Transport, data: bytes) -> None:
    """Send `data` whole, waiting for the kernel as needed.

    For what is written outside fan-out (a refusal, a goodbye). Raises
    TransportError; cancellation may leave a part sent.
    """
    view = memoryview(data)
    while view:
        taken = transport.send_now([view])
        view = view[taken:]
        if view:
            await transport.wait_writable()
    await transport.flushed()


class SocketTransport:
    """A connected, non-blocking socket, owned by this transport."""

    __slots__ = ("_drained", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        #: The last read took less than it could: the kernel had no more
        #: then, so the next read waits first (one system call less a read).
        self._drained = False

    @classmethod
    def from_stream(cls, stream: trio.SocketStream) -> SocketTransport:
        """Take over the socket of a trio `SocketStream` (which is done then).

        trio's settings stay: TCP_NODELAY, and TCP_NOTSENT_LOWAT of 16 KiB,
        which keeps what the kernel holds unsent small, so how far behind a
        member is, is known here (and a reader that stopped reading is seen).
        """
        trio_sock = stream.socket
        sock = socket.socket(
            trio_sock.family, trio_sock.type, trio_sock.proto, fileno=trio_sock.detach()
        )
        return cls(sock)

    holding: Final = False  # what send_now takes is in the kernel

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        """One non-blocking `sendmsg` of `buffers` (see `Transport`)."""
        try:
            if len(buffers) == 1:
                return self.sock.send(buffers[0])
            return self.sock.sendmsg(buffers)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise TransportError(describe(exc)) from exc

    async def wait_writable(self) -> None:
        """Wait until the kernel takes data again."""
        try:
            await trio.lowlevel.wait_writable(self.sock)
        except trio.ClosedResourceError as exc:
            raise TransportError("connection closed") from exc

    async def flushed(self) -> None:
        """Nothing to wait for: what `send_now` took is in the kernel."""
        await trio.lowlevel.checkpoint()

    async def receive(self) -> bytes:
        """The next bytes from the peer (b"" at the end)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._drained:
            self._drained = False
            try:
                await trio.lowlevel.wait_readable(self.sock)
            except trio.ClosedResourceError as exc:
                raise TransportError("connection closed") from exc
        while True:
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                pass  # waited for below: not in here, which would keep the
                # exception (and its traceback) alive for the whole wait
            except OSError as exc:
                raise TransportError(describe(exc)) from exc
            else:
                self._drained = 0 < len(data) < RECEIVE_SIZE
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            try:
                await trio.lowlevel.wait_readable(self.sock)
            except trio.ClosedResourceError as exc:
                raise TransportError("connection closed") from exc

    async def close(self) -> None:
        """Close the socket (at once: nothing of ours is pending)."""
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """Close the socket, waking anyone waiting on it."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class StreamTransport:
    """Any trio stream: one batch in flight, sent by `run`'s task.

    A batch that takes longer than `write_timeout` seconds to send (0: no
    limit) ends the connection ("write timeout").
    """

    __slots__ = ("_error", "_flight", "_sent", "_timeout", "_wake", "stream")

    def __init__(self, stream: trio.abc.Stream, *, write_timeout: float = 0.0) -> None:
        self.stream = stream
        self._timeout = write_timeout if write_timeout > 0 else math.inf
        self._flight: bytes | None = None  # taken, being sent
        self._error: str | None = None
        self._wake = trio.Event()  # something to send
        self._sent = trio.Event()  # the batch in flight went out

    @property
    def holding(self) -> bool:
        """True while a batch is in flight."""
        return self._flight is not None

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        """Take `buffers` if nothing is in flight (see `Transport`)."""
        if self._error is not None:
            raise TransportError(self._error)
        if self._flight is not None:
            return 0
        data = b"".join(buffers)
        if not data:
            return 0
        self._flight = data
        self._sent = trio.Event()
        self._wake.set()
        return len(data)

    async def wait_writable(self) -> None:
        """Wait until the batch in flight is out."""
        while self._flight is not None and self._error is None:
            await self._sent.wait()
        if self._error is not None:
            raise TransportError(self._error)
        await trio.lowlevel.checkpoint()

    async def flushed(self) -> None:
        """Wait until the batch in flight is sent."""
        await self.wait_writable()

    async def run(self) -> None:
        """Send each batch taken, until cancelled (run beside the reader).

        Raises TransportError when a send fails or takes too long.
        """
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            data = self._flight
            if data is None:
                continue
            try:
                with trio.fail_after(self._timeout):
                    await self.stream.send_all(data)
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
            ) as exc:
                self._error = describe(exc)
                self._sent.set()
                raise TransportError(self._error) from exc
            self._flight = None
            self._sent.set()

    async def receive(self) -> bytes:
        """The next bytes from the stream (b"" at the end)."""
        try:
            return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportError(describe(exc)) from exc

    async def close(self) -> None:
        """Close the stream (forcefully if the caller's deadline passes)."""
        try:
            await self.stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(self.stream)


def _plaintext(buffers: Sequence[Buffer], most: int) -> tuple[Buffer, int]:
    """The first `most` bytes of `buffers` (or all of them) as one buffer."""
    chunk: list[Buffer] = []
    size = 0
    for buffer in buffers:
        room = most - size
        if len(buffer) >= room:
            chunk.append(memoryview(buffer)[:room])
            size += room
            break
        chunk.append(buffer)
        size += len(buffer)
    return (chunk[0] if len(chunk) == 1 else b"".join(chunk)), size


class SocketTLSTransport:
    """TLS (server side) on a socket of our own, by a non-blocking SSLSocket.

    Records go straight to the kernel: no memory BIOs, whose buffers keep
    the size of the largest write for the rest of the connection. OpenSSL
    asks for a write it refused to be retried with the same bytes; fan-out
    retries from the same place, so the retry is the first bytes it gathers.
    Renegotiation is off in our contexts, so reading and writing never wait
    on each other.
    """

    __slots__ = ("_drained", "_error", "_retry", "sock")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        # wrap_socket takes the descriptor over (`sock` is detached).
        self.sock = context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        #: Bytes of a write OpenSSL refused, which it wants again (0: none).
        self._retry = 0
        #: An error met after data was read, raised by the next receive.
        self._error: TransportError | None = None
        #: The last receive read all there was: the next waits first, not
        #: asking OpenSSL in vain (an exception raised in `receive` would
        #: keep a frame object alive for the whole wait).
        self._drained = False

    @property
    def holding(self) -> bool:
        """True while OpenSSL holds a write it wants retried."""
        return self._retry > 0

    def peer_certificate(self) -> bytes | None:
        """The client's certificate (DER), if it sent one."""
        return self.sock.getpeercert(binary_form=True) or None

    async def handshake(self) -> None:
        """Complete the TLS handshake. Raises TransportError.

        The caller bounds it with a deadline.
        """
        while True:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLWantWriteError:
                await self._wait(trio.lowlevel.wait_writable)
                continue
            except OSError as exc:  # ssl.SSLError included
                raise TransportError(describe(exc)) from exc
            else:
                await trio.lowlevel.checkpoint()
                return
            await self._wait(trio.lowlevel.wait_readable)

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        try:
            await wait(self.sock)
        except trio.ClosedResourceError as exc:
            raise TransportError("connection closed") from exc

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        """Encrypt and send what the kernel takes now (see `Transport`)."""
        data, size = _plaintext(buffers, self._retry or TLS_WRITE_CHUNK)
        if not size:
            return 0
        try:
            taken = self.sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._retry = size  # OpenSSL wants exactly these bytes again
            return 0
        except OSError as exc:
            raise TransportError(describe(exc)) from exc
        self._retry = 0
        return taken

    async def wait_writable(self) -> None:
        """Wait until the kernel takes data again."""
        await self._wait(trio.lowlevel.wait_writable)

    async def flushed(self) -> None:
        """Nothing to wait for: what `send_now` took is in the kernel."""
        await trio.lowlevel.checkpoint()

    async def receive(self) -> bytes:
        """The next plaintext from the peer (b"" at the end)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._error is not None:
            raise self._error  # met after the data the last receive gave
        if self._drained:
            self._drained = False
            try:
                await trio.lowlevel.wait_readable(self.sock)
            except trio.ClosedResourceError as exc:
                raise TransportError("connection closed") from exc
        while True:
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except ssl.SSLWantReadError:
                wait = trio.lowlevel.wait_readable
            except ssl.SSLWantWriteError:
                wait = trio.lowlevel.wait_writable
            except ssl.SSLZeroReturnError:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""  # close_notify
            except OSError as exc:
                raise TransportError(describe(exc)) from exc
            else:
                if data:
                    data = self._more(data)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            try:  # not through `_wait`: a frame less per idle connection
                await wait(self.sock)
            except trio.ClosedResourceError as exc:
                raise TransportError("connection closed") from exc

    def _more(self, data: bytes) -> bytes:
        """`data` and what else is there to decrypt now, up to RECEIVE_SIZE.

        One `recv` gives one TLS record's plaintext, and a client sends a
        record per line: returned one by one, each line would cost a pass
        of the event loop, and each reader a write per line. What stops this
        (no more data, the end, an error) is met by the next receive.
        """
        chunks = [data]
        total = len(data)
        while total < RECEIVE_SIZE:
            try:
                more = self.sock.recv(RECEIVE_SIZE - total)
            except ssl.SSLWantReadError:
                self._drained = True  # nothing more until the socket says
                break
            except ssl.SSLWantWriteError:
                break  # nothing more for now
            except ssl.SSLZeroReturnError:
                break  # close_notify: the next receive sees it again
            except OSError as exc:
                # OpenSSL reports an error once: keep it for the next receive.
                self._error = TransportError(describe(exc))
                break
            if not more:
                break
            chunks.append(more)
            total += len(more)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def close(self) -> None:
        """Send close_notify (the peer's is not awaited), then close."""
        with contextlib.suppress(OSError):  # ssl.SSLError included
            if not self._retry:  # mid-record, a close_notify would garble
                self.sock.unwrap()
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """Close the socket, waking anyone waiting on it.

        What the peer sent and nobody read is read first (a little of it,
        without waiting): closing on unread data resets the connection, and
        the peer would not see the alert or the close_notify before it.
        """
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            for _ in range(UNREAD_CHUNKS):
                if not socket.socket.recv(self.sock, RECEIVE_SIZE):
                    break
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class TLSTransport:
    """TLS (server side) over another transport, by `ssl.SSLObject`.

    Encryption happens in `send_now`, so TLS connections are written by the
    same non-blocking path as plain ones. Renegotiation is off in our
    contexts, so reading and writing never wait on each other.
    """

    __slots__ = ("_incoming", "_outgoing", "_pending", "_ssl", "inner")

    def __init__(self, inner: Transport, context: ssl.SSLContext) -> None:
        self.inner = inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        #: Ciphertext the inner transport has not taken yet.
        self._pending: memoryview | None = None

    def peer_certificate(self) -> bytes | None:
        """The client's certificate (DER), if it sent one."""
        der = self._ssl.getpeercert(binary_form=True)
        return der or None

    async def handshake(self) -> None:
        """Complete the TLS handshake. Raises TransportError.

        The caller bounds it with a deadline.
        """
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self._push()  # the alert, if the kernel takes it
                raise TransportError(describe(exc)) from exc
            await self._send_pending()
            data = await self.inner.receive()
            if not data:
                raise TransportError("connection closed")
            self._incoming.write(data)
        await self._send_pending()

    def _push(self) -> bool:
        """Move ciphertext to the inner transport; True once none is left."""
        if self._outgoing.pending:
            data = self._outgoing.read()
            if self._pending is not None:
                data = bytes(self._pending) + data
            self._pending = memoryview(data)
        pending = self._pending
        if pending is None:
            return True
        taken = self.inner.send_now([pending])
        if taken >= len(pending):
            self._pending = None
            return True
        self._pending = pending[taken:]
        return False

    async def _send_pending(self) -> None:
        while not self._push():
            await self.inner.wait_writable()
        await trio.lowlevel.checkpoint()

    @property
    def holding(self) -> bool:
        """True while records wait for the inner transport (or in it)."""
        return self._pending is not None or self.inner.holding

    def send_now(self, buffers: Sequence[Buffer]) -> int:
        """Encrypt and send what fits (see `Transport`): the plaintext taken."""
        if not self._push():
            return 0
        data, size = _plaintext(buffers, TLS_WRITE_CHUNK)
        if not size:
            return 0
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            raise TransportError(describe(exc)) from exc
        self._push()
        return size

    async def wait_writable(self) -> None:
        """Wait until the ciphertext waiting is out."""
        while not self._push():
            await self.inner.wait_writable()
        await trio.lowlevel.checkpoint()

    async def flushed(self) -> None:
        """Wait until every record is handed to the inner transport's kernel."""
        await self.wait_writable()
        await self.inner.flushed()

    async def receive(self) -> bytes:
        """The next plaintext from the peer (b"" at the end).

        Cancellation never loses what was decrypted: once data is read it is
        returned.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = self._ssl.read(RECEIVE_SIZE)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""  # close_notify
            except ssl.SSLError as exc:
                raise TransportError(describe(exc)) from exc
            else:
                self._push()  # whatever reading produced (a key update)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            received = await self.inner.receive()
            if not received:
                return b""  # closed without close_notify: the end all the same
            self._incoming.write(received)

    async def close(self) -> None:
        """Send close_notify (within the caller's deadline), then close."""
        try:
            # Our close_notify is written; the peer's is not awaited.
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
                self._ssl.unwrap()
            with contextlib.suppress(TransportError):
                await self._send_pending()
        finally:
            await self.inner.close()  # noqa: ASYNC102 - the caller's deadline
