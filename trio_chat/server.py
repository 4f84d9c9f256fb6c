"""The server: trio sockets and TLS on one side, the chat on the other.

A thin adapter around the sans-IO protocol and the chat logic. Each client
gets a task (in one nursery for all connections); inside it, an optional TLS
handshake under a deadline, then a per-connection nursery with one reader
task and one writer task (the writer is the only task that writes to the
stream). Whatever goes wrong with one connection ends that connection only.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import hashlib
import heapq
import itertools
import logging
import math
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Final, Literal

import trio

from trio_chat import events as ev
from trio_chat.accounts import AccountError, Accounts
from trio_chat.admission import Admission, Refusal, address_key
from trio_chat.chat import (
    MAX_IGNORED,
    AccountAction,
    BanLifted,
    BanSaved,
    CertAction,
    Chat,
    Commit,
    FetchHistory,
    FollowUp,
    IgnoreSaved,
    MotdSaved,
    Persist,
    Saved,
    TopicSaved,
    eviction_goodbye,
)
from trio_chat.flood import EXCESS_FLOOD, FloodControl
from trio_chat.hub import Member, Room
from trio_chat.limits import (
    ACCEPT_BACKOFF,
    CLOSE_TIMEOUT,
    DEFAULT_HOST,
    FLUSH_WAIT_PASSES,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES,
    LINE_BATCHES_COMMITTING,
    LOGIN_MAX_WAIT,
    MAX_SAVED_TOPICS,
    PRESENCE_DELAY_PER_MEMBER,
    PRESENCE_MAX_DELAY,
    PRUNE_INTERVAL,
    READ_BUDGET_LINES,
    REGISTRATION_WINDOW,
    TOPIC_ROW_BYTES,
    Limits,
)
from trio_chat.names import name_key
from trio_chat.protocol import (
    NEED_DATA,
    encode_event,
)
from trio_chat.roomstate import RoomForgotten, RoomSettingsSaved
from trio_chat.store import AsyncStore, RoomEvent, StoreError
from trio_chat.throttle import SERVER_PASSWORD, Attempt, LoginThrottle, TooSoon
from trio_chat.transport import (
    SocketTLSTransport,
    SocketTransport,
    StreamTransport,
    TLSTransport,
    Transport,
    TransportError,
    describe,
    send_all,
)
from trio_chat.wire import Closed, Noop, Refused, WireSession
from trio_chat.wire.irc import IrcSession, encode_shared
from trio_chat.wire.line import LineSession, request_cost

log = logging.getLogger("trio_chat.server")

#: Join, leave and rename notices waiting to be written to the store; past
#: it a notice is not saved (and a warning logged) rather than anyone wait.
UNSAVED_NOTICES: Final = 4096

#: The settings key under which /motd's message of the day is kept.
MOTD_SETTING: Final = "motd"
#: Addresses whose registrations are counted (for the daily limit): the
#: oldest are forgotten past it.
MAX_TRACKED_ADDRESSES: Final = 10_000

#: accept() errors that mean "out of a resource for now": back off, retry.
_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
#: The name of every connection's task (in trio's task tree).
_CONNECTION_TASK: Final = "trio_chat.connection"
#: Errors that mean the peer went away or misbehaved at the transport level:
#: logged at INFO as a disconnect, without a traceback.
_PEER_ERRORS: Final = (
    TransportError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    OSError,
)


def _count_tasks(task: trio.lowlevel.Task | None) -> int:
    """Tasks alive in the tree under `task` (itself included)."""
    if task is None:
        return 0
    return 1 + sum(
        _count_tasks(child)
        for nursery in task.child_nurseries
        for child in nursery.child_tasks
    )


def _login_wait(limits: Limits) -> float:
    """The longest a password try is held: well inside the name timeout."""
    if not limits.name_timeout:
        return LOGIN_MAX_WAIT
    return min(LOGIN_MAX_WAIT, limits.name_timeout / 2)


def _topics_kept(limits: Limits) -> int:
    """How many topics the database keeps: at most an eighth of its cap."""
    if not limits.max_db_mb:
        return MAX_SAVED_TOPICS
    return max(
        1, min(MAX_SAVED_TOPICS, limits.max_db_mb * 2**20 // 8 // TOPIC_ROW_BYTES)
    )


def _seconds(limit: float) -> float:
    """A timeout from the limits, where 0 means none."""
    return limit if limit > 0 else math.inf


def _too_soon(code: str, refused: TooSoon) -> ev.Error:
    """The error for a password try the throttle turned away."""
    seconds = max(1, math.ceil(refused.retry_after))
    return ev.Error(
        code,
        f"Too many wrong passwords lately; try again in {_plural(seconds, 'second')}.",
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


#: Stands for a connection's cancel scope where it has none (a socket's):
#: reusable, and one object for all (it holds nothing).
_NO_SCOPE: Final = contextlib.nullcontext()


#: What a listener serves: the line protocol or IRC, plain or over TLS.
ListenerKind = Literal["line", "tls", "irc", "ircs"]
#: The kinds whose connections begin with a TLS handshake.
TLS_KINDS: Final[frozenset[str]] = frozenset({"tls", "ircs"})
#: This server's name on IRC (the source of its numerics, and what 001
#: welcomes to): a name, not an address, since one server has many.
IRC_SERVER_NAME: Final = "trio-chat"
#: The kinds of listener that speak IRC (`trio_chat.wire.irc`).
IRC_KINDS: Final[frozenset[str]] = frozenset({"irc", "ircs"})


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """A listening socket and what it serves (`kind`; TLS by `ssl_context`)."""

    listener: trio.SocketListener
    kind: ListenerKind = "line"
    ssl_context: ssl.SSLContext | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _StreamEndpoint:
    """What a stream handed to `handle_stream` serves (no listener of its own)."""

    kind: ListenerKind
    ssl_context: ssl.SSLContext | None


class Connection:
    """One client connection: its member in the hub, read by one task.

    The connection's own task reads (and runs the chat for its member);
    writing is fan-out's, through the transport's non-blocking `send_now`.
    Only while the kernel refuses data does a second task exist, waiting for
    the socket to take more (`_write_when_writable`).
    """

    __slots__ = (  # one per connection: no __dict__
        "_budget",
        "_cert_name",
        "_chat",
        "_committing",
        "_draining",
        "_failed",
        "_limits",
        "_nursery",
        "_proven",
        "_running",
        "_saving",
        "_server",
        "_session",
        "_settled",
        "_ssl_context",
        "_stopped",
        "_stream",
        "_writer",
        "conn_id",
        "kind",
        "member",
        "registered",
        "scope",
        "transport",
    )

    def __init__(
        self,
        server: ChatServer,
        transport: Transport,
        conn_id: str,
        *,
        nursery: trio.Nursery | None = None,
        ssl_context: ssl.SSLContext | None = None,
        kind: ListenerKind = "line",
    ) -> None:
        self._server = server
        #: TLS to handshake first (None: plain), and what the listener serves.
        self._ssl_context = ssl_context
        self.kind = kind
        self._chat = server.chat
        self._limits = server.limits
        self.transport = transport
        #: A trio stream that needs a task to send (None for a socket).
        self._stream = transport if isinstance(transport, StreamTransport) else None
        self.conn_id = conn_id
        #: The sans-IO session of the protocol the listener speaks: it
        #: frames the bytes, turns them into requests and events into bytes.
        self._session, shared = server.wire_session(
            kind, self._current_name, tls=ssl_context is not None
        )
        self._proven: str | None = None  # the registered name a LogIn proved
        self.member = Member(
            conn_id,
            encode=self._session.send,
            shared=shared,
            replay_shared=self._session.shared_replay,
            owner=self,
            sink=transport,
            max_messages=self._limits.outbox_max_messages,
            max_bytes=self._limits.outbox_max_bytes,
        )
        #: Where a task beside the connection starts (the writer, when needed).
        self._nursery = nursery
        self._writer: trio.CancelScope | None = None
        self._draining = False
        self._failed: TransportError | None = None  # the stream's sender failed
        #: What stops the connection: for a stream, its scope (its sender
        #: goes on for the goodbye); for a socket, closing-notification of
        #: the socket wakes the task (a cancel scope per connection would
        #: cost it about 700 bytes), and the task sees `_stopped`.
        self.scope = trio.CancelScope() if self._stream is not None else None
        self._stopped = False
        self._running = False
        self._budget = READ_BUDGET_LINES
        #: Batches of this member's chat lines on their way to the store,
        #: and what wakes a wait for them (`_settle`).
        self._committing = 0
        self._settled: trio.Event | None = None
        #: Chat lines of the chunk being read, to be stored together (a
        #: list only while there are some: none of its own when idle).
        self._saving: list[Persist] | tuple[()] = ()
        self.registered = False
        self._cert_name: str | None = None  # the account a certificate claims

    def _current_name(self) -> str | None:
        return self.member.name

    def _on_joined(self) -> None:
        self.registered = True
        if self.member.address is not None:
            self._server.admission.registered(self.member.address)

    # -- called from other tasks (never wait) ------------------------------

    def evicted(self, reason: str) -> None:
        """The hub evicted the member: end the connection (never waits)."""
        log.info("[%s] dropped: %s", self.conn_id, reason)
        self._stop()

    def shutdown(self) -> None:
        """Tell the client the server is going away, flush, then close."""
        if self._running:
            # Goes out as the connection closes (`_close`), briefly.
            self._goodbye("server-shutdown", "The server is shutting down. Bye!")
        self._stop()

    def _stop(self) -> None:
        """End the connection: its task stops waiting and goes (never waits).

        A task busy elsewhere (a store write) sees `_stopped` (or its
        member closed) when it comes back.
        """
        self._stopped = True
        if self.scope is not None:
            self.scope.cancel()
            return
        sock = self._socket()
        if sock is not None and sock.fileno() >= 0:
            trio.lowlevel.notify_closing(sock)

    def _socket(self) -> socket.socket | None:
        transport = self.transport
        if isinstance(transport, TLSTransport):
            transport = transport.inner
        if isinstance(transport, SocketTransport | SocketTLSTransport):
            return transport.sock
        return None

    def blocked(self) -> None:
        """The kernel refused data: wait for it to take more, in a task."""
        if self._writer is not None or self._draining or self._nursery is None:
            return
        self._writer = trio.CancelScope()
        self._nursery.start_soon(self._write_when_writable, self._writer)

    # -- the connection's own tasks ----------------------------------------

    async def run(self) -> None:
        """Handshake, greet, read until the client leaves or is dropped.

        Returns when the connection is done, its transport closed.
        Transport errors propagate (possibly in an exception group).
        """
        if self._stream is None:
            await self.serve()
            return
        # The stream's sending task outlives `scope`, for the goodbye.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_stream, self._stream)
            self._nursery = nursery
            try:
                await self.serve()
            finally:
                nursery.cancel_scope.cancel()

    async def _send_stream(  # noqa: ASYNC910 - run() checkpoints
        self, stream: StreamTransport
    ) -> None:
        try:
            await stream.run()
        except TransportError as exc:
            self._failed = exc  # for `serve` to report, as a reader's error
            self._stop()

    @property
    def needs_task(self) -> bool:
        """True if the transport needs a task of its own to send (`run`)."""
        return self._stream is not None

    async def serve(self) -> None:  # noqa: ASYNC910 - the scope's body does
        """`run` for a transport that sends without a task (a socket).

        The per-connection boundary: transport errors are logged at INFO,
        bugs at ERROR with their traceback; neither escapes, and only this
        connection is affected. Cancellation propagates after the transport
        is closed (with a short deadline).
        """
        try:
            try:
                with self.scope or _NO_SCOPE:
                    server = self._server
                    if self._ssl_context is not None:
                        await self._tls_handshake(self._ssl_context)
                    self._running = True
                    if server.shutting_down or self._stopped:
                        self.shutdown()
                    else:
                        self._cert_name = await server.cert_login(self.member)
                        self._chat.greet(
                            self.member,
                            prompt=self._cert_name is None
                            or not self._session.certificate_login,
                        )
                    if not self.member.closed:
                        await self._wire_phase(self._session)
                    # Reading is over: what is queued (a goodbye) goes out.
                    self.member.close()
                    await self._drain()
            finally:
                await self._close()  # noqa: ASYNC102 - shielded, bounded inside
            if self._failed is not None:
                raise self._failed
        except* _PEER_ERRORS as group:
            if not self._stopped:  # (stopped: it said why already)
                reason = describe(group.exceptions[0])
                log.info("[%s] disconnected: %s", self.conn_id, reason)
                self._chat.leave(self.member, "disconnected", reason)
        except* _TLSHandshakeFailed:
            pass  # already logged
        except* Exception:
            log.exception("[%s] internal error; closing this connection", self.conn_id)
            self._chat.leave(self.member, "disconnected", "server error")
        finally:
            self._server.release(self)
            self._chat.leave(self.member, "disconnected", "connection closed")
            self.member.drop_everything()  # its place in every log goes
            self.abort()
            log.info("[%s] closed", self.conn_id)

    async def _tls_handshake(self, context: ssl.SSLContext) -> None:
        tls: SocketTLSTransport | TLSTransport
        if isinstance(self.transport, SocketTransport):
            tls = SocketTLSTransport(self.transport.sock, context)
        else:
            tls = TLSTransport(self.transport, context)
        self.transport = tls  # it owns the socket now (and closes it)
        self.member.sink = tls
        try:
            with trio.fail_after(_seconds(self._limits.tls_handshake_timeout)):
                await tls.handshake()
        except trio.TooSlowError:
            log.info("[%s] TLS handshake timed out", self.conn_id)
            raise _TLSHandshakeFailed from None
        except TransportError as exc:
            log.info("[%s] TLS handshake failed: %s", self.conn_id, exc)
            raise _TLSHandshakeFailed from None
        der = tls.peer_certificate()
        self.member.cert = None if der is None else hashlib.sha256(der).hexdigest()

    def _goodbye(self, code: str, text: str) -> None:
        self._chat.hub.send(self.member, ev.Goodbye(code, text))
        self.member.close()

    async def _server_password(self, given: str) -> None:
        """Check the server password, when the throttle gives this try a turn."""
        attempt = await self._server.password_turn(self.member, SERVER_PASSWORD)
        if isinstance(attempt, TooSoon):
            self._chat.hub.send(self.member, _too_soon("login-refused", attempt))
            self._chat.prompt(self.member)
        elif self._chat.give_server_password(self.member, given):
            self._server.logins.succeeded(attempt)

    async def _verify(self, name: str, password: str) -> str | None:
        """The registered name `password` proves `name` to be, or None.

        The member is told why not (wrong password, throttled, store
        trouble). The throttle may make this wait for a turn.
        """
        await trio.lowlevel.checkpoint()
        accounts = self._server.accounts
        if accounts is None:
            self._chat.hub.send(
                self.member,
                ev.Error("no-accounts", "This server keeps no registered names."),
            )
            return None
        registered: str | None = None
        attempt = await self._server.password_turn(self.member, name_key(name))
        if isinstance(attempt, TooSoon):
            self._chat.hub.send(self.member, _too_soon("login-refused", attempt))
        else:
            try:
                registered = await accounts.verify(name, password)
            except StoreError as exc:
                log.error("[%s] account not read: %s", self.conn_id, exc)
                self._chat.hub.send(
                    self.member,
                    ev.Error(
                        "login-refused",
                        "The server could not check the password now; try again later.",
                    ),
                )
            else:
                if registered is None:
                    self._chat.hub.send(
                        self.member,
                        ev.Error("bad-password", f"Wrong password for {name}."),
                    )
                else:
                    self._server.logins.succeeded(attempt)
        if registered is None:
            log.info("[%s] failed to log in as %s", self.conn_id, name)
            return None
        log.info("[%s] proved the registered name %s", self.conn_id, registered)
        return registered

    async def _save_lines(self) -> None:
        """Send the chat lines waiting in `_saving` to be stored, then delivered.

        They are committed together while this connection reads on, and
        fanned out once committed, in order (`ChatServer.queue_lines`). At
        most `LINE_BATCHES_COMMITTING` batches are on their way at once:
        beyond, this waits for the oldest. `_settle` waits for them all.
        """
        lines = self._saving
        if not lines:
            await trio.lowlevel.checkpoint()
            return
        if self._committing >= LINE_BATCHES_COMMITTING:
            await self._settle(LINE_BATCHES_COMMITTING - 1)
        self._saving = ()
        self._committing += 1
        await self._server.queue_lines(self.member, lines, self._committed)

    def _committed(self) -> None:
        """A batch of this member's lines was committed and fanned out."""
        self._committing -= 1
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    async def _settle(self, most: int = 0) -> None:  # noqa: ASYNC910 - see below
        """Wait until at most `most` batches of lines are still being committed.

        Whatever comes after a line (a command, a leave) takes effect only
        once the line is out, so everyone sees the member's doings in order.
        Does not yield when nothing is committing: a chunk's requests are
        handled in one go (the read loop checkpoints per budget).
        """
        while self._committing > most:
            settled = self._settled = trio.Event()
            await settled.wait()

    # -- the session: registration, then chat -----------------------------

    async def _wire_phase(self, session: WireSession) -> None:
        """Registration and chat through `session`, until the member goes.

        The session frames the bytes and turns them into requests; this
        moves them: login requests to the server's services, chat requests
        through flood control to the chat (their chat lines stored together
        per chunk, `_save_lines`), and what the session answers on its own
        out to the client. The client must be in within the name timeout.
        Lines over the flood allowance wait in a bounded backlog while the
        socket keeps being read, so a flooder is seen (and dropped) at once.
        A session with keepalive (IRC) is sent a PING when silent for the
        ping interval and dropped if it does not answer in the ping timeout.
        """
        await trio.lowlevel.checkpoint()
        member = self.member
        limits = self._limits
        hub = self._chat.hub
        now = trio.current_time()
        flood: FloodControl[ev.Request | Noop] = FloodControl(
            burst=limits.flood_burst,
            rate=limits.flood_rate,
            max_backlog=limits.flood_max_backlog,
            max_delay=limits.flood_max_delay,
            now=now,
        )
        register_by = now + _seconds(limits.name_timeout)
        ping_every = math.inf
        if session.keepalive:
            ping_every = _seconds(limits.irc_ping_interval)
        pong_by = math.inf  # while a PING is unanswered
        idle = _seconds(limits.idle_timeout)
        last_heard = now  # bytes: the peer is there (for pings)
        last_line = now  # a whole line: the user is there (for idleness)
        attempts = 0
        ended = False
        pings = 0
        if self._cert_name is not None and session.certificate_login:
            log.info("[%s] certificate of %s", self.conn_id, self._cert_name)
            if self._chat.choose_name(member, self._cert_name, identified=True):
                await self._server.load_ignores(member)
                self._on_joined()
        while not member.closed:
            data = session.data_to_send()
            if data:
                hub.send_data(member, data)
            now = trio.current_time()
            for request in flood.ready(now):
                await self._act_request(request)
                if member.closed:
                    return
            if flood.over_limit(now):
                await self._save_lines()  # what was accepted stands
                await self._settle()
                self._drop(EXCESS_FLOOD)
                return
            if ended:
                await self._save_lines()
                if not flood.backlog:
                    await self._settle()
                    self._chat.leave(member, "disconnected", "connection closed")
                    return
                await trio.sleep_until(flood.next_time(now))
                continue
            if not session.registered and now >= register_by:
                log.info("[%s] no name within %g s", self.conn_id, limits.name_timeout)
                self._goodbye(
                    "name-timeout",
                    f"No name chosen within {limits.name_timeout:g} seconds.",
                )
                return
            if not session.awaiting_pong:
                pong_by = math.inf
            if now >= pong_by:
                await self._save_lines()  # what was accepted stands
                await self._settle()
                self._drop("ping timeout")
                return
            if now >= last_heard + ping_every and pong_by == math.inf:
                pings += 1
                session.ping(f"{IRC_SERVER_NAME}-{pings}")
                pong_by = now + _seconds(limits.irc_ping_timeout)
                continue
            if now >= last_line + idle and session.registered:
                await self._save_lines()  # what was accepted stands
                await self._settle()
                self._drop("idle timeout")
                return
            if now >= session.deadline:
                session.tick(now)  # a paste timed out: its error is to send
                continue
            if self._budget <= 0:
                self._budget = READ_BUDGET_LINES
                await self._save_lines()  # checkpoints
            event = session.next_event()
            if event is NEED_DATA:
                data = session.data_to_send()
                if data:
                    hub.send_data(member, data)
                if self._saving:  # the chunk is done: its lines go now
                    await self._save_lines()
                    continue
                wake = min(
                    flood.next_time(now),
                    last_line + idle if session.registered else math.inf,
                    last_heard + ping_every if pong_by == math.inf else pong_by,
                    math.inf if session.registered else register_by,
                    session.deadline,
                )
                received: bytes | None = None
                failed: BaseException | None = None
                try:
                    if wake == math.inf:  # the usual case: no cancel scope per read
                        received = await self.transport.receive()
                    else:
                        with trio.move_on_at(wake):
                            received = await self.transport.receive()
                except _PEER_ERRORS as exc:
                    failed = exc
                if failed is not None:
                    await self._settle()  # its last lines go before its leave
                    raise failed
                if received is None:
                    continue  # a deadline, a ping due, or a delayed line
                self._budget = READ_BUDGET_LINES
                last_heard = trio.current_time()
                session.tick(last_heard)
                session.receive_data(received)
                del received  # not kept while idle
                continue
            self._budget -= 1
            last_line = now
            match event:
                case Closed(reason):
                    if reason == "connection closed":
                        ended = True
                    else:
                        await self._save_lines()  # what was accepted stands
                        await self._settle()
                        self._drop(reason)
                        return
                case Refused(code, text):
                    log.info("[%s] refused: %s", self.conn_id, code)
                    self._goodbye(code, text)
                    return
                case ev.ServerPassword() | ev.LogIn() | ev.ChooseName():
                    # A name a LogIn proved is the same attempt as the LogIn.
                    attempts += not (isinstance(event, ev.ChooseName) and event.proven)
                    most = limits.max_name_attempts
                    if most and attempts > most:
                        log.info("[%s] dropped: too many name attempts", self.conn_id)
                        self._goodbye(
                            "too-many-attempts", f"No valid name in {most} tries; bye."
                        )
                        return
                    # The name timeout bounds a password check too (the
                    # throttle may make one wait its turn); past it, the
                    # loop says goodbye: no name in time.
                    await self._login_request(event, by=register_by)
                case ev.Since(ts) if not self.registered:
                    member.since = ts  # for the lobby's replay
                case _ if not self.registered:
                    pass  # the session answers requests before its welcome
                case _:
                    cost = request_cost(event)
                    if flood.admit(now, cost=cost):
                        await self._act_request(event)
                    else:
                        flood.offer(event, now, cost=cost)
        await self._save_lines()
        await self._settle()

    async def _login_request(
        self, request: ev.ServerPassword | ev.LogIn | ev.ChooseName, *, by: float
    ) -> None:
        """Carry out a step of a session's registration (its answer is sent),
        given up at `by` (its cancel scope goes with this frame, not kept by
        the connection's for as long as it lives)."""
        with trio.move_on_at(by):
            await self._login_step(request)

    async def _login_step(
        self, request: ev.ServerPassword | ev.LogIn | ev.ChooseName
    ) -> None:
        await trio.lowlevel.checkpoint()
        match request:
            case ev.ServerPassword(password):
                await self._server_password(password)
            case ev.LogIn(name, password):
                registered = await self._verify(name, password)
                if registered is not None:
                    self._proven = registered
                    self._chat.hub.send(self.member, ev.LoggedIn(registered))
            case ev.ChooseName(name, proven):
                key = name_key(name)
                identified = (
                    proven
                    and self._proven is not None
                    and name_key(self._proven) == key
                ) or (self._cert_name is not None and name_key(self._cert_name) == key)
                if self._chat.choose_name(self.member, name, identified=identified):
                    await self._server.load_ignores(self.member)
                    self._on_joined()

    async def _act_request(  # noqa: ASYNC910 - the read loop checkpoints per budget
        self, request: ev.Request | Noop
    ) -> None:
        """Carry out a request of the member's, in its turn.

        A chat line to be stored joins `_saving`; anything else first has
        what waits there, and what is being committed, stored and delivered,
        so effects keep their order.
        A request that waits for nothing does not yield: the lines of one
        chunk are handled in one go (the read loop yields once per
        `READ_BUDGET_LINES`), so each reader gets one write for them all.
        A `Noop` has done what it does (taken its flood token) by now.
        """
        if isinstance(request, Noop):
            return  # noqa: ASYNC910 - the read loop checkpoints per budget
        if (self._saving or self._committing) and not isinstance(
            request, ev.Say | ev.Me
        ):
            await self._save_lines()
            await self._settle()
        follow_up = self._chat.handle(self.member, request)
        if isinstance(follow_up, Persist):
            if isinstance(self._saving, list):
                self._saving.append(follow_up)
            else:
                self._saving = [follow_up]
        elif follow_up is not None:
            await self._server.follow_up(self.member, follow_up)

    def _drop(self, reason: str) -> None:
        log.info("[%s] dropped: %s", self.conn_id, reason)
        self._chat.leave(self.member, "disconnected", reason)
        self._goodbye(reason.replace(" ", "-"), f"Disconnected: {reason}.")

    async def _write_when_writable(  # noqa: ASYNC910 - checkpoints in the scope
        self, scope: trio.CancelScope
    ) -> None:
        """Wait for the kernel to take data, write, until caught up.

        A member that makes no progress for `--write-timeout` is dropped
        ("write timeout"). Runs only while the kernel refuses data.
        """
        member = self.member
        hub = self._chat.hub
        timeout = _seconds(self._limits.write_timeout)
        try:
            with scope:
                await trio.lowlevel.checkpoint()
                deadline = trio.current_time() + timeout
                while member.blocked and member.evicted is None:
                    with trio.move_on_at(deadline) as waiting:
                        await self.transport.wait_writable()
                    if waiting.cancelled_caught:
                        hub.kick(member, reason="write timeout")
                        return
                    sent = member.sent_total
                    hub.flush_member(member)
                    if member.sent_total > sent:
                        deadline = trio.current_time() + timeout
        except TransportError as exc:
            hub.kick(member, reason=str(exc))
        except Exception:
            log.exception("[%s] internal error while writing; closing", self.conn_id)
            self._stop()
        finally:
            if self._writer is scope:
                self._writer = None

    async def _drain(self) -> None:
        """Write what is waiting, then return (bounded by the write timeout)."""
        member = self.member
        hub = self._chat.hub
        self._draining = True
        if self._writer is not None:
            self._writer.cancel()  # this task waits for the socket now
            self._writer = None
        timeout = _seconds(self._limits.write_timeout)
        deadline = trio.current_time() + timeout
        while member.evicted is None:
            sent = member.sent_total
            hub.flush_member(member)
            if member.sent_total > sent:
                deadline = trio.current_time() + timeout
            if not member.blocked:
                if not member.waiting:
                    break
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(deadline) as waiting:
                await self.transport.wait_writable()
            if waiting.cancelled_caught:
                raise trio.TooSlowError
        with trio.move_on_at(deadline) as waiting:
            await self.transport.flushed()
        if waiting.cancelled_caught:
            raise trio.TooSlowError

    async def _close(self) -> None:
        """Say goodbye to an evicted client if we may, then close, bounded."""
        with trio.CancelScope(shield=True):
            self._server.release(self)
            member = self.member
            if member.evicted is None and member.sink is not None and member.waiting:
                # Cut short (a shutdown): what waits (its goodbye) goes, briefly.
                with trio.move_on_after(CLOSE_TIMEOUT):  # noqa: ASYNC912
                    with contextlib.suppress(TransportError, trio.TooSlowError):
                        await self._drain()
            if self._writer is not None:
                self._writer.cancel()
                self._writer = None
            self._draining = True
            self.member.sink = None  # fan-out writes nothing more here
            with contextlib.suppress(_GoodbyeFailed):
                await self.say_goodbye_if_evicted()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.transport.close()
            self.abort()

    def abort(self) -> None:
        """Close the socket now, if it is not yet (nothing more in or out)."""
        transport = self.transport
        if isinstance(transport, TLSTransport):
            transport = transport.inner
        if isinstance(transport, SocketTransport | SocketTLSTransport):
            transport.close_now()

    async def say_goodbye_if_evicted(self) -> None:
        """Best effort: tell an evicted client why, within a short deadline."""
        reason = self.member.evicted
        if reason is None or self.member.cut:
            # Not evicted, or a line was cut off: a line now would garble.
            await trio.lowlevel.checkpoint()
            return
        data = self.member.encode(eviction_goodbye(reason))
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await send_all(self.transport, data)
            except TransportError as exc:
                log.debug("[%s] goodbye not sent: %s", self.conn_id, exc)
                raise _GoodbyeFailed from None


