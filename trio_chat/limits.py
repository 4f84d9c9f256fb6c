"""Every resource limit and timeout, as named constants and one config object.

The constants are the defaults; `Limits` carries the values in force and is
passed down explicitly (no module-level mutable state). `LIMIT_OPTIONS`
describes each limit once, for the command line and the README's table.
For counts and timeouts, 0 switches the protection off.
"""

from __future__ import annotations

import dataclasses
from typing import Final

#: Default TCP port for `serve` and `client` (plain and TLS alike).
DEFAULT_PORT: Final = 7777
#: Default address to listen on / connect to: loopback, safe by default.
DEFAULT_HOST: Final = "127.0.0.1"

#: Longest line a client may send, in bytes before decoding, line ending
#: excluded. Long enough for a pasted paragraph, short enough that a screen of
#: garbage is refused rather than relayed.
MAX_LINE_BYTES: Final = 4096
#: Bytes without a newline after which a connection is dropped: a client that
#: streams endless garbage is not chatting.
MAX_UNTERMINATED_BYTES: Final = 64 * 1024
#: Longest line the server ever sends, CRLF included. Chat text is cut at a
#: character boundary to fit (only lines full of U+FFFD can reach it).
MAX_SERVER_LINE_BYTES: Final = 8192
#: Largest single read from a socket.
RECEIVE_SIZE: Final = 64 * 1024
#: Scheduler passes the flusher waits, at most, while other connections
#: still have lines to handle: more lines per write under load, no wait
#: at all when quiet.
FLUSH_WAIT_PASSES: Final = 1
#: Lines of one connection handled before it lets the others run: a chunk's
#: lines are taken together (one write per recipient for all of them), but
#: one connection pasting fast cannot hold up the rest.
READ_BUDGET_LINES: Final = 64
#: Batches of a connection's chat lines that may be on their way to the
#: store at once: the connection reads its next lines while the last ones
#: commit (they are fanned out once committed, in order), and waits for the
#: oldest beyond this. Two keep the store busy and the connection reading.
LINE_BATCHES_COMMITTING: Final = 2

#: Lines a client may be behind (what it was sent but its socket did not
#: take yet) before it counts as too slow. Lines are shared by everyone in
#: a room, so this bounds a room's log, not a copy per member.
OUTBOX_MAX_MESSAGES: Final = 4096
#: Bytes a client may be behind, after the kernel took what it would: a
#: burst of a dozen full pastes at once fits, so a reader that keeps up is
#: never dropped by one; past it the reader is evicted, nobody else waits,
#: and a room's log (shared by its members) never holds more than this
#: beyond its history.
OUTBOX_MAX_BYTES: Final = 1024 * 1024
#: Smallest outbox allowed: the greeting (hello, banner, prompt) and /help
#: are queued at once and must fit.
MIN_OUTBOX_MESSAGES: Final = 16
#: Smallest outbox in bytes: the longest line the server sends must fit.
MIN_OUTBOX_BYTES: Final = MAX_SERVER_LINE_BYTES
#: A reply that lists things (`/rooms`, `/who`, `/bans`, ...) takes at most
#: 1/this of the asker's outbox, in bytes, whatever the server holds: the
#: rest is for the chat meanwhile and for more replies in the same burst.
#: Longer lists come in pages (`/rooms 2`).
LIST_OUTBOX_SHARE: Final = 4
#: ... and at most this many bytes, a few screens: a page is for people.
LIST_PAGE_BYTES: Final = 16 * 1024
#: Bytes of that share kept for a listing's heading and its last line
#: ("... more: /rooms 2 for the next page.").
LIST_REPLY_RESERVE: Final = 256

#: Rooms with at least this many members hear joins gathered: each join
#: waits a moment, and all that arrived meanwhile go out together (`JOINS`
#: lines). Smaller rooms hear each join at once.
PRESENCE_BATCH_MEMBERS: Final = 100
#: How long a join waits to be announced, per member of the room: telling
#: N members costs about N writes, so this keeps a stream of joins to a
#: small share of the server's time (1000 members: 0.1 s, 10000: 1 s).
PRESENCE_DELAY_PER_MEMBER: Final = 100e-6
#: The longest a join waits to be announced, however big the room.
PRESENCE_MAX_DELAY: Final = 1.0
#: Names on one `JOINS` or `LEAVES` line.
PRESENCE_NAMES_PER_LINE: Final = 50
#: Most joins and leaves announced at once: a crowd bigger than this (ten
#: thousand hanging up together) goes out in parts, one per scheduler pass,
#: so no member is sent more than its outbox holds in one go (500 names of
#: the longest kind are 48 KiB).
PRESENCE_FLUSH_NAMES: Final = 500

