"""Command line: `trio-chat serve | client | gen-certs`.

The only module that parses argv, configures logging, installs signal
handling and starts trio.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import ssl
import sys
import time
import tomllib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio

from trio_chat import __version__
from trio_chat import limits as lim
from trio_chat.client import PASSWORD_VARIABLE, SERVER_PASSWORD_VARIABLE
from trio_chat.moderation import MAX_MOTD_LINES
from trio_chat.names import InvalidName, name_key, validate_name

if TYPE_CHECKING:
    from trio_chat.chat import Chat
    from trio_chat.client import Shown
    from trio_chat.moderation import Moderation
    from trio_chat.server import ChatServer
    from trio_chat.store import AsyncStore

log = logging.getLogger("trio_chat")

#: SIGUSR1 makes the server log its counts (connections, users, tasks, fds).
_STATS_SIGNAL: int | None = getattr(signal, "SIGUSR1", None)
_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM) + (
    (_STATS_SIGNAL,) if _STATS_SIGNAL is not None else ()
)


#: The configuration file read when there is one in the working directory.
DEFAULT_CONFIG = "trio-chat.toml"

#: Where `serve` keeps history unless told otherwise: the working directory.
DEFAULT_DB = "trio-chat.db"

#: Exit status after a second SIGINT forced the server down.
EXIT_FORCED: int = 130


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _port(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number, not {text!r}"
        ) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None


def _log_level(text: str) -> str:
    """`info` is `INFO`: levels in any case."""
    return text.upper()


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that names an option's default when there is one worth naming.

    Not `False` for a switch, `None` for an option without one, `[]` for a
    repeatable one, nor again when the help says it already.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default in (None, False, [], argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
        ):
            return text
        shown = f"{default:g}" if isinstance(default, float) else "%(default)s"
        return f"{text} (default: {shown})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trio-chat",
        description="A self-hosted terminal chat server and client, on Trio.",
    )
    parser.add_argument(
        "--version", action="version", version=f"trio-chat {__version__}"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML file of option defaults ([serve] and [client] tables);"
        f" default: ./{DEFAULT_CONFIG} if it exists",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run a chat server",
        description="Run a chat server. Prints 'listening on HOST:PORT (KIND)' for"
        " each listener once ready.",
        formatter_class=_DefaultsFormatter,
    )
    serve.add_argument(
        "--listen",
        action="append",
        default=[],
        type=_listen,
        metavar="KIND:HOST:PORT",
        help="a listener (repeatable): KIND is line, tls (the line protocol over"
        " TLS), irc or ircs (IRC over TLS); HOST an address ([::1] for IPv6);"
        " PORT 0 picks a free one. Without it: one listener from --host,"
        " --port and --tls",
    )
    serve.add_argument(
        "--host",
        default=None,
        help="address to listen on; 0.0.0.0 (or ::) for every interface, e.g. a"
        f" LAN (default: {lim.DEFAULT_HOST})",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"TCP port; 0 picks a free one (default: {lim.DEFAULT_PORT})",
    )
    serve.add_argument(
        "--tls",
        action="store_true",
        help="wrap every connection in TLS (dev certificate unless --cert/--key)",
    )
    serve.add_argument("--cert", metavar="FILE", help="TLS certificate chain (PEM)")
    serve.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=_log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log to stderr (any case)",
    )
    serve.add_argument(
        "--db",
        metavar="PATH",
        default=DEFAULT_DB,
        help="SQLite file keeping the rooms' history across restarts;"
        " ':memory:' keeps only recent lines, in memory",
    )
    serve.add_argument(
        "--client-ca",
        metavar="FILE",
        help="with --tls, require client certificates signed by this CA (PEM)",
    )
    access = serve.add_argument_group(
        "moderation and access", "Who runs the server and who may come in."
    )
    access.add_argument(
        "--operator",
        dest="operators",
        action="append",
        default=[],
        metavar="NAME",
        help="a server operator (repeatable): a registered name that, once"
        " identified, may /ban, /unban, /motd and run every room",
    )
    access.add_argument(
        "--motd-file",
        metavar="FILE",
        help=f"the message of the day, shown after WELCOME (at most"
        f" {MAX_MOTD_LINES} lines); /motd TEXT from an operator overrides it",
    )
    access.add_argument(
        "--server-password",
        metavar="PASSWORD",
        help="every connection must give this password before choosing a name"
        " (better in the config file: the command line is visible to local users)",
    )
    access.add_argument(
        "--allow",
        dest="allow",
        action="append",
        default=[],
        metavar="NAME",
        help="only these names may join (repeatable); default: anyone",
    )
    access.add_argument(
        "--registered-only",
        action="store_true",
        help="only registered names may join (make accounts with 'trio-chat adduser')",
    )
    limits = serve.add_argument_group(
        "limits", "Every limit a client can run into; 0 switches most of them off."
    )
    for option in lim.LIMIT_OPTIONS:
        default = getattr(lim.Limits(), option.field)
        limits.add_argument(
            option.flag,
            dest=option.field,
            type=_non_negative_int if option.kind is int else _non_negative_float,
            default=default,
            metavar=option.metavar,
            help=option.help,
        )

    client = commands.add_parser(
        "client",
        help="join a chat server",
        description=(
            "Join a chat server. On a terminal: line editing, history and colour."
            " With stdin from a pipe or file: sends each line, quits at the end."
        ),
        epilog=(
            f"The environment: {PASSWORD_VARIABLE} answers the password prompt"
            f" of a registered name, {SERVER_PASSWORD_VARIABLE} that of a"
            " server with a password of its own (neither is ever typed on the"
            " command line, where others could see it); NO_COLOR turns colour"
            " off. In the chat, /help lists the commands, and /bell"
            " off|mentions|all says when the terminal bell rings (this"
            " client's own command, never sent)."
        ),
        formatter_class=_DefaultsFormatter,
    )
    client.add_argument("--host", default=lim.DEFAULT_HOST, help="server address")
    client.add_argument(
        "--port", type=_port, default=lim.DEFAULT_PORT, help="server port"
    )
    client.add_argument(
        "--tls", action="store_true", help="connect with TLS (verified)"
    )
    client.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust this CA (PEM) instead of the system store, e.g. certs/ca.pem",
    )
    client.add_argument(
        "--cert",
        metavar="FILE",
        help="with --tls, a client certificate (PEM) for servers that require one",
    )
    client.add_argument("--key", metavar="FILE", help="the client certificate's key")
    client.add_argument("--name", help="the name to join as (asked for if not given)")
    client.add_argument(
        "--no-reconnect",
        action="store_true",
        help="exit when the connection is lost instead of reconnecting",
    )
    client.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="with input from a pipe or a file, print nothing (why it stopped"
        " still goes to stderr); without it, such a client prints errors and,"
        " once it has said something, the answers and what others say, but not"
        " the greeting, the history or who comes and goes",
    )

    adduser = commands.add_parser(
        "adduser",
        help="register a name in a server's database (e.g. for --registered-only)",
        description=(
            "Register NAME with a password read from the terminal (hidden), or"
            " the first line of stdin when it is not a terminal. The server"
            " must be stopped: while one holds the database, adduser refuses"
            " (use /register in the chat instead)."
        ),
        formatter_class=_DefaultsFormatter,
    )
    adduser.add_argument("name", metavar="NAME", help="the name to register")
    adduser.add_argument(
        "--db", metavar="PATH", default=DEFAULT_DB, help="the server's database file"
    )

    gen = commands.add_parser(
        "gen-certs",
        help="create a local CA, server and client certificates (needs trustme)",
        description=(
            "The first time, write a local CA into DIR (ca.pem, and its key"
            " ca.key, kept private) and a server certificate for the given host"
            " names and addresses (server.pem, server.key). Later, with the same"
            " DIR, --client NAME issues NAME.pem and NAME.key from that CA, for a"
            " server run with --client-ca DIR/ca.pem. For a LAN or tests, not the"
            " internet. Needs trustme: python -m pip install trustme."
        ),
    )
    gen.add_argument("directory", metavar="DIR", help="where to write the files")
    gen.add_argument(
        "--host",
        dest="hosts",
        action="append",
        metavar="NAME",
        help="a host name or IP address the server certificate is for"
        " (repeatable); default, for a new CA: localhost, 127.0.0.1, ::1",
    )
    gen.add_argument(
        "--client",
        dest="clients",
        action="append",
        default=[],
        metavar="NAME",
        help="issue a client certificate for NAME (repeatable): NAME.pem, NAME.key",
    )
    return parser


def _configure_logging(level: str) -> None:
    # Records need no thread, process or source line (the format shows none):
    # a busy server logs a few lines per connection.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


#: What a `--listen` kind serves, for the listener it makes.
LISTEN_KINDS: Final = ("line", "tls", "irc", "ircs")


@dataclasses.dataclass(frozen=True, slots=True)
class Listen:
    """One `--listen KIND:HOST:PORT`."""

    kind: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        """True if its connections begin with a TLS handshake."""
        return self.kind in ("tls", "ircs")


def _listen(text: str) -> Listen:
    """Parse KIND:HOST:PORT (HOST in brackets for IPv6) for argparse."""
    kind, sep, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if not sep or kind not in LISTEN_KINDS or not host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KIND:HOST:PORT with KIND one of"
            f" {', '.join(LISTEN_KINDS)} (e.g. ircs:0.0.0.0:6697)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Listen(kind, host, _port(port))


def _listens(args: argparse.Namespace) -> list[Listen]:
    """Every listener asked for: `--listen`, and the short form's one."""
    listens: list[Listen] = list(args.listen)
    short = args.host is not None or args.port is not None or args.tls
    if short or not listens:
        listens.append(
            Listen(
                "tls" if args.tls else "line",
                lim.DEFAULT_HOST if args.host is None else args.host,
                lim.DEFAULT_PORT if args.port is None else args.port,
            )
        )
    return listens


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _config_path(arguments: list[str]) -> str | None:
    """The --config file named in `arguments`, or ./trio-chat.toml if there."""
    for index, argument in enumerate(arguments):
        if argument == "--config" and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def _limits(args: argparse.Namespace) -> lim.Limits:
    return lim.Limits(**{o.field: getattr(args, o.field) for o in lim.LIMIT_OPTIONS})


