"""The chat's memory: room history, and next accounts and bans, in SQLite.

Two layers, like the protocol and its adapters:

* `Store` is the synchronous core. It owns one `sqlite3` connection, runs
  the schema migrations when it opens, and turns chat events into rows and
  back. Its methods are plain `def`; use it from one thread only (tests,
  admin tools, and the database thread below).
* `AsyncStore` is the trio adapter. One dedicated database thread owns a
  `Store` (SQLite connections must stay on their thread); trio tasks hand it
  requests through a bounded queue and wait, without blocking the event
  loop, for the answer to come back through `run_sync_soon`.

Writes are *group-committed*: the database thread takes every write waiting
in its queue, runs them in one transaction, commits once and only then wakes
their callers. So `await store.append(...)` returns after the row is
committed, and a caller that fans the event out afterwards knows that
anything anyone saw survives a crash of the process.

Durability: the database runs in WAL mode with `synchronous=NORMAL`. A
commit then writes its WAL frames to the operating system before it returns,
without an fsync; SQLite's documentation: "Transactions are durable across
application crashes regardless of the synchronous setting or journal mode",
and in WAL mode "a transaction committed ... with synchronous=NORMAL might
roll back following a power loss or system crash" (pragma.html#pragma_
synchronous). A killed or crashing server loses nothing committed (a test
kills a writer with SIGKILL to prove it); only an OS crash or power cut can
lose the last commits, never corrupt the file. FULL would add an fsync per
commit to cover power loss, which chat history does not need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Sequence,
)
from typing import (
    IO,
    Any,
    Concatenate,
    Final,
    Generic,
    ParamSpec,
    TypeAlias,
    TypeVar,
    cast,
    get_args,
    overload,
)

import trio

if sys.platform != "win32":
    import fcntl

from trio_chat import events as ev
from trio_chat.limits import (
    MAX_HISTORY_FETCH,
    MAX_SAVED_TOPICS,
    MAX_TOPICS_PER_ADDRESS,
    STORE_CLOSE_TIMEOUT,
)
from trio_chat.moderation import BanKind, BanRecord
from trio_chat.roomstate import MUTE, MUTE_NAME

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

#: Retention defaults for `prune`: rows kept per room (a busy room's last
#: few days) ...
MAX_ROWS_PER_ROOM: Final = 10_000
#: ... and the age in seconds past which rows go (30 days): history is for
#: catching up on a conversation, not an archive.
MAX_AGE: Final = 30 * 24 * 3600.0
#: Requests (reads and writes) handed to the database thread and not yet
#: answered. Past it callers wait for room instead of memory growing: a
#: stalled disk pushes back on the chat rather than buffering without limit.
#: It also caps how many writes one group commit holds.
MAX_PENDING_REQUESTS: Final = 1024
#: Seconds a statement waits for a lock held by another process (a backup,
#: an admin tool) before it fails with "database is locked".
BUSY_TIMEOUT: Final = 5.0
#: Oldest rows `shrink` deletes per step when the database is over its size
#: cap: small steps keep each transaction (and the pause it costs) short.
SHRINK_BATCH: Final = 1000

#: The tables and indexes that hold history (`Store.usage`).
_HISTORY_BTREES: Final = (
    "messages",
    "messages_by_room",
    "private",
    "private_by_sender",
    "private_by_recipient",
)
#: The events kept as room history.
RoomEvent: TypeAlias = (
    ev.Message | ev.Action | ev.Joined | ev.Left | ev.Kicked | ev.Renamed
)
#: The `kind` column of each of them.
_KIND_MESSAGE: Final = "msg"
_KIND_ACTION: Final = "action"
_KIND_JOIN: Final = "join"
_KIND_LEAVE: Final = "leave"
_KIND_NICK: Final = "nick"
_KIND_KICK: Final = "kick"  # sender: who was kicked; extra: the op
_ROOM_KINDS: Final = (
    _KIND_MESSAGE,
    _KIND_ACTION,
    _KIND_JOIN,
    _KIND_LEAVE,
    _KIND_NICK,
    _KIND_KICK,
)
_LEAVE_HOWS: Final[tuple[ev.LeaveHow, ...]] = get_args(ev.LeaveHow)

_BAN_KINDS: Final[tuple[BanKind, ...]] = ("name", "address")

#: Larger than any row id SQLite hands out: "before the end".
_AFTER_LAST_ID: Final = 2**63 - 1

#: Forward migrations: MIGRATIONS[n] takes a database from schema version n
#: to n + 1 (PRAGMA user_version; 0 is a new, empty file). Append new steps,
#: never edit old ones: files in the field were made by them.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: room history. AUTOINCREMENT because ids are cursors (`before_id`,
    # later "since the last one you saw") and must never be reused, even
    # after a prune empties a room.
    (
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_key TEXT NOT NULL,
            room TEXT NOT NULL,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            sender TEXT NOT NULL,
            text TEXT,
            extra TEXT
        )
        """,
        "CREATE INDEX messages_by_room ON messages (room_key, id)",
    ),
    # 2: accounts and bans, and private messages for those who opt in.
    (
        """
        CREATE TABLE users (
            name_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            password_hash BLOB NOT NULL,
            salt BLOB NOT NULL,
            kdf TEXT NOT NULL,
            created REAL NOT NULL,
            last_seen REAL NOT NULL
        )
        """,
        """
        CREATE TABLE bans (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            target_key TEXT NOT NULL,
            reason TEXT NOT NULL,
            set_by TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL
        )
        """,
        "CREATE INDEX bans_by_target ON bans (kind, target_key)",
        """
        CREATE TABLE private (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            sender_key TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient_key TEXT NOT NULL,
            recipient TEXT NOT NULL,
            text TEXT NOT NULL
        )
        """,
        "CREATE INDEX private_by_sender ON private (sender_key, id)",
        "CREATE INDEX private_by_recipient ON private (recipient_key, id)",
    ),
    # 3: what server operators and users set that must outlive a restart:
    # settings (the message of the day), room topics, the names registered
    # users ignore, and TLS client certificates bound to accounts.
    (
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """
        CREATE TABLE topics (
            room_key TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            topic TEXT NOT NULL,
            setter TEXT NOT NULL,
            ts REAL NOT NULL
        )
        """,
        """
        CREATE TABLE ignores (
            owner_key TEXT NOT NULL,
            target_key TEXT NOT NULL,
            PRIMARY KEY (owner_key, target_key)
        )
        """,
        """
        CREATE TABLE certs (
            fingerprint TEXT PRIMARY KEY,
            name_key TEXT NOT NULL,
            created REAL NOT NULL
        )
        """,
    ),
    # 4: where registrations came from, for the daily limit per address
    # across restarts (kept a day, then pruned).
    (
        "CREATE TABLE registrations (address TEXT NOT NULL, ts REAL NOT NULL)",
        "CREATE INDEX registrations_by_ts ON registrations (ts)",
    ),
    # 5: the settings of open rooms (key, lecture, ops and mutes held by
    # accounts or names), so that a restart, even a crash, keeps them.
    (
        """
        CREATE TABLE room_settings (
            room_key TEXT NOT NULL,
            setting TEXT NOT NULL,
            target TEXT NOT NULL,
            value TEXT NOT NULL,
            room TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            PRIMARY KEY (room_key, setting, target)
        )
        """,
    ),
    # 6: the address each topic was set from, for the limit per address.
    ("ALTER TABLE topics ADD COLUMN set_from TEXT",),
)
#: The schema version this code reads and writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)


