"""Who may connect: caps per address and in all, sans-IO (clock passed in).

The server asks `admit` before it reads a byte or starts a TLS handshake, so
a flood of connections costs one accept and one short line each. IPv6
addresses are grouped by their /64 prefix, which one host usually owns.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import math
from typing import Final

from trio_chat.limits import Limits

#: Length of the window for "new connections per minute".
WINDOW_SECONDS: Final = 60.0
#: Addresses remembered for the per-minute count; past it the stalest are
#: forgotten, so spoofed or many-address floods cannot grow this table.
MAX_TRACKED_ADDRESSES: Final = 65536


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is refused: a stable code and a line for people.

    `retry_after`: whole seconds until a new attempt can be let in, when
    that is known (0: it is not; the refusal may clear up at any time).
    """

    code: str
    text: str
    retry_after: int = 0


def address_key(host: str) -> str:
    """The key connections are counted under: the IPv4 address or IPv6 /64."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclasses.dataclass(slots=True)
class _Address:
    open: int = 0
    unregistered: int = 0
    recent: collections.deque[float] = dataclasses.field(
        default_factory=collections.deque
    )


class Admission:
    """Counts connections by address and decides whether a new one may come in.

    Call `admit` for each new connection; if it returns None the connection
    is counted, and must later be `released` (and `registered` once it has a
    name). Nothing here waits.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._addresses: collections.OrderedDict[str, _Address] = (
            collections.OrderedDict()
        )
        self.open = 0
        self.unregistered = 0

    def admit(self, key: str, now: float) -> Refusal | None:
        """Count a new connection from `key`, or say why it is refused."""
        limits = self._limits
        entry = self._addresses.get(key)
        if entry is None:
            entry = self._addresses[key] = _Address()
            self._forget_stale(now)
        else:
            self._addresses.move_to_end(key)
        recent = entry.recent
        while recent and now - recent[0] >= WINDOW_SECONDS:
            recent.popleft()
        refusal = None
        if limits.max_connections and self.open >= limits.max_connections:
            refusal = Refusal(
                "too-many-connections",
                "The server is full; try again later.",
            )
        elif limits.max_per_address and entry.open >= limits.max_per_address:
            refusal = Refusal(
                "too-many-from-address",
                f"Too many connections from your address (the most is"
                f" {limits.max_per_address}).",
            )
        elif limits.max_new_per_minute and len(recent) >= limits.max_new_per_minute:
            refusal = Refusal(
                "too-many-new-connections",
                f"Too many new connections from your address (the most is"
                f" {limits.max_new_per_minute} a minute); wait a little.",
            )
        elif limits.max_unregistered and self.unregistered >= limits.max_unregistered:
            refusal = Refusal(
                "too-many-unregistered",
                "Too many connections are still choosing a name; try again later.",
            )
        elif (
            limits.max_unregistered_per_address
            and entry.unregistered >= limits.max_unregistered_per_address
        ):
            refusal = Refusal(
                "too-many-unregistered",
                "Too many of your connections are still choosing a name.",
            )
        if limits.max_new_per_minute:
            # Refused attempts count too: hammering does not reset the window.
            recent.append(now)
            while len(recent) > limits.max_new_per_minute:
                recent.popleft()
            if refusal is not None and refusal.code == "too-many-new-connections":
                # The window lets one more in once its oldest attempt is out.
                wait = math.ceil(recent[0] + WINDOW_SECONDS - now)
                refusal = dataclasses.replace(refusal, retry_after=max(wait, 1))
        if refusal is None:
            entry.open += 1
            entry.unregistered += 1
            self.open += 1
            self.unregistered += 1
        elif not entry.open and not recent:
            del self._addresses[key]
        return refusal

    def registered(self, key: str) -> None:
        """The connection from `key` chose a name."""
        entry = self._addresses.get(key)
        if entry is not None and entry.unregistered:
            entry.unregistered -= 1
            self.unregistered -= 1

    def released(self, key: str, *, registered: bool) -> None:
        """The connection from `key` closed."""
        entry = self._addresses.get(key)
        if entry is None or not entry.open:
            return
        entry.open -= 1
        self.open -= 1
        if not registered:
            entry.unregistered -= 1
            self.unregistered -= 1
        if not entry.open and not entry.recent:
            del self._addresses[key]

    @property
    def tracked(self) -> int:
        """Addresses remembered (bounded by `MAX_TRACKED_ADDRESSES`)."""
        return len(self._addresses)

    def _forget_stale(self, now: float) -> None:
        while len(self._addresses) > MAX_TRACKED_ADDRESSES:
            for key, entry in self._addresses.items():
                if not entry.open:
                    del self._addresses[key]
                    break
            else:
                return  # every remembered address has open connections