#: A TLS handshake must finish within this many seconds.
TLS_HANDSHAKE_TIMEOUT: Final = 10.0
#: A connection must pick a name within this many seconds of connecting.
NAME_TIMEOUT: Final = 30.0
#: Lines a connection may send before it has a name: enough for typos,
#: too few to use the name prompt as a free firehose.
MAX_NAME_ATTEMPTS: Final = 10
#: Every write to a peer must complete within this many seconds: a peer that
#: stopped reading (or vanished) does not hold a task and buffers forever.
WRITE_TIMEOUT: Final = 30.0
#: Seconds of silence after which a user is disconnected; off by default,
#: since people on nc cannot answer pings and quiet is normal in a chat.
IDLE_TIMEOUT: Final = 0.0
#: Closing a connection (TLS close_notify included) gets this long before the
#: socket is closed forcefully.
CLOSE_TIMEOUT: Final = 1.0
#: Seconds the store gets at shutdown to commit what is already queued
#: before the database thread is abandoned: a hung disk must not hang exit.
STORE_CLOSE_TIMEOUT: Final = 10.0
#: On SIGINT/SIGTERM, connections get this long to receive the shutdown
#: notice before they are closed forcefully.
SHUTDOWN_GRACE: Final = 3.0
#: TCP keepalive on accepted sockets: the first probe after this many
#: seconds of silence, then one every `KEEPALIVE_INTERVAL` seconds, and the
#: peer is gone after `KEEPALIVE_PROBES` unanswered: a peer that vanished
#: without a word (a laptop shut, a Wi-Fi gone) goes within about 3 minutes,
#: while a quiet one that is there is never dropped (its kernel answers).
KEEPALIVE_IDLE: Final = 60.0
KEEPALIVE_INTERVAL: Final = 15.0
KEEPALIVE_PROBES: Final = 5
#: Pause before retrying accept() when the process is out of file
#: descriptors or memory.
ACCEPT_BACKOFF: Final = 0.1

#: Connections open at once, in all: beyond it new ones are refused rather
#: than let the process run out of file descriptors.
MAX_CONNECTIONS: Final = 1024
#: Connections open at once from one address. A classroom behind one NAT
#: address needs this raised.
MAX_PER_ADDRESS: Final = 10
#: New connections from one address per minute: reconnect loops and floods
#: are slowed, a person reconnecting a few times is not.
MAX_NEW_PER_MINUTE: Final = 20
#: Connections without a name yet, in all and per address: silent sockets
#: (slowloris) cannot crowd out people.
MAX_UNREGISTERED: Final = 128
MAX_UNREGISTERED_PER_ADDRESS: Final = 5

#: Lines of a room's history replayed to whoever joins it.
HISTORY_LINES: Final = 20
#: Bytes of history one replay (or one /history answer) sends at most, and
#: about what a room's log keeps for replay: two screens of pasted code.
HISTORY_REPLAY_BYTES: Final = 32 * 1024
#: Bytes of history kept in memory for rooms that are not open (emptied, or
#: read from the store at start-up), replayed when they open again; the
#: least recently used go first (their lines stay in the store).
HISTORY_DORMANT_BYTES: Final = 4 * 1024 * 1024
#: Most lines one `/history` request returns: a screenful or three, and
#: well under the outbox, so asking for history never gets a reader evicted.
MAX_HISTORY_FETCH: Final = 200