class StoreError(Exception):
    """The history database failed: cannot open, read or write it.

    The message is one line naming what failed and SQLite's reason.
    """


class DatabaseInUse(StoreError):
    """Another process (a running server, `adduser`) holds the database.

    `pid` is that process's id when its lock file names one.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        holder = "another process" if pid is None else f"trio-chat process {pid}"
        super().__init__(
            f"history database {path} is in use by {holder}: stop it first,"
            " or use another file"
        )
        self.path = path
        self.pid = pid


def _lock(path: str) -> IO[str] | None:
    """Hold `PATH.lock` exclusively, with this process's id in it.

    Two servers on one file would each trust their own memory of accounts,
    bans and rooms; the second is refused instead (DatabaseInUse, naming
    the holder). The lock is the kernel's (flock): it goes with the process,
    even one killed with SIGKILL, so a stale file never keeps anyone out.
    A lock file beside the database, rather than a lock on it, leaves
    SQLite's own locks alone (backups with the sqlite3 tool still work).
    None where flock does not exist (Windows) or for ":memory:".
    """
    if path == ":memory:" or sys.platform == "win32":
        return None
    lock_path = path + ".lock"
    try:
        file = open(lock_path, "a+", encoding="ascii")  # noqa: SIM115 - kept open
    except OSError as exc:
        raise StoreError(
            f"cannot open history database {path}: cannot create {lock_path}:"
            f" {exc.strerror or exc}"
        ) from None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read(32).strip()
        file.close()
        raise DatabaseInUse(path, int(holder) if holder.isdigit() else None) from None
    except OSError as exc:  # a file system without locks: go without
        log.warning("%s cannot be locked (%s)", lock_path, exc.strerror or exc)
        return file
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A registered account. `kdf` names the key derivation and its settings."""

    name_key: str
    name: str
    password_hash: bytes
    salt: bytes
    kdf: str
    created: float
    last_seen: float


class DatabaseDamaged(StoreError):
    """The database file is corrupt: damaged pages, or text that is not UTF-8.

    The message names the file and says what to do about it.
    """


@contextlib.contextmanager
def _translate(action: str, path: str | None = None) -> Iterator[None]:
    """Turn SQLite's errors into a one-line StoreError about `action`.

    With the database's `path`, an error that says the file is corrupt
    becomes a DatabaseDamaged naming it.
    """
    try:
        yield
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        raise _store_error(action, exc, path) from exc


def _store_error(
    action: str, exc: sqlite3.Error | UnicodeDecodeError, path: str | None
) -> StoreError:
    damage = _damage(exc)
    if damage is not None and path is not None:
        return _damaged(path, damage)
    return StoreError(f"{action}: {_one_line(exc)}")


def _damaged(path: str, damage: str) -> DatabaseDamaged:
    return DatabaseDamaged(
        f"history database {path} is damaged ({damage}); restore it from a"
        " backup, or move it away to start with an empty one"
    )


def _damage(exc: BaseException) -> str | None:
    """What is wrong, if `exc` says the database file is corrupt; else None."""
    if isinstance(exc, UnicodeDecodeError):
        return "text that is not UTF-8"
    if not isinstance(exc, sqlite3.Error):
        return None
    if "Could not decode to UTF-8" in str(exc):
        # The message quotes the undecodable bytes: keep them off terminals.
        return "text that is not UTF-8"
    name = getattr(exc, "sqlite_errorname", None) or ""
    return _one_line(exc) if name.startswith("SQLITE_CORRUPT") else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_limit(limit: int, before_id: int | None) -> int:
    if limit < 0:
        raise ValueError("the history limit cannot be negative")
    if before_id is not None and before_id < 1:
        raise ValueError("before_id must be a row id (1 or more)")
    return min(limit, MAX_HISTORY_FETCH)


def _check_prune(max_rows_per_room: int | None, max_age: float | None) -> None:
    if max_rows_per_room is not None and max_rows_per_room < 0:
        raise ValueError("max_rows_per_room cannot be negative")
    if max_age is not None and max_age < 0:
        raise ValueError("max_age cannot be negative")


def _check_ban_kind(kind: str) -> BanKind:
    for known in _BAN_KINDS:
        if kind == known:
            return known
    raise ValueError(f"a ban is on a 'name' or an 'address', not {kind!r}")


#: Rows one INSERT statement carries (`Store.append_many`), 7 parameters
#: each: well under SQLite's limit of 999 parameters a statement.
_ROWS_PER_INSERT: Final = 64
_INSERT_MESSAGES: Final = (
    "INSERT INTO messages (room_key, room, ts, kind, sender, text, extra) VALUES "
)
_MESSAGE_VALUES: Final = "(?, ?, ?, ?, ?, ?, ?)"


