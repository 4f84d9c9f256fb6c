"""Server-wide moderation: operators, bans, the message of the day, access.

Plain data and rules, no I/O and no clock of its own: the chat asks
`Moderation` whether a name or an address may come in, at a time it passes.
Bans live here in memory (so admission never waits on the database); the
server writes each change behind to the store and loads the bans in force
at start-up, so they survive restarts.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import math
import time
from collections.abc import Iterable
from typing import Final, Literal

from trio_chat.admission import address_key
from trio_chat.names import name_key
from trio_chat.sanitize import sanitize_text

#: Longest message of the day, in lines and in bytes (UTF-8): a greeting,
#: not a manual; a longer file is cut and the server warns at start-up.
MAX_MOTD_LINES: Final = 20
MAX_MOTD_BYTES: Final = 4096
#: Bans in force at once: each admission looks them up, and a list this
#: long is already a sign the server needs a firewall instead.
MAX_BANS: Final = 10_000
#: Longest ban reason kept, in characters.
MAX_BAN_REASON: Final = 200

BanKind = Literal["name", "address"]


@dataclasses.dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban on a name key or an address key; `expires` None: until lifted.

    Times are the chat clock's (POSIX seconds on a real server).
    """

    kind: BanKind
    target_key: str
    reason: str
    set_by: str
    created: float
    expires: float | None

    def active(self, now: float) -> bool:
        """True while the ban is in force."""
        return self.expires is None or self.expires > now

    @property
    def until(self) -> str:
        """`until 2026-11-24 10:00 UTC`, or "" for a ban until lifted."""
        if self.expires is None:
            return ""
        return "until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.expires))

    def describe(self) -> str:
        """`name bob until 2026-11-24 10:00 UTC by alice: spam`, for operators."""
        why = f": {self.reason}" if self.reason else ""
        until = self.until or "until lifted"
        return f"{self.kind} {self.target_key} {until} by {self.set_by}{why}"

    def told(self, who: str = "You are") -> str:
        """What the banned are told: `You are banned from this server until ...`.

        The reason, if any, ends the text (no full stop after it).
        """
        until = f" {self.until}" if self.until else ""
        why = f": {self.reason}" if self.reason else "."
        return f"{who} banned from this server{until}{why}"


def ban_target(raw: str) -> tuple[BanKind, str]:
    """What `/ban RAW` bans: an address (by its admission key) or a name key.

    An IPv4 address bans that address; an IPv6 address bans its /64 (the
    unit connections are counted in, since one host gets a whole /64).
    """
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        return "name", name_key(raw)
    return "address", address_key(raw)


def read_motd(path: str) -> tuple[tuple[str, ...], bool]:
    """The MOTD file's lines, sanitised and cut to the limits; True if cut.

    Raises OSError when the file cannot be read (invalid UTF-8 is replaced).
    """
    with open(path, "rb") as file:
        data = file.read(MAX_MOTD_BYTES + 1)
    return motd_lines(data.decode("utf-8", errors="replace"))


def motd_lines(text: str) -> tuple[tuple[str, ...], bool]:
    """`text` as MOTD lines: sanitised, trailing blank lines dropped, bounded."""
    lines = [sanitize_text(line).rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    kept: list[str] = []
    size = 0
    for line in lines[:MAX_MOTD_LINES]:
        size += len(line.encode()) + 1
        if size > MAX_MOTD_BYTES:
            break
        kept.append(line)
    return tuple(kept), len(kept) < len(lines)


class Moderation:
    """Who runs the server, who may come in, and what they are told first.

    `operators`: name keys of the server operators (they must also have
    identified as those registered names). `allow`: if not empty, the only
    name keys that may join. `registered_only`: only registered names may
    join. `server_password`: if set, every connection must give it before
    choosing a name.
    """

    def __init__(
        self,
        *,
        operators: Iterable[str] = (),
        allow: Iterable[str] = (),
        registered_only: bool = False,
        server_password: str = "",
        motd: tuple[str, ...] = (),
    ) -> None:
        self.operators = frozenset(name_key(name) for name in operators)
        self.allow = frozenset(name_key(name) for name in allow)
        self.registered_only = registered_only
        self.server_password = server_password
        #: The MOTD from the file, and the one set with /motd (None: unset).
        self.file_motd = motd
        self.set_motd: tuple[str, ...] | None = None
        self._bans: dict[tuple[BanKind, str], BanRecord] = {}

    # -- the message of the day ------------------------------------------

    @property
    def motd(self) -> tuple[str, ...]:
        """The message of the day in force: the one set with /motd, or the file's."""
        return self.file_motd if self.set_motd is None else self.set_motd

    # -- access -----------------------------------------------------------

    def is_operator(self, identified: str | None) -> bool:
        """True if the account key `identified` is a server operator."""
        return identified is not None and identified in self.operators

    def check_server_password(self, given: str) -> bool:
        """True if `given` is the server password (compared in constant time)."""
        return hmac.compare_digest(
            given.encode("utf-8"), self.server_password.encode("utf-8")
        )

    def allowed(self, key: str) -> bool:
        """True if the name key `key` may join as far as the allowlist goes."""
        return not self.allow or key in self.allow

    # -- bans -------------------------------------------------------------

    def load(self, bans: Iterable[BanRecord]) -> None:
        """Take in the bans kept in the store (at start-up)."""
        for ban in bans:
            self._bans[ban.kind, ban.target_key] = ban

    def add(self, ban: BanRecord) -> bool:
        """Put `ban` in force (replacing one on the same target).

        False if `MAX_BANS` are in force already and this target has none.
        """
        key = (ban.kind, ban.target_key)
        if key not in self._bans and len(self._bans) >= MAX_BANS:
            return False
        self._bans[key] = ban
        return True

    def lift(self, kind: BanKind, target_key: str) -> BanRecord | None:
        """Lift the ban on this target; the ban lifted, or None if there was none."""
        return self._bans.pop((kind, target_key), None)

    def find(self, kind: BanKind, target_key: str, now: float) -> BanRecord | None:
        """The ban in force at `now` on this target, if any (expired ones go)."""
        ban = self._bans.get((kind, target_key))
        if ban is not None and not ban.active(now):
            del self._bans[kind, target_key]
            return None
        return ban

    def active(self, now: float) -> list[BanRecord]:
        """Every ban in force at `now`, oldest first (expired ones go)."""
        for key, ban in list(self._bans.items()):
            if not ban.active(now):
                del self._bans[key]
        return sorted(self._bans.values(), key=lambda ban: ban.created)


def seconds_left(ban: BanRecord, now: float) -> float:
    """Seconds until `ban` expires (inf for a ban until lifted)."""
    return math.inf if ban.expires is None else max(0.0, ban.expires - now)