#: History kept in the store, per room, and for how long (days): older
#: lines are pruned once an hour, so the database cannot grow for ever.
HISTORY_ROWS: Final = 10_000
HISTORY_DAYS: Final = 30.0
#: Megabytes the database may use: past 90 % of it the oldest history is
#: deleted (accounts, bans and settings never are), and SQLite refuses to
#: grow the file beyond it, so a chatty server cannot fill the disk.
MAX_DB_MB: Final = 1024
#: Names registered from one address per day: enough for a family or a
#: classroom behind one NAT (raise it there), too few to hoard names.
MAX_REGISTRATIONS_PER_ADDRESS: Final = 5
#: ... where a day is this many seconds; registrations are kept in the
#: database (address and time only) this long, so the limit outlives a
#: restart.
REGISTRATION_WINDOW: Final = 86400.0
#: Shortest password a new account may have, in characters: eight is the
#: floor NIST SP 800-63B sets for passwords people choose.
MIN_PASSWORD_LENGTH: Final = 8
#: Longest password accepted, in characters (scrypt does not care; a limit
#: keeps a pasted novel from costing anything).
MAX_PASSWORD_LENGTH: Final = 256
#: Password attempts (accounts' and the server's) are remembered this long,
#: per address and per name: long enough that guessing from many addresses
#: gains little, short enough that a typo is forgotten by the next break.
LOGIN_FAILURE_WINDOW: Final = 900.0
#: Wrong passwords an address may give at full speed (typos, a forgotten
#: caps lock) before its next attempts are spaced out.
LOGIN_FREE_FAILURES_PER_ADDRESS: Final = 3
#: Wrong passwords a name may take, from all addresses together, before
#: attempts on it from addresses that have failed are spaced out as one
#: queue: twelve addresses guessing get about as far as one.
LOGIN_FREE_FAILURES_PER_NAME: Final = 5
#: The first spacing, in seconds, doubled with each further failure ...
LOGIN_BASE_DELAY: Final = 1.0
#: ... up to this: one guess a minute per address, and per name.
LOGIN_MAX_DELAY: Final = 60.0
#: Longest an attempt is held before its password is checked; one whose
#: turn is further off is refused at once, told when to try again (a wait
#: must end well inside the 30 s name timeout).
LOGIN_MAX_WAIT: Final = 20.0
#: Addresses and names whose attempts are remembered; the oldest go past it.
MAX_TRACKED_LOGINS: Final = 10_000
#: Topics kept in the database that were set from one address. A room's
#: topic outlives the room, for whoever opens a room of that name again;
#: past this many the address's oldest go, so someone cycling through rooms
#: cannot fill the database with topics (and push its history out).
MAX_TOPICS_PER_ADDRESS: Final = 20
#: Topics kept in all: as many as the server gives back at start-up, and
#: no more than an eighth of `--max-db-mb` takes ...
MAX_SAVED_TOPICS: Final = 1000
#: ... counting each as the most a topic row can take: 300 characters of
#: up to 4 bytes, the names, SQLite's overhead.
TOPIC_ROW_BYTES: Final = 1536
#: How often old history is pruned, in seconds.
PRUNE_INTERVAL: Final = 3600.0

#: Rooms on the server, and rooms one user may be in at once.
MAX_ROOMS: Final = 1000
MAX_ROOMS_PER_USER: Final = 20
#: Rooms created from one address (IPv6: one /64) that may exist at once:
#: a team behind one NAT address making rooms for its work fits; a few
#: addresses with ten connections in twenty rooms each cannot take every
#: room the server may hold.
MAX_ROOMS_PER_ADDRESS: Final = 50
#: Longest room topic, in characters: a line, not an essay.
MAX_TOPIC_LENGTH: Final = 300

#: Token bucket per user: lines that may be sent at once ...
FLOOD_BURST: Final = 5
#: ... and lines per second after that. A paste of a few lines goes through;
#: excess lines are delayed, not dropped.
FLOOD_RATE: Final = 2.0
#: A user whose delayed lines exceed this many, or the oldest of which has
#: waited this many seconds, is dropped for "excess flood".
FLOOD_MAX_BACKLOG: Final = 20
FLOOD_MAX_DELAY: Final = 10.0