async def _serve(args: argparse.Namespace, limits: lim.Limits) -> int:
    from trio_chat import tls
    from trio_chat.accounts import Accounts
    from trio_chat.chat import Chat
    from trio_chat.server import ChatServer
    from trio_chat.store import AsyncStore

    listens = _listens(args)
    if args.client_ca is not None and not any(listen.tls for listen in listens):
        raise tls.TLSConfigError("--client-ca needs --tls (or a tls or ircs listener)")
    ssl_context = None
    if any(listen.tls for listen in listens):
        ssl_context = tls.server_context_from_args(args.cert, args.key, args.client_ca)
    for flag in limits.switched_off():
        log.warning("protection switched off: %s 0", flag)
    moderation = _moderation(args)
    async with contextlib.AsyncExitStack() as stack:
        store = None
        if args.db != ":memory:":
            _check_db_directory(args.db)
            store = await stack.enter_async_context(AsyncStore.open(args.db))
        chat = Chat(clock=time.time, limits=limits, moderation=moderation)
        if store is not None:
            for room_key in await store.recent_rooms(limits.max_rooms or 1000):
                rows = await store.history(room_key, limits.history_lines)
                chat.preload(room_key, [event for _, event in rows])
            log.info("history in %s", args.db)
            await _load_moderation(store, chat)
        accounts = None if store is None else await Accounts.load(store)
        server = ChatServer(
            chat, ssl_context=ssl_context, limits=limits, store=store, accounts=accounts
        )
        await server.load_registrations()
        return await _run_server(listens, server, ssl_context)


