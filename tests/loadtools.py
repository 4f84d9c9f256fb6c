"""Tools for end-to-end hardening, soak and fuzz tests.

The real server runs as `python -m trio_chat serve --port 0 ...` in a
subprocess; this process is the load generator. Everything here waits on
real events (a log line, a received line, end of stream, a /proc reading)
under a deadline; the only sleeps are the pacing of load and of /proc
sampling, never a guess that something has happened.

Every address used is loopback (127.0.0.0/8: any address in it can be a
source address on Linux, which is how tests look like many hosts).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import trio

from trio_chat import tls

#: Generous ceiling for a subprocess to start or stop (CI machines are slow).
PROCESS_TIMEOUT: Final = 30.0
#: Generous ceiling for one expected line or log line.
LINE_TIMEOUT: Final = 10.0
#: Ceiling for the stats line to reach an expected state.
STATS_TIMEOUT: Final = 5.0
#: Pause between two polls of the SIGUSR1 stats line (pacing, not a guess).
STATS_POLL_INTERVAL: Final = 0.05
#: The server's own address.
HOST: Final = "127.0.0.1"
#: Pattern of the line a server logs on SIGUSR1.
_STATS: Final = re.compile(r"\bstats: (.*)$")


def address(group: int, index: int) -> str:
    """A distinct loopback source address: 127.0.`group`.`index + 1`."""
    assert 0 < group < 256 and 0 <= index < 254
    return f"127.0.{group}.{index + 1}"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (e.g. 0.99 for p99)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Progress:
    """Something changed: tasks waiting in `wait` wake on the next `notify`."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        event, self._event = self._event, trio.Event()
        event.set()

    async def wait(self) -> None:
        await self._event.wait()


class LineLog:
    """Lines arriving from somewhere, and a way to wait for one of them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._progress = Progress()

    def _append(self, lines: list[str]) -> None:
        self.lines.extend(lines)
        self._progress.notify()

    def _end(self) -> None:
        self.ended = True
        self._progress.notify()

    async def changed(self) -> None:
        """Wait until a line arrives or the source ends."""
        await self._progress.wait()

    async def wait_for(
        self,
        match: str | Callable[[str], bool],
        *,
        since: int = 0,
    ) -> str:
        """The first line from index `since` on that matches (a regex or a test).

        Waits for it up to LINE_TIMEOUT seconds; AssertionError if the source
        ends or the time runs out first.
        """
        test = (
            (lambda line: re.search(match, line) is not None)
            if isinstance(match, str)
            else match
        )
        index = since
        with trio.move_on_after(LINE_TIMEOUT):
            while True:
                while index < len(self.lines):
                    if test(self.lines[index]):
                        return self.lines[index]
                    index += 1
                if self.ended:
                    break
                await self.changed()
        raise AssertionError(
            f"no line matching {match!r} within {LINE_TIMEOUT} s"
            f" ({'ended' if self.ended else 'still open'});"
            f" last lines:\n" + "\n".join(self.lines[-15:])
        )

    def count(self, pattern: str) -> int:
        """How many lines so far match the regex `pattern`."""
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    async def expect_count(self, pattern: str, count: int) -> None:
        """Wait for `count` lines matching `pattern`; fail if there are more.

        Lines travel on their own (a log through a pipe): one written before
        an event seen elsewhere may arrive here after it, hence the wait.
        """
        await self.wait_count(pattern, count)
        assert self.count(pattern) == count, (
            f"{self.count(pattern)} lines match {pattern!r}, not {count}"
        )

    async def wait_count(self, pattern: str, count: int) -> None:
        """Wait until at least `count` lines match the regex `pattern`.

        AssertionError if that takes more than LINE_TIMEOUT seconds.
        """
        regex = re.compile(pattern)
        seen = index = 0
        with trio.move_on_after(LINE_TIMEOUT):
            while True:
                while index < len(self.lines):
                    seen += regex.search(self.lines[index]) is not None
                    index += 1
                if seen >= count or self.ended:
                    break
                await self.changed()
        assert seen >= count, (
            f"{seen} lines match {pattern!r}, not {count}; last lines:\n"
            + "\n".join(self.lines[-15:])
        )


class ServerProcess(LineLog):
    """A running `python -m trio_chat serve`: its port and its stderr log lines."""

    def __init__(self, process: trio.Process) -> None:
        super().__init__()
        self.process = process
        self.port = 0
        self._listening = trio.Event()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.returncode is None

    def rss_kib(self) -> int:
        """Resident set size now, in KiB (/proc/PID/status VmRSS)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def fd_count(self) -> int:
        """Open file descriptors now (/proc/PID/fd)."""
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def tail(self, count: int = 30) -> str:
        return "\n".join(self.lines[-count:])

    async def stats(self) -> dict[str, int]:
        """Ask for the stats line (SIGUSR1) and return its figures.

        `connections`, `unregistered`, `users`, `tasks`, `fds`.
        """
        mark = len(self.lines)
        self.process.send_signal(signal.SIGUSR1)
        line = await self.wait_for(_STATS.pattern, since=mark)
        match = _STATS.search(line)
        assert match is not None
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}

    async def wait_stats(
        self, done: Callable[[dict[str, int]], bool]
    ) -> dict[str, int]:
        """Poll the stats line until `done(stats)`.

        AssertionError if that takes more than STATS_TIMEOUT seconds.
        """
        latest: dict[str, int] = {}
        with trio.move_on_after(STATS_TIMEOUT):
            while True:
                latest = await self.stats()
                if done(latest):
                    return latest
                await trio.sleep(STATS_POLL_INTERVAL)
        raise AssertionError(f"stats never settled within {STATS_TIMEOUT} s: {latest}")

    async def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        partial = b""
        try:
            while chunk := await self.process.stderr.receive_some(65536):
                partial += chunk
                *complete, partial = partial.split(b"\n")
                if complete:
                    self._append([line.decode(errors="replace") for line in complete])
        finally:
            if partial:
                self._append([partial.decode(errors="replace")])
            self._end()

    async def _collect_stdout(self) -> None:
        assert self.process.stdout is not None
        output = b""
        try:
            while chunk := await self.process.stdout.receive_some(1024):
                output += chunk
                if not self._listening.is_set() and b"\n" in output:
                    first = output.split(b"\n", 1)[0].decode()
                    assert first.startswith(f"listening on {HOST}:"), first
                    self.port = int(first.rsplit(":", 1)[1].split()[0])
                    self._listening.set()
        finally:
            self._listening.set()  # port 0 says it never listened