def _encode(event: RoomEvent) -> tuple[str, str, str | None, str | None]:
    """The (kind, sender, text, extra) columns of a room event."""
    if isinstance(event, ev.Message):
        return _KIND_MESSAGE, event.sender, event.text, None
    if isinstance(event, ev.Action):
        return _KIND_ACTION, event.sender, event.text, None
    if isinstance(event, ev.Joined):
        return _KIND_JOIN, event.name, None, None
    if isinstance(event, ev.Left):
        return _KIND_LEAVE, event.name, event.reason, event.how
    if isinstance(event, ev.Renamed):
        return _KIND_NICK, event.old, event.new, None
    if isinstance(event, ev.Kicked):
        return _KIND_KICK, event.name, event.reason, event.by
    # Private messages and everything else are not room history.
    raise TypeError(f"not a room event: {type(event).__name__}")


def _decode(row: tuple[Any, ...]) -> tuple[int, RoomEvent]:
    """A `messages` row (id, room, ts, kind, sender, text, extra) as an event."""
    row_id, room, ts, kind, sender, text, extra = row
    event: RoomEvent
    if kind == _KIND_MESSAGE:
        event = ev.Message(ts=ts, room=room, sender=sender, text=text or "")
    elif kind == _KIND_ACTION:
        event = ev.Action(ts=ts, room=room, sender=sender, text=text or "")
    elif kind == _KIND_JOIN:
        event = ev.Joined(ts=ts, room=room, name=sender)
    elif kind == _KIND_LEAVE:
        how = next((h for h in _LEAVE_HOWS if h == extra), None)
        if how is None:
            raise StoreError(f"history row {row_id} has an unknown way to leave")
        event = ev.Left(ts=ts, room=room, name=sender, how=how, reason=text or "")
    elif kind == _KIND_NICK:
        event = ev.Renamed(ts=ts, room=room, old=sender, new=text or "")
    elif kind == _KIND_KICK:
        event = ev.Kicked(ts, room, sender, extra or "", text or "")
    else:  # pragma: no cover - the queries select room kinds only
        raise StoreError(f"history row {row_id} has an unknown kind {kind!r}")
    return row_id, event


def _ban(row: tuple[Any, ...]) -> BanRecord:
    _row_id, kind, target_key, reason, set_by, created, expires = row
    return BanRecord(
        _check_ban_kind(kind), target_key, reason, set_by, created, expires
    )


_BAN_COLUMNS: Final = "id, kind, target_key, reason, set_by, created, expires"
_USER_COLUMNS: Final = "name_key, name, password_hash, salt, kdf, created, last_seen"
_ROOM_KIND_LIST: Final = ", ".join(f"'{kind}'" for kind in _ROOM_KINDS)


