"""The chat's commands, listed once: `/help`, Tab completion and the README.

Plain data, no I/O. The server's `/help` reply (`help_lines`), the terminal
client's completion (`words`, `words_taking`) and the README's table of
commands (`markdown_table`, compared with the README by a test) all come
from `COMMANDS`, so a command cannot be added to one and forgotten in the
others. What each command does is `trio_chat.protocol.parse_request`'s and
`trio_chat.chat.Chat.handle`'s business; this is what people are told.
"""

from __future__ import annotations

import dataclasses
from typing import Final, Literal

#: What Tab completes as a command's first argument: a room, a person's
#: name, a bell mode, or nothing in particular.
Argument = Literal["room", "name", "bell", ""]
#: Who may use a command: everyone, the ops of the room, server operators.
Who = Literal["", "room ops", "server ops"]


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One entry of the list: a command, or a pair that goes together.

    `forms`: how each is typed (`/mute NAME [DURATION]`, `/unmute NAME`);
    `aliases`: other words for the first (`/names` for `/who`); `summary`:
    the `/help` text (with the forms, within 75 columns); `doc`: the
    README's fuller text (Markdown); `client`: carried out by our client
    alone, never sent (the server's `/help` leaves it out).
    """

    forms: tuple[str, ...]
    summary: str
    doc: str
    aliases: tuple[str, ...] = ()
    who: Who = ""
    argument: Argument = ""
    client: bool = False

    @property
    def words(self) -> tuple[str, ...]:
        """The command words this entry covers, aliases included."""
        firsts = [form.split(" ", 1)[0] for form in self.forms]
        return tuple(word for word in (*firsts, *self.aliases) if word != "//TEXT")

    @property
    def main_words(self) -> tuple[str, ...]:
        """The command words of `forms`, without the aliases."""
        return tuple(word for word in self.words if word not in self.aliases)

    @property
    def synopsis(self) -> str:
        """The forms and aliases as `/help` shows them: `/who [ROOM|*] (/names)`."""
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return ", ".join(self.forms) + aliases


COMMANDS: Final = (
    Command(("/help",), "this list", "list the commands"),
    Command(
        ("/who [ROOM|*] [PAGE]",),
        "who is in this room, ROOM, or online (*)",
        "who is in this room, in ROOM, or online (`*`); a long list comes in"
        " pages (`/who * 2`)",
        aliases=("/names",),
        argument="room",
    ),
    Command(
        ("/join ROOM [KEY]",),
        "join or create a room (# optional)",
        "join a room, creating it if it does not exist (`#` optional); its"
        " creator is its op, and the key, if given, is needed to join it",
        argument="room",
    ),
    Command(
        ("/part [ROOM] [REASON]",),
        "leave a room (the current one by default)",
        "leave a room (the current one by default)",
        aliases=("/leave",),
        argument="room",
    ),
    Command(
        ("/switch ROOM",),
        "send plain lines to ROOM (one you are in)",
        "send plain lines to ROOM, one of yours",
        aliases=("/go",),
        argument="room",
    ),
    Command(
        ("/rooms [PAGE]",),
        "list the rooms, their sizes and topics",
        "the rooms, how many are in each, and their topics; a long list comes"
        " in pages, and its last line says how to get the next (`/rooms 2`)",
        aliases=("/list",),
    ),
    Command(
        ("/topic [TEXT]",),
        "show or set the topic (- clears it)",
        "show the current room's topic, or set it (`-` clears it): in a room"
        " with ops, only they may; in `#lobby`, anyone",
    ),
    Command(
        ("/history [N]",),
        "the room's last N lines (50 by default)",
        "the current room's last N lines (50 by default, at most 200)",
    ),
    Command(
        ("/me ACTION",),
        "an action: /me waves",
        "an action: `* alice waves`",
    ),
    Command(
        ("/msg NAME TEXT",),
        "private message, seen only by NAME",
        "a private message only NAME sees",
        aliases=("/m",),
        argument="name",
    ),
    Command(
        ("/reply TEXT",),
        "answer the last private message",
        "a private message to whoever last sent you one",
        aliases=("/r",),
    ),
    Command(
        ("/paste N",),
        "the next N lines are one message",
        "the next N lines are one message, shown as a block (our client does"
        " it for you when you paste several lines)",
    ),
    Command(
        ("/nick NEW",),
        "change your name",
        "change your name (announced to everyone)",
    ),
    Command(
        ("/away [REASON]", "/back"),
        "say you are away, or back",
        "mark yourself away (shown in `/who`, `/whois`, and to whoever"
        " messages you), or back",
    ),
    Command(
        ("/whois NAME",),
        "NAME's rooms, idle time, away status",
        "NAME's rooms, how long online, idle time, away status (the address"
        " only to server operators)",
        argument="name",
    ),
    Command(
        ("/ignore [NAME]", "/unignore NAME"),
        "hide or show NAME's lines; /ignore alone: a list",
        "stop or start seeing NAME's lines and private messages (for this"
        " connection, or for good once your name is registered and"
        " identified); `/ignore` alone lists them",
        argument="name",
    ),
    Command(
        ("/register PASSWORD",),
        "reserve your name: it will need PASSWORD",
        "reserve your current name: from then on, connecting as it needs the password"
        " (8 characters or more, not starting with `/`)",
    ),
    Command(
        ("/identify PASSWORD",),
        "prove your registered name",
        "prove your registered name (after taking it some other way)",
    ),
    Command(
        ("/certadd", "/certdel"),
        "this TLS certificate logs you in, or not",
        "with a TLS client certificate and your name identified: from now on"
        " that certificate logs you in as this name without a prompt (or no"
        " longer)",
    ),
    Command(
        ("/motd [TEXT]",),
        "the message of the day; server ops set it",
        "the message of the day again; a server operator's TEXT replaces it"
        " for everyone (`-` goes back to the `--motd-file` one)",
    ),
    Command(
        ("/op NAME",),
        "make NAME an op of this room too",
        "make NAME, who is in the room, an op of it too",
        who="room ops",
        argument="name",
    ),
    Command(
        ("/key [KEY]",),
        "set the room's key, or remove it",
        "set the key needed to `/join` the room, or remove it",
        who="room ops",
    ),
    Command(
        ("/lecture on|off",),
        "only ops may speak, or everyone",
        "only ops may speak in the room, or everyone again",
        who="room ops",
    ),
    Command(
        ("/kick NAME [REASON]",),
        "put NAME out of this room",
        "put NAME out of the room; everyone there sees who did it and why",
        who="room ops",
        argument="name",
    ),
    Command(
        ("/mute NAME [DURATION]", "/unmute NAME"),
        "silence NAME here (90s, 10m, 2h, 1d)",
        "NAME may not speak in the room, for a DURATION of `90s`, `10m`, `2h`"
        " or `1d` (a number and its unit, nothing else), or until unmuted",
        who="room ops",
        argument="name",
    ),
    Command(
        ("/ban NAME|ADDRESS [DURATION] [REASON]",),
        "keep a name or an address out",
        "keep a name, or an address (IPv6: its /64), out: for `10m`, `2h`,"
        " `7d` (a word after NAME that starts with a digit must be a duration)"
        " or until lifted; online users it hits are disconnected",
        who="server ops",
        argument="name",
    ),
    Command(
        ("/unban NAME|ADDRESS", "/bans [PAGE]"),
        "lift a ban; list the bans in force",
        "lift a ban; list the bans in force",
        who="server ops",
    ),
    Command(
        ("/bell off|mentions|all",),
        "(this client) when the terminal bell rings",
        "(our client only, never sent) when the bell rings: never, when"
        " someone names you (the default), or for every line",
        argument="bell",
        client=True,
    ),
    Command(
        ("/quit [REASON]",),
        "leave the chat",
        "leave; others see the reason",
    ),
    Command(
        ("//TEXT",),
        "send a line that starts with /",
        "send a line that starts with `/`",
    ),
)

#: Width of /help's first column: room for most synopses, and for a summary
#: within 75 columns (a `HELP ` line fits 80 columns).
HELP_COLUMN: Final = 22
#: The indent of a summary under a synopsis too wide for the column: short,
#: so the whole reply stays small (it must fit the smallest outbox's share).
HELP_INDENT: Final = 4
#: The longest help line, so that `HELP <line>` fits an 80-column terminal.
MAX_HELP_LINE: Final = 75


def _help_entry(command: Command) -> list[str]:
    who = f"({command.who}) " if command.who else ""
    text = who + command.summary
    synopsis = command.synopsis
    if len(synopsis) <= HELP_COLUMN - 2:  # two spaces at least between
        return [synopsis.ljust(HELP_COLUMN) + text]
    return [synopsis, " " * HELP_INDENT + text]  # too wide: a line of its own


def help_lines(*, client: bool = False) -> tuple[str, ...]:
    """The `/help` reply, one line each: the server's commands (`client`:
    the client's own instead)."""
    lines: list[str] = []
    for command in COMMANDS:
        if command.client == client:
            lines.extend(_help_entry(command))
    return tuple(lines)


def words(*, aliases: bool = True, client: bool = True) -> tuple[str, ...]:
    """Every command word (`aliases`: theirs too; `client`: the client's own
    too)."""
    return tuple(
        word
        for command in COMMANDS
        if client or not command.client
        for word in (command.words if aliases else command.main_words)
    )


def words_taking(argument: Argument) -> frozenset[str]:
    """The command words whose first argument is an `argument` (a room...)."""
    return frozenset(
        word
        for command in COMMANDS
        if command.argument == argument
        for word in command.words
    )


#: How the README says who may use a command.
_README_WHO: Final[dict[Who, str]] = {
    "": "",
    "room ops": "(room ops) ",
    "server ops": "(server operators) ",
}


def _markdown_form(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def markdown_table() -> str:
    """The README's table of commands, as it must read there."""
    rows = ["| Command | What it does |", "|---|---|"]
    for command in COMMANDS:
        synopsis = ", ".join(_markdown_form(form) for form in command.forms)
        if command.aliases:
            aliases = ", ".join(_markdown_form(alias) for alias in command.aliases)
            synopsis += f" (or {aliases})"
        who = _README_WHO[command.who]
        rows.append(f"| {synopsis} | {who}{command.doc} |")
    return "\n".join(rows) + "\n"
