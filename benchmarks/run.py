"""Benchmark trio-chat (and ngircd, for comparison) with reproducible scenarios.

    python benchmarks/run.py [--scenario fanout,paced,connections,burst] [--tls]
        [--db memory|file|both] [--compare ngircd] [--json FILE] [--quick] ...

Each run gets a fresh server process, pinned to CPU 0, and a fresh load
generator process (`benchmarks/loadgen.py`, standard library only), pinned
to CPU 1. The runner starts the server itself with its connection, address
and flood limits switched off, writes one JSON line per run (scenario,
server, parameters, figures, the server features in force) and ends with a
table of medians and trio-chat / ngircd ratios. Every wait has a deadline
and servers are always stopped (SIGTERM, then SIGKILL) by their pid.

Scenarios (see benchmarks/README.md):

* fanout: N clients in one room each send M lines as fast as they may;
  deliveries per second, and nothing lost, duplicated or reordered.
* paced: R lines a second into an N-member room for D seconds; latency from
  each line's scheduled send time (no coordinated omission).
* connections: C idle members; server memory per connection, the time for
  all of them to join with every join announced, and the time for one line
  to reach them all.
* burst: K senders each send one largest paste (or line) at once into a
  room of R members who keep reading: nobody dropped, everything delivered,
  the server's RSS peak, the time until every reader has everything; and
  the same with one member that stops reading, which alone must be dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent
LOADGEN: Final = HERE / "loadgen.py"
CERTS: Final = REPO / "certs"
HOST: Final = "127.0.0.1"

#: CPUs for the server and the generator, when the machine has two or more.
SERVER_CPU: Final = 0
GENERATOR_CPU: Final = 1
#: Seconds a server gets to start listening, and to exit after SIGTERM.
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0

#: trio-chat flags for every run: the limits a benchmark would trip over
#: (connections per address and in all, new connections per minute,
#: connections still choosing a name, the flood limit) are off. Everything
#: else keeps its default, and is reported with the run.
TRIO_CHAT_FLAGS: Final = (
    "--max-connections=0",
    "--max-per-address=0",
    "--max-new-per-minute=0",
    "--max-unregistered=0",
    "--max-unregistered-per-address=0",
    "--flood-rate=0",
    "--flood-backlog=0",
    "--flood-delay=0",
)
#: The settings of trio-chat recorded with each run (`features`): the name
#: in the record, the `serve` flag, and its type. Their values are what the
#: server uses: its defaults (from `serve --help`) with `TRIO_CHAT_FLAGS`
#: applied.
TRIO_CHAT_RECORDED: Final[tuple[tuple[str, str, type[int] | type[float]], ...]] = (
    ("outbox_messages", "--outbox-messages", int),
    ("outbox_bytes", "--outbox-bytes", int),
    ("write_timeout_s", "--write-timeout", float),
    ("history_replay_lines", "--history", int),
    ("max_line_bytes", "--max-line-bytes", int),
    ("max_paste_lines", "--max-paste-lines", int),
    ("max_paste_bytes", "--max-paste-bytes", int),
    ("paste_timeout_s", "--paste-timeout", float),
)

#: The ngircd operator the IRC clients become, for user mode +F.
OPER_NAME: Final = "bench"
OPER_PASSWORD: Final = "bench"

NGIRCD_HINT: Final = (
    "ngircd was not found, so trio-chat runs alone. To compare, install it:"
    " `sudo apt-get install ngircd` (Debian, Ubuntu), `sudo dnf install ngircd`"
    " (Fedora) or `brew install ngircd` (macOS), or name the binary with"
    " --ngircd PATH."
)

QUICK: Final = {
    "clients": 20,
    "lines": 20,
    "rate": [50.0],
    "duration": 2.0,
    "drain": 3.0,
    "connections": [200],
    "burst_members": [10],
    "burst_senders": [3],
    "repeat": 1,
    "connections_repeat": 1,
    "burst_repeat": 1,
}

SCENARIOS: Final = ("fanout", "paced", "connections", "burst")
#: What each burst sender sends (`loadgen.BURST_KINDS`).
BURST_KINDS: Final = ("paste", "line", "invalid")
#: The burst kinds ngircd runs: it has no multi-line messages, and relays
#: invalid UTF-8 as the bytes it got, so that kind is its longest line again.
NGIRCD_BURST_KINDS: Final = ("line",)


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """One server set-up: trio-chat with a store and a wire, or ngircd."""

    server: str  # "trio-chat" or "ngircd"
    db: str | None  # "memory" or "file" for trio-chat
    #: What trio-chat is spoken to in: its line protocol, or IRC on an
    #: irc/ircs listener (the generator's IRC dialect, as for ngircd).
    wire: str = "line"

    @property
    def label(self) -> str:
        """How the table names it."""
        if self.db is None:
            return self.server
        if self.wire == "irc":
            return f"{self.server} IRC"
        return f"{self.server} {':memory:' if self.db == 'memory' else 'file db'}"


def log(message: str) -> None:
    """Progress, on standard error (standard output is for results)."""
    print(message, file=sys.stderr, flush=True)


def can_pin() -> bool:
    """True when the server and the generator can each have a CPU."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def _preexec(cpu: int | None) -> Callable[[], None]:
    """Child set-up: the open files limit at its maximum, pinned to `cpu`."""

    def setup() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