@contextlib.asynccontextmanager
async def chat_server(
    tmp_path: Path,
    *args: str,
    tls: bool = False,
    nofile: int | None = None,
) -> AsyncIterator[ServerProcess]:
    """Run a server with `args` (after `serve --port 0`) for the `async with`.

    `tls` adds `--tls` (the committed development certificate); `nofile`
    starts it under `ulimit -n nofile`. On the way out the server is killed
    if still running, its log is written to `tmp_path`, and (if the body
    passed) the log must hold no Traceback.
    """
    command = [
        sys.executable,
        "-m",
        "trio_chat",
        "serve",
        "--port",
        "0",
        "--db",
        ":memory:",
    ]
    command += ["--tls", *args] if tls else list(args)
    if nofile is not None:
        command = ["bash", "-c", f'ulimit -n {nofile} && exec "$@"', "bash", *command]
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = ServerProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._collect_stderr)
            nursery.start_soon(server._collect_stdout)
            try:
                with trio.fail_after(PROCESS_TIMEOUT):
                    await server._listening.wait()
                assert server.port, f"the server did not start:\n{server.tail()}"
                yield server
            finally:
                with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
    finally:
        if process.returncode is None:  # pragma: no cover - last resort
            process.kill()
        _save_log(tmp_path / f"server-{process.pid}.log", server.log_text())
    assert "Traceback" not in server.log_text(), server.log_text()


def _save_log(path: Path, text: str) -> None:
    path.write_text(text + "\n")


# -- sockets ----------------------------------------------------------------


@functools.cache
def client_ssl_context() -> ssl.SSLContext:
    """Trusts the development CA, verifies the host name, like the real client."""
    return tls.client_context(tls.dev_ca_path())