def _check_db_directory(path: str) -> None:
    """Raise ConfigError if the database's directory is missing.

    SQLite would only say "unable to open database file".
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(
            f"cannot open the database {path}: the directory {directory} does not"
            " exist (create it, or give another --db PATH)"
        )


def _moderation(args: argparse.Namespace) -> Moderation:
    """The server's moderation settings from the command line and config."""
    from trio_chat.moderation import Moderation, read_motd
    from trio_chat.passwords import normalize_password

    needs_accounts = args.operators or args.registered_only
    if needs_accounts and args.db == ":memory:":
        raise ConfigError(
            "--operator and --registered-only need registered names:"
            " a database (--db PATH), not --db :memory:"
        )
    motd: tuple[str, ...] = ()
    if args.motd_file is not None:
        try:
            motd, cut = read_motd(args.motd_file)
        except OSError as exc:
            raise ConfigError(
                f"cannot read {args.motd_file}: {exc.strerror or exc}"
            ) from None
        if cut:
            log.warning("%s is cut to %d lines", args.motd_file, len(motd))
    for name in [*args.operators, *args.allow]:
        try:
            validate_name(name)
        except InvalidName as exc:
            raise ConfigError(f"not a valid name: {name!r}: {exc}") from None
    if args.server_password is not None and not normalize_password(
        args.server_password
    ):
        raise ConfigError("--server-password cannot be empty")
    return Moderation(
        operators=args.operators,
        allow=args.allow,
        registered_only=args.registered_only,
        server_password=args.server_password or "",
        motd=motd,
    )


