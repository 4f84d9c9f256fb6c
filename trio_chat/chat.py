"""The chat itself: names, commands, joins and leaves.

Independent of any wire format and of trio: it receives requests (see
`trio_chat.events`) from connections and answers with server events through
the hub. It never waits; the clock is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from trio_chat import PROTOCOL_VERSION, __version__
from trio_chat import events as ev
from trio_chat.hub import Hub, Member
from trio_chat.limits import Limits
from trio_chat.names import NAME_RULES, InvalidName, name_key, validate_name
from trio_chat.sanitize import sanitize_text

log = logging.getLogger("trio_chat.chat")

#: The welcome banner shown to every new connection.
BANNER: Final = (
    r"  _        _                 _           _   ",
    r" | |_ _ __(_) ___        ___| |__   __ _| |_ ",
    r" | __| '__| |/ _ \ _____/ __| '_ \ / _` | __|",
    r" | |_| |  | | (_) |_____| (__| | | | (_| | |_ ",
    r"  \__|_|  |_|\___/       \___|_| |_|\__,_|\__|",
    r"",
    r" Welcome to trio-chat: say hello, be kind.  /help lists the commands.",
)
#: The `/help` text, one line each.
HELP_LINES: Final = (
    "/help                  this list",
    "/who  (or /names)      who is online",
    "/nick NEW              change your name",
    "/me ACTION             say what you do, e.g. /me waves",
    "/msg NAME TEXT         private message, seen only by NAME",
    "/quit [REASON]         leave the chat",
    "//TEXT                 send a line that starts with /",
)
#: Names that fit in one WHO line, so long lists are split.
WHO_NAMES_PER_LINE: Final = 50
#: Longest /quit reason kept, in characters.
MAX_REASON_LENGTH: Final = 200
#: Leave reason when the peer closed the connection without /quit.
CONNECTION_CLOSED: Final = "connection closed"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Chat:
    """One chat server's logic. Every method returns without waiting.

    A connection calls `greet` once, `choose_name` with each name attempt
    until it is in, `handle` with each request, and `leave` exactly when it
    goes (calling `leave` again does nothing).
    """

    def __init__(
        self,
        hub: Hub | None = None,
        *,
        clock: Callable[[], float],
        room: str = ev.LOBBY,
        limits: Limits = Limits(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        self.hub = hub if hub is not None else Hub()
        self.hub.on_evict = self._evicted
        self.room = room
        self._clock = clock
        self.limits = limits
        self.accepting_names = True

    # -- connection life cycle -------------------------------------------

    def greet(self, member: Member) -> None:
        """Send the hello line, the banner, who is online and the name prompt."""
        send = self.hub.send
        send(
            member,
            ev.Hello(
                PROTOCOL_VERSION,
                f"trio-chat/{__version__}",
                self.limits.max_line_bytes,
                self.limits.flood_burst if self.limits.flood_rate else 0,
                self.limits.flood_rate,
            ),
        )
        for line in BANNER:
            send(member, ev.Banner(line))
        send(member, ev.Info(f"{_plural(len(self.hub), 'user')} online."))
        self.prompt(member)

    def prompt(self, member: Member) -> None:
        """Ask `member` for a name."""
        self.hub.send(member, ev.NamePrompt(f"Choose a name: {NAME_RULES}."))

    def choose_name(self, member: Member, raw: str) -> bool:
        """Try `raw` as the member's name; True once it is in.

        On an invalid or taken name the member is told why and prompted again.
        """
        try:
            name = validate_name(raw)
        except InvalidName as exc:
            self.hub.send(member, ev.Error("name-invalid", str(exc)))
            self.prompt(member)
            return False
        if self._too_similar(member, name):
            self.prompt(member)
            return False
        if not self.hub.add(member, name):
            self.hub.send(
                member,
                ev.Error("name-taken", f"The name {name} is taken; choose another."),
            )
            self.prompt(member)
            return False
        self.hub.send(
            member,
            ev.Welcome(
                name, f"You are in {self.room} as {name}. Type /help for the commands."
            ),
        )
        others = [n for n in self.hub.names() if n != name]
        self.hub.send(
            member,
            ev.Info(
                f"{_plural(len(others), 'other user')} here"
                + (f": {', '.join(others[:WHO_NAMES_PER_LINE])}" if others else ".")
                + (" ..." if len(others) > WHO_NAMES_PER_LINE else "")
            ),
        )
        self.hub.publish(ev.Joined(self._clock(), self.room, name), exclude=member)
        log.info("[%s] joined as %s", member.conn_id, name)
        return True

    def _too_similar(self, member: Member, name: str) -> bool:
        """Refuse `name` if it looks like someone else's who is online."""
        other = self.hub.lookalike(name)
        if other is None or other is member or other.name is None:
            return False
        if name_key(other.name) == name_key(name):
            text = f"The name {name} is taken; choose another."
        else:
            text = f"The name {name} looks too much like {other.name}, who is online."
        self.hub.send(member, ev.Error("name-taken", text))
        return True

    def leave(self, member: Member, how: ev.LeaveHow, reason: str = "") -> None:
        """`member` is gone: tell the others once, if it had joined."""
        if self.hub.remove(member):
            self._announce_leave(member, how, reason)

    def _evicted(self, member: Member, reason: str) -> None:
        self._announce_leave(member, "disconnected", reason)

    def _announce_leave(self, member: Member, how: ev.LeaveHow, reason: str) -> None:
        assert member.name is not None
        log.info(
            "[%s] %s left: %s%s",
            member.conn_id,
            member.name,
            how,
            f" ({reason})" if reason else "",
        )
        self.hub.publish(ev.Left(self._clock(), self.room, member.name, how, reason))

    # -- requests ---------------------------------------------------------

    def handle(self, member: Member, request: ev.Request) -> None:
        """Carry out one request from a member that is in."""
        name = member.name
        assert name is not None, "requests come only after a name"
        send = self.hub.send
        match request:
            case ev.Say(text):
                self.hub.publish(
                    ev.Message(self._clock(), self.room, name, text), exclude=member
                )
            case ev.Me(text):
                self.hub.publish(
                    ev.Action(self._clock(), self.room, name, text), exclude=member
                )
            case ev.PrivateMsg(target, text):
                recipient = self.hub.get(target)
                if recipient is None or recipient.name is None:
                    send(
                        member,
                        ev.Error(
                            "no-such-user",
                            f"Nobody called {sanitize_text(target)[:40]} is online.",
                        ),
                    )
                else:
                    send(
                        recipient, ev.Private(self._clock(), name, recipient.name, text)
                    )
            case ev.Nick(new):
                self._rename(member, name, new)
            case ev.Who():
                names = self.hub.names()
                send(member, ev.Info(f"{_plural(len(names), 'user')} in {self.room}:"))
                for start in range(0, len(names), WHO_NAMES_PER_LINE):
                    send(
                        member,
                        ev.WhoList(
                            self.room, tuple(names[start : start + WHO_NAMES_PER_LINE])
                        ),
                    )
            case ev.Help():
                for line in HELP_LINES:
                    send(member, ev.HelpLine(line))
            case ev.Quit(reason):
                reason = reason[:MAX_REASON_LENGTH]
                self.leave(member, "quit", reason)
                send(member, ev.Goodbye("quit", "Bye!"))
                member.close()
            case ev.BadCommand(code, text):
                send(member, ev.Error(code, text))

    def _rename(self, member: Member, old: str, raw: str) -> None:
        try:
            new = validate_name(raw)
        except InvalidName as exc:
            self.hub.send(member, ev.Error("name-invalid", str(exc)))
            return
        if new == old:
            self.hub.send(member, ev.Info(f"You are already {new}."))
            return
        if self._too_similar(member, new):
            return
        if not self.hub.rename(member, new):
            self.hub.send(member, ev.Error("name-taken", f"The name {new} is taken."))
            return
        log.info("[%s] %s is now %s", member.conn_id, old, new)
        event = ev.Renamed(self._clock(), self.room, old, new)
        self.hub.publish(event)