def free_port() -> int:
    """A TCP port free on the loopback address right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from a child's pipe, or None at its end or at `deadline`."""
    fd = stream.fileno()
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffered:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return buffered or None
            buffered += chunk
    return buffered


def stop(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time; always reaped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log(f"  {name} (pid {process.pid}) ignored SIGTERM: killing it")
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int = 8) -> list[str]:
    """The last `lines` lines of a server's log, for a failed run."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


class Server:
    """A server process for one run: started, described, stopped."""

    name = ""

    def __init__(self, workdir: Path, tls: bool, pin: bool) -> None:
        self.workdir = workdir
        self.tls = tls
        self.cpu = SERVER_CPU if pin else None
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "server.log"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the server; return once it accepts connections."""
        raise NotImplementedError

    def features(self) -> dict[str, Any]:
        """What the server does during the run, for the record."""
        raise NotImplementedError

    def generator_settings(self) -> dict[str, Any]:
        """What the generator needs to know to speak to this server."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            stop(self.process, self.name)

    def _spawn(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        pipe_stdout: bool = False,
    ) -> None:
        """Start the server; its log (and stdout unless piped) goes to a file."""
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else log_file,
                stderr=log_file,
                env=env,
                preexec_fn=_preexec(self.cpu),
                start_new_session=True,  # Ctrl-C reaches the runner only
            )


def parse_serve_help(text: str) -> dict[str, str]:
    """Each long flag's default, as `serve --help` (argparse) prints it.

    Returns {"--outbox-bytes": "1048576", ...} for every option whose help
    ends in "(default: ...)"; the help may wrap over several lines.
    """
    defaults = {}
    for block in re.split(r"\n  (?=-)", text):
        words = block.split()
        flag = next((w.rstrip(",") for w in words if w.startswith("--")), None)
        found = re.search(r"\(default: ([^)]*)\)", " ".join(words))
        if flag is not None and found is not None:
            defaults[flag] = found.group(1)
    return defaults


def apply_flags(defaults: dict[str, str], flags: Sequence[str]) -> dict[str, str]:
    """`defaults` with each `--flag=value` of `flags` in place of its default."""
    settings = dict(defaults)
    for flag in flags:
        name, equals, value = flag.partition("=")
        if equals:
            settings[name] = value
    return settings


def trio_chat_settings() -> dict[str, str]:
    """What the benchmark's trio-chat servers use, flag by flag.

    Reads the defaults from `python -m trio_chat serve --help` (this Python,
    this repository), so that what is recorded is what runs. Raises
    RuntimeError if that fails or a recorded setting is missing.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    argv = [sys.executable, "-m", "trio_chat", "serve", "--help"]
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=60, check=False, cwd=REPO, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{' '.join(argv)}: {exc}") from None
    if done.returncode:
        error = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{' '.join(argv)} failed: {error[-1:] or ''}")
    settings = apply_flags(
        parse_serve_help(done.stdout.decode(errors="replace")), TRIO_CHAT_FLAGS
    )
    missing = [flag for _, flag, _ in TRIO_CHAT_RECORDED if flag not in settings]
    if missing:
        raise RuntimeError(f"serve --help has no default for {', '.join(missing)}")
    return settings


def recorded_settings(settings: dict[str, str]) -> dict[str, Any]:
    """The settings recorded with a run, by their record names."""
    return {name: kind(settings[flag]) for name, flag, kind in TRIO_CHAT_RECORDED}


