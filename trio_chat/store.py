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
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Final, Generic, TypeAlias, TypeVar, cast, get_args

import trio

from trio_chat import events as ev
from trio_chat.moderation import BanKind

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Most events one `history` call returns: a few screens of scrollback, well
#: under a client's outbox (limits.OUTBOX_MAX_MESSAGES) so that replaying a
#: full page cannot get the reader evicted, and a bounded piece of work for
#: the database thread.
MAX_HISTORY_FETCH: Final = 200
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
#: Seconds the store gets at shutdown to commit what is already queued
#: before the database thread is abandoned: a hung disk must not hang exit.
CLOSE_TIMEOUT: Final = 10.0
#: Seconds a statement waits for a lock held by another process (a backup,
#: an admin tool) before it fails with "database is locked".
BUSY_TIMEOUT: Final = 5.0
#: Oldest rows `shrink` deletes per step when the database is over its size
#: cap: small steps keep each transaction (and the pause it costs) short.
SHRINK_BATCH: Final = 1000

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
)
#: The schema version this code reads and writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)


class StoreError(Exception):
    """The history database failed: cannot open, read or write it.

    The message is one line naming what failed and SQLite's reason.
    """


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


@dataclasses.dataclass(frozen=True, slots=True)
class Ban:
    """A ban on a name or an address; `expires` None means until lifted."""

    id: int
    kind: BanKind
    target_key: str
    reason: str
    set_by: str
    created: float
    expires: float | None