#: Lines in one multi-line message (`/paste N`): a screenful of code or of a
#: log; anything longer belongs in a file, not in everyone's scrollback.
MAX_PASTE_LINES: Final = 50
#: Bytes of text in one multi-line message (line endings excluded): four
#: full-length lines, and with its 50 lines' headers under half of a
#: reader's outbox, so one paste never gets a reader dropped.
MAX_PASTE_BYTES: Final = 16 * 1024
#: Seconds the lines of a paste have to arrive after its `/paste` line. A
#: client sends them in one go, so only a stuck or confused one is slower; its
#: half paste is discarded rather than held, and its next lines are lines.
PASTE_TIMEOUT: Final = 10.0
#: Bytes a server line adds to one line of a paste, at most: `HIST MORE `, the
#: time stamp, the room and the sender (32 and 24 characters of up to 4
#: bytes), the spaces and brackets, CRLF. A paste must fit a reader's outbox.
PASTE_LINE_OVERHEAD: Final = 262

#: IRC (`trio_chat.wire.irc`): the longest line either side sends, CRLF
#: included and message tags excluded. Fixed by the protocol (RFC 1459,
#: 2.3): clients split their messages to fit it, and a longer line is
#: answered with 417 and discarded.
IRC_MAX_LINE_BYTES: Final = 512
#: The most bytes of message tags before an IRC line (`@` and the space
#: after them included): 8191, as IRCv3 message-tags allows; a line is
#: never buffered past this and `IRC_MAX_LINE_BYTES` together.
IRC_MAX_TAGS_BYTES: Final = 8191
#: Targets one PRIVMSG or NOTICE may name (TARGMAX), and channels one JOIN
#: or PART: an IRC client's `/msg a,b` or autojoin list, not a way to
#: multiply one line into hundreds of requests.
IRC_MAX_TARGETS: Final = 4
IRC_MAX_JOIN_TARGETS: Final = 10
#: Mode changes taken from one MODE line (MODES): `+ok key bob` and the like.
IRC_MAX_MODES: Final = 4
#: Names one ISON asks about, and one USERHOST (RFC 2812 says five).
IRC_MAX_ISON_NAMES: Final = 64
IRC_MAX_USERHOST_NAMES: Final = 5
#: Bytes of a SASL PLAIN response, base64 as received (400-byte chunks): a
#: 24-character name twice and a 256-character password, each of up to 4
#: bytes, encoded, fit; anything longer is refused (905).
IRC_MAX_SASL_BYTES: Final = 2400
#: Lines of 319 (the channels) in a WHOIS reply; more channels are counted.
IRC_WHOIS_CHANNEL_LINES: Final = 4
#: Seconds an IRC client may send nothing before the server sends it a
#: PING; and seconds it then has to answer before it is dropped (`ping
#: timeout`). IRC clients answer pings on their own (people on `nc` cannot,
#: which is why the line protocol relies on TCP keepalive instead), and
#: this finds a dead one within three minutes, as ngircd and ergo do.
IRC_PING_INTERVAL: Final = 120.0
IRC_PING_TIMEOUT: Final = 60.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The limits a server enforces; every field defaults to its constant.

    For the counts and timeouts marked "0 = off" in `LIMIT_OPTIONS`, zero
    switches that protection off.
    """

    max_line_bytes: int = MAX_LINE_BYTES
    max_unterminated_bytes: int = MAX_UNTERMINATED_BYTES
    outbox_max_messages: int = OUTBOX_MAX_MESSAGES
    outbox_max_bytes: int = OUTBOX_MAX_BYTES
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT
    name_timeout: float = NAME_TIMEOUT
    max_name_attempts: int = MAX_NAME_ATTEMPTS
    write_timeout: float = WRITE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    irc_ping_interval: float = IRC_PING_INTERVAL
    irc_ping_timeout: float = IRC_PING_TIMEOUT
    shutdown_grace: float = SHUTDOWN_GRACE
    max_connections: int = MAX_CONNECTIONS
    max_per_address: int = MAX_PER_ADDRESS
    max_new_per_minute: int = MAX_NEW_PER_MINUTE
    max_unregistered: int = MAX_UNREGISTERED
    max_unregistered_per_address: int = MAX_UNREGISTERED_PER_ADDRESS
    flood_burst: int = FLOOD_BURST
    flood_rate: float = FLOOD_RATE
    flood_max_backlog: int = FLOOD_MAX_BACKLOG
    flood_max_delay: float = FLOOD_MAX_DELAY
    max_paste_lines: int = MAX_PASTE_LINES
    max_paste_bytes: int = MAX_PASTE_BYTES
    paste_timeout: float = PASTE_TIMEOUT
    max_rooms: int = MAX_ROOMS
    max_rooms_per_user: int = MAX_ROOMS_PER_USER
    max_rooms_per_address: int = MAX_ROOMS_PER_ADDRESS
    max_topic_length: int = MAX_TOPIC_LENGTH
    history_lines: int = HISTORY_LINES
    history_rows: int = HISTORY_ROWS
    history_days: float = HISTORY_DAYS
    max_db_mb: int = MAX_DB_MB
    max_registrations_per_address: int = MAX_REGISTRATIONS_PER_ADDRESS

    def __post_init__(self) -> None:
        if self.outbox_max_messages < MIN_OUTBOX_MESSAGES:
            raise ValueError(
                f"the outbox must hold at least {MIN_OUTBOX_MESSAGES} messages"
            )
        if self.outbox_max_bytes < MIN_OUTBOX_BYTES:
            raise ValueError(f"the outbox must hold at least {MIN_OUTBOX_BYTES} bytes")
        if self.max_line_bytes < 1:
            raise ValueError("the line limit must be at least 1 byte")
        for option in LIMIT_OPTIONS:
            if getattr(self, option.field) < 0:
                raise ValueError(f"{option.flag} cannot be negative")
        if self.flood_rate > 0 and self.flood_burst < 1:
            raise ValueError("--flood-burst must be at least 1 when --flood-rate is on")
        if self.pastes and (
            self.max_paste_bytes + self.max_paste_lines * PASTE_LINE_OVERHEAD
            > self.outbox_max_bytes
        ):
            raise ValueError(
                "a multi-line message must fit in a reader's outbox: lower"
                " --max-paste-bytes or --max-paste-lines, or raise --outbox-bytes"
            )

    @property
    def pastes(self) -> bool:
        """Whether multi-line messages (`/paste`) are on."""
        return self.max_paste_lines > 0 and self.max_paste_bytes > 0

    def switched_off(self) -> list[str]:
        """The flags of the protections on by default that are switched off."""
        defaults = Limits()
        return [
            option.flag
            for option in LIMIT_OPTIONS
            if option.zero_is_off
            and not getattr(self, option.field)
            and getattr(defaults, option.field)
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class LimitOption:
    """One limit as the command line offers it."""

    flag: str
    field: str
    kind: type[int] | type[float]
    help: str
    zero_is_off: bool = True

    @property
    def metavar(self) -> str:
        """What the value is, for --help."""
        if self.kind is int:
            return "N"
        if self.field == "history_days":
            return "DAYS"
        return "PER_SECOND" if self.field == "flood_rate" else "SECONDS"


LIMIT_OPTIONS: Final = (
    LimitOption(
        "--max-line-bytes",
        "max_line_bytes",
        int,
        "longest line a client may send, in bytes (line ending excluded)",
        zero_is_off=False,
    ),
    LimitOption(
        "--max-unterminated-bytes",
        "max_unterminated_bytes",
        int,
        "bytes without a newline before a client is dropped (0 = off)",
    ),
    LimitOption(
        "--outbox-messages",
        "outbox_max_messages",
        int,
        f"messages queued for one client before it is dropped as too slow"
        f" (at least {MIN_OUTBOX_MESSAGES})",
        zero_is_off=False,
    ),
    LimitOption(
        "--outbox-bytes",
        "outbox_max_bytes",
        int,
        f"bytes queued for one client before it is dropped as too slow"
        f" (at least {MIN_OUTBOX_BYTES})",
        zero_is_off=False,
    ),
    LimitOption(
        "--handshake-timeout",
        "tls_handshake_timeout",
        float,
        "seconds a TLS handshake may take (0 = off)",
    ),
    LimitOption(
        "--name-timeout",
        "name_timeout",
        float,
        "seconds a new connection has to choose a name (0 = off)",
    ),
    LimitOption(
        "--max-name-attempts",
        "max_name_attempts",
        int,
        "lines a connection may send before it has a name (0 = off)",
    ),
    LimitOption(
        "--write-timeout",
        "write_timeout",
        float,
        "seconds one write to a client may take before it is dropped (0 = off)",
    ),
    LimitOption(
        "--idle-timeout",
        "idle_timeout",
        float,
        "seconds of silence before a user is disconnected (0 = off, the default)",
    ),
    LimitOption(
        "--irc-ping-interval",
        "irc_ping_interval",
        float,
        "seconds an IRC client may be silent before it is sent a PING (0 = off)",
    ),
    LimitOption(
        "--irc-ping-timeout",
        "irc_ping_timeout",
        float,
        "seconds an IRC client has to answer a PING before it is dropped",
        zero_is_off=False,
    ),
    LimitOption(
        "--shutdown-grace",
        "shutdown_grace",
        float,
        "seconds clients get to receive the shutdown notice",
        zero_is_off=False,
    ),
    LimitOption(
        "--max-connections",
        "max_connections",
        int,
        "connections open at once, in all (0 = off)",
    ),
    LimitOption(
        "--max-per-address",
        "max_per_address",
        int,
        "connections open at once from one IP address (0 = off)",
    ),
    LimitOption(
        "--max-new-per-minute",
        "max_new_per_minute",
        int,
        "new connections per minute from one IP address (0 = off)",
    ),
    LimitOption(
        "--max-unregistered",
        "max_unregistered",
        int,
        "connections still choosing a name, in all (0 = off)",
    ),
    LimitOption(
        "--max-unregistered-per-address",
        "max_unregistered_per_address",
        int,
        "connections still choosing a name, per IP address (0 = off)",
    ),
    LimitOption(
        "--flood-burst",
        "flood_burst",
        int,
        "lines a user may send at once before being slowed down",
        zero_is_off=False,
    ),
    LimitOption(
        "--flood-rate",
        "flood_rate",
        float,
        "lines per second a user may send after the burst (0 = off)",
    ),
    LimitOption(
        "--flood-backlog",
        "flood_max_backlog",
        int,
        "delayed lines before a flooding user is dropped (0 = off)",
    ),
    LimitOption("--max-rooms", "max_rooms", int, "rooms on the server (0 = off)"),
    LimitOption(
        "--max-rooms-per-user",
        "max_rooms_per_user",
        int,
        "rooms one user may be in at once (0 = off)",
    ),
    LimitOption(
        "--max-rooms-per-address",
        "max_rooms_per_address",
        int,
        "rooms created from one IP address that may exist at once (0 = off)",
    ),
    LimitOption(
        "--max-topic-length",
        "max_topic_length",
        int,
        "longest room topic, in characters",
        zero_is_off=False,
    ),
    LimitOption(
        "--history",
        "history_lines",
        int,
        "lines of a room's history replayed on joining it (0 = none)",
        zero_is_off=False,
    ),
    LimitOption(
        "--history-rows",
        "history_rows",
        int,
        "lines of history the store keeps per room (0 = all)",
    ),
    LimitOption(
        "--history-days",
        "history_days",
        float,
        "days of history the store keeps (0 = for ever)",
    ),
    LimitOption(
        "--max-db-mb",
        "max_db_mb",
        int,
        "megabytes the database may use; the oldest history goes first (0 = off)",
    ),
    LimitOption(
        "--max-registrations-per-address",
        "max_registrations_per_address",
        int,
        "names registered from one IP address per day (0 = off)",
    ),
    LimitOption(
        "--flood-delay",
        "flood_max_delay",
        float,
        "seconds a delayed line may wait before the user is dropped (0 = off)",
    ),
    LimitOption(
        "--max-paste-lines",
        "max_paste_lines",
        int,
        "lines in one multi-line message, /paste (0 = no multi-line messages)",
        zero_is_off=False,
    ),
    LimitOption(
        "--max-paste-bytes",
        "max_paste_bytes",
        int,
        "bytes of text in one multi-line message (0 = no multi-line messages)",
        zero_is_off=False,
    ),
    LimitOption(
        "--paste-timeout",
        "paste_timeout",
        float,
        "seconds the lines of a multi-line message have to arrive (0 = off)",
    ),
)