class Store:
    """The history database, synchronously. Use it from one thread only.

    Opening creates the file if needed, switches it to WAL mode and runs the
    migrations up to SCHEMA_VERSION. Every failure raises StoreError (a
    path that cannot be opened, a file that is not a database, a database
    from a newer trio-chat); a corrupt file, found by SQLite's quick check
    at opening or by any later call, raises DatabaseDamaged, which names the
    file. Invalid arguments raise ValueError or TypeError.

    `exclusive` (the default) holds the file's lock until `close`: opening
    a file another process holds raises DatabaseInUse.

    Each write method commits on its own, unless called inside
    `transaction()`, which commits once for all of them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        exclusive: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        #: Transactions committed through this object (group commits count once).
        self.commits = 0
        self._lock: IO[str] | None = None
        with self._translate(f"cannot open history database {self.path}"):
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None
            )
        try:
            with self._translate(f"cannot open history database {self.path}"):
                # See the module docstring for why NORMAL is durable enough.
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                # Locked once SQLite has found the path usable, and before
                # anything reads or migrates what another process may hold.
                self._lock = _lock(self.path) if exclusive else None
                _check(conn, self.path)
                _migrate(conn, self.path)
        except BaseException:
            conn.close()
            if self._lock is not None:
                self._lock.close()
            raise
        self._conn = conn

    def _translate(self, action: str) -> contextlib.AbstractContextManager[None]:
        return _translate(action, self.path)

    def close(self) -> None:
        """Close the connection (WAL content is checkpointed), then the lock."""
        try:
            with self._translate(f"cannot close history database {self.path}"):
                self._conn.close()
        finally:
            if self._lock is not None:
                self._lock.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version (SCHEMA_VERSION once open)."""
        with self._translate("cannot read the schema version"):
            version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    @property
    def in_transaction(self) -> bool:
        """True inside `transaction()` (and until SQLite abandons one)."""
        return self._conn.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block as one write transaction, committed once at its end.

        If the block raises, everything it wrote is rolled back. Raises
        StoreError if the transaction cannot begin or commit, or if SQLite
        abandoned it (disk full, I/O error): then nothing was committed.
        """
        if self._conn.in_transaction:
            raise RuntimeError("history transactions do not nest")
        with self._translate("cannot begin a history transaction"):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            if not self._conn.in_transaction:
                raise StoreError("the history transaction was rolled back by SQLite")
            with self._translate("cannot commit to the history"):
                self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.commits += 1

    def commit_group(
        self, writes: Sequence[Callable[[Store], T]]
    ) -> list[T | Exception]:
        """Run `writes` in one transaction, commit once: a group commit.

        Return, in order, each write's result or the exception it raised.
        Every Store write is atomic on its own, so one that fails is undone
        alone and the others still commit. If the transaction cannot begin
        or commit, or SQLite abandons it midway (disk full, I/O error),
        nothing is committed and every entry is that StoreError.
        """
        outcomes: list[T | Exception] = []
        try:
            with self.transaction():
                for write in writes:
                    try:
                        outcomes.append(write(self))
                    except Exception as exc:
                        outcomes.append(exc)
                        if not self._conn.in_transaction:
                            raise StoreError(
                                f"history writes rolled back: {_one_line(exc)}"
                            ) from exc
        except StoreError as exc:
            return [exc] * len(writes)
        return outcomes

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            # The original error matters more than a failed rollback, and
            # SQLite rolls back an open transaction when the file reopens.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _execute_write(
        self, action: str, sql: str, parameters: tuple[object, ...]
    ) -> sqlite3.Cursor:
        """Run one writing statement: committed at once outside `transaction()`.

        A single statement is atomic in SQLite, so inside a group commit a
        failing one leaves the others' writes alone without a savepoint
        (the hot path: appends).
        """
        try:
            if self._conn.in_transaction:
                return self._conn.execute(sql, parameters)
            with self.transaction():
                return self._conn.execute(sql, parameters)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise _store_error(action, exc, self.path) from exc

    @contextlib.contextmanager
    def _write_many(self, action: str) -> Iterator[None]:
        """Make the block's statements one atomic write.

        Inside `transaction()` a savepoint undoes just this block if it
        fails; outside, the block gets a transaction of its own.
        """
        with self._translate(action):
            if not self._conn.in_transaction:
                with self.transaction():
                    yield
                return
            self._conn.execute("SAVEPOINT write_many")
            try:
                yield
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK TO write_many")
                    self._conn.execute("RELEASE write_many")
                raise
            self._conn.execute("RELEASE write_many")

    # ---------------------------------------------------------------- history

    def append(self, room_key: str, event: RoomEvent) -> int:
        """Store a room event under `room_key`; return its row id.

        Row ids grow with every append and are never reused. Raises TypeError
        for anything but a room event (Message, Action, Joined, Left,
        Renamed, Kicked), StoreError if SQLite fails.
        """
        kind, sender, text, extra = _encode(event)
        cursor = self._execute_write(
            "cannot append to the history",
            "INSERT INTO messages (room_key, room, ts, kind, sender, text, extra)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (room_key, event.room, event.ts, kind, sender, text, extra),
        )
        return cast(int, cursor.lastrowid)

    def append_many(self, rows: list[tuple[str, RoomEvent]]) -> list[int]:
        """`append` each (room key, event) in order, in one transaction.

        Returns their row ids, consecutive. Raises as `append` does (and
        stores none).
        """
        encoded = []
        for room_key, event in rows:
            kind, sender, text, extra = _encode(event)  # TypeError first
            encoded.append((room_key, event.room, event.ts, kind, sender, text, extra))
        if not encoded:
            return []
        # Few statements for many rows (the hot path: a group commit's chat
        # lines), under a savepoint so a failure stores none of them. Each
        # statement is a trip into SQLite, which lets go of the GIL and must
        # take it back from the event loop: one per row cost more than the
        # insert. With AUTOINCREMENT and one writer, ids are consecutive.
        with self._write_many("cannot append to the history"):
            for start in range(0, len(encoded), _ROWS_PER_INSERT):
                part = encoded[start : start + _ROWS_PER_INSERT]
                self._conn.execute(
                    _INSERT_MESSAGES + ", ".join([_MESSAGE_VALUES] * len(part)),
                    [value for row in part for value in row],
                )
            last = int(self._conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        return list(range(last - len(encoded) + 1, last + 1))

    def history(
        self, room_key: str, limit: int, before_id: int | None = None
    ) -> list[tuple[int, RoomEvent]]:
        """The last `limit` room events before row `before_id`, oldest first.

        Events carry their original timestamps. `limit` is capped at
        MAX_HISTORY_FETCH; page back by passing the first id returned as the
        next `before_id`. Raises ValueError for a negative limit.
        """
        limit = _check_limit(limit, before_id)
        with self._translate("cannot read the history"):
            rows = self._conn.execute(
                "SELECT id, room, ts, kind, sender, text, extra FROM messages"
                f" WHERE room_key = ? AND id < ? AND kind IN ({_ROOM_KIND_LIST})"
                " ORDER BY id DESC LIMIT ?",
                (room_key, before_id or _AFTER_LAST_ID, limit),
            ).fetchall()
        return [_decode(row) for row in reversed(rows)]

    def recent_rooms(self, limit: int) -> list[str]:
        """Keys of the `limit` rooms with the newest history, newest first."""
        with self._translate("cannot list the rooms"):
            rows = self._conn.execute(
                "SELECT room_key FROM messages GROUP BY room_key"
                " ORDER BY MAX(id) DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def prune(
        self,
        *,
        max_rows_per_room: int | None = MAX_ROWS_PER_ROOM,
        max_age: float | None = MAX_AGE,
        now: float,
    ) -> int:
        """Delete history beyond the retention limits; return rows deleted.

        Rows older than `now - max_age` go (room history and private
        messages), then each room keeps its newest `max_rows_per_room`. None
        switches a limit off. The age test scans the table: prune runs now
        and then (hourly, say), while an index on ts would cost every append.
        """
        _check_prune(max_rows_per_room, max_age)
        deleted = 0
        with self._write_many("cannot prune the history"):
            if max_age is not None:
                for table in ("messages", "private"):
                    cursor = self._conn.execute(
                        f"DELETE FROM {table} WHERE ts < ?", (now - max_age,)
                    )
                    deleted += cursor.rowcount
            if max_rows_per_room is not None:
                rooms = self._conn.execute(
                    "SELECT DISTINCT room_key FROM messages"
                ).fetchall()
                for (room_key,) in rooms:
                    # Everything below the room's Nth newest id goes: one
                    # index walk to find it, one range delete.
                    oldest_kept = self._conn.execute(
                        "SELECT id FROM messages WHERE room_key = ?"
                        " ORDER BY id DESC LIMIT 1 OFFSET ?",
                        (room_key, max(max_rows_per_room - 1, 0)),
                    ).fetchone()
                    if oldest_kept is None:
                        continue
                    bound = oldest_kept[0] + (1 if max_rows_per_room == 0 else 0)
                    cursor = self._conn.execute(
                        "DELETE FROM messages WHERE room_key = ? AND id < ?",
                        (room_key, bound),
                    )
                    deleted += cursor.rowcount
        return deleted

    # ------------------------------------------------------------------ users

    def add_user(self, user: User, *, registered_from: str | None = None) -> bool:
        """Register `user`; False (and no change) if its name_key is taken.

        With `registered_from`, that address and `user.created` are kept
        too, in the same transaction (`registrations`).
        """
        with self._write_many("cannot add a user"):
            cursor = self._conn.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name_key) DO NOTHING",
                dataclasses.astuple(user),
            )
            added = cursor.rowcount == 1
            if added and registered_from is not None:
                self._conn.execute(
                    "INSERT INTO registrations (address, ts) VALUES (?, ?)",
                    (registered_from, user.created),
                )
        return added

    def registrations(self, since: float) -> list[tuple[str, float]]:
        """(address, time) of the registrations since `since`, oldest first."""
        with self._translate("cannot read the registrations"):
            rows = self._conn.execute(
                "SELECT address, ts FROM registrations WHERE ts >= ? ORDER BY ts",
                (since,),
            ).fetchall()
        return [(str(address), float(ts)) for address, ts in rows]

    def forget_registrations(self, before: float) -> int:
        """Delete the registrations made before `before`; return how many."""
        cursor = self._execute_write(
            "cannot prune the registrations",
            "DELETE FROM registrations WHERE ts < ?",
            (before,),
        )
        return cursor.rowcount

    def user_keys(self) -> list[str]:
        """The name keys of every registered account."""
        with self._translate("cannot list the users"):
            rows = self._conn.execute("SELECT name_key FROM users").fetchall()
        return [str(row[0]) for row in rows]

    def user_names(self) -> list[str]:
        """The name of every registered account, as it was registered."""
        with _translate("cannot list the users"):
            rows = self._conn.execute("SELECT name FROM users").fetchall()
        return [str(row[0]) for row in rows]

    def get_user(self, name_key: str) -> User | None:
        """The account registered under `name_key`, if any."""
        with self._translate("cannot read a user"):
            row = self._conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE name_key = ?", (name_key,)
            ).fetchone()
        return None if row is None else User(*row)

    # ------------------------------------------------------------------- bans

    def add_ban(
        self,
        kind: BanKind,
        target_key: str,
        *,
        reason: str,
        set_by: str,
        created: float,
        expires: float | None = None,
    ) -> BanRecord:
        """Ban a name key or an address (kept); return the ban."""
        kind = _check_ban_kind(kind)
        self._execute_write(
            "cannot add a ban",
            "INSERT INTO bans (kind, target_key, reason, set_by, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, target_key, reason, set_by, created, expires),
        )
        return BanRecord(kind, target_key, reason, set_by, created, expires)

    def list_active_bans(self, now: float) -> list[BanRecord]:
        """Bans in force at `now` (no expiry, or expiring later), oldest first."""
        with self._translate("cannot read the bans"):
            rows = self._conn.execute(
                f"SELECT {_BAN_COLUMNS} FROM bans"
                " WHERE expires IS NULL OR expires > ? ORDER BY id",
                (now,),
            ).fetchall()
        return [_ban(row) for row in rows]

    def delete_bans(self, kind: BanKind, target_key: str) -> int:
        """Lift every ban on this name key or address; return how many."""
        kind = _check_ban_kind(kind)
        cursor = self._execute_write(
            "cannot delete a ban",
            "DELETE FROM bans WHERE kind = ? AND target_key = ?",
            (kind, target_key),
        )
        return cursor.rowcount

    # --------------------------------------- settings, topics, ignores, certs

    def get_setting(self, key: str) -> str | None:
        """The setting `key`, or None if it was never set (or was deleted)."""
        with self._translate("cannot read a setting"):
            row = self._conn.execute(
                "SELECT value FROM settings WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str | None) -> None:
        """Set `key` to `value`; None deletes it."""
        if value is None:
            self._execute_write(
                "cannot delete a setting", "DELETE FROM settings WHERE key = ?", (key,)
            )
            return
        self._execute_write(
            "cannot save a setting",
            "INSERT INTO settings (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def topics(self, limit: int) -> list[tuple[str, str, str, float]]:
        """The `limit` newest topics, oldest first: (room key, topic, setter, ts)."""
        with self._translate("cannot read the topics"):
            rows = self._conn.execute(
                "SELECT room_key, topic, setter, ts FROM topics"
                " ORDER BY ts DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(str(k), str(t), str(s), float(ts)) for k, t, s, ts in reversed(rows)]

    def set_topic(
        self,
        room_key: str,
        room: str,
        topic: str,
        setter: str,
        ts: float,
        *,
        set_from: str | None = None,
        keep: Collection[str] = (),
        per_address: int = MAX_TOPICS_PER_ADDRESS,
        most: int = MAX_SAVED_TOPICS,
    ) -> None:
        """Keep a room's topic, set from address `set_from`; empty forgets it.

        Topics outlive their rooms, so they are bounded: past `per_address`
        topics from `set_from`, or `most` in all, the oldest go, except
        those of the rooms in `keep` (the rooms open now) and this one.
        """
        with self._write_many("cannot save a topic"):
            if not topic:
                self._conn.execute("DELETE FROM topics WHERE room_key = ?", (room_key,))
                return
            # REPLACE, not an update: the row is new, and sorts as the newest.
            self._conn.execute(
                "INSERT OR REPLACE INTO topics"
                " (room_key, room, topic, setter, ts, set_from)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (room_key, room, topic, setter, ts, set_from),
            )
            kept = {room_key, *keep}
            if set_from is not None and per_address:
                self._evict_topics(
                    "WHERE set_from = ?", (set_from,), beyond=per_address, keep=kept
                )
            if most:
                self._evict_topics("", (), beyond=most, keep=kept)

    def _evict_topics(
        self,
        where: str,
        parameters: tuple[object, ...],
        *,
        beyond: int,
        keep: Collection[str],
    ) -> None:
        # The tables are small (bounded by these very limits): sort in SQL,
        # choose in Python.
        rows = self._conn.execute(
            f"SELECT room_key FROM topics {where} ORDER BY ts DESC, rowid DESC"
            " LIMIT -1 OFFSET ?",
            (*parameters, beyond),
        ).fetchall()
        for (key,) in rows:
            if key not in keep:
                self._conn.execute("DELETE FROM topics WHERE room_key = ?", (key,))

    def prune_rooms(self, before: float, keep: Collection[str] = ()) -> int:
        """Forget the topics and settings of rooms nobody has used since `before`,
        and mutes that ended before it in any room.

        A room is used while it is open (`keep`), and while it has history
        (prune its old history first, so that this means recent history).
        Returns the rows deleted.
        """
        deleted = 0
        with self._write_many("cannot prune the rooms"):
            for table in ("topics", "room_settings"):
                rows = self._conn.execute(
                    f"SELECT DISTINCT room_key FROM {table} t WHERE ts < ? AND NOT"
                    " EXISTS (SELECT 1 FROM messages m WHERE m.room_key = t.room_key)",
                    (before,),
                ).fetchall()
                for (key,) in rows:
                    if key in keep:
                        continue
                    cursor = self._conn.execute(
                        f"DELETE FROM {table} WHERE room_key = ? AND ts < ?",
                        (key, before),
                    )
                    deleted += cursor.rowcount
            # Mutes that ended before `before` go in every room, the open
            # ones too (the lobby is never closed): ended, they hold nothing.
            cursor = self._conn.execute(
                "DELETE FROM room_settings WHERE setting IN (?, ?)"
                " AND value <> 'inf' AND CAST(value AS REAL) < ?",
                (MUTE, MUTE_NAME, before),
            )
            deleted += cursor.rowcount
        return deleted

    def room_settings(self) -> list[tuple[str, str, str, str, int]]:
        """Every room setting kept: (room key, setting, target, value, seq)."""
        with self._translate("cannot read the room settings"):
            rows = self._conn.execute(
                "SELECT room_key, setting, target, value, seq FROM room_settings"
                " ORDER BY room_key, seq"
            ).fetchall()
        return [(str(k), str(s), str(t), str(v), int(q)) for k, s, t, v, q in rows]

    def set_room_settings(
        self,
        room_key: str,
        room: str,
        changes: Sequence[tuple[str, str, str | None]],
        *,
        seq: int,
        ts: float,
    ) -> None:
        """Write a room's settings (setting, target, value), atomically.

        A value of None deletes that setting.
        """
        with self._write_many("cannot save a room setting"):
            for setting, target, value in changes:
                if value is None:
                    self._conn.execute(
                        "DELETE FROM room_settings"
                        " WHERE room_key = ? AND setting = ? AND target = ?",
                        (room_key, setting, target),
                    )
                    continue
                self._conn.execute(
                    "INSERT INTO room_settings"
                    " (room_key, setting, target, value, room, seq, ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                    " value = excluded.value, room = excluded.room,"
                    " seq = excluded.seq, ts = excluded.ts",
                    (room_key, setting, target, value, room, seq, ts),
                )

    def forget_room(self, room_key: str, seq: int) -> int:
        """Delete a room's settings of opening `seq` and before; how many."""
        cursor = self._execute_write(
            "cannot forget a room",
            "DELETE FROM room_settings WHERE room_key = ? AND seq <= ?",
            (room_key, seq),
        )
        return cursor.rowcount

    def ignores(self, owner_key: str, limit: int) -> list[str]:
        """Name keys the account `owner_key` ignores (at most `limit`)."""
        with self._translate("cannot read the ignores"):
            rows = self._conn.execute(
                "SELECT target_key FROM ignores WHERE owner_key = ?"
                " ORDER BY target_key LIMIT ?",
                (owner_key, limit),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def set_ignore(self, owner_key: str, target_key: str, *, add: bool) -> None:
        """The account `owner_key` ignores `target_key` (`add`), or no longer."""
        if add:
            self._execute_write(
                "cannot save an ignore",
                "INSERT INTO ignores (owner_key, target_key) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (owner_key, target_key),
            )
            return
        self._execute_write(
            "cannot delete an ignore",
            "DELETE FROM ignores WHERE owner_key = ? AND target_key = ?",
            (owner_key, target_key),
        )

    def cert_owner(self, fingerprint: str) -> str | None:
        """The account key a client certificate is bound to, if any."""
        with self._translate("cannot read a certificate binding"):
            row = self._conn.execute(
                "SELECT name_key FROM certs WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_cert(self, fingerprint: str, name_key: str | None, created: float) -> bool:
        """Bind a certificate to an account (None unbinds); False if nothing changed."""
        if name_key is None:
            cursor = self._execute_write(
                "cannot unbind a certificate",
                "DELETE FROM certs WHERE fingerprint = ?",
                (fingerprint,),
            )
        else:
            cursor = self._execute_write(
                "cannot bind a certificate",
                "INSERT INTO certs (fingerprint, name_key, created) VALUES (?, ?, ?)"
                " ON CONFLICT (fingerprint) DO UPDATE SET name_key = excluded.name_key,"
                " created = excluded.created",
                (fingerprint, name_key, created),
            )
        return cursor.rowcount == 1

    # ------------------------------------------------------------------- size

    def size(self) -> int:
        """Bytes of the database in use (free pages not counted)."""
        with self._translate("cannot read the database size"):
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * page_size)

    def set_max_size(self, max_bytes: int) -> None:
        """Cap the file at about `max_bytes` (0: no cap); writes past it fail."""
        with self._translate("cannot cap the database size"):
            page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max_bytes // page_size if max_bytes else 2**31 - 2
            self._conn.execute(f"PRAGMA max_page_count = {int(pages):d}")

    def shrink(self, max_bytes: int, *, batch: int = SHRINK_BATCH) -> int:
        """Delete the oldest history until under `max_bytes` in use; rows deleted.

        Room history and stored private messages go, oldest first, `batch`
        rows at a time; accounts, bans, topics and settings are never
        touched. History is never cut below what the rest takes (`usage`):
        if that is what fills the file, deleting history would not make
        room for long, so the rest is left over the cap instead (and its
        writes fail when SQLite's cap is reached). Stops when nothing is
        left to delete.
        """
        deleted = 0
        history, rest = self.usage()
        size = history + rest
        while size > max_bytes and history > rest:
            with self._write_many("cannot shrink the history"):
                removed = 0
                for table in ("messages", "private"):
                    cursor = self._conn.execute(
                        f"DELETE FROM {table} WHERE id IN"
                        f" (SELECT id FROM {table} ORDER BY id LIMIT ?)",
                        (batch,),
                    )
                    removed += cursor.rowcount
            deleted += removed
            if not removed:
                break
            smaller = self.size()
            history -= size - smaller  # the pages the deleted rows freed
            size = smaller
        return deleted

    def usage(self) -> tuple[int, int]:
        """Bytes in use by history (rooms' and private), and by everything else.

        From SQLite's page statistics (`dbstat`) where it has them, else
        estimated from the history's contents.
        """
        total = self.size()
        with self._translate("cannot measure the history"):
            try:
                names = ", ".join(f"'{name}'" for name in _HISTORY_BTREES)
                row = self._conn.execute(
                    "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat"
                    f" WHERE name IN ({names})"
                ).fetchone()
            except sqlite3.OperationalError:  # built without dbstat
                row = self._conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(room_key) + LENGTH(room)"
                    " + LENGTH(sender) + COALESCE(LENGTH(text), 0)"
                    " + COALESCE(LENGTH(extra), 0) + 48), 0) FROM messages"
                ).fetchone()
        history = min(int(row[0]), total)
        return history, total - history