class ChatServer:
    """Serve a `Chat` over TCP (optionally TLS), shaped like `trio.serve_tcp`.

    `limits` default to the chat's own.

    `serve_tcp` / `serve_listeners` run until `shutdown()` was called and the
    connections have closed (or the grace period ran out); `closed` is set
    then. Cancelling them closes every connection at once.
    """

    def __init__(
        self,
        chat: Chat,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        store: AsyncStore | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self.chat = chat
        self.ssl_context = ssl_context
        self.limits = chat.limits if limits is None else limits
        self.store = store
        self._unsaved_send, self._unsaved = trio.open_memory_channel[Saved | _Pending](
            UNSAVED_NOTICES
        )
        #: Chat lines waiting for the next group commit, oldest first, fanned
        #: out once it is made (`_commit_lines`, which runs while `delivering`).
        self._gathering: list[_LineBatch] = []
        self._gathering_wakeup = trio.Event()
        self._delivering = False
        if store is not None:
            chat.durable = True
            chat.save = self._save
        self.accounts = accounts
        if accounts is not None:
            chat.is_registered = accounts.is_registered
            chat.registered_lookalike = accounts.lookalike
        self.shutting_down = False
        #: When the server started, as IRC's 003 tells it.
        self._started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.closed = trio.Event()
        self._ids = itertools.count(1)
        self._ids_due = itertools.count()
        self._connections: set[Connection] = set()
        self._accept_scope = trio.CancelScope()
        self.admission = Admission(self.limits)
        #: Password tries (accounts' and the server's), by address and name.
        self.logins = LoginThrottle(max_wait=_login_wait(self.limits))
        self._pruning = trio.CancelScope()
        self._prune_now = trio.Event()
        #: The flusher (`_flusher`) runs once per pass with something new.
        self._flush_wakeup = trio.Event()
        self._flushing = False
        chat.hub.on_dirty = self._flush_soon
        #: Where writer tasks start (`serve_listeners`' background nursery).
        self._writers: trio.Nursery | None = None
        #: Rooms with joins or leaves waiting, by when to announce them.
        self._presence_due: list[tuple[float, int, Room]] = []
        self._presence_wakeup = trio.Event()
        #: Registration times per address, for the daily limit.
        self._registrations: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def wire_session(
        self,
        kind: ListenerKind,
        current_name: Callable[[], str | None],
        *,
        tls: bool,
    ) -> tuple[WireSession, Callable[[ev.ServerEvent], bytes]]:
        """A new session for a connection on a `kind` listener, and the
        encoder of its protocol's room lines (shared by all its readers).

        `current_name` gives the connection's member's name as it is now;
        `tls` says the connection is inside TLS.
        """
        if kind in IRC_KINDS:
            irc = IrcSession(
                server_name=IRC_SERVER_NAME,
                limits=self.limits,
                accounts=self.accounts is not None,
                current_name=current_name,
                created=self._started,
                tls=tls,
            )
            return irc, encode_shared
        return LineSession(limits=self.limits, tls=tls), encode_event

    async def follow_up(self, member: Member, action: FollowUp) -> None:
        """Do what a request left to do with the store, in the member's task.

        A chat line is committed before it is fanned out, so whatever anyone
        saw survives a crash. If the store fails, the line still goes out
        (and the failure is logged): chatting beats history. Moderation
        (`Commit`) is committed before it takes effect and is announced; if
        the store fails, the member gets `ERR not-saved` and nothing changes.
        """
        await trio.lowlevel.checkpoint()
        match action:
            case Persist():
                await self.save_lines(member, [action])
            case AccountAction(what, password):
                await self._account(member, what, password)
            case CertAction(add):
                await self._bind_cert(member, add=add)
            case Commit(saved, apply):
                if self.store is None:
                    apply()
                    return
                try:
                    await self.commit(saved, apply)
                except StoreError as exc:
                    log.error("[%s] not saved, so not done: %s", member.conn_id, exc)
                    self._store_full(exc)
                    self.chat.hub.send(
                        member,
                        ev.Error(
                            "not-saved",
                            "That did not take: the server could not save it;"
                            " try again later.",
                        ),
                    )
            case FetchHistory(room, limit):
                events = self.chat.recent(room, limit)
                if self.store is not None:
                    try:
                        rows = await self.store.history(room.key, limit)
                    except StoreError as exc:
                        log.error("[%s] history not read: %s", member.conn_id, exc)
                    else:
                        events = [event for _, event in rows]
                self.chat.send_history(member, room, events)

    async def save_lines(  # noqa: ASYNC910 - the store call checkpoints
        self, member: Member, lines: list[Persist]
    ) -> None:
        """Commit chat lines (in one transaction), then fan them out, in order.

        Whatever anyone saw survives a crash. If the store fails, the lines
        still go out (and the failure is logged): chatting beats history.
        Returns once they are out; cancelled meanwhile, they may still go.
        """
        done = trio.Event()
        await self.queue_lines(member, lines, done.set)
        await done.wait()

    async def queue_lines(
        self, member: Member, lines: list[Persist], settled: Callable[[], None]
    ) -> None:
        """Commit chat lines, then fan them out, in order, without waiting
        for the commit: the caller reads on meanwhile.

        They join the next group commit (`_commit_lines`); `settled` is
        called once they are out, exactly once. Lines queued one after
        another go out in that order, after the ones queued before them by
        anyone. Whatever anyone saw survives a crash; if the store fails,
        the lines still go out (and the failure is logged): chatting beats
        history. Without a store the lines are out when this returns;
        served without `serve_listeners` (nobody to commit them later), they
        are committed and out when it returns, unless it is cancelled.
        """
        store = self.store
        if store is None:
            self._fan_out(lines)
            settled()
            await trio.lowlevel.checkpoint()
            return
        if not self._delivering:
            try:
                rows: list[tuple[str, RoomEvent]] = [
                    (line.room.key, line.event) for line in lines
                ]
                await store.append_many(rows)
            except StoreError as exc:
                log.error("[%s] lines not saved: %s", member.conn_id, exc)
                self._store_full(exc)
            except BaseException:
                settled()
                raise
            self._fan_out(lines)
            settled()
            return  # noqa: ASYNC910 - the store call checkpointed
        self._gathering.append(_LineBatch(member, lines, settled))
        self._gathering_wakeup.set()
        await trio.lowlevel.checkpoint()  # cancelled here, they go all the same

    def _fan_out(self, lines: list[Persist]) -> None:
        for line in lines:
            self.chat.deliver(line)

    async def _commit_lines(self, store: AsyncStore) -> None:
        """Commit the chat lines connections queue, then fan them out: a
        group commit of everything gathered while the last one was made.

        One commit is made at a time; meanwhile the connections read on and
        their lines gather for the next, so a busy room costs one commit per
        round trip to the disk, not one per connection. Lines go out in the
        order queued, so every sender's order is kept.
        """
        self._delivering = True
        try:
            while True:
                # Set whenever lines are queued (during the last commit too).
                await self._gathering_wakeup.wait()
                self._gathering_wakeup = trio.Event()
                if not self._gathering:
                    continue
                # Connections woken in the same pass may still add lines.
                for _ in range(FLUSH_WAIT_PASSES):
                    if not trio.lowlevel.current_statistics().tasks_runnable:
                        break
                    await trio.lowlevel.cancel_shielded_checkpoint()
                batches, self._gathering = self._gathering, []
                rows: list[tuple[str, RoomEvent]] = [
                    (line.room.key, line.event)
                    for batch in batches
                    for line in batch.lines
                ]
                try:
                    await store.append_many(rows)
                except StoreError as exc:
                    log.error(
                        "[%s] lines not saved: %s",
                        ",".join(batch.member.conn_id for batch in batches),
                        exc,
                    )
                    self._store_full(exc)
                except BaseException:
                    # Not known to be kept, so not shown; but nobody may
                    # wait for these lines forever.
                    for batch in batches:
                        batch.settled()
                    raise
                for batch in batches:
                    self._fan_out(batch.lines)
                    batch.settled()
        finally:
            self._delivering = False

    async def _account(self, member: Member, what: str, password: str) -> None:
        await trio.lowlevel.checkpoint()
        accounts = self.accounts
        name = member.name
        assert accounts is not None and name is not None
        send = self.chat.hub.send
        try:
            if what == "register":
                if not self._may_register(member):
                    send(
                        member,
                        ev.Error(
                            "register-failed",
                            "Too many names were registered from your address"
                            " today; try again tomorrow.",
                        ),
                    )
                    return
                # Counted before the hash, so registrations made at once all
                # count; given back if this one does not happen.
                counted = self._registered_from(member)
                try:
                    await accounts.register(
                        name, password, address=member.address, now=counted
                    )
                except BaseException:
                    self._not_registered_from(member, counted)
                    raise
                log.info("[%s] registered %s", member.conn_id, name)
                self.chat.identified(member, name_key(name))
                send(
                    member,
                    ev.Info(
                        f"Registered {name}: from now on, connecting as {name}"
                        " needs this password."
                    ),
                )
                return
            if not accounts.is_registered(name):
                send(member, ev.Error("not-registered", f"{name} is not registered."))
                return
            attempt = await self.password_turn(member, name_key(name))
            if isinstance(attempt, TooSoon):
                send(member, _too_soon("identify-failed", attempt))
            elif await accounts.verify(name, password) is not None:
                self.logins.succeeded(attempt)
                send(member, ev.Info(f"You are identified as {name}."))
                self.chat.identified(member, name_key(name))
                await self.load_ignores(member)
            else:
                send(member, ev.Error("bad-password", f"Wrong password for {name}."))
        except AccountError as exc:
            send(member, ev.Error(f"{what}-failed", str(exc)))
        except StoreError as exc:
            log.error("[%s] account store failed: %s", member.conn_id, exc)
            send(
                member, ev.Error(f"{what}-failed", "The server could not do that now.")
            )

    async def password_turn(self, member: Member, name: str) -> Attempt | TooSoon:
        """Wait for the member's turn to try a password for `name`.

        `name` is a name key, or `SERVER_PASSWORD`. The try is counted as a
        failure from now on (`logins.succeeded` takes it back when right).
        Returns TooSoon, at once and uncounted, if the turn is too far off.
        Cancelled while it waits, the try stays counted.
        """
        address = member.address if member.address is not None else member.conn_id
        attempt = self.logins.begin(name, address, trio.current_time())
        if isinstance(attempt, TooSoon):
            log.info("[%s] password try refused: too many failures", member.conn_id)
            await trio.lowlevel.checkpoint()
            return attempt
        if attempt.start > trio.current_time():
            log.info(
                "[%s] password try waits %.1f s",
                member.conn_id,
                attempt.start - trio.current_time(),
            )
        await trio.sleep_until(attempt.start)
        return attempt

    def _may_register(self, member: Member) -> bool:
        """True if the member's address is under its daily registrations."""
        most = self.limits.max_registrations_per_address
        if not most or member.address is None:
            return True
        times = self._registrations.get(member.address)
        if times is None:
            return True
        now = self.chat.now()
        while times and now - times[0] > REGISTRATION_WINDOW:
            times.popleft()
        return len(times) < most

    def _registered_from(self, member: Member, when: float | None = None) -> float:
        """Count a registration from the member's address; return its time."""
        when = self.chat.now() if when is None else when
        if member.address is not None:
            self._count_registration(member.address, when)
        return when

    def _count_registration(self, address: str, when: float) -> None:
        times = self._registrations.setdefault(address, collections.deque())
        times.append(when)
        self._registrations.move_to_end(address)
        while len(self._registrations) > MAX_TRACKED_ADDRESSES:
            self._registrations.popitem(last=False)

    def _not_registered_from(self, member: Member, when: float) -> None:
        times = self._registrations.get(member.address or "")
        if times is not None and when in times:
            times.remove(when)

    async def load_registrations(self) -> None:
        """Count the last day's registrations kept in the store, per address.

        The daily limit then holds across restarts. Raises StoreError if the
        store cannot be read.
        """
        await trio.lowlevel.checkpoint()
        if self.store is None:
            return
        since = self.chat.now() - REGISTRATION_WINDOW
        for address, when in await self.store.registrations(since):
            self._count_registration(address, when)

    async def load_ignores(self, member: Member) -> None:
        """Add the names an identified member ignores, kept in the store."""
        await trio.lowlevel.checkpoint()
        if self.store is None or member.identified is None:
            return
        try:
            keys = await self.store.ignores(member.identified, MAX_IGNORED)
        except StoreError as exc:
            log.error("[%s] ignores not read: %s", member.conn_id, exc)
            return
        for key in keys:
            if len(member.ignoring) >= MAX_IGNORED:
                break
            member.ignore(key)

    async def _bind_cert(self, member: Member, *, add: bool) -> None:
        await trio.lowlevel.checkpoint()
        assert member.cert is not None and member.identified is not None
        send = self.chat.hub.send
        if self.store is None:
            send(member, ev.Error("no-accounts", "This server keeps no accounts."))
            return
        try:
            if add:
                await self.store.set_cert(
                    member.cert, member.identified, self.chat.now()
                )
            else:
                owner = await self.store.cert_owner(member.cert)
                if owner != member.identified:
                    send(
                        member,
                        ev.Error(
                            "not-bound",
                            "This certificate does not log you in; nothing to undo.",
                        ),
                    )
                    return
                await self.store.set_cert(member.cert, None, self.chat.now())
        except StoreError as exc:
            log.error("[%s] certificate binding not saved: %s", member.conn_id, exc)
            send(member, ev.Error("cert-failed", "The server could not do that now."))
            return
        log.info(
            "[%s] %s certificate %s for %s",
            member.conn_id,
            "bound" if add else "unbound",
            member.cert[:16],
            member.name,
        )
        if add:
            text = (
                f"This certificate now logs you in as {member.name};"
                " /certdel undoes it."
            )
        else:
            text = "This certificate no longer logs you in."
        send(member, ev.Info(text))

    async def _prune_history(self, store: AsyncStore) -> None:
        """Drop history past the configured rows, age and size, once an hour.

        Also at once when a write failed because the database is full.
        """
        limits = self.limits
        with self._pruning:
            try:
                await store.set_max_size(limits.max_db_mb * 2**20)
            except StoreError as exc:
                log.error("database size not capped: %s", exc)
            while True:
                await self.prune_history(store)
                with trio.move_on_after(PRUNE_INTERVAL):
                    await self._prune_now.wait()
                self._prune_now = trio.Event()

    def _store_full(self, exc: StoreError) -> None:
        """A write failed: if the database is full, prune now."""
        if "full" in str(exc):
            self._prune_now.set()

    async def prune_history(self, store: AsyncStore) -> int:
        """Drop history past `--history-rows`, `--history-days`, `--max-db-mb` now.

        Registrations older than a day go too, and, past `--history-days`,
        the topics and settings of rooms nobody has used since (neither
        open nor with history left).

        Over 90 % of `--max-db-mb` in use, the oldest history goes until
        80 % is, but never below what the rest of the database takes (see
        `Store.shrink`). Returns the rows removed; a store failure is logged.
        """
        await trio.lowlevel.checkpoint()
        limits = self.limits
        rows, days = limits.history_rows, limits.history_days
        removed = 0
        try:
            # Addresses are kept no longer than the daily limit needs them.
            await store.forget_registrations(self.chat.now() - REGISTRATION_WINDOW)
            if rows or days:
                removed = await store.prune(
                    max_rows_per_room=rows or None,
                    max_age=days * 86400.0 if days else None,
                    now=self.chat.now(),
                )
            if days:
                removed += await store.prune_rooms(
                    self.chat.now() - days * 86400.0, keep=self.chat.hub.rooms.keys()
                )
            cap = limits.max_db_mb * 2**20
            if cap and await store.size() > cap * 0.9:
                shrunk = await store.shrink(int(cap * 0.8))
                log.warning(
                    "database near its %d MB cap: deleted the %d oldest lines",
                    limits.max_db_mb,
                    shrunk,
                )
                removed += shrunk
                history, rest = await store.usage()
                if history + rest > cap * 0.8:
                    log.warning(
                        "database still near its cap: %d KB of accounts, bans,"
                        " topics and settings beside %d KB of history, which is"
                        " kept; raise --max-db-mb",
                        rest // 1024,
                        history // 1024,
                    )
        except StoreError as exc:
            log.error("history not pruned: %s", exc)
            return removed
        if removed:
            log.info("pruned %d old lines of history", removed)
        return removed

    def _save(self, saved: Saved) -> None:
        try:
            self._unsaved_send.send_nowait(saved)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.error("store writes are behind: %s was not saved", saved)

    async def save_behind(self, store: AsyncStore) -> None:
        """Write moderation, topics, settings and ignores, in order.

        What the chat saves behind (`Chat.save`) is written here, and so
        are commits (`commit`), which wait for it: one writer,
        so that nothing written later is overtaken by something said
        before. `serve_listeners` runs it; whoever serves streams with
        `handle_stream` alone runs it beside them. Returns once the server
        has shut down and everything queued is written.
        """
        async for item in self._unsaved:
            if isinstance(item, _Pending):
                try:
                    await self._write(store, item.saved)
                except StoreError as exc:
                    item.error = exc
                else:
                    if item.abandoned:  # its connection went meanwhile
                        item.apply()
                item.done.set()
                continue
            try:
                await self._write(store, item)
            except StoreError as exc:
                log.error("not saved: %s", exc)
                self._store_full(exc)

    async def _write(self, store: AsyncStore, saved: Saved) -> None:
        """Write what the chat saved (a ban, a topic, a room's settings ...)."""
        await trio.lowlevel.checkpoint()
        match saved:
            case BanSaved(ban):
                await store.add_ban(
                    ban.kind,
                    ban.target_key,
                    reason=ban.reason,
                    set_by=ban.set_by,
                    created=ban.created,
                    expires=ban.expires,
                )
            case BanLifted(kind, target_key):
                await store.delete_bans(kind, target_key)
            case MotdSaved(lines):
                value = None if lines is None else "\n".join(lines)
                await store.set_setting(MOTD_SETTING, value)
            case TopicSaved(room_key, room, topic, setter, ts, set_from):
                await store.set_topic(
                    room_key,
                    room,
                    topic,
                    setter,
                    ts,
                    set_from=set_from,
                    keep=self.chat.hub.rooms.keys(),
                    most=_topics_kept(self.limits),
                )
            case IgnoreSaved(owner_key, target_key, add):
                await store.set_ignore(owner_key, target_key, add=add)
            case RoomSettingsSaved(room_key, room, seq, ts, changes):
                await store.set_room_settings(room_key, room, changes, seq=seq, ts=ts)
            case RoomForgotten(room_key, seq):
                await store.forget_room(room_key, seq)

    async def commit(self, saved: Saved, apply: Callable[[], None]) -> None:
        """Write `saved` to the store, then `apply` it: what is announced is kept.

        The write waits its turn behind what is queued (`save_behind`).
        Raises StoreError if it failed (then `apply` is not called) or the
        server is shutting down. Cancellation does not undo a write already
        queued: once it is committed, `apply` is called all the same.
        """
        pending = _Pending(saved, apply)
        try:
            await self._unsaved_send.send(pending)
        except trio.ClosedResourceError:
            raise StoreError("the server is shutting down") from None
        try:
            await pending.done.wait()
        except BaseException:
            if not pending.done.is_set():
                pending.abandoned = True  # save_behind applies it once written
            elif pending.error is None:
                apply()
            raise
        if pending.error is not None:
            raise pending.error
        apply()

    def stats(self) -> dict[str, int]:
        """Counts for operators: connections, unregistered, users, trio tasks."""
        return {
            "connections": len(self._connections),
            "unregistered": sum(not c.registered for c in self._connections),
            "users": len(self.chat.hub),
            "tasks": _count_tasks(trio.lowlevel.current_root_task()),
        }

    @property
    def connection_count(self) -> int:
        """Connections open right now (registered or not)."""
        return len(self._connections)

    async def serve_tcp(  # noqa: ASYNC128 - serve_listeners calls started()
        self,
        port: int,
        host: str | None = DEFAULT_HOST,
        *,
        task_status: trio.TaskStatus[
            list[trio.SocketListener]
        ] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `host`:`port` (0 picks a free port) and serve.

        Calls `task_status.started(listeners)` once accepting. Raises OSError
        if it cannot listen.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        # serve_listeners calls task_status.started().
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(  # noqa: ASYNC128 - _serve calls started()
        self,
        listeners: Sequence[trio.SocketListener | Endpoint],
        *,
        task_status: trio.TaskStatus[
            list[trio.SocketListener]
        ] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener and serve each connection in its own task.

        A bare listener serves the line protocol, over TLS if the server has
        an `ssl_context`; an `Endpoint` says what it serves. The listeners
        are closed when this returns (or is cancelled).
        """
        endpoints = [self._endpoint(listener) for listener in listeners]
        try:
            async with trio.open_nursery() as background:
                self._writers = background
                background.start_soon(self._flusher)
                background.start_soon(self._announce_presence)
                if self.store is not None:
                    background.start_soon(self._commit_lines, self.store)
                    background.start_soon(self.save_behind, self.store)
                    background.start_soon(self._prune_history, self.store)
                await self._serve(endpoints, task_status)
                self._pruning.cancel()
                # Connections are done: write the notices still queued, briefly.
                self._unsaved_send.close()
                background.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT
        finally:
            self._close_listeners(endpoints)
            self.closed.set()

    def _endpoint(self, listener: trio.SocketListener | Endpoint) -> Endpoint:
        if isinstance(listener, Endpoint):
            return listener
        kind: ListenerKind = "line" if self.ssl_context is None else "tls"
        return Endpoint(listener, kind, self.ssl_context)

    def _flush_soon(self) -> None:
        """Something new waits to be written: flush once this pass is over."""
        if self._flushing:
            self._flush_wakeup.set()
        else:  # served without `serve_listeners`: trio calls the flush soon
            try:
                token = trio.lowlevel.current_trio_token()
            except RuntimeError:  # not in trio yet (set-up): nobody to wait
                self.chat.hub.flush()
            else:
                token.run_sync_soon(self.chat.hub.flush, idempotent=True)

    async def _flusher(self) -> None:
        """Write what fan-out queued, once per scheduler pass.

        A line said in a room is appended to its log; this task, run right
        after (in the next pass), has every member with something new write
        it all in one non-blocking call (`Hub.flush`). Under load, many
        lines go out per write; when quiet, a line goes out one pass after
        it was said. Writer tasks exist only for members the kernel refused.
        """
        hub = self.chat.hub
        self._flushing = True
        try:
            while True:
                await self._flush_wakeup.wait()
                # Other connections woken in the same pass may still add
                # lines: let them (a pass or two at most), so that each
                # member gets them all in one write.
                for _ in range(FLUSH_WAIT_PASSES):
                    if not trio.lowlevel.current_statistics().tasks_runnable:
                        break
                    await trio.lowlevel.cancel_shielded_checkpoint()
                self._flush_wakeup = trio.Event()
                hub.flush()
        finally:
            self._flushing = False
            hub.flush()  # never waits: the last lines queued, written now

    def _schedule_presence(self, room: Room) -> None:
        if len(room.pending_presence) >= self.chat.hub.presence_flush_names:
            delay = 0.0  # as many as go at once: no reason to wait
        else:
            delay = min(PRESENCE_MAX_DELAY, len(room) * PRESENCE_DELAY_PER_MEMBER)
        due = (trio.current_time() + delay, next(self._ids_due), room)
        heapq.heappush(self._presence_due, due)
        self._presence_wakeup.set()

    async def _announce_presence(self) -> None:
        """Announce the joins and leaves each big room gathered, when due.

        A join (or a quit or disconnection) in a room of
        `PRESENCE_BATCH_MEMBERS` or more waits up to `PRESENCE_DELAY_PER_MEMBER`
        per member (at most `PRESENCE_MAX_DELAY`), and every join and leave
        that comes meanwhile goes out with it: a crowd arriving or leaving
        costs a few lines per member instead of one per person. Anything said
        in the room sends what waits first. When this stops, what still
        waits is announced at once, and nothing more is gathered.
        """
        hub = self.chat.hub
        hub.on_presence = self._schedule_presence
        due = self._presence_due
        try:
            while True:
                with trio.move_on_at(due[0][0] if due else math.inf):
                    await self._presence_wakeup.wait()
                self._presence_wakeup = trio.Event()
                now = trio.current_time()
                ready: list[Room] = []
                while due and due[0][0] <= now:
                    ready.append(heapq.heappop(due)[2])
                for room in ready:  # what they leave for later: a pass later
                    hub.flush_presence(room)
        finally:
            hub.on_presence = None
            due.clear()
            hub.flush_all_presence()

    async def _serve(  # noqa: ASYNC114 - only serve_listeners starts it
        self,
        endpoints: Sequence[Endpoint],
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        async with trio.open_nursery() as connections:
            with self._accept_scope:
                async with trio.open_nursery() as accepting:
                    for endpoint in endpoints:
                        accepting.start_soon(self._accept_loop, endpoint, connections)
                    task_status.started([endpoint.listener for endpoint in endpoints])
            # Only a shutdown gets here: stop listening, then say goodbye.
            self._close_listeners(endpoints)
            for connection in list(self._connections):
                connection.shutdown()
            connections.cancel_scope.deadline = (
                trio.current_time() + self.limits.shutdown_grace
            )

    @staticmethod
    def _close_listeners(endpoints: Sequence[Endpoint]) -> None:
        for endpoint in endpoints:
            endpoint.listener.socket.close()  # closing a socket never waits

    def shutdown(self) -> None:
        """Stop accepting, tell every client, close within the grace period."""
        if not self.shutting_down:
            count = len(self._connections)
            log.info(
                "shutting down: %d connection%s to close",
                count,
                "" if count == 1 else "s",
            )
            self.shutting_down = True
            self.chat.closing = True
            self._accept_scope.cancel()

    async def _accept_loop(self, endpoint: Endpoint, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await endpoint.listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                log.warning("accept failed (%s); retrying", exc.strerror)
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            # A name of our own: trio would make one string per task.
            connections.start_soon(
                self._handle_tcp, stream, endpoint, name=_CONNECTION_TASK
            )

    def _handle_tcp(
        self, stream: trio.SocketStream, endpoint: Endpoint
    ) -> Coroutine[object, object, None]:
        """The task serving an accepted TCP stream (no frame of its own: one
        per connection counts)."""
        try:
            peer = stream.socket.getpeername()
            _keep_alive(stream.socket)
        except OSError:
            return trio.aclose_forcefully(stream)  # noqa: ASYNC105 - the task awaits it

        host = peer[0]
        if ":" in host:
            address, key = f"[{host}]:{peer[1]}", address_key(host)
        else:  # the kernel's IPv4 address is its own key: no parsing
            address, key = f"{host}:{peer[1]}", host
        admitted = self._admit(stream, address, key, endpoint)
        if isinstance(admitted, Connection):
            return admitted.serve()  # the socket is its: no stream to close
        return admitted

    async def handle_stream(
        self,
        stream: trio.abc.Stream,
        *,
        peer: str = "memory",
        address_key: str | None = None,
        kind: ListenerKind = "line",
    ) -> None:
        """Serve one client on `stream` until it leaves; then close `stream`.

        `kind` says what the client speaks, as a listener's would (`irc`
        for IRC; a TLS kind is handshaken with the server's context).

        With an `address_key` the connection is first subject to the
        per-address and global connection limits: if refused it gets one
        line (on plain TCP) and is closed, before any TLS handshake.

        A socket stream served from `serve_listeners` is taken over and
        written without a task switch; any other stream is written by a task
        beside the reader.

        The per-connection boundary: transport errors are logged at INFO,
        bugs at ERROR with their traceback; neither escapes, and only this
        connection is affected. Cancellation propagates after the stream is
        closed (with a short deadline).
        """
        endpoint = None
        if kind != "line":
            context = self.ssl_context if kind in TLS_KINDS else None
            endpoint = _StreamEndpoint(kind, context)
        admitted = self._admit(stream, peer, address_key, endpoint)
        if isinstance(admitted, Connection):
            try:
                await (admitted.run() if admitted.needs_task else admitted.serve())
            finally:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        else:
            await admitted

    def _admit(
        self,
        stream: trio.abc.Stream,
        peer: str,
        address_key: str | None,
        endpoint: Endpoint | _StreamEndpoint | None = None,
    ) -> Connection | Coroutine[object, object, None]:
        """The connection for `stream`, or the refusal to send it (never waits).

        Without an `endpoint`, the stream is served as a bare listener's.
        """
        conn_id = f"c{next(self._ids)}"
        kind: ListenerKind = "line" if endpoint is None else endpoint.kind
        context = self.ssl_context if endpoint is None else endpoint.ssl_context
        if address_key is not None:
            refusal = self._banned(address_key) or self.admission.admit(
                address_key, trio.current_time()
            )
            if refusal is not None:
                log.info("[%s] refused %s: %s", conn_id, peer, refusal.text)
                return self._refuse(
                    stream, refusal, tls=context is not None, irc=kind in IRC_KINDS
                )
        log.info("[%s] connected from %s", conn_id, peer)
        transport: Transport
        if isinstance(stream, trio.SocketStream) and self._writers is not None:
            transport = SocketTransport.from_stream(stream)
            connection = Connection(
                self,
                transport,
                conn_id,
                nursery=self._writers,
                ssl_context=context,
                kind=kind,
            )
        else:
            transport = StreamTransport(stream, write_timeout=self.limits.write_timeout)
            connection = Connection(
                self, transport, conn_id, ssl_context=context, kind=kind
            )
        connection.member.address = address_key
        self._connections.add(connection)
        return connection

    def release(self, connection: Connection) -> None:
        """`connection` is done with: it no longer counts (once)."""
        if connection in self._connections:
            self._connections.discard(connection)
            if connection.member.address is not None:
                self.admission.released(
                    connection.member.address, registered=connection.registered
                )

    def _banned(self, address_key: str) -> Refusal | None:
        ban = self.chat.moderation.find("address", address_key, self.chat.now())
        if ban is None:
            return None
        return Refusal("banned", ban.told())

    async def cert_login(self, member: Member) -> str | None:
        """The registered name the member's client certificate logs in, if any."""
        await trio.lowlevel.checkpoint()
        if member.cert is None or self.store is None or self.accounts is None:
            return None
        try:
            owner = await self.store.cert_owner(member.cert)
            user = None if owner is None else await self.store.get_user(owner)
        except StoreError as exc:
            log.error("[%s] certificate binding not read: %s", member.conn_id, exc)
            return None
        return None if user is None else user.name

    async def _refuse(
        self, stream: trio.abc.Stream, refusal: Refusal, *, tls: bool, irc: bool = False
    ) -> None:
        """One line saying why (plain TCP only), then close, all bounded."""
        if not tls:
            goodbye = ev.Goodbye(refusal.code, refusal.text, refusal.retry_after)
            line = encode_shared(goodbye) if irc else encode_event(goodbye)
            # A peer that is gone already needs telling nothing.
            with contextlib.suppress(*_PEER_ERRORS), trio.move_on_after(CLOSE_TIMEOUT):
                await stream.send_all(line)
        await trio.aclose_forcefully(stream)


def _keep_alive(sock: trio.socket.SocketType) -> None:
    """TCP keepalive with our timings: a vanished peer goes in minutes.

    The system default sends the first probe after two hours; a peer that
    vanished without a word would hold its name that long. Where the
    timings cannot be set, keepalive stays on with the system's.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        number = getattr(socket, option, None)
        if number is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, number, int(value))


class _LineBatch:
    """Chat lines of one member's, being committed: out once they are."""

    __slots__ = ("lines", "member", "settled")

    def __init__(
        self, member: Member, lines: list[Persist], settled: Callable[[], None]
    ) -> None:
        self.member = member
        self.lines = lines
        self.settled = settled


class _Pending:
    """A commit queued for `save_behind`, and how it went."""

    __slots__ = ("abandoned", "apply", "done", "error", "saved")

    def __init__(self, saved: Saved, apply: Callable[[], None]) -> None:
        self.saved = saved
        self.apply = apply
        self.done = trio.Event()
        self.error: StoreError | None = None
        #: The committer was cancelled while waiting: apply it here.
        self.abandoned = False


class _GoodbyeFailed(Exception):
    """The best-effort goodbye to an evicted client could not be written."""


class _TLSHandshakeFailed(Exception):
    """The TLS handshake did not complete (already logged)."""