def client_hello() -> bytes:
    """The first bytes a real TLS client sends: a ClientHello record."""
    context = client_ssl_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    handshake = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        handshake.do_handshake()
    data = outgoing.read()
    assert data[:2] == b"\x16\x03", data[:8]
    return data


async def open_socket(
    port: int, *, source: str = HOST, rcvbuf: int | None = None
) -> trio.SocketStream:
    """A TCP connection to the server from `source` (a loopback address).

    `rcvbuf` sets SO_RCVBUF before connecting, so the TCP window is small.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.bind((source, 0))
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def open_tls(
    port: int,
    *,
    source: str = HOST,
    server_hostname: str = HOST,
) -> trio.SSLStream[trio.SocketStream]:
    """A TLS connection to the server, handshake done."""
    tcp = await open_socket(port, source=source)
    stream = trio.SSLStream(tcp, client_ssl_context(), server_hostname=server_hostname)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


async def reset(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a FIN."""
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


async def read_raw_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything until end of stream (a reset counts as the end)."""
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _proc_net_address(host: str, port: int) -> str:
    return f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"


def tcp_queues(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int]:
    """(tx_queue, rx_queue) in bytes of the socket `local` -> `remote`.

    From /proc/net/tcp: tx_queue is what was written and not yet
    acknowledged by the peer, rx_queue what arrived and was not yet read.
    """
    wanted = (_proc_net_address(*local), _proc_net_address(*remote))
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if (fields[1], fields[2]) == wanted:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no socket {local} -> {remote} in /proc/net/tcp")


# -- line clients -----------------------------------------------------------


class Client(LineLog, trio.abc.AsyncResource):
    """A chat connection read line by line; `lines` holds what was read.

    Lines are read either on demand (`line`, `expect`) or by `drain` running
    in a task; not both at once. `wait_for` and `wait_count` only look at
    lines already read, so they need `drain` running.
    """

    def __init__(self, stream: trio.abc.Stream, name: str = "") -> None:
        super().__init__()
        self.stream = stream
        self.name = name
        self.reset = False  # the end of stream was a reset
        self._partial = b""
        self._pending: list[str] = []

    async def send(self, text: str) -> None:
        await self.stream.send_all(text.encode() + b"\r\n")

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_line(self) -> str | None:
        """The next line (also appended to `lines`); None at the end."""
        while not self._pending:
            if self.ended:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                self.reset = True
                data = b""
            if not data:
                self._end()
                return None
            self._partial += data
            if b"\n" in data:
                *complete, self._partial = self._partial.split(b"\n")
                self._pending = [
                    line.rstrip(b"\r").decode(errors="replace") for line in complete
                ]
                self._pending.reverse()
        line = self._pending.pop()
        self._append([line])
        return line

    async def line(self) -> str | None:
        """The next line within LINE_TIMEOUT seconds; None at the end."""
        with trio.fail_after(LINE_TIMEOUT):
            return await self.next_line()

    async def expect(self, kind: str) -> str:
        """Read until a line of `kind`; fail on the end or an unexpected BYE.

        TooSlowError after LINE_TIMEOUT seconds.
        """
        with trio.fail_after(LINE_TIMEOUT):
            while True:
                line = await self.next_line()
                assert line is not None, (
                    f"{self.name or 'client'}: closed while waiting for {kind}:"
                    f" {self.lines[-5:]}"
                )
                if line.split(" ", 1)[0] == kind:
                    return line
                assert kind == "BYE" or not line.startswith("BYE "), line

    async def join(self, name: str) -> None:
        """Answer the name prompt with `name` and wait until in."""
        self.name = name
        await self.expect("NAME")
        await self.send(name)
        welcome = await self.expect("WELCOME")
        assert welcome.split(" ")[1] == name, welcome

    async def read_to_end(self) -> list[str]:
        """Every line until the end of stream, within LINE_TIMEOUT seconds."""
        rest: list[str] = []
        with trio.fail_after(LINE_TIMEOUT):
            while (line := await self.next_line()) is not None:
                rest.append(line)
        return rest

    async def drain(self) -> None:
        """Read (into `lines`) until the end of stream; for a background task."""
        while await self.next_line() is not None:
            pass

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


Resource = TypeVar("Resource", bound=trio.abc.AsyncResource)


class Closer:
    """Closes every resource added to it (forcefully) when the block ends."""

    def __init__(self) -> None:
        self._resources: list[trio.abc.AsyncResource] = []

    def add(self, resource: Resource) -> Resource:
        self._resources.append(resource)
        return resource

    async def __aenter__(self) -> Closer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            for resource in reversed(self._resources):
                await trio.aclose_forcefully(resource)


async def joined_client(
    port: int, name: str, *, source: str = HOST, use_tls: bool = False
) -> Client:
    """A client that has connected (plain or TLS) and joined as `name`."""
    stream: trio.abc.Stream
    if use_tls:
        stream = await open_tls(port, source=source)
    else:
        stream = await open_socket(port, source=source)
    client = Client(stream)
    try:
        await client.join(name)
    except BaseException:
        await client.aclose()
        raise
    return client


class Canary:
    """Two joined users; a round trip is one line from `speaker` to `listener`.

    `speaker` must be drained by a task (`speaker.drain`) when others chat,
    so that its own outbox never fills.
    """

    def __init__(self, speaker: Client, listener: Client) -> None:
        self.speaker = speaker
        self.listener = listener
        self.round_trips: list[float] = []
        self._count = 0

    @classmethod
    async def join(
        cls, port: int, prefix: str = "canary", *, use_tls: bool = False
    ) -> Canary:
        speaker = await joined_client(port, f"{prefix}A", use_tls=use_tls)
        listener = await joined_client(port, f"{prefix}B", use_tls=use_tls)
        return cls(speaker, listener)

    async def round_trip(self) -> float:
        """Seconds from sending a line to its arrival at the other canary.

        TooSlowError after LINE_TIMEOUT seconds.
        """
        self._count += 1
        token = f"<{self.speaker.name}> ping {self._count}"
        start = trio.current_time()
        await self.speaker.send(f"ping {self._count}")
        with trio.fail_after(LINE_TIMEOUT):
            while True:
                line = await self.listener.expect("MSG")
                if line.endswith(token):
                    break
        elapsed = trio.current_time() - start
        self.round_trips.append(elapsed)
        return elapsed

    async def aclose(self) -> None:
        await self.speaker.aclose()
        await self.listener.aclose()


class PeakRss:
    """Samples a server's RSS (KiB) in a task until cancelled; keeps the peak."""

    def __init__(self, server: ServerProcess, interval: float = 0.01) -> None:
        self.server = server
        self.interval = interval
        self.baseline = server.rss_kib()
        self.peak = self.baseline

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline

    def sample(self) -> int:
        rss = self.server.rss_kib()
        self.peak = max(self.peak, rss)
        return rss

    async def run(self) -> None:
        while self.server.alive():
            with contextlib.suppress(OSError):
                self.sample()
            await trio.sleep(self.interval)