def _check(conn: sqlite3.Connection, path: str) -> None:
    """Raise DatabaseDamaged if SQLite's quick check finds the file corrupt.

    `PRAGMA quick_check` reads every page once (about a second per
    gigabyte from a warm cache), so a damaged file is refused at start-up,
    by name, rather than failing somewhere later with SQLite's words alone.
    It does not compare indexes with their tables, nor decode text: damage
    of that kind raises DatabaseDamaged when a call meets it.
    """
    if path == ":memory:":
        return
    verdict = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
    if verdict != "ok":
        raise _damaged(path, " ".join(verdict.split()))


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema to SCHEMA_VERSION, all steps in one transaction.

    Reading the version inside the write transaction keeps two processes
    opening the same old file from migrating it twice.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"history database {path} has schema version {version}, newer"
                f" than this trio-chat understands ({SCHEMA_VERSION});"
                " upgrade trio-chat or use another file"
            )
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            # PRAGMA takes no parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


# --------------------------------------------------------------------------
# The trio adapter


class _Request(Generic[T]):
    """One call for the database thread, and its answer."""

    __slots__ = ("done", "error", "op", "result", "write")

    def __init__(self, op: Callable[[Store], T], *, write: bool) -> None:
        self.op = op
        self.write = write
        self.done = trio.Event()
        self.result: T | None = None
        self.error: Exception | None = None

    def settle(self, outcome: T | Exception) -> None:
        if isinstance(outcome, Exception):
            self.error = outcome
        else:
            self.result = outcome


