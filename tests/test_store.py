"""The history store: SQLite schema, group commit, the trio adapter."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trio_chat import events as ev
from trio_chat.limits import MAX_HISTORY_FETCH
from trio_chat.moderation import BanRecord
from trio_chat.store import (
    MAX_AGE,
    SCHEMA_VERSION,
    AsyncStore,
    RoomEvent,
    Store,
    StoreError,
    User,
)

#: A timestamp with all the digits a float has: it must come back unchanged.
T0 = 1_700_000_000.123456


def say(text: str, *, ts: float = T0, sender: str = "ann") -> ev.Message:
    return ev.Message(ts=ts, room="#lobby", sender=sender, text=text)


def appending(text: str) -> Callable[[Store], int]:
    """A write for `Store.commit_group`: append `text` to #a."""
    return lambda store: store.append("#a", say(text))


def texts(rows: list[tuple[int, RoomEvent]]) -> list[str]:
    return [event.text for _, event in rows if isinstance(event, ev.Message)]


class WriteLock:
    """Another connection holding the database's write lock, as a backup or an
    admin tool might: the store's database thread waits for it."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.close()


def execute(path: Path, sql: str) -> None:
    """Run `sql` on the file through a connection of its own."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


#: What a version-1 file looked like: room history only. Kept verbatim here,
#: whatever MIGRATIONS becomes.
VERSION_1_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_key TEXT NOT NULL,
    room TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT,
    extra TEXT
);
CREATE INDEX messages_by_room ON messages (room_key, id);
INSERT INTO messages (room_key, room, ts, kind, sender, text, extra) VALUES
    ('#lobby', '#Lobby', 1.5, 'join', 'ann', NULL, NULL),
    ('#lobby', '#Lobby', 2.5, 'msg', 'ann', 'hi', NULL),
    ('#lobby', '#Lobby', 3.5, 'action', 'ann', 'waves', NULL),
    ('#lobby', '#Lobby', 4.5, 'nick', 'ann', 'anna', NULL),
    ('#lobby', '#Lobby', 5.5, 'leave', 'anna', 'bye', 'quit');
