"""Registered names: passwords hashed with scrypt, checked in worker threads.

Hashing is deliberately slow (that is its point), so it never runs on the
event loop: each hash runs in a worker thread, at most `HASHING_THREADS` at
once, and a caller waiting for one can be cancelled. Passwords are never
logged or stored; hashes are compared in constant time; failed attempts on
a name are rate-limited.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from typing import Final

import trio

from trio_chat.names import lookalike_keys, name_key
from trio_chat.store import AsyncStore, User

#: scrypt's cost: 2**14 iterations of 8-block rounds take about 50 ms and
#: 16 MiB here, costly for a guesser with a GPU, cheap for one login.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: Bytes of hash and of per-user salt.
HASH_BYTES: Final = 32
SALT_BYTES: Final = 16
#: The key derivation and its settings, stored with each hash.
KDF: Final = f"scrypt:n={SCRYPT_N}:r={SCRYPT_R}:p={SCRYPT_P}"
#: Hashes computed at once: a login storm queues instead of eating the
#: machine's memory and cores.
HASHING_THREADS: Final = 2
#: Longest password accepted, in characters (scrypt does not care; a limit
#: keeps a pasted novel from costing anything).
MAX_PASSWORD_LENGTH: Final = 256
#: Failed attempts on one name within the window, before further attempts on
#: it are refused outright until the window passes.
MAX_FAILURES: Final = 5
FAILURE_WINDOW: Final = 300.0
#: Names whose failures are remembered; the oldest are forgotten past it.
MAX_TRACKED_FAILURES: Final = 10000


class AccountError(Exception):
    """A registration or login cannot go ahead; str() is one line for the user."""


def hash_password(password: str, salt: bytes) -> bytes:
    """scrypt of `password` with `salt` (slow: call it in a worker thread)."""
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=HASH_BYTES,
        maxmem=64 * 1024 * 1024,
    )


class Accounts:
    """The registered names of one server, backed by its store."""

    def __init__(
        self, store: AsyncStore, registered: set[str], names: Iterable[str] = ()
    ) -> None:
        self._store = store
        self._registered = registered
        #: The registered `names` by each of their `lookalike_keys`.
        self._lookalikes: dict[str, str] = {}
        for name in names:
            self._index(name)
        self._limiter = trio.CapacityLimiter(HASHING_THREADS)
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    @classmethod
    async def load(cls, store: AsyncStore) -> Accounts:
        """The accounts of `store` (the registered names are read once)."""
        return cls(store, set(await store.user_keys()), await store.user_names())

    def is_registered(self, name: str) -> bool:
        """True if `name` (compared through `name_key`) is registered."""
        return name_key(name) in self._registered

    def lookalike(self, name: str) -> str | None:
        """The registered name, as registered, that `name` looks like, if any.

        Not `name` itself: a name registered as it is has no lookalike here
        unless another registered name looks like it too.
        """
        key = name_key(name)
        for lookalike in lookalike_keys(name):
            registered = self._lookalikes.get(lookalike)
            if registered is not None and name_key(registered) != key:
                return registered
        return None

    def _index(self, name: str) -> None:
        for lookalike in lookalike_keys(name):
            self._lookalikes.setdefault(lookalike, name)

    async def register(self, name: str, password: str) -> None:
        """Register `name` with `password`.

        Raises AccountError if the name is registered already or the password
        is empty or too long. Cancellation abandons the hash (the worker
        thread finishes on its own) and registers nothing.
        """
        check_password(password)
        key = name_key(name)
        if key in self._registered:
            raise AccountError(f"The name {name} is registered already.")
        other = self.lookalike(name)
        if other is not None:
            raise AccountError(
                f"The name {name} looks too much like {other}, a registered name."
            )
        salt = os.urandom(SALT_BYTES)
        digest = await trio.to_thread.run_sync(
            hash_password, password, salt, limiter=self._limiter, abandon_on_cancel=True
        )
        now = time.time()
        user = User(key, name, digest, salt, KDF, now, now)
        if not await self._store.add_user(user):
            raise AccountError(f"The name {name} is registered already.")
        self._registered.add(key)
        self._index(name)

    async def verify(self, name: str, password: str) -> str | None:
        """`name` as it was registered if `password` is its password, else None.

        Raises AccountError when too many attempts on this name failed
        lately (the password is then not even checked).
        """
        key = name_key(name)
        now = trio.current_time()
        failures = self._failures.get(key)
        if failures is not None:
            while failures and now - failures[0] > FAILURE_WINDOW:
                failures.popleft()
            if len(failures) >= MAX_FAILURES:
                raise AccountError(
                    "Too many wrong passwords for this name; try again later."
                )
        user = await self._store.get_user(key)
        if user is None or len(password) > MAX_PASSWORD_LENGTH:
            ok = False
        else:
            digest = await trio.to_thread.run_sync(
                hash_password,
                password,
                user.salt,
                limiter=self._limiter,
                abandon_on_cancel=True,
            )
            ok = hmac.compare_digest(digest, user.password_hash)
        if ok and user is not None:
            return user.name
        if not ok:
            self._failures.setdefault(key, collections.deque()).append(now)
            self._failures.move_to_end(key)
            while len(self._failures) > MAX_TRACKED_FAILURES:
                self._failures.popitem(last=False)
        return None


def check_password(password: str) -> None:
    """Raise AccountError if `password` is empty or too long."""
    if not password:
        raise AccountError("A password cannot be empty.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(
            f"A password may have at most {MAX_PASSWORD_LENGTH} characters."
        )