@contextlib.contextmanager
def _translate(action: str) -> Iterator[None]:
    """Turn SQLite's errors into a one-line StoreError about `action`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{action}: {_one_line(exc)}") from exc


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
    # Private messages and everything else are not room history; storing a
    # private message is a separate, deliberate call (`append_private`).
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


def _ban(row: tuple[Any, ...]) -> Ban:
    row_id, kind, target_key, reason, set_by, created, expires = row
    return Ban(
        row_id, _check_ban_kind(kind), target_key, reason, set_by, created, expires
    )


_BAN_COLUMNS: Final = "id, kind, target_key, reason, set_by, created, expires"
_USER_COLUMNS: Final = "name_key, name, password_hash, salt, kdf, created, last_seen"
_ROOM_KIND_LIST: Final = ", ".join(f"'{kind}'" for kind in _ROOM_KINDS)


class Store:
    """The history database, synchronously. Use it from one thread only.

    Opening creates the file if needed, switches it to WAL mode and runs the
    migrations up to SCHEMA_VERSION. Every failure raises StoreError (a
    path that cannot be opened, a file that is not a database, a database
    from a newer trio-chat); invalid arguments raise ValueError or TypeError.

    Each write method commits on its own, unless called inside
    `transaction()`, which commits once for all of them.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = os.fspath(path)
        #: Transactions committed through this object (group commits count once).
        self.commits = 0
        with _translate(f"cannot open history database {self.path}"):
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None
            )
        try:
            with _translate(f"cannot open history database {self.path}"):
                # See the module docstring for why NORMAL is durable enough.
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                _migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Close the connection (WAL content is checkpointed into the file)."""
        with _translate(f"cannot close history database {self.path}"):
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version (SCHEMA_VERSION once open)."""
        with _translate("cannot read the schema version"):
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
        with _translate("cannot begin a history transaction"):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            if not self._conn.in_transaction:
                raise StoreError("the history transaction was rolled back by SQLite")
            with _translate("cannot commit to the history"):
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
        except sqlite3.Error as exc:
            raise StoreError(f"{action}: {_one_line(exc)}") from exc

    @contextlib.contextmanager
    def _write_many(self, action: str) -> Iterator[None]:
        """Make the block's statements one atomic write.

        Inside `transaction()` a savepoint undoes just this block if it
        fails; outside, the block gets a transaction of its own.
        """
        with _translate(action):
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
        for anything but Message, Action, Joined, Left and Renamed (private
        messages go through `append_private`), StoreError if SQLite fails.
        """
        kind, sender, text, extra = _encode(event)
        cursor = self._execute_write(
            "cannot append to the history",
            "INSERT INTO messages (room_key, room, ts, kind, sender, text, extra)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (room_key, event.room, event.ts, kind, sender, text, extra),
        )
        return cast(int, cursor.lastrowid)

    def history(
        self, room_key: str, limit: int, before_id: int | None = None
    ) -> list[tuple[int, RoomEvent]]:
        """The last `limit` room events before row `before_id`, oldest first.

        Events carry their original timestamps. `limit` is capped at
        MAX_HISTORY_FETCH; page back by passing the first id returned as the
        next `before_id`. Raises ValueError for a negative limit.
        """
        limit = _check_limit(limit, before_id)
        with _translate("cannot read the history"):
            rows = self._conn.execute(
                "SELECT id, room, ts, kind, sender, text, extra FROM messages"
                f" WHERE room_key = ? AND id < ? AND kind IN ({_ROOM_KIND_LIST})"
                " ORDER BY id DESC LIMIT ?",
                (room_key, before_id or _AFTER_LAST_ID, limit),
            ).fetchall()
        return [_decode(row) for row in reversed(rows)]

    def recent_rooms(self, limit: int) -> list[str]:
        """Keys of the `limit` rooms with the newest history, newest first."""
        with _translate("cannot list the rooms"):
            rows = self._conn.execute(
                "SELECT room_key FROM messages GROUP BY room_key"
                " ORDER BY MAX(id) DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def append_private(
        self, event: ev.Private, *, sender_key: str, recipient_key: str
    ) -> int:
        """Store a private message (only where users opted in); return its id."""
        if not isinstance(event, ev.Private):
            raise TypeError(f"not a private message: {type(event).__name__}")
        cursor = self._execute_write(
            "cannot store a private message",
            "INSERT INTO private"
            " (ts, sender_key, sender, recipient_key, recipient, text)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.ts,
                sender_key,
                event.sender,
                recipient_key,
                event.recipient,
                event.text,
            ),
        )
        return cast(int, cursor.lastrowid)

    def private_history(
        self, user_key: str, limit: int, before_id: int | None = None
    ) -> list[tuple[int, ev.Private]]:
        """Stored private messages from or to `user_key`, oldest first.

        Paged and capped like `history`.
        """
        limit = _check_limit(limit, before_id)
        with _translate("cannot read private messages"):
            rows = self._conn.execute(
                "SELECT id, ts, sender, recipient, text FROM private"
                " WHERE (sender_key = ? OR recipient_key = ?) AND id < ?"
                " ORDER BY id DESC LIMIT ?",
                (user_key, user_key, before_id or _AFTER_LAST_ID, limit),
            ).fetchall()
        return [
            (row_id, ev.Private(ts=ts, sender=sender, recipient=recipient, text=text))
            for row_id, ts, sender, recipient, text in reversed(rows)
        ]

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

    def add_user(self, user: User) -> bool:
        """Register `user`; False (and no change) if its name_key is taken."""
        cursor = self._execute_write(
            "cannot add a user",
            f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name_key) DO NOTHING",
            dataclasses.astuple(user),
        )
        return cursor.rowcount == 1

    def user_keys(self) -> list[str]:
        """The name keys of every registered account."""
        with _translate("cannot list the users"):
            rows = self._conn.execute("SELECT name_key FROM users").fetchall()
        return [str(row[0]) for row in rows]

    def user_names(self) -> list[str]:
        """The name of every registered account, as it was registered."""
        with _translate("cannot list the users"):
            rows = self._conn.execute("SELECT name FROM users").fetchall()
        return [str(row[0]) for row in rows]

    def get_user(self, name_key: str) -> User | None:
        """The account registered under `name_key`, if any."""
        with _translate("cannot read a user"):
            row = self._conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE name_key = ?", (name_key,)
            ).fetchone()
        return None if row is None else User(*row)

    def set_last_seen(self, name_key: str, when: float) -> bool:
        """Record when the user was last online; False if there is no such user."""
        cursor = self._execute_write(
            "cannot update a user",
            "UPDATE users SET last_seen = ? WHERE name_key = ?",
            (when, name_key),
        )
        return cursor.rowcount == 1

    def delete_user(self, name_key: str) -> bool:
        """Remove an account; False if there was none."""
        cursor = self._execute_write(
            "cannot delete a user", "DELETE FROM users WHERE name_key = ?", (name_key,)
        )
        return cursor.rowcount == 1

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
    ) -> Ban:
        """Ban a name key or an address; return the ban with its id."""
        kind = _check_ban_kind(kind)
        cursor = self._execute_write(
            "cannot add a ban",
            "INSERT INTO bans (kind, target_key, reason, set_by, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, target_key, reason, set_by, created, expires),
        )
        ban_id = cast(int, cursor.lastrowid)
        return Ban(ban_id, kind, target_key, reason, set_by, created, expires)

    def get_ban(self, ban_id: int) -> Ban | None:
        """The ban with this id, expired or not."""
        with _translate("cannot read a ban"):
            row = self._conn.execute(
                f"SELECT {_BAN_COLUMNS} FROM bans WHERE id = ?", (ban_id,)
            ).fetchone()
        return None if row is None else _ban(row)

    def delete_ban(self, ban_id: int) -> bool:
        """Lift a ban; False if there was none with this id."""
        cursor = self._execute_write(
            "cannot delete a ban", "DELETE FROM bans WHERE id = ?", (ban_id,)
        )
        return cursor.rowcount == 1

    def list_active_bans(self, now: float) -> list[Ban]:
        """Bans in force at `now` (no expiry, or expiring later), oldest first."""
        with _translate("cannot read the bans"):
            rows = self._conn.execute(
                f"SELECT {_BAN_COLUMNS} FROM bans"
                " WHERE expires IS NULL OR expires > ? ORDER BY id",
                (now,),
            ).fetchall()
        return [_ban(row) for row in rows]

    def find_ban(self, kind: BanKind, target_key: str, now: float) -> Ban | None:
        """The newest ban in force at `now` on this name key or address."""
        kind = _check_ban_kind(kind)
        with _translate("cannot read the bans"):
            row = self._conn.execute(
                f"SELECT {_BAN_COLUMNS} FROM bans WHERE kind = ? AND target_key = ?"
                " AND (expires IS NULL OR expires > ?) ORDER BY id DESC LIMIT 1",
                (kind, target_key, now),
            ).fetchone()
        return None if row is None else _ban(row)

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
        with _translate("cannot read a setting"):
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
        with _translate("cannot read the topics"):
            rows = self._conn.execute(
                "SELECT room_key, topic, setter, ts FROM topics"
                " ORDER BY ts DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(str(k), str(t), str(s), float(ts)) for k, t, s, ts in reversed(rows)]

    def set_topic(
        self, room_key: str, room: str, topic: str, setter: str, ts: float
    ) -> None:
        """Keep a room's topic; an empty topic forgets it."""
        if not topic:
            self._execute_write(
                "cannot clear a topic",
                "DELETE FROM topics WHERE room_key = ?",
                (room_key,),
            )
            return
        self._execute_write(
            "cannot save a topic",
            "INSERT INTO topics (room_key, room, topic, setter, ts)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_key) DO UPDATE SET"
            " room = excluded.room, topic = excluded.topic,"
            " setter = excluded.setter, ts = excluded.ts",
            (room_key, room, topic, setter, ts),
        )

    def ignores(self, owner_key: str, limit: int) -> list[str]:
        """Name keys the account `owner_key` ignores (at most `limit`)."""
        with _translate("cannot read the ignores"):
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
        with _translate("cannot read a certificate binding"):
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
        with _translate("cannot read the database size"):
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * page_size)

    def set_max_size(self, max_bytes: int) -> None:
        """Cap the file at about `max_bytes` (0: no cap); writes past it fail."""
        with _translate("cannot cap the database size"):
            page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max_bytes // page_size if max_bytes else 2**31 - 2
            self._conn.execute(f"PRAGMA max_page_count = {int(pages):d}")

    def shrink(self, max_bytes: int, *, batch: int = SHRINK_BATCH) -> int:
        """Delete the oldest history until under `max_bytes` in use; rows deleted.

        Room history and stored private messages go, oldest first, `batch`
        rows at a time; accounts, bans and settings are never touched. Stops
        when nothing is left to delete.
        """
        deleted = 0
        while self.size() > max_bytes:
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
        return deleted


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
        close_timeout: float = CLOSE_TIMEOUT,
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

    # ---------------------------------------------------------------- history

    async def append(self, room_key: str, event: RoomEvent) -> int:
        """`Store.append`: returns the row id once the row is committed."""
        _encode(event)  # a TypeError here, before queueing
        return await self._call(lambda s: s.append(room_key, event), write=True)

    async def history(
        self, room_key: str, limit: int, before_id: int | None = None
    ) -> list[tuple[int, RoomEvent]]:
        """`Store.history`: the last `limit` events, oldest first."""
        _check_limit(limit, before_id)
        return await self._call(
            lambda s: s.history(room_key, limit, before_id), write=False
        )

    async def recent_rooms(self, limit: int) -> list[str]:
        """`Store.recent_rooms`: rooms with the newest history."""
        return await self._call(lambda s: s.recent_rooms(limit), write=False)

    async def append_private(
        self, event: ev.Private, *, sender_key: str, recipient_key: str
    ) -> int:
        """`Store.append_private`: only for users who opted in."""
        if not isinstance(event, ev.Private):
            raise TypeError(f"not a private message: {type(event).__name__}")
        return await self._call(
            lambda s: s.append_private(
                event, sender_key=sender_key, recipient_key=recipient_key
            ),
            write=True,
        )

    async def private_history(
        self, user_key: str, limit: int, before_id: int | None = None
    ) -> list[tuple[int, ev.Private]]:
        """`Store.private_history`."""
        _check_limit(limit, before_id)
        return await self._call(
            lambda s: s.private_history(user_key, limit, before_id), write=False
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

    # ------------------------------------------------------------------ users

    async def add_user(self, user: User) -> bool:
        """`Store.add_user`: False if the name_key is taken."""
        return await self._call(lambda s: s.add_user(user), write=True)

    async def user_keys(self) -> list[str]:
        """`Store.user_keys`."""
        return await self._call(lambda s: s.user_keys(), write=False)

    async def user_names(self) -> list[str]:
        """`Store.user_names`."""
        return await self._call(lambda s: s.user_names(), write=False)

    async def get_user(self, name_key: str) -> User | None:
        """`Store.get_user`."""
        return await self._call(lambda s: s.get_user(name_key), write=False)

    async def set_last_seen(self, name_key: str, when: float) -> bool:
        """`Store.set_last_seen`."""
        return await self._call(lambda s: s.set_last_seen(name_key, when), write=True)

    async def delete_user(self, name_key: str) -> bool:
        """`Store.delete_user`."""
        return await self._call(lambda s: s.delete_user(name_key), write=True)

    # ------------------------------------------------------------------- bans

    async def add_ban(
        self,
        kind: BanKind,
        target_key: str,
        *,
        reason: str,
        set_by: str,
        created: float,
        expires: float | None = None,
    ) -> Ban:
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

    async def get_ban(self, ban_id: int) -> Ban | None:
        """`Store.get_ban`."""
        return await self._call(lambda s: s.get_ban(ban_id), write=False)

    async def delete_ban(self, ban_id: int) -> bool:
        """`Store.delete_ban`."""
        return await self._call(lambda s: s.delete_ban(ban_id), write=True)

    async def list_active_bans(self, now: float) -> list[Ban]:
        """`Store.list_active_bans`."""
        return await self._call(lambda s: s.list_active_bans(now), write=False)

    async def find_ban(self, kind: BanKind, target_key: str, now: float) -> Ban | None:
        """`Store.find_ban`."""
        _check_ban_kind(kind)
        return await self._call(
            lambda s: s.find_ban(kind, target_key, now), write=False
        )

    async def delete_bans(self, kind: BanKind, target_key: str) -> int:
        """`Store.delete_bans`."""
        _check_ban_kind(kind)
        return await self._call(lambda s: s.delete_bans(kind, target_key), write=True)

    # --------------------------------------- settings, topics, ignores, certs

    async def get_setting(self, key: str) -> str | None:
        """`Store.get_setting`."""
        return await self._call(lambda s: s.get_setting(key), write=False)

    async def set_setting(self, key: str, value: str | None) -> None:
        """`Store.set_setting`."""
        await self._call(lambda s: s.set_setting(key, value), write=True)

    async def topics(self, limit: int) -> list[tuple[str, str, str, float]]:
        """`Store.topics`."""
        return await self._call(lambda s: s.topics(limit), write=False)

    async def set_topic(
        self, room_key: str, room: str, topic: str, setter: str, ts: float
    ) -> None:
        """`Store.set_topic`."""
        await self._call(
            lambda s: s.set_topic(room_key, room, topic, setter, ts), write=True
        )

    async def ignores(self, owner_key: str, limit: int) -> list[str]:
        """`Store.ignores`."""
        return await self._call(lambda s: s.ignores(owner_key, limit), write=False)

    async def set_ignore(self, owner_key: str, target_key: str, *, add: bool) -> None:
        """`Store.set_ignore`."""
        await self._call(
            lambda s: s.set_ignore(owner_key, target_key, add=add), write=True
        )

    async def cert_owner(self, fingerprint: str) -> str | None:
        """`Store.cert_owner`."""
        return await self._call(lambda s: s.cert_owner(fingerprint), write=False)

    async def set_cert(
        self, fingerprint: str, name_key: str | None, created: float
    ) -> bool:
        """`Store.set_cert`."""
        return await self._call(
            lambda s: s.set_cert(fingerprint, name_key, created), write=True
        )

    async def size(self) -> int:
        """`Store.size`."""
        return await self._call(lambda s: s.size(), write=False)

    async def set_max_size(self, max_bytes: int) -> None:
        """`Store.set_max_size`."""
        await self._call(lambda s: s.set_max_size(max_bytes), write=False)

    async def shrink(self, max_bytes: int) -> int:
        """`Store.shrink`: oldest history deleted until under `max_bytes`."""
        return await self._call(lambda s: s.shrink(max_bytes), write=True)