class TrioChatServer(Server):
    """`python -m trio_chat serve --port 0` with the benchmark's flags."""

    name = "trio-chat"

    def __init__(
        self,
        workdir: Path,
        tls: bool,
        pin: bool,
        db: str,
        settings: dict[str, str],
        wire: str = "line",
    ) -> None:
        super().__init__(workdir, tls, pin)
        self.db = db
        self.settings = settings  # from `trio_chat_settings`
        self.wire = wire  # "line" or "irc"

    def argv(self) -> list[str]:
        """The server's command line."""
        db = ":memory:" if self.db == "memory" else str(self.workdir / "trio-chat.db")
        argv = [sys.executable, "-m", "trio_chat"]
        # An empty configuration file: no trio-chat.toml from anywhere else.
        config = self.workdir / "bench.toml"
        config.write_text("")
        argv += ["--config", str(config), "serve"]
        if self.wire == "irc":
            argv += ["--listen", f"{'ircs' if self.tls else 'irc'}:{HOST}:0"]
        else:
            argv += ["--host", HOST, "--port", "0"]
            if self.tls:
                argv.append("--tls")
        argv += ["--db", db, *TRIO_CHAT_FLAGS]
        if self.tls:
            argv += [
                "--cert",
                str(CERTS / "server.pem"),
                "--key",
                str(CERTS / "server.key"),
            ]
        return argv

    def start(self) -> None:
        """Start it and read its `listening on HOST:PORT` line."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        )
        self._spawn(self.argv(), env, pipe_stdout=True)
        assert self.process is not None and self.process.stdout is not None
        line = read_line(self.process.stdout, time.monotonic() + START_TIMEOUT)
        text = (line or b"").decode(errors="replace").strip()
        if not text.startswith("listening on "):
            self.stop()
            tail = "\n".join(log_tail(self.log_path))
            raise RuntimeError(f"trio-chat did not start: {text!r}\n{tail}")
        self.port = int(text.rsplit(":", 1)[1].split()[0])  # HOST:PORT (KIND)

    def features(self) -> dict[str, Any]:
        """Limits off and on, the store, TLS, logging."""
        file_db = self.db == "file"
        return {
            "tls": self.tls,
            "wire": "IRC (an irc/ircs listener)" if self.wire == "irc" else "line",
            "connection_limits": "off (--max-connections, --max-per-address,"
            " --max-new-per-minute, --max-unregistered[-per-address] 0)",
            "flood_limit": "off (--flood-rate 0)",
            **recorded_settings(self.settings),
            "flags": list(TRIO_CHAT_FLAGS),
            "db": "SQLite file (WAL, synchronous=NORMAL)" if file_db else ":memory:",
            "db_writes": (
                "every chat line committed (group commit) before it is fanned out;"
                " join notices written behind"
                if file_db
                else "none"
            ),
            "logging": "INFO, to a file",
            "cpu": self.cpu,
        }

    def generator_settings(self) -> dict[str, Any]:
        """The line protocol or IRC; with TLS, trust the development CA."""
        dialect = "irc" if self.wire == "irc" else "trio-chat"
        settings: dict[str, Any] = {"dialect": dialect, "tls": self.tls}
        if self.tls:
            settings["cafile"] = str(CERTS / "ca.pem")
        return settings


class NgircdServer(Server):
    """ngircd in the foreground with a configuration written for the run."""

    name = "ngircd"

    def __init__(self, workdir: Path, tls: bool, pin: bool, binary: str) -> None:
        super().__init__(workdir, tls, pin)
        self.binary = binary

    def config(self, plain_port: int, tls_port: int | None) -> str:
        """ngircd.conf: no connection limits, no penalties, no lookups."""
        include = self.workdir / "conf.d"  # empty: no system-wide snippets
        include.mkdir(exist_ok=True)
        text = f"""\
[Global]
    Name = bench.invalid
    Info = trio-chat benchmark
    AdminInfo1 = benchmark
    AdminInfo2 = loopback
    AdminEMail = bench@bench.invalid
    Listen = {HOST}
    Ports = {plain_port}
    MotdPhrase = "benchmark"