async def _load_moderation(store: AsyncStore, chat: Chat) -> None:
    """Bans, the /motd message, room topics and settings kept in the store."""
    from trio_chat.moderation import motd_lines
    from trio_chat.server import MOTD_SETTING

    bans = await store.list_active_bans(chat.now())
    chat.moderation.load(bans)
    motd = await store.get_setting(MOTD_SETTING)
    if motd is not None:
        chat.moderation.set_motd = motd_lines(motd)[0]
    chat.restore_topics(await store.topics(chat.limits.max_rooms or 1000))
    chat.restore_rooms(await store.room_settings())
    if bans:
        log.info("%d ban%s in force", len(bans), "" if len(bans) == 1 else "s")


async def _run_server(
    listens: list[Listen], server: ChatServer, ssl_context: ssl.SSLContext | None
) -> int:
    from trio_chat.server import Endpoint

    exit_code = 0
    endpoints: list[Endpoint] = []
    try:
        for listen in listens:
            for listener in await trio.open_tcp_listeners(
                listen.port, host=listen.host
            ):
                context = ssl_context if listen.tls else None
                endpoints.append(Endpoint(listener, listen.kind, context))  # type: ignore[arg-type]
    except BaseException:
        for endpoint in endpoints:
            endpoint.listener.socket.close()
        raise
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            await nursery.start(server.serve_listeners, endpoints)
            for endpoint in endpoints:
                address = _format_address(endpoint.listener.socket.getsockname())
                print(f"listening on {address} ({endpoint.kind})", flush=True)
                log.info("listening on %s (%s)", address, endpoint.kind)
            stopped = trio.Event()

            async def watch_signals() -> None:
                nonlocal exit_code
                async for signum in signals:
                    if signum == _STATS_SIGNAL:
                        _log_stats(server.stats())
                    elif not server.shutting_down:
                        log.info(
                            "%s received: shutting down", signal.Signals(signum).name
                        )
                        server.shutdown()
                    elif signum == signal.SIGINT:
                        log.warning("second SIGINT: forcing exit")
                        exit_code = EXIT_FORCED
                        nursery.cancel_scope.cancel()
                        return
                await stopped.wait()  # pragma: no cover

            nursery.start_soon(watch_signals)
            await server.closed.wait()
            stopped.set()
            nursery.cancel_scope.cancel()
    log.info("server stopped")
    return exit_code


def _log_stats(stats: dict[str, int]) -> None:
    fds = _open_fds()
    counts = " ".join(f"{name}={value}" for name, value in stats.items())
    log.info("stats: %s fds=%s", counts, "?" if fds is None else fds)


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus listdir's own
    except OSError:
        return None