def _run_batch(store: Store, batch: list[_Request[Any]]) -> int:
    """Answer a batch: its writes in one group commit, then its reads.

    Return how many writes were committed. Reads run after the commit, so
    nobody reads a row that could still be rolled back.
    """
    writes = [request for request in batch if request.write]
    committed = 0
    if writes:
        outcomes = store.commit_group([request.op for request in writes])
        for request, outcome in zip(writes, outcomes, strict=True):
            request.settle(outcome)
            committed += not isinstance(outcome, Exception)
    for request in batch:
        if not request.write:
            try:
                request.settle(request.op(store))
            except Exception as exc:
                request.settle(exc)
    return committed


class _on_thread(Generic[P, T]):  # a lower-case name: it reads as a call
    """An `AsyncStore` method that is the `Store` method of the same name.

    `AsyncStore.x = _on_thread(Store.x, write=...)` makes `await store.x(...)`
    run `Store.x` on the database thread with the same arguments and give
    its result (or raise its exception), typed as `Store.x` is. `write`
    says whether it joins the group commit.
    """

    __slots__ = ("_method", "_write")

    def __init__(
        self, method: Callable[Concatenate[Store, P], T], *, write: bool
    ) -> None:
        self._method = method
        self._write = write

    @overload
    def __get__(self, obj: None, owner: type[AsyncStore]) -> _on_thread[P, T]: ...

    @overload
    def __get__(
        self, obj: AsyncStore, owner: type[AsyncStore]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(
        self, obj: AsyncStore | None, owner: type[AsyncStore]
    ) -> _on_thread[P, T] | Callable[P, Coroutine[Any, Any, T]]:
        if obj is None:
            return self
        method, write, store = self._method, self._write, obj

        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return await store._call(lambda s: method(s, *args, **kwargs), write=write)

        call.__name__ = method.__name__
        call.__doc__ = f"`Store.{method.__name__}`, on the database thread."
        return call


class AsyncStore:
    """The history database for trio: `async with AsyncStore.open(path)`.

    Every method is the `Store` method of the same name, run on the store's
    database thread; calls wait without blocking the event loop. A write
    returns only once the transaction holding it is committed.

    Backpressure: at most `max_pending` requests are queued or running;
    further callers wait (FIFO) for room, so memory stays bounded however
    slow the disk.

    `commits` and `writes` count the group commits made and the writes they
    held; `pending` the requests queued or running.

    Cancellation: a call cancelled while it waits for room in the queue is
    not made. Once queued (there is no checkpoint in between), it is carried
    out exactly once whether or not its caller is still waiting: a cancelled
    `append` still commits its row, it just returns no id. Either way nothing
    is lost that a caller was told about, and nothing is written twice.
    """

    def __init__(self, *, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._max_pending = max_pending
        self._slots = trio.Semaphore(max_pending, max_value=max_pending)
        # The semaphore keeps at most max_pending requests in the queue; the
        # extra place is for the None that tells the thread to close.
        self._queue: queue.Queue[_Request[Any] | None] = queue.Queue(max_pending + 1)
        self._token = trio.lowlevel.current_trio_token()
        self._opened = trio.Event()
        self._stopped = trio.Event()
        self._open_error: StoreError | None = None
        self._closing = False
        #: Group commits done, and the writes they committed.
        self.commits = 0
        self.writes = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_pending: int = MAX_PENDING_REQUESTS,
        close_timeout: float = STORE_CLOSE_TIMEOUT,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> AsyncIterator[AsyncStore]:
        """Start the database thread on `path` (or ":memory:") and yield the store.

        Raises StoreError if the database cannot be opened. On exit, requests
        already queued are carried out, then the connection is closed; this
        waits at most `close_timeout` seconds (shielded from cancellation),
        after which the thread is abandoned with a logged warning and the
        writes still queued may or may not be made.
        """
        self = cls(max_pending=max_pending)
        thread = threading.Thread(
            target=self._serve,
            args=(os.fspath(path), busy_timeout),
            name="trio-chat-store",
            # SQLite survives being stopped mid-write, so an abandoned thread
            # must not keep the process alive.
            daemon=True,
        )
        thread.start()
        try:
            await self._opened.wait()
            if self._open_error is not None:
                raise self._open_error
            yield self
        finally:
            self._closing = True
            self._queue.put_nowait(None)  # after everything already queued
            with trio.move_on_after(close_timeout, shield=True):
                await self._stopped.wait()
            if not self._stopped.is_set():
                log.warning(
                    "history store did not close within %.1f s; %d requests abandoned",
                    close_timeout,
                    self.pending,
                )

    @property
    def pending(self) -> int:
        """Requests queued or running on the database thread."""
        return self._max_pending - self._slots.value

    async def _call(self, op: Callable[[Store], T], *, write: bool) -> T:
        # A call made already cancelled is not queued. Past this point the only
        # checkpoints are waiting for room (nothing queued yet) and waiting
        # for the answer (queued: the call runs whatever happens to us).
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            # The common case, without the scheduling round acquire() costs.
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        if self._closing:
            self._slots.release()
            raise StoreError("the history store is closed")
        request = _Request(op, write=write)
        self._queue.put_nowait(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return cast(T, request.result)

    # Runs on the database thread.
    def _serve(self, path: str, busy_timeout: float) -> None:
        try:
            store = Store(path, busy_timeout=busy_timeout)
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(_one_line(exc))
            self._notify(functools.partial(self._set_opened, error))
            self._notify(self._stopped.set)
            return
        self._notify(functools.partial(self._set_opened, None))
        try:
            stop = False
            while not stop:
                # Wait for a request, then take everything else already
                # waiting into the same batch: one commit for all its writes.
                item = self._queue.get()
                batch: list[_Request[Any]] = []
                while True:
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    committed = _run_batch(store, batch)
                    self._notify(functools.partial(self._deliver, batch, committed))
        finally:
            try:
                store.close()
            except StoreError as exc:
                log.warning("%s", exc)
            self._notify(self._stopped.set)

    # Runs on the database thread.
    def _notify(self, callback: Callable[[], object]) -> None:
        # Once trio has exited nobody is waiting for the answer.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(callback)

    # Runs in trio, called back by the database thread.
    def _set_opened(self, error: StoreError | None) -> None:
        self._open_error = error
        self._opened.set()

    # Runs in trio, called back by the database thread.
    def _deliver(self, batch: list[_Request[Any]], committed: int) -> None:
        if committed:
            self.commits += 1
            self.writes += committed
        for request in batch:
            request.done.set()
            self._slots.release()

    # ------------------------------------------------- calls that check first

    async def append(self, room_key: str, event: RoomEvent) -> int:
        """`Store.append`: returns the row id once the row is committed."""
        _encode(event)  # a TypeError here, before queueing
        return await self._call(lambda s: s.append(room_key, event), write=True)

    async def append_many(self, rows: list[tuple[str, RoomEvent]]) -> list[int]:
        """`Store.append_many`: the row ids once the rows are committed."""
        for _, event in rows:
            _encode(event)  # a TypeError here, before queueing
        return await self._call(lambda s: s.append_many(rows), write=True)

    async def history(
        self, room_key: str, limit: int, before_id: int | None = None
    ) -> list[tuple[int, RoomEvent]]:
        """`Store.history`: the last `limit` events, oldest first."""
        _check_limit(limit, before_id)
        return await self._call(
            lambda s: s.history(room_key, limit, before_id), write=False
        )

    async def prune(
        self,
        *,
        max_rows_per_room: int | None = MAX_ROWS_PER_ROOM,
        max_age: float | None = MAX_AGE,
        now: float,
    ) -> int:
        """`Store.prune`: returns the number of rows deleted."""
        _check_prune(max_rows_per_room, max_age)
        return await self._call(
            lambda s: s.prune(
                max_rows_per_room=max_rows_per_room, max_age=max_age, now=now
            ),
            write=True,
        )

    async def add_ban(
        self,
        kind: BanKind,
        target_key: str,
        *,
        reason: str,
        set_by: str,
        created: float,
        expires: float | None = None,
    ) -> BanRecord:
        """`Store.add_ban`."""
        _check_ban_kind(kind)
        return await self._call(
            lambda s: s.add_ban(
                kind,
                target_key,
                reason=reason,
                set_by=set_by,
                created=created,
                expires=expires,
            ),
            write=True,
        )

    async def set_topic(
        self,
        room_key: str,
        room: str,
        topic: str,
        setter: str,
        ts: float,
        *,
        set_from: str | None = None,
        keep: Collection[str] = (),
        per_address: int = MAX_TOPICS_PER_ADDRESS,
        most: int = MAX_SAVED_TOPICS,
    ) -> None:
        """`Store.set_topic`."""
        keep = frozenset(keep)  # the caller's set may change meanwhile
        await self._call(
            lambda s: s.set_topic(
                room_key,
                room,
                topic,
                setter,
                ts,
                set_from=set_from,
                keep=keep,
                per_address=per_address,
                most=most,
            ),
            write=True,
        )

    async def prune_rooms(self, before: float, keep: Collection[str] = ()) -> int:
        """`Store.prune_rooms`."""
        keep = frozenset(keep)  # the caller's set may change meanwhile
        return await self._call(lambda s: s.prune_rooms(before, keep), write=True)

    # ------------------------------------ the rest: the Store method, as it is

    recent_rooms = _on_thread(Store.recent_rooms, write=False)
    add_user = _on_thread(Store.add_user, write=True)
    registrations = _on_thread(Store.registrations, write=False)
    forget_registrations = _on_thread(Store.forget_registrations, write=True)
    user_keys = _on_thread(Store.user_keys, write=False)
    user_names = _on_thread(Store.user_names, write=False)
    get_user = _on_thread(Store.get_user, write=False)
    list_active_bans = _on_thread(Store.list_active_bans, write=False)
    delete_bans = _on_thread(Store.delete_bans, write=True)
    get_setting = _on_thread(Store.get_setting, write=False)
    set_setting = _on_thread(Store.set_setting, write=True)
    topics = _on_thread(Store.topics, write=False)
    room_settings = _on_thread(Store.room_settings, write=False)
    set_room_settings = _on_thread(Store.set_room_settings, write=True)
    forget_room = _on_thread(Store.forget_room, write=True)
    ignores = _on_thread(Store.ignores, write=False)
    set_ignore = _on_thread(Store.set_ignore, write=True)
    cert_owner = _on_thread(Store.cert_owner, write=False)
    set_cert = _on_thread(Store.set_cert, write=True)
    size = _on_thread(Store.size, write=False)
    # A pragma, not a row: outside the group commit's transaction.
    set_max_size = _on_thread(Store.set_max_size, write=False)
    shrink = _on_thread(Store.shrink, write=True)
    usage = _on_thread(Store.usage, write=False)