[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    # 0 turns the penalty time (the per-client command throttle) off.
    MaxPenaltyTime = 0
    PingTimeout = 3600
    PongTimeout = 3600

[Options]
    DNS = no
    Ident = no
    PAM = no
    IncludeDir = {include}

[Operator]
    # The load clients OPER as this to set user mode +F (relaxed flood
    # protection: 10 commands per read instead of 3, never throttled).
    Name = {OPER_NAME}
    Password = {OPER_PASSWORD}
"""
        if tls_port is not None:
            text += f"""
[SSL]
    CertFile = {CERTS / "server.pem"}
    KeyFile = {CERTS / "server.key"}
    Ports = {tls_port}
"""
        return text

    def start(self) -> None:
        """Write the configuration, start `ngircd -n -f CONF`, wait for it."""
        plain = free_port()
        tls_port = free_port() if self.tls else None
        self.port = tls_port if tls_port is not None else plain
        conf = self.workdir / "ngircd.conf"
        conf.write_text(self.config(plain, tls_port))
        self._spawn([self.binary, "-n", "-f", str(conf)])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), timeout=1.0),
            ):
                return
            time.sleep(0.05)
        self.stop()
        tail = "\n".join(log_tail(self.log_path))
        raise RuntimeError(f"ngircd did not start listening on {self.port}\n{tail}")

    def features(self) -> dict[str, Any]:
        """Limits and throttles, as configured and as compiled in."""
        return {
            "tls": self.tls,
            "connection_limits": "off (MaxConnections = 0, MaxConnectionsIP = 0)",
            "flood_limit": "penalties off (MaxPenaltyTime = 0); clients are IRC"
            " operators with user mode +F (10 commands per read, no throttle)",
            "read_buffer_bytes": 2048,
            "write_buffer_max_bytes": 32768,
            "max_line_bytes": 512,
            "history_replay_lines": 0,
            "db": "none",
            "db_writes": "none",
            "lookups": "off (DNS = no, Ident = no, PAM = no)",
            "logging": "default, to a file",
            "cpu": self.cpu,
        }

    def generator_settings(self) -> dict[str, Any]:
        """IRC, with the operator's name and password."""
        settings: dict[str, Any] = {
            "dialect": "irc",
            "tls": self.tls,
            "oper_name": OPER_NAME,
            "oper_password": OPER_PASSWORD,
        }
        if self.tls:
            settings["cafile"] = str(CERTS / "ca.pem")
        return settings


def version_of(argv: Sequence[str]) -> str | None:
    """The first line a `--version` command prints, if it runs."""
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=30, check=False, cwd=REPO
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = version_of(["git", "rev-parse", "--short", "HEAD"])
    changed = version_of(["git", "status", "--porcelain", "--", "trio_chat"])
    if commit is not None and changed:
        commit += " with uncommitted changes in trio_chat/"
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """The parsed command line."""

    scenarios: list[str]
    clients: int
    lines: int
    #: (clients, lines) of each fanout run: --clients x --lines first.
    fanout_shapes: list[tuple[int, int]]
    window: int
    rates: list[float]
    duration: float
    drain: float
    connections: list[int]
    #: Connections runs past this C are for trio-chat alone (`:memory:`,
    #: plain TCP): ngircd announces every join one by one, which at 10000
    #: members takes it the best part of an hour.
    compare_connections: int
    #: burst: room sizes R, sender counts K, kinds, with and without a
    #: member that stops reading; and the most bytes each member is sent
    #: while waiting for that member to be dropped.
    burst_members: list[int]
    burst_senders: list[int]
    burst_kinds: list[str]
    burst_stall: list[bool]
    stall_max_mib: float
    inflight: int
    tls: bool
    dbs: list[str]
    ngircd: str | None
    #: Also run trio-chat :memory: over IRC (`--servers trio-chat-irc`).
    irc: bool
    json_path: Path | None
    repeat: int
    connections_repeat: int
    burst_repeat: int
    profile: Path | None
    report: Path | None
    markdown: bool
    setup_timeout: float | None


def parse_args(argv: Sequence[str]) -> Options:
    """Parse the command line into `Options`."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark trio-chat, optionally against ngircd."
        " See benchmarks/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        default=",".join(SCENARIOS),
        help=f"comma-separated: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--clients", type=int, default=100, help="room size N")
    parser.add_argument(
        "--lines", type=int, default=50, help="fanout: lines each client sends"
    )
    parser.add_argument(
        "--fanout-shapes",
        default="",
        metavar="NxM,...",
        help="fanout: more room shapes beside --clients x --lines, each N"
        " clients sending M lines (20x500: a small room, long bursts)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=32,
        help="fanout: lines a sender may have in flight (0: no limit; IRC"
        " servers drop clients with more than about 2 KiB unread)",
    )
    parser.add_argument(
        "--rate",
        default="200",
        help="paced: lines per second into the room; a comma-separated list"
        " runs each (the chart plots them)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="paced: seconds")
    parser.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="paced: seconds to wait for late lines after the last send",
    )
    parser.add_argument(
        "--connections",
        default="2000",
        help="connections: idle members C; a comma-separated list runs each",
    )
    parser.add_argument(
        "--compare-connections",
        type=int,
        default=2000,
        metavar="C",
        help="connections runs with more members than this are for trio-chat"
        " :memory: over plain TCP only (ngircd needs the best part of an hour"
        " to announce 10000 joins one by one)",
    )
    parser.add_argument(
        "--burst-members",
        default="20,240",
        metavar="R",
        help="burst: room sizes; a comma-separated list runs each",
    )
    parser.add_argument(
        "--burst-senders",
        default="6,12",
        metavar="K",
        help="burst: members who each send one item at once; a list runs each",
    )
    parser.add_argument(
        "--burst-kinds",
        default=",".join(BURST_KINDS),
        help="burst: what each sender sends: paste (the largest /paste), line"
        " (the longest line), invalid (the longest line, of invalid UTF-8);"
        " ngircd runs line only",
    )
    parser.add_argument(
        "--burst-stall",
        choices=["no", "yes", "both"],
        default="both",
        help="burst: with one member that stops reading once joined (yes),"
        " without (no), or each",
    )
    parser.add_argument(
        "--stall-max-mib",
        type=float,
        default=32.0,
        metavar="MIB",
        help="burst with a stalled member: bursts are repeated until it is"
        " dropped, or until this many MiB reached each member",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=8,
        help="clients connecting (not yet joined) at once; ngircd listens with"
        " a backlog of 10, so more than that measures SYN retries",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also run fanout, connections and burst over TLS (certs/ in the"
        " repository)",
    )
    parser.add_argument(
        "--db",
        choices=["memory", "file", "both"],
        default="both",
        help="trio-chat's store: --db :memory:, a file in a temporary directory,"
        " or both",
    )
    parser.add_argument(
        "--compare",
        choices=["ngircd"],
        help="run the same scenarios against ngircd (if installed)",
    )
    parser.add_argument("--ngircd", default="ngircd", help="the ngircd binary")
    parser.add_argument(
        "--servers",
        default="trio-chat",
        help="comma-separated: trio-chat, trio-chat-irc (trio-chat :memory:"
        " spoken to in IRC, like ngircd), ngircd (--compare ngircd adds ngircd)",
    )
    parser.add_argument(
        "--setup-timeout",
        type=float,
        metavar="SECONDS",
        help="deadline for connecting and joining (unset: 60 s, and for"
        " connections 60 s + 60 s x (C/1000)^2)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON lines here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each fanout and paced set-up; the table shows medians",
    )
    parser.add_argument(
        "--connections-repeat",
        type=int,
        default=1,
        help="runs of each connections set-up (long: presence is C squared)",
    )
    parser.add_argument(
        "--burst-repeat",
        type=int,
        default=1,
        help="runs of each burst set-up (there are many: R x K x kind x stall)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke test (overrides the size flags)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="run nothing: print the table of an earlier run's JSON lines",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the table as Markdown"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each trio-chat server with py-spy (must be installed)"
        " into DIR, as collapsed stacks",
    )
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario: {', '.join(sorted(unknown))}")
    kinds = [k.strip() for k in args.burst_kinds.split(",") if k.strip()]
    if set(kinds) - set(BURST_KINDS):
        parser.error(f"unknown burst kind in --burst-kinds: {args.burst_kinds}")
    sizes: dict[str, Any] = {
        "clients": args.clients,
        "lines": args.lines,
        "rate": [float(r) for r in args.rate.split(",") if r.strip()],
        "duration": args.duration,
        "drain": args.drain,
        "connections": [int(c) for c in args.connections.split(",") if c.strip()],
        "burst_members": [int(r) for r in args.burst_members.split(",") if r.strip()],
        "burst_senders": [int(k) for k in args.burst_senders.split(",") if k.strip()],
        "repeat": args.repeat,
        "connections_repeat": args.connections_repeat,
        "burst_repeat": args.burst_repeat,
    }
    shapes = [(args.clients, args.lines)]
    for shape in filter(None, (part.strip() for part in args.fanout_shapes.split(","))):
        clients, _, lines = shape.partition("x")
        if not (clients.isdigit() and lines.isdigit()) or int(clients) < 3:
            parser.error(f"--fanout-shapes: not NxM with N >= 3: {shape}")
        shapes.append((int(clients), int(lines)))
    if args.quick:
        sizes.update(QUICK)
        shapes = [(sizes["clients"], sizes["lines"])]
    if sizes["clients"] < 3:
        parser.error("--clients must be at least 3")
    servers = {s.strip() for s in args.servers.split(",") if s.strip()}
    if args.compare == "ngircd":
        servers.add("ngircd")
    if servers - {"trio-chat", "trio-chat-irc", "ngircd"}:
        parser.error(f"unknown server in --servers: {args.servers}")
    ngircd = None
    if "ngircd" in servers:
        ngircd = shutil.which(args.ngircd)
        if ngircd is None:
            log(NGIRCD_HINT)
    return Options(
        scenarios=scenarios,
        clients=sizes["clients"],
        lines=sizes["lines"],
        fanout_shapes=shapes,
        window=args.window,
        rates=sizes["rate"],
        duration=sizes["duration"],
        drain=sizes["drain"],
        connections=sizes["connections"],
        compare_connections=args.compare_connections,
        burst_members=sizes["burst_members"],
        burst_senders=sizes["burst_senders"],
        burst_kinds=kinds,
        burst_stall={"no": [False], "yes": [True], "both": [False, True]}[
            args.burst_stall
        ],
        stall_max_mib=args.stall_max_mib,
        inflight=args.inflight,
        tls=args.tls,
        dbs=(
            []
            if "trio-chat" not in servers
            else ["memory", "file"]
            if args.db == "both"
            else [args.db]
        ),
        ngircd=ngircd,
        irc="trio-chat-irc" in servers,
        json_path=args.json,
        repeat=max(1, sizes["repeat"]),
        connections_repeat=max(1, sizes["connections_repeat"]),
        burst_repeat=max(1, sizes["burst_repeat"]),
        profile=args.profile,
        report=args.report,
        markdown=args.markdown,
        setup_timeout=args.setup_timeout,
    )


def scenario_params(options: Options, scenario: str, size: float) -> dict[str, Any]:
    """The sizes and deadlines of one scenario, as the generator takes them.

    `size` is the rate (paced) or the number of connections (connections).
    """
    params = _scenario_params(options, scenario, size)
    if options.setup_timeout is not None:
        params["setup_timeout"] = options.setup_timeout
    return params


def _scenario_params(options: Options, scenario: str, size: float) -> dict[str, Any]:
    if scenario == "fanout":
        clients, lines = options.fanout_shapes[int(size)]
        return {
            "clients": clients,
            "lines": lines,
            "window": options.window,
            "setup_timeout": 60.0,
            "run_timeout": 120.0,
        }
    if scenario == "paced":
        return {
            "clients": options.clients,
            "rate": size,
            "duration": options.duration,
            "drain": options.drain,
            "setup_timeout": 60.0,
        }
    thousands = size / 1000
    return {
        "connections": int(size),
        # Every join is announced to everyone: setup grows as C squared.
        "setup_timeout": 60.0 + 60.0 * thousands * thousands,
        "run_timeout": 60.0,
    }


def burst_params(options: Options) -> list[dict[str, Any]]:
    """Every burst set-up: R x K x kind x stall, those that fit a room of R.

    A room needs two probes and the K senders (and the member that stops
    reading); a set-up that does not fit is left out, with a word.
    """
    runs = []
    for members in options.burst_members:
        for senders in options.burst_senders:
            for kind in options.burst_kinds:
                for stall in options.burst_stall:
                    if members < 2 + senders + stall:
                        log(f"burst R={members} K={senders}: too few members, left out")
                        continue
                    params: dict[str, Any] = {
                        "members": members,
                        "senders": senders,
                        "burst_kind": kind,
                        "stall": stall,
                        "setup_timeout": 60.0,
                        "run_timeout": 120.0,
                    }
                    if stall:
                        params["stall_max_bytes"] = int(options.stall_max_mib * 2**20)
                    if options.setup_timeout is not None:
                        params["setup_timeout"] = options.setup_timeout
                    runs.append(params)
    return runs


@contextlib.contextmanager
def profiler(directory: Path | None, pid: int, name: str) -> Iterator[None]:
    """Record `pid` with py-spy while the block runs, if asked to."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "200",
        "--output",
        str(directory / f"{name}.txt"),
    ]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_one(
    options: Options,
    variant: Variant,
    scenario: str,
    tls: bool,
    params: dict[str, Any],
    tag: str,
    settings: dict[str, str],
) -> dict[str, Any]:
    """One fresh server, one generator, one scenario: the run's record.

    `settings` are trio-chat's (`trio_chat_settings`), for the record.
    """
    pin = can_pin()
    record: dict[str, Any] = {
        "scenario": scenario,
        "server": variant.server,
        "variant": variant.label,
        "db": variant.db,
        "tls": tls,
        "params": params,
    }
    with tempfile.TemporaryDirectory(prefix="trio-chat-bench-") as tmp:
        workdir = Path(tmp)
        server: Server
        if variant.server == "ngircd":
            assert options.ngircd is not None
            server = NgircdServer(workdir, tls, pin, options.ngircd)
        else:
            assert variant.db is not None
            server = TrioChatServer(
                workdir, tls, pin, variant.db, settings, variant.wire
            )
        record["features"] = server.features()
        try:
            server.start()
        except RuntimeError as exc:
            record.update({"ok": False, "error": str(exc)})
            return record
        generator: subprocess.Popen[bytes] | None = None
        finished = False
        try:
            generator_settings = {
                "scenario": scenario,
                "host": HOST,
                "port": server.port,
                "server_pid": server.pid,
                "connect_inflight": options.inflight,
                **server.generator_settings(),
                **params,
            }
            record["features"]["generator_cpu"] = GENERATOR_CPU if pin else None
            limit = (
                params.get("setup_timeout", 60.0)
                + params.get("run_timeout", 0.0)
                + params.get("duration", 0.0)
                + params.get("drain", 0.0)
                + 60.0
            )
            profile_dir = options.profile if variant.server == "trio-chat" else None
            with (server.log_path.parent / "generator.log").open("wb") as errors:
                generator = subprocess.Popen(
                    [sys.executable, str(LOADGEN), json.dumps(generator_settings)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    preexec_fn=_preexec(GENERATOR_CPU if pin else None),
                    start_new_session=True,
                )
            assert generator.stdout is not None
            with profiler(profile_dir, server.pid, tag):
                line = read_line(generator.stdout, time.monotonic() + limit)
            if line is None:
                record.update({"ok": False, "error": "the generator gave no result"})
                record["generator_log"] = log_tail(workdir / "generator.log")
            else:
                finished = True
                result = json.loads(line)
                record.update(result)
                figures = result["figures"]
                record["ok"] = (
                    bool(figures.get("complete") and figures.get("setup_complete"))
                    and not result["failures"]
                    and not figures.get("problems")
                )
            record["server_rss_end_kib"] = _rss(server.pid)
        finally:
            server.stop()
            if generator is not None:
                _stop_generator(generator, finished)
        if not record.get("ok"):
            record["server_log"] = log_tail(server.log_path)
    return record


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _stop_generator(generator: subprocess.Popen[bytes], finished: bool) -> None:
    """Close its stdin (it exits); if it never finished, SIGTERM it first."""
    if not finished:
        stop(generator, "the generator")
    if generator.stdin is not None:
        with contextlib.suppress(OSError):
            generator.stdin.close()
    try:
        generator.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        generator.kill()
        generator.wait()


# -- the table ----------------------------------------------------------------

#: Per scenario, the table's rows: heading, figure key, decimals, and whether
#: a trio-chat / ngircd ratio means anything.
FIGURES: Final[dict[str, list[tuple[str, str, int, bool]]]] = {
    "fanout": [
        ("deliveries/s (higher is better)", "deliveries_per_s", 0, True),
        ("wall time s", "wall_s", 3, True),
        ("server CPU s", "server_cpu_s", 2, True),
        ("lost + duplicated + reordered", "anomalies", 0, False),
    ],
    "paced": [
        ("latency p50 ms", "latency_p50_ms", 2, True),
        ("latency p90 ms", "latency_p90_ms", 2, True),
        ("latency p99 ms", "latency_p99_ms", 2, True),
        ("latency max ms", "latency_max_ms", 2, True),
        ("delivered %", "delivered_pct", 2, False),
        ("server CPU s", "server_cpu_s", 2, True),
    ],
    "connections": [
        ("setup: all joined, all announced s", "setup_s", 2, True),
        ("server RSS per connection KiB", "rss_per_connection_kib", 1, True),
        ("one line to all members ms", "one_line_to_all_ms", 2, True),
        ("all but one hang up: all leaves heard ms", "all_left_heard_ms", 1, True),
    ],
    "burst": [
        ("members dropped (must be 0)", "members_dropped", 0, False),
        ("lost + duplicated + reordered + broken", "anomalies", 0, False),
        ("until every reader has everything ms", "all_delivered_ms", 1, True),
        ("server RSS peak KiB", "server_rss_peak_kib", 0, True),
        ("server RSS peak - before KiB", "server_rss_peak_delta_kib", 0, True),
    ],
    "burst stall": [
        ("stalled member dropped after ms", "stalled_dropped_ms", 0, True),
        ("bursts until it was dropped", "rounds", 0, False),
        ("MiB to each member until then", "stall_mib_per_member", 1, True),
    ],
}
#: Figures shown for failed runs too: they say how a run failed.
SHOWN_WHEN_FAILED: Final = frozenset({"members_dropped"})


def figure_rows(record: dict[str, Any]) -> list[tuple[str, str, int, bool]]:
    """The table's rows for the group `record` is in."""
    rows = FIGURES[record["scenario"]]
    if record["scenario"] == "burst" and record["params"]["stall"]:
        rows = rows + FIGURES["burst stall"]
    return rows


def figure(record: dict[str, Any], key: str) -> float | None:
    """A figure of a successful run (None for a failed one, but for some)."""
    figures: dict[str, Any] = record.get("figures") or {}
    if not record.get("ok") and key not in SHOWN_WHEN_FAILED:
        return None
    if key == "anomalies":
        return float(
            figures.get("probe_missing", 0)
            + figures.get("probe_duplicated_or_reordered", 0)
            + figures.get("probe_broken", 0)
            + figures.get("extra_deliveries", 0)
            + max(0, figures["deliveries_expected"] - figures["deliveries"])
        )
    if key == "stall_mib_per_member":
        value = figures.get("stall_bytes_per_member")
        return None if value is None else value / 2**20
    value = figures.get(key)
    return None if value is None else float(value)


def group_title(scenario: str, params: dict[str, Any], tls: bool) -> str:
    """The table's name for a scenario and its sizes."""
    if scenario == "fanout":
        title = f"fanout N={params['clients']} M={params['lines']}"
    elif scenario == "paced":
        rate = params["rate"]
        title = f"paced R={rate:g}/s N={params['clients']} D={params['duration']:g}s"
    elif scenario == "burst":
        title = (
            f"burst R={params['members']} K={params['senders']} {params['burst_kind']}"
        )
        title += " stall" if params["stall"] else ""
    else:
        title = f"connections C={params['connections']}"
    return title + (" TLS" if tls else "")


def _cell(values: list[float], runs: int, decimals: int) -> tuple[float | None, str]:
    if not runs:
        return None, ""
    if not values:
        return None, "failed"
    median = statistics.median(values)
    note = "" if len(values) == runs else f" ({len(values)}/{runs} ok)"
    return median, f"{median:,.{decimals}f}{note}"


def table(records: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """Medians per scenario and server, and trio-chat / ngircd ratios."""
    labels: list[str] = []
    for record in records:
        if record["variant"] not in labels:
            labels.append(record["variant"])
    trio = [label for label in labels if label != "ngircd"]
    compare = "ngircd" in labels
    ratio_heads = [f"{label.split(' ', 1)[1]} / ngircd" for label in trio]
    heads = ["scenario", "figure (median)", *labels, *(ratio_heads if compare else [])]
    rows: list[list[str]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        title = group_title(record["scenario"], record["params"], record["tls"])
        groups.setdefault(title, []).append(record)
    for title, members in groups.items():
        for heading, key, decimals, ratio in figure_rows(members[0]):
            medians: dict[str, float | None] = {}
            cells = [title, heading]
            for label in labels:
                runs = [r for r in members if r["variant"] == label]
                values = [v for v in (figure(r, key) for r in runs) if v is not None]
                medians[label], text = _cell(values, len(runs), decimals)
                cells.append(text)
            if compare:
                base = medians.get("ngircd")
                for label in trio:
                    value = medians.get(label)
                    if ratio and value is not None and base:
                        cells.append(f"{value / base:.2f}")
                    else:
                        cells.append("")
            rows.append(cells)
            title = ""
    if markdown:
        lines = [
            "| " + " | ".join(heads) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * (len(heads) - 2)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [heads, *rows]) for i in range(len(heads))]
    lines = []
    for index, row in enumerate([heads, *rows]):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plan(options: Options) -> list[tuple[str, bool, dict[str, Any]]]:
    """Every (scenario, TLS, sizes) to run, in order."""
    runs: list[tuple[str, bool, dict[str, Any]]] = []
    for scenario in options.scenarios:
        if scenario == "burst":
            for params in burst_params(options):
                runs.append((scenario, False, params))
                if options.tls:
                    runs.append((scenario, True, params))
            continue
        sizes: list[float] = (
            options.rates
            if scenario == "paced"
            else [float(c) for c in options.connections]
            if scenario == "connections"
            else [float(index) for index in range(len(options.fanout_shapes))]
            if scenario == "fanout"
            else [0.0]
        )
        for size in sizes:
            params = scenario_params(options, scenario, size)
            runs.append((scenario, False, params))
            if options.tls and scenario == "fanout":
                runs.append((scenario, True, params))
            if (
                options.tls
                and scenario == "connections"
                and size <= options.compare_connections
            ):
                runs.append((scenario, True, params))
    return runs


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so every server and generator is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    """Run every planned benchmark; print JSON lines, then the table."""
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if options.report is not None:
        lines = options.report.read_text(encoding="utf-8").splitlines()
        print(
            table(
                [json.loads(line) for line in lines if line.strip()],
                markdown=options.markdown,
            )
        )
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = max(options.connections) + 100  # in the server, and in the generator
    if "connections" in options.scenarios and hard < needed:
        log(f"warning: the open files limit ({hard}) is below {needed}")
    if options.profile is not None and shutil.which("py-spy") is None:
        log("--profile needs py-spy: python -m pip install py-spy")
        return 2
    variants = [Variant("trio-chat", db) for db in options.dbs]
    if options.irc:
        variants.append(Variant("trio-chat", "memory", wire="irc"))
    if options.ngircd is not None:
        variants.append(Variant("ngircd", None))
    if not variants:
        log("no server to run")
        return 2
    host = machine()
    host["trio_chat"] = version_of([sys.executable, "-m", "trio_chat", "--version"])
    if options.ngircd is not None:
        host["ngircd"] = version_of([options.ngircd, "--version"])
    host["pinned"] = can_pin()
    log(f"machine: {json.dumps(host)}")
    settings: dict[str, str] = {}
    if options.dbs or options.irc:
        try:
            settings = trio_chat_settings()
        except RuntimeError as exc:
            log(f"cannot read trio-chat's settings: {exc}")
            return 2
    out = None
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        out = options.json_path.open("w", encoding="utf-8")
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    interrupted = False
    try:
        for scenario, tls, params in plan(options):
            repeats = {
                "connections": options.connections_repeat,
                "burst": options.burst_repeat,
            }.get(scenario, options.repeat)
            big = (
                scenario == "connections"
                and params["connections"] > options.compare_connections
            )
            for repeat in range(repeats):
                for variant in variants:
                    if big and variant.label != "trio-chat :memory:":
                        continue
                    if (
                        scenario == "burst"
                        and (variant.server == "ngircd" or variant.wire == "irc")
                        and params["burst_kind"] not in NGIRCD_BURST_KINDS
                    ):
                        continue  # IRC has no pastes; ngircd relays bytes as is
                    name = f"{scenario}{'-tls' if tls else ''}"
                    tag = f"{name}-{variant.label.replace(' ', '-')}-{repeat + 1}"
                    tag = tag.replace(":", "")
                    title = group_title(scenario, params, tls)
                    log(f"{variant.label:>20}  {title}  run {repeat + 1}/{repeats}")
                    record = run_one(
                        options, variant, scenario, tls, params, tag, settings
                    )
                    record["repeat"] = repeat + 1
                    record["machine"] = host
                    records.append(record)
                    line = json.dumps(record, sort_keys=True)
                    print(line, flush=True)
                    if out is not None:
                        out.write(line + "\n")
                        out.flush()
                    if not record.get("ok"):
                        figures = record.get("figures") or {}
                        why = (
                            record.get("error")
                            or record.get("failure_examples")
                            or figures.get("problems")
                            or "incomplete"
                        )
                        log(f"  failed: {why}")
                        if figures.get("dropped_examples"):
                            log(f"  dropped: {figures['dropped_examples']}")
    except KeyboardInterrupt:
        interrupted = True  # run_one has stopped its server and generator
        log("interrupted: the table shows the runs that finished")
    finally:
        if out is not None:
            out.close()
    log(f"{len(records)} runs in {time.monotonic() - started:.0f} s")
    print()
    if records:
        print(table(records, markdown=options.markdown))
    if interrupted:
        return 130
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