def _add_user(args: argparse.Namespace) -> int:
    import getpass
    import secrets

    from trio_chat import accounts
    from trio_chat.passwords import normalize_password
    from trio_chat.store import DatabaseInUse, Store, StoreError, User

    try:
        name = validate_name(args.name)
    except InvalidName as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != password:
            print("trio-chat: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline()
    # As /register and the prompt take it: the same text works at both.
    password = normalize_password(password)
    try:
        accounts.check_password(password)
    except accounts.AccountError as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 2
    salt = secrets.token_bytes(accounts.SALT_BYTES)
    digest = accounts.hash_password(password, salt)
    now = time.time()
    try:
        with Store(args.db) as store:
            added = store.add_user(
                User(name_key(name), name, digest, salt, accounts.KDF, now, now)
            )
    except DatabaseInUse as exc:
        # The server keeps the accounts it read at start-up: one added
        # behind its back would be open to anyone until it restarts.
        holder = "another process" if exc.pid is None else f"process {exc.pid}"
        print(
            f"trio-chat: {exc.path} is in use by a running server ({holder}):"
            f" stop it first, or register {name} in the chat with /register",
            file=sys.stderr,
        )
        return 1
    except StoreError as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 1
    if not added:
        print(f"trio-chat: {name} is registered already", file=sys.stderr)
        return 1
    print(f"registered {name} in {args.db}")
    return 0


def _gen_certs(args: argparse.Namespace) -> int:
    from trio_chat import certs

    try:
        written = certs.generate(args.directory, args.hosts, clients=args.clients)
    except certs.CertsUnavailable as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _shown(quiet: bool, *, script: bool, interactive: bool) -> Shown:
    """What the client shows (`ClientConfig.show`)."""
    if interactive or not script:
        return "all"
    return "nothing" if quiet else "asked"


def _run_client(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import stat

    import outcome

    from trio_chat import client, tls

    # The chat is the output: only warnings (to stderr, through logging's
    # last-resort handler, which follows sys.stderr even when prompt_toolkit
    # redirects it above the prompt).
    logging.getLogger("trio_chat").setLevel(logging.WARNING)
    tls_files = {"--cafile": args.cafile, "--cert": args.cert, "--key": args.key}
    for flag, value in tls_files.items():
        if value is not None and not args.tls:
            print(f"trio-chat: {flag} needs --tls", file=sys.stderr)
            return 2
    if (args.cert is None) != (args.key is None):
        given, missing = (
            ("--key", "--cert") if args.cert is None else ("--cert", "--key")
        )
        print(f"trio-chat: {given} needs {missing} too", file=sys.stderr)
        return 2
    ssl_context = None
    if args.tls:
        try:
            ssl_context = tls.client_context(
                args.cafile, certfile=args.cert, keyfile=args.key
            )
        except tls.TLSConfigError as exc:
            print(f"trio-chat: {exc}", file=sys.stderr)
            return 2
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    config = client.ClientConfig(
        host=args.host,
        port=args.port,
        ssl_context=ssl_context,
        client_cert=args.cert is not None,
        server_hostname=args.host,
        name=args.name,
        password=os.environ.get(PASSWORD_VARIABLE) or None,
        server_password=os.environ.get(SERVER_PASSWORD_VARIABLE) or None,
        reconnect=not args.no_reconnect,
        # A script's --name is refused for good: its next lines are chat,
        # not names to try.
        retry_name=interactive or args.name is None,
        # A person is told when lines queue behind the flood limit; a pipe
        # is simply read more slowly.
        announce_pacing=interactive,
        # A person sees everything; a script (input from a pipe or a file)
        # what it asked for, or nothing (-q).
        show=_shown(args.quiet, script=not sys.stdin.isatty(), interactive=interactive),
    )

    async def on_terminal() -> None:
        from trio_chat import terminal

        loop = asyncio.get_running_loop()
        color = not os.environ.get("NO_COLOR")  # https://no-color.org
        ui = terminal.TerminalUI(loop, color=color)
        guest = client.GuestClient(config, ui)
        done: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        trio.lowlevel.start_guest_run(
            guest.main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        await terminal.run_terminal(ui, guest, done)

    async def on_pipe() -> bool:
        ui = client.PlainUI(sys.stdout)
        fd = os.dup(sys.stdin.fileno())
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
            # Pollable: read without a thread, so reading is cancellable.
            async with trio.lowlevel.FdStream(fd) as stream:
                return await client.run_with_input(config, ui, stream.receive_some)
        # A regular file (or /dev/null) cannot be polled, and reading it
        # never blocks for long: a worker thread reads it.
        async with trio.wrap_file(os.fdopen(fd, "rb", buffering=0)) as file:
            return await client.run_with_input(config, ui, file.read)

    interrupted = False
    try:
        try:
            if interactive:
                asyncio.run(on_terminal())
            elif not trio.run(on_pipe):
                print(
                    "trio-chat: the input was empty: nothing to send, so the"
                    " client did not connect",
                    file=sys.stderr,
                )
        except* KeyboardInterrupt:
            interrupted = True
    except client.ClientError as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0  # 130: the shell's code for SIGINT


class ConfigError(Exception):
    """The configuration file cannot be used; str() is one line for people."""


# argparse offers no public way to list a parser's subcommands and options;
# its `_actions` have been stable for a decade.
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Use the TOML file at `path` for the defaults of each subcommand.

    Each table (`[serve]`, `[client]`) holds that command's options under
    their long names (`max-per-address = 30`, `tls = true`); the command
    line still overrides them. Raises ConfigError for a missing or invalid
    file, an unknown table or option, or a value of the wrong kind.
    """
    try:
        with open(path, "rb") as file:
            config = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    commands = _subparsers(parser)
    for section, options in config.items():
        command = commands.get(section)
        if command is None or not isinstance(options, dict):
            raise ConfigError(f"{path}: unknown table [{section}]")
        actions = {
            flag[2:]: action
            for action in command._actions
            for flag in action.option_strings
            if flag.startswith("--") and flag not in ("--help", "--config")
        }
        defaults: dict[str, object] = {}
        for key, value in options.items():
            action = actions.get(key.replace("_", "-"))
            if action is None:
                raise ConfigError(f"{path}: [{section}] has no option {key!r}")
            if isinstance(action, argparse._AppendAction):
                if not isinstance(value, list) or not all(
                    isinstance(item, str) for item in value
                ):
                    raise ConfigError(
                        f"{path}: [{section}] {key} must be a list of strings"
                    )
                convert = action.type if callable(action.type) else str
                try:
                    defaults[action.dest] = [convert(item) for item in value]
                except (ValueError, argparse.ArgumentTypeError) as exc:
                    raise ConfigError(f"{path}: [{section}] {key}: {exc}") from None
                continue
            if isinstance(action, argparse._StoreTrueAction):
                if not isinstance(value, bool):
                    raise ConfigError(
                        f"{path}: [{section}] {key} must be true or false"
                    )
                defaults[action.dest] = value
                continue
            converter = action.type if callable(action.type) else str
            try:
                defaults[action.dest] = converter(str(value))
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"{path}: [{section}] {key}: {exc}") from None
            if (
                action.choices is not None
                and defaults[action.dest] not in action.choices
            ):
                raise ConfigError(
                    f"{path}: [{section}] {key}: not one of {list(action.choices)}"
                )
        command.set_defaults(**defaults)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    config = _config_path(arguments)
    if config is not None:
        try:
            apply_config(parser, config)
        except ConfigError as exc:
            print(f"trio-chat: {exc}", file=sys.stderr)
            return 2
    args = parser.parse_args(arguments)
    if args.command == "gen-certs":
        return _gen_certs(args)
    if args.command == "client":
        return _run_client(args)
    if args.command == "adduser":
        return _add_user(args)
    try:
        limits = _limits(args)
    except ValueError as exc:
        parser.error(str(exc))
    _configure_logging(args.log_level)
    from trio_chat.store import StoreError
    from trio_chat.tls import TLSConfigError

    try:
        return trio.run(_serve, args, limits)
    except (TLSConfigError, StoreError, ConfigError) as exc:
        print(f"trio-chat: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"trio-chat: cannot listen on {args.host}:{args.port}:"
            f" {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