def _contains(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


async def fill_until_stuck(
    *,
    port: int,
    sender: Client,
    observer: Client,
    stuck: trio.SocketStream,
    line_bytes: int = 2000,
    max_lines: int = 5000,
) -> float:
    """Send lines through `sender` until the server's socket to `stuck` is full.

    `stuck` is a joined connection that does not read; `observer` is drained
    by a task. After each line has reached `observer`, the server's unsent
    and unacknowledged bytes towards `stuck` are read from /proc/net/tcp:
    once three more lines no longer change them, the server can write
    nothing more to `stuck` (its socket buffers are full) and the next
    lines wait in its outbox. Returns the time (trio clock) of the last
    reading that still changed: the earliest the writes can have stalled.
    """
    server_end = (HOST, port)
    stuck_end = stuck.socket.getsockname()
    previous = -1
    unchanged = 0
    last_change = trio.current_time()
    for number in range(max_lines):
        mark = len(observer.lines)
        await sender.send(f"fill {number} " + "x" * line_bytes)
        await observer.wait_for(
            _contains(f"<{sender.name}> fill {number} "), since=mark
        )
        queued, _ = tcp_queues(server_end, stuck_end)
        if queued == previous and queued > 0:
            unchanged += 1
            if unchanged >= 3:
                return last_change
        else:
            unchanged = 0
            last_change = trio.current_time()
        previous = queued
    raise AssertionError(f"the socket never filled up after {max_lines} lines")