PRAGMA user_version = 1;
"""


def make_version_1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(VERSION_1_SCHEMA)
    conn.close()


# --------------------------------------------------------------------------
# Events in, events out


def every_room_event(ts: float) -> list[RoomEvent]:
    events: list[RoomEvent] = [
        ev.Message(ts=ts, room="#Lobby", sender="ann", text="hello ünï 🎉"),
        ev.Message(ts=ts + 1, room="#Lobby", sender="ann", text=""),
        ev.Action(ts=ts + 2, room="#Lobby", sender="ann", text="waves"),
        ev.Joined(ts=ts + 3, room="#Lobby", name="bob"),
        ev.Renamed(ts=ts + 4, room="#Lobby", old="bob", new="bobby"),
    ]
    for n, how in enumerate(get_args(ev.LeaveHow)):
        events.append(
            ev.Left(ts=ts + 5 + n, room="#Lobby", name="bobby", how=how, reason="")
        )
    events.append(
        ev.Left(ts=ts + 9, room="#Lobby", name="ann", how="quit", reason="see you")
    )
    events.append(ev.Kicked(ts + 10, "#Lobby", "bobby", "ann", "off (topic)"))
    events.append(ev.Kicked(ts + 11, "#Lobby", "bobby", "ann", ""))
    return events


async def test_every_room_event_round_trips_with_its_time(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    events = every_room_event(T0)
    async with AsyncStore.open(path) as store:
        ids = [await store.append("#lobby", event) for event in events]
        assert ids == sorted(ids)
        assert await store.history("#lobby", 50) == list(zip(ids, events, strict=True))
    # And from the file, by another connection.
    with Store(path) as reopened:
        assert reopened.history("#lobby", 50) == list(zip(ids, events, strict=True))


async def test_only_room_events_are_history() -> None:
    async with AsyncStore.open(":memory:") as store:
        private = ev.Private(ts=T0, sender="ann", recipient="bob", text="psst")
        for event in (private, ev.Info(text="server notice")):
            with pytest.raises(TypeError, match="not a room event"):
                await store.append("#lobby", event)  # type: ignore[arg-type]
        assert await store.history("#lobby", 10) == []
        assert store.writes == 0


# --------------------------------------------------------------------------
# History: order, limit, paging


async def test_history_is_oldest_first_limited_and_pages_back() -> None:
    async with AsyncStore.open(":memory:") as store:
        for i in range(30):
            await store.append("#a", say(f"a{i}", ts=T0 + i))
            if i % 6 == 0:
                await store.append("#b", say(f"b{i}", ts=T0 + i))

        last = await store.history("#a", 10)
        assert texts(last) == [f"a{i}" for i in range(20, 30)]
        assert [event.ts for _, event in last] == [T0 + i for i in range(20, 30)]
        ids = [row_id for row_id, _ in last]
        assert ids == sorted(ids)

        # Paging back with the oldest id seen, until nothing is left.
        pages = [last]
        while pages[-1]:
            pages.append(await store.history("#a", 10, before_id=pages[-1][0][0]))
        assert [len(page) for page in pages] == [10, 10, 10, 0]
        everything = [row for page in reversed(pages) for row in page]
        assert texts(everything) == [f"a{i}" for i in range(30)]

        assert texts(await store.history("#b", 100)) == [
            f"b{i}" for i in (0, 6, 12, 18, 24)
        ]
        assert await store.history("#a", 0) == []
        assert await store.history("#nowhere", 10) == []
        with pytest.raises(ValueError, match="negative"):
            await store.history("#a", -1)
        with pytest.raises(ValueError, match="row id"):
            await store.history("#a", 10, before_id=0)


def test_history_fetch_is_capped() -> None:
    with Store(":memory:") as store:
        with store.transaction():
            for i in range(MAX_HISTORY_FETCH + 5):
                store.append("#a", say(str(i)))
        rows = store.history("#a", 10**6)
    assert len(rows) == MAX_HISTORY_FETCH
    assert texts(rows)[-1] == str(MAX_HISTORY_FETCH + 4)


def test_history_skips_kinds_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with Store(path) as store:
        store.append("#a", say("before"))
    # A row a later version might write (a topic change, say).
    execute(
        path,
        "INSERT INTO messages (room_key, room, ts, kind, sender, text)"
        " VALUES ('#a', '#a', 1.0, 'topic', 'ann', 'news')",
    )
    with Store(path) as store:
        store.append("#a", say("after"))
        assert texts(store.history("#a", 10)) == ["before", "after"]


# --------------------------------------------------------------------------
# Group commit


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    ids: list[int] = []
    async with AsyncStore.open(tmp_path / "history.db") as store:

        async def append(i: int) -> None:
            ids.append(await store.append("#lobby", say(f"line {i}")))

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(append, i)

        assert len(set(ids)) == 100
        assert store.writes == 100
        # One commit per write would be 100.
        assert store.commits <= 10, store.commits
        rows = await store.history("#lobby", 100)
    assert sorted(texts(rows)) == sorted(f"line {i}" for i in range(100))
    print(f"\n100 concurrent appends: {store.commits} commit(s)")


def test_a_failing_write_fails_alone_in_its_group(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with Store(path) as store:
        execute(
            path,
            "CREATE TRIGGER reject BEFORE INSERT ON messages WHEN NEW.text = 'bad'"
            " BEGIN SELECT RAISE(ABORT, 'rejected by the test'); END",
        )
        outcomes = store.commit_group([appending(text) for text in ["a", "bad", "c"]])
        assert isinstance(outcomes[0], int)
        assert isinstance(outcomes[1], StoreError)
        assert str(outcomes[1]) == "cannot append to the history: rejected by the test"
        assert isinstance(outcomes[2], int)
        assert store.commits == 1
        assert texts(store.history("#a", 10)) == ["a", "c"]


def test_an_abandoned_transaction_fails_the_whole_group(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with Store(path) as store:
        store.append("#a", say("earlier"))
        execute(
            path,
            "CREATE TRIGGER doom BEFORE INSERT ON messages WHEN NEW.text = 'doom'"
            " BEGIN SELECT RAISE(ROLLBACK, 'rolled back by the test'); END",
        )
        outcomes = store.commit_group([appending(text) for text in ["a", "doom", "c"]])
        # SQLite threw the transaction away: "a" was never committed, and
        # nobody may be told it was.
        assert all(isinstance(outcome, StoreError) for outcome in outcomes)
        assert "rolled back by the test" in str(outcomes[0])
        assert store.commits == 1
        assert not store.in_transaction
        assert texts(store.history("#a", 10)) == ["earlier"]
        store.append("#a", say("later"))
        assert texts(store.history("#a", 10)) == ["earlier", "later"]


async def test_a_rejected_append_raises_only_for_its_caller(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    results: dict[str, int | StoreError] = {}
    async with AsyncStore.open(path) as store:
        execute(
            path,
            "CREATE TRIGGER reject BEFORE INSERT ON messages WHEN NEW.text = 'bad'"
            " BEGIN SELECT RAISE(ABORT, 'rejected by the test'); END",
        )

        async def append(text: str) -> None:
            try:
                results[text] = await store.append("#a", say(text))
            except StoreError as exc:
                results[text] = exc

        async with trio.open_nursery() as nursery:
            for text in ("a", "b", "bad", "c", "d"):
                nursery.start_soon(append, text)
        assert isinstance(results.pop("bad"), StoreError)
        assert all(isinstance(row_id, int) for row_id in results.values())
        assert sorted(texts(await store.history("#a", 10))) == ["a", "b", "c", "d"]


def test_transaction_commits_once_and_rolls_back_on_error() -> None:
    with Store(":memory:") as store:
        with store.transaction():
            store.append("#a", say("one"))
            store.append("#a", say("two"))
        assert store.commits == 1
        with pytest.raises(RuntimeError, match="boom"), store.transaction():
            store.append("#a", say("three"))
            raise RuntimeError("boom")
        assert store.commits == 1
        assert texts(store.history("#a", 10)) == ["one", "two"]
        store.append("#a", say("four"))  # commits on its own
        assert store.commits == 2


# --------------------------------------------------------------------------
# Cancellation, backpressure, shutdown


async def test_a_cancelled_append_is_still_committed_once(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    got: list[int] = []
    async with AsyncStore.open(path, busy_timeout=30) as store:
        lock = WriteLock(path)  # the database thread cannot commit yet

        async def append() -> None:
            got.append(await store.append("#a", say("queued")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(append)
            await wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert got == []  # the caller gave up and heard no id...
        lock.release()
        # ... and leaving the block finishes the queued write.
    with Store(path) as reopened:
        assert texts(reopened.history("#a", 10)) == ["queued"]


async def test_a_call_cancelled_before_it_is_made_is_not_made() -> None:
    async with AsyncStore.open(":memory:") as store:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.append("#a", say("never"))
        assert await store.history("#a", 10) == []


async def test_a_full_queue_makes_callers_wait(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    scopes: dict[str, trio.CancelScope] = {}
    done: list[str] = []
    async with AsyncStore.open(path, max_pending=2, busy_timeout=30) as store:
        lock = WriteLock(path)

        async def append(text: str) -> None:
            with trio.CancelScope() as scopes[text]:
                await store.append("#a", say(text))
                done.append(text)

        async with trio.open_nursery() as nursery:
            for text in ("a", "b"):
                nursery.start_soon(append, text)
            await wait_all_tasks_blocked()
            assert store.pending == 2
            for text in ("c", "d", "e"):
                nursery.start_soon(append, text)
            await wait_all_tasks_blocked()
            assert store.pending == 2  # c, d and e wait for room
            scopes["e"].cancel()  # gives up before it was queued
            await wait_all_tasks_blocked()
            assert done == []
            lock.release()
        assert sorted(done) == ["a", "b", "c", "d"]
        assert store.pending == 0
        assert sorted(texts(await store.history("#a", 10))) == ["a", "b", "c", "d"]


async def test_close_gives_up_on_a_hung_database_after_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.db"
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        async with AsyncStore.open(path, close_timeout=0.2, busy_timeout=30) as store:
            lock = WriteLock(path)

            async def append() -> None:
                got.append(await store.append("#a", say("late")))

            nursery.start_soon(append)
            await wait_all_tasks_blocked()
            closing = trio.current_time()
        waited = trio.current_time() - closing
        assert "did not close within 0.2 s; 1 requests abandoned" in caplog.text
        lock.release()
    # The abandoned thread still finished the write and answered.
    assert len(got) == 1
    assert 0.2 <= waited < 5
    # The abandoned thread may still be closing (and holding the file).
    with Store(path, exclusive=False) as reopened:
        assert texts(reopened.history("#a", 10)) == ["late"]


async def test_a_closed_store_refuses_calls() -> None:
    async with AsyncStore.open(":memory:") as store:
        pass
    with pytest.raises(StoreError, match="closed"):
        await store.append("#a", say("too late"))


async def test_a_locked_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    async with AsyncStore.open(path, busy_timeout=0.05) as store:
        lock = WriteLock(path)
        with pytest.raises(StoreError) as caught:
            await store.append("#a", say("blocked"))
        assert str(caught.value) == (
            "cannot begin a history transaction: database is locked"
        )
        lock.release()
        await store.append("#a", say("free"))
        assert texts(await store.history("#a", 10)) == ["free"]


async def test_the_event_loop_is_not_blocked_while_10k_rows_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No clock here: on a busy machine any threshold flakes (the gap is
    # measured by benchmarks/store_gap.py instead). What must hold is that
    # SQLite never runs on the event loop's thread, and that the loop runs
    # on while the database thread is in the middle of a write.
    loop_thread = threading.get_ident()
    writer_threads: set[int] = set()
    append = Store.append

    def recording_append(store: Store, room_key: str, event: RoomEvent) -> int:
        writer_threads.add(threading.get_ident())
        return append(store, room_key, event)

    monkeypatch.setattr(Store, "append", recording_append)
    token = trio.lowlevel.current_trio_token()
    in_write = trio.Event()
    release = threading.Event()

    def held_write(store: Store) -> bool:
        # A write the database thread cannot finish until the event loop,
        # while it waits, has run other tasks: on the loop's own thread it
        # could only time out.
        token.run_sync_soon(in_write.set)
        return release.wait(timeout=60)

    ticks_during_write = 0

    async def ticker() -> None:
        nonlocal ticks_during_write
        await in_write.wait()
        for _ in range(100):
            await trio.lowlevel.checkpoint()
            ticks_during_write += 1
        release.set()

    async with AsyncStore.open(tmp_path / "history.db") as store:

        async def writer(n: int) -> None:
            for i in range(200):
                await store.append("#a", say(f"{n}-{i}", sender=f"w{n}"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            for n in range(50):
                nursery.start_soon(writer, n)
            await wait_all_tasks_blocked()  # writers queued: the probe joins them
            assert await store._call(held_write, write=True)
    assert store.writes == 10_001
    assert ticks_during_write == 100
    assert writer_threads and loop_thread not in writer_threads
    assert len(writer_threads) == 1  # the one database thread


@pytest.mark.slow
async def test_measure_group_commit_throughput(tmp_path: Path) -> None:
    """Print writes/s with 50 concurrent writers (a measurement, no assertion)."""
    async with AsyncStore.open(tmp_path / "history.db") as store:

        async def writer(n: int) -> None:
            for i in range(400):
                await store.append("#a", say(f"{n}-{i}", sender=f"w{n}"))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(writer, n)
        elapsed = time.perf_counter() - started
    print(
        f"\n50 writers, {store.writes} appends: {store.writes / elapsed:,.0f} writes/s,"
        f" {store.commits} commits ({store.writes / store.commits:.1f} writes each)"
    )


# --------------------------------------------------------------------------
# Files: persistence, schema, errors


async def test_history_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    async with AsyncStore.open(path) as store:
        first = await store.append("#a", say("one"))
        await store.append("#a", say("two"))
    async with AsyncStore.open(path) as store:
        assert texts(await store.history("#a", 10)) == ["one", "two"]
        assert await store.append("#a", say("three")) == first + 2


def test_a_new_database_gets_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
    with Store(path) as store:  # reopening migrates nothing
        assert store.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_a_version_1_file_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_version_1(path)
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.history("#lobby", 10) == [
            (1, ev.Joined(ts=1.5, room="#Lobby", name="ann")),
            (2, ev.Message(ts=2.5, room="#Lobby", sender="ann", text="hi")),
            (3, ev.Action(ts=3.5, room="#Lobby", sender="ann", text="waves")),
            (4, ev.Renamed(ts=4.5, room="#Lobby", old="ann", new="anna")),
            (5, ev.Left(ts=5.5, room="#Lobby", name="anna", how="quit", reason="bye")),
        ]
        assert store.append("#lobby", say("new")) == 6
        # The tables version 2 added work.
        assert store.add_user(User("ann", "Ann", b"h", b"s", "test", 1.0, 1.0))
        assert store.list_active_bans(0.0) == []
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_version_1(path)
    execute(path, "CREATE TABLE bans (oops TEXT)")  # in version 2's way
    with pytest.raises(StoreError, match="table bans already exists"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "users" not in tables
    conn.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert str(caught.value) == (
        f"history database {path} has schema version {SCHEMA_VERSION + 1},"
        f" newer than this trio-chat understands ({SCHEMA_VERSION});"
        " upgrade trio-chat or use another file"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing-dir/history.db", "unable to open database file"),
        (".", "unable to open database file"),
        ("garbage.db", "file is not a database"),
    ],
)
async def test_a_path_that_cannot_be_a_database_is_one_clear_error(
    tmp_path: Path, name: str, reason: str
) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not SQLite\n" * 512)
    path = tmp_path / name
    expected = f"cannot open history database {path}: {reason}"
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert str(caught.value) == expected
    with pytest.raises(StoreError) as caught:
        async with AsyncStore.open(path):
            pass  # pragma: no cover
    assert str(caught.value) == expected


# --------------------------------------------------------------------------
# Retention


def test_prune_keeps_rows_per_room_and_drops_old_ones() -> None:
    with Store(":memory:") as store:
        for i in range(10):
            store.append("#a", say(f"a{i}", ts=float(i)))
        for i in range(3):
            store.append("#b", say(f"b{i}", ts=100.0 + i))
        newest = store.append("#b", say("b3", ts=103.0))

        assert store.prune(max_rows_per_room=None, max_age=None, now=1e9) == 0
        assert store.prune(max_rows_per_room=5, max_age=None, now=1e9) == 5
        assert texts(store.history("#a", 10)) == [f"a{i}" for i in range(5, 10)]
        assert len(store.history("#b", 10)) == 4
        # Older than 50 s at 150: a5..a9 (ts < 100).
        assert store.prune(max_rows_per_room=None, max_age=50.0, now=150.0) == 5
        assert store.history("#a", 10) == []
        assert texts(store.history("#b", 10)) == ["b0", "b1", "b2", "b3"]
        assert store.prune(max_rows_per_room=0, max_age=None, now=1e9) == 4
        # Ids are cursors: an emptied table does not hand them out again.
        assert store.append("#b", say("b4")) == newest + 1

        with pytest.raises(ValueError, match="negative"):
            store.prune(max_rows_per_room=-1, max_age=None, now=0.0)
        with pytest.raises(ValueError, match="negative"):
            store.prune(max_rows_per_room=None, max_age=-1.0, now=0.0)


async def test_prune_defaults_through_the_adapter() -> None:
    now = 2e9
    async with AsyncStore.open(":memory:") as store:
        await store.append("#a", say("ancient", ts=now - MAX_AGE - 1))
        await store.append("#a", say("recent", ts=now - 60))
        assert await store.prune(now=now) == 1
        assert texts(await store.history("#a", 10)) == ["recent"]


# --------------------------------------------------------------------------
# Accounts and bans


async def test_users_add_and_get() -> None:
    ann = User(
        name_key="ann",
        name="Ann",
        password_hash=b"\x00hash\xff",
        salt=b"\x01salt",
        kdf="scrypt:n=16384,r=8,p=1",
        created=T0,
        last_seen=T0,
    )
    async with AsyncStore.open(":memory:") as store:
        assert await store.get_user("ann") is None
        assert await store.add_user(ann)
        assert not await store.add_user(User("ann", "ANN", b"x", b"y", "z", 0.0, 0.0))
        assert await store.get_user("ann") == ann
        assert await store.get_user("bob") is None
        assert await store.user_keys() == ["ann"]


async def test_bans_add_list_active_delete() -> None:
    async with AsyncStore.open(":memory:") as store:
        forever = await store.add_ban(
            "name", "mallory", reason="spam", set_by="Ann", created=10.0
        )
        until_200 = await store.add_ban(
            "address",
            "10.0.0.1",
            reason="flood",
            set_by="Ann",
            created=20.0,
            expires=200.0,
        )
        expired = await store.add_ban(
            "name", "eve", reason="rude", set_by="Bob", created=30.0, expires=50.0
        )
        assert forever == BanRecord("name", "mallory", "spam", "Ann", 10.0, None)
        assert expired.expires == 50.0
        assert await store.list_active_bans(100.0) == [forever, until_200]
        assert await store.list_active_bans(200.0) == [forever]
        assert await store.delete_bans("name", "mallory") == 1
        assert await store.delete_bans("name", "mallory") == 0
        assert await store.list_active_bans(100.0) == [until_200]
        with pytest.raises(ValueError, match="'name' or an 'address'"):
            await store.add_ban(
                "nick",  # type: ignore[arg-type]
                "x",
                reason="",
                set_by="Ann",
                created=0.0,
            )


def test_room_settings_are_kept_per_opening_and_forgotten_up_to_one() -> None:
    with Store(":memory:") as store:
        store.set_room_settings(
            "#dev", "#dev", [("key", "", "old"), ("op", "@alice", "")], seq=1, ts=T0
        )
        # The room emptied (opening 1) and opened again (2) with a new key,
        # written before the first opening was forgotten: the new one stays.
        store.set_room_settings("#dev", "#Dev", [("key", "", "new")], seq=2, ts=T0)
        assert store.forget_room("#dev", 1) == 1
        assert store.room_settings() == [("#dev", "key", "", "new", 2)]
        store.set_room_settings("#dev", "#Dev", [("key", "", None)], seq=2, ts=T0)
        assert store.room_settings() == []


def test_topics_are_bounded_per_address_and_in_all_open_rooms_aside() -> None:
    with Store(":memory:") as store:
        for n in range(30):
            store.set_topic(
                f"#r{n}",
                f"#r{n}",
                f"topic {n}",
                "ann",
                T0 + n,
                set_from="10.0.0.1",
                keep={"#r0"},
                per_address=5,
                most=8,
            )
        kept = [key for key, *_ in store.topics(100)]
        # The open #r0 stays; of the rest, the address's newest.
        assert kept == ["#r0", "#r25", "#r26", "#r27", "#r28", "#r29"]
        for n in range(30, 40):  # others, from elsewhere: the global bound
            store.set_topic(
                f"#r{n}",
                f"#r{n}",
                f"topic {n}",
                "bob",
                T0 + n,
                set_from=f"10.0.1.{n}",
                keep={"#r0"},
                per_address=5,
                most=8,
            )
        kept = [key for key, *_ in store.topics(100)]
        assert kept == ["#r0"] + [f"#r{n}" for n in range(32, 40)]


def test_rooms_nobody_used_lately_lose_their_topics_and_settings() -> None:
    with Store(":memory:") as store:
        for key in ("#old", "#open", "#talked"):
            store.set_topic(key, key, "a topic", "ann", T0)
            store.set_room_settings(key, key, [("key", "", "k")], seq=1, ts=T0)
        store.set_topic("#new", "#new", "a topic", "ann", T0 + 100)
        store.append("#talked", ev.Message(T0 + 50, "#talked", "ann", "hi"))
        assert store.prune_rooms(T0 + 10, keep={"#open"}) == 2
        assert sorted(key for key, *_ in store.topics(10)) == [
            "#new",
            "#open",
            "#talked",
        ]
        assert sorted({row[0] for row in store.room_settings()}) == ["#open", "#talked"]


def test_mutes_that_ended_go_even_in_rooms_that_stay_open() -> None:
    with Store(":memory:") as store:
        store.set_room_settings(
            "#lobby",
            "#lobby",
            [
                ("mute", "@bob", repr(T0 + 5)),  # ended by T0 + 10
                ("mute-name", "carl", repr(T0 + 5)),
                ("mute", "@dan", repr(T0 + 50)),  # still running
                ("mute-name", "eve", "inf"),  # until lifted
                ("op", "@ann", ""),
            ],
            seq=1,
            ts=T0,
        )
        assert store.prune_rooms(T0 + 10, keep={"#lobby"}) == 2
        kept = sorted(
            (setting, target) for _, setting, target, *_ in store.room_settings()
        )
        assert kept == [("mute", "@dan"), ("mute-name", "eve"), ("op", "@ann")]


def test_shrinking_never_cuts_history_below_what_the_rest_takes() -> None:
    with Store(":memory:") as store:
        for n in range(2000):  # the rest: bans, far more than the history
            store.add_ban("name", f"user{n}", reason="x" * 200, set_by="op", created=T0)
        for n in range(300):
            store.append("#a", say(f"line {n} " * 10))
        history, rest = store.usage()
        assert 0 < history < rest
        assert store.shrink(1) == 0  # over any cap, but history is not the cause
        assert len(store.history("#a", 200)) == 200
        for n in range(300, 5000):  # now history is most of it: it shrinks
            store.append("#a", say(f"line {n} " * 10))
        history, rest = store.usage()
        assert history > rest
        before = history + rest
        assert store.shrink(2 * rest, batch=100) > 0
        history, rest = store.usage()
        # Stopped (within a batch) where the rest would outweigh the history.
        assert history + rest < before
        assert history >= rest * 0.9


def test_usage_is_estimated_where_sqlite_has_no_page_statistics() -> None:
    class NoDbstat:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, parameters: tuple[object, ...] = ()) -> Any:
            if "dbstat" in sql:
                raise sqlite3.OperationalError("no such table: dbstat")
            return self._conn.execute(sql, parameters)

    with Store(":memory:") as store:
        for n in range(1000):
            store.append("#a", say(f"line {n} " * 10))
        measured = store.usage()
        store._conn = NoDbstat(store._conn)  # type: ignore[assignment]
        estimated = store.usage()
        store._conn = store._conn._conn  # type: ignore[attr-defined]
    assert sum(estimated) == sum(measured)
    assert 0.5 < estimated[0] / measured[0] <= 1.0


def test_append_many_stores_a_big_group_in_order_with_consecutive_ids(
    tmp_path: Path,
) -> None:
    # More rows than one INSERT statement carries, in two rooms.
    rows: list[tuple[str, RoomEvent]] = [
        ("#a" if n % 3 else "#b", say(f"line {n}")) for n in range(150)
    ]
    with Store(tmp_path / "h.db") as store:
        first = store.append("#a", say("before"))
        ids = store.append_many(rows)
        assert ids == list(range(first + 1, first + 151))
        assert store.append_many([]) == []
        assert texts(store.history("#a", 200)) == ["before"] + [
            f"line {n}" for n in range(150) if n % 3
        ]
        in_b = store.history("#b", 200)
        assert [row_id for row_id, _ in in_b] == ids[::3]
        assert texts(in_b) == [f"line {n}" for n in range(0, 150, 3)]


def test_append_many_with_a_non_room_event_stores_none(tmp_path: Path) -> None:
    private = ev.Private(T0, "ann", "bob", "psst")
    with Store(tmp_path / "h.db") as store:
        with pytest.raises(TypeError):
            store.append_many([("#a", say("one")), ("#a", private)])  # type: ignore[list-item]
        assert store.history("#a", 10) == []
