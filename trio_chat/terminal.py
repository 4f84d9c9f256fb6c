"""The interactive terminal UI: a prompt_toolkit prompt beside the client.

prompt_toolkit runs on asyncio; the client runs on trio in guest mode on the
same loop and thread (`trio_chat.client.GuestClient`, started by the CLI, the
only module that starts event loops). Typed lines go to the client through
its thread-safe `deliver`; display lines come back as plain calls to
`TerminalUI.show` (trio's tasks run on the loop's thread) and are printed
above the prompt by prompt_toolkit, which then redraws the line being typed,
cursor and all, underneath.

The prompt shows the user's name and current room (`alice #rust> `). Tab
completes command names at the start of a line, rooms after the commands
that take one, and people's names anywhere else (`ChatCompleter`), from the
rooms and names the client has heard of (its `trio_chat.client.Roster`).
The terminal bell rings here only: `TerminalUI.bell` writes BEL to the
terminal; piped output never gets one.

Several lines at once (a bracketed paste, or lines typed with Alt-Enter
between them) are delivered as one text, which the client sends as one
multi-line message. Secrets stay off the screen and out of the input
history: when the client asks for a password (`TerminalUI.set_secret`) the
line is typed hidden, and the password of `/register` and `/identify` is
masked as it is typed; neither kind of line is kept in the history.

This module is asyncio code only; nothing here knows about trio.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final, Protocol

import outcome
from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import ANSI, StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout.processors import (
    Processor,
    Transformation,
    TransformationInput,
)
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from trio_chat import commands
from trio_chat.names import name_key
from trio_chat.render import display_width

#: The commands Tab completes at the start of a line: the server's, and the
#: client's own /bell (from the one list of commands; aliases such as `/m`
#: are what one types instead of completing).
COMMANDS: Final = commands.words(aliases=False)
#: Commands whose first argument is a room ...
ROOM_COMMANDS: Final = commands.words_taking("room")
#: ... and those of them after which nothing is completed (a key, or nothing
#: more to say); `/part`'s reason may name people.
_ROOM_ONLY: Final = ROOM_COMMANDS - {"/part", "/leave"}
#: Commands whose argument is a bell mode (/bell), and the modes.
BELL_COMMANDS: Final = commands.words_taking("bell")
BELL_MODES: Final = ("off", "mentions", "all")
#: Commands whose argument is a password: masked as typed, never in history.
SECRET_COMMANDS: Final = frozenset({"/register", "/identify"})
#: What a secret shows as while it is typed.
MASK: Final = "*"


def secret_start(text: str) -> int | None:
    """Where a password starts in a typed line (`/register PASSWORD`), or None."""
    command, space, _ = text.partition(" ")
    if space and command.lower() in SECRET_COMMANDS:
        return len(command) + 1
    return None


class MaskSecrets(Processor):
    """Show the characters of a line from `start(text)` on as `MASK`.

    `start` gives the index in the whole text where the secret begins (0:
    all of it), or None when there is nothing to hide.
    """

    def __init__(self, start: Callable[[str], int | None]) -> None:
        self._start = start

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        """The line's fragments with the secret part masked, one for one."""
        start = self._start(ti.document.text)
        if start is None:
            return Transformation(ti.fragments)
        index = ti.document.translate_row_col_to_index(ti.lineno, 0)
        masked: StyleAndTextTuples = []
        for fragment in ti.fragments:
            text = fragment[1]
            keep = max(0, min(len(text), start - index))
            index += len(text)
            shown = text[:keep] + MASK * (len(text) - keep)
            if len(fragment) == 2:
                masked.append((fragment[0], shown))
            else:
                masked.append((fragment[0], shown, fragment[2]))
        return Transformation(masked)


class SecretlessHistory(InMemoryHistory):
    """The input history, minus secrets.

    Lines typed while `secret()` is true (a password prompt) and lines that
    carry a password (`/register`, `/identify`) are not kept.
    """

    def __init__(self, secret: Callable[[], bool]) -> None:
        super().__init__()
        self._secret = secret

    def append_string(self, string: str) -> None:
        """Keep `string`, unless it is or holds a secret."""
        if self._secret() or secret_start(string) is not None:
            return
        super().append_string(string)


def _newline(event: KeyPressEvent) -> None:
    """Alt-Enter: another line in the same message."""
    event.current_buffer.insert_text("\n")


#: An SGR escape sequence (colour, bold...), the only kind display lines hold.
_SGR: Final = re.compile(r"\x1b\[[0-9;]*m")
#: What ends the lead of a display line, after which its text starts: a
#: message's `<name> `, a notice's `-- `, an error's `!! `, an action's `* `.
_LEADS: Final = ("> ", "-- ", "!! ", "* ")
#: A continuation line's indent is at most this share of the width: a lead
#: that long leaves too little room for the text beside it.
_MAX_INDENT_SHARE: Final = 2


def _indent(plain: str, width: int) -> int:
    """Where a display line's text starts: continuation lines go there."""
    starts = [plain.find(lead) + len(lead) for lead in _LEADS if lead in plain]
    if starts:
        column = display_width(plain[: min(starts)])
    else:  # a line of a block (a paste) is indented already: keep to it
        column = len(plain) - len(plain.lstrip(" "))
    return column if column <= width // _MAX_INDENT_SHARE else 2


def wrap(line: str, width: int) -> list[str]:
    """`line` cut into lines of at most `width` columns, at spaces if it can.

    Continuation lines are indented to where the text of the first starts
    (after `12:03 <alice> `), as a multi-line message's are, rather than
    broken mid-word at column 0 by the terminal. SGR sequences take no
    room; a style still on at a cut is ended there and taken up again after
    the indent, so the indent is never reversed or underlined.
    """
    tokens = [t for t in re.split(f"({_SGR.pattern})", line) if t]
    plain = _SGR.sub("", line)
    if width < 2 or display_width(plain) <= width:
        return [line]
    indent = _indent(plain, width)
    lines: list[str] = []
    current: list[str] = []  # tokens of the line being filled
    used = 0
    active: list[str] = []  # styles on since the last reset
    last_space: int | None = None  # index in `current` of the last space

    def cut(at: int) -> None:
        nonlocal current, used, last_space
        head, rest = current[:at], current[at:]
        while rest and rest[0] == " ":  # the space at the cut goes
            rest = rest[1:]
        lines.append("".join(head) + ("\x1b[0m" if active else ""))
        current = [" " * indent, *active, *rest]
        used = indent + sum(display_width(t) for t in rest if not _SGR.fullmatch(t))
        last_space = None

    for token in tokens:
        if _SGR.fullmatch(token):
            current.append(token)
            active = [] if token in ("\x1b[0m", "\x1b[m") else [*active, token]
            continue
        for char in token:
            size = display_width(char)
            if used + size > width:
                if char == " ":  # a space at the edge: the cut, and gone
                    cut(len(current))
                    continue
                cut(last_space if last_space is not None else len(current))
            if char == " " and used > indent:
                last_space = len(current)
            current.append(char)
            used += size
    lines.append("".join(current))
    return lines


class ClientHandle(Protocol):
    """The running client, as the terminal sees it (a `GuestClient`)."""

    def deliver(self, text: str) -> None:
        """Hand over one typed line. Never waits."""
        ...

    def end_input(self) -> None:
        """The user ended input: the client leaves politely. Never waits."""
        ...

    def cancel(self) -> None:
        """Stop the client at once. Never waits."""
        ...


class Known(Protocol):
    """The rooms and names to complete (a `trio_chat.client.Roster`)."""

    def rooms(self) -> Collection[str]:
        """Room names, `#` included."""
        ...

    def names(self) -> Collection[str]:
        """People's names."""
        ...


def _starting_with(candidates: Iterable[str], prefix: str) -> list[str]:
    """The candidates that start with `prefix`, ignoring case, sorted so."""
    key = name_key(prefix)
    found = {name_key(c): c for c in candidates if name_key(c).startswith(key)}
    return [found[k] for k in sorted(found)]


class ChatCompleter(Completer):
    """Tab completion for chat lines.

    At the start of a line, a `/` word completes to a command; the first
    argument of /join, /part, /switch and /who (and their aliases) to a
    room (`#` optional);
    /bell's to a bell mode; any other word to a name (an `@` before it is
    kept). Matching ignores case (`trio_chat.names.name_key`). `known` (None:
    nothing yet) is read at each completion, so it may change meanwhile.
    """

    def __init__(self, known: Known | None = None) -> None:
        self.known = known

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        """The completions of the word before the cursor."""
        words = document.text_before_cursor.split(" ")
        word = words[-1]
        command = words[0].lower() if len(words) > 1 else ""
        if len(words) == 1 and word.startswith("/"):
            choices = _starting_with(COMMANDS, word)
        elif command in ROOM_COMMANDS and len(words) == 2:
            rooms = self.known.rooms() if self.known is not None else ()
            choices = _starting_with(
                rooms, word if word.startswith("#") else f"#{word}"
            )
        elif command in BELL_COMMANDS and len(words) == 2:
            choices = _starting_with(BELL_MODES, word)
        elif command in _ROOM_ONLY:
            choices = []  # a room's key, or nothing more to say
        else:
            word = word.removeprefix("@")
            names = self.known.names() if self.known is not None else ()
            choices = _starting_with(names, word)
        for choice in choices:
            yield Completion(choice, start_position=-len(word))


class TerminalUI:
    """A `trio_chat.client.ClientUI` that prints above a prompt_toolkit prompt.

    Its methods are called by the client, on the asyncio loop's thread.
    Output is batched into one redraw per loop iteration, so a burst of
    messages does not flicker the prompt (nor ring the bell more than once).
    The prompt keeps its history in memory, edits with emacs keys and
    completes on Tab. `input` and `output` (default: the terminal) are for
    tests.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        color: bool,
        input: Input | None = None,  # prompt_toolkit's own name for it
        output: Output | None = None,
    ) -> None:
        self._loop = loop
        self._color = color
        self._name: str | None = None
        self._room: str | None = None
        self._pending: list[str] = []
        self._ring = False
        self._secret: str | None = None  # the password prompt, while asked
        self._asked: str | None = None  # the name prompt, while asked
        self.completer = ChatCompleter()
        keys = KeyBindings()
        keys.add("escape", "enter")(_newline)
        # The typed line is erased when sent: the client shows what was sent,
        # in the chat's own layout, so nothing appears twice. Completions
        # show on Tab only: a menu popping up while typing would cover chat.
        self.session: PromptSession[str] = PromptSession(
            history=SecretlessHistory(lambda: self._secret is not None),
            erase_when_done=True,
            completer=self.completer,
            complete_while_typing=False,
            key_bindings=keys,
            input_processors=[MaskSecrets(self._secret_start)],
            input=input,
            output=output,
        )

    @property
    def color(self) -> bool:
        """Whether display lines carry colour."""
        return self._color

    @property
    def columns(self) -> int:
        """The terminal's width now."""
        return self.session.output.get_size().columns

    def show(self, text: str) -> None:
        """Print `text` above the prompt, soon. Never waits."""
        if not self._pending and not self._ring:
            self._loop.call_soon_threadsafe(self._flush)
        self._pending.append(text)

    def bell(self) -> None:
        """Ring the terminal bell, soon (after the lines shown so far)."""
        if not self._pending and not self._ring:
            self._loop.call_soon_threadsafe(self._flush)
        self._ring = True

    def set_name(self, name: str | None) -> None:
        """Show `name` in the prompt."""
        self._name = name
        self._loop.call_soon_threadsafe(self.session.app.invalidate)

    def set_room(self, room: str | None) -> None:
        """Show `room` in the prompt."""
        self._room = room
        self._loop.call_soon_threadsafe(self.session.app.invalidate)

    def set_roster(self, roster: Known) -> None:
        """Complete rooms and names from `roster` from now on."""
        self.completer.known = roster

    def set_prompt(self, prompt: str | None) -> None:
        """Show `prompt` instead of the name and room (None: them again)."""
        self._asked = prompt
        self._loop.call_soon_threadsafe(self.session.app.invalidate)

    def set_secret(self, prompt: str | None) -> bool:
        """Read the next line hidden, after `prompt` (None: no longer). True."""
        self._secret = prompt
        self._loop.call_soon_threadsafe(self.session.app.invalidate)
        return True

    @property
    def asking_secret(self) -> bool:
        """Whether the line being typed is a password the client asked for."""
        return self._secret is not None

    def _secret_start(self, text: str) -> int | None:
        return 0 if self._secret is not None else secret_start(text)

    def _flush(self) -> None:
        if self._pending:
            width = self.columns
            text = "\n".join("\n".join(wrap(line, width)) for line in self._pending)
            self._pending.clear()
            # Above the running prompt (which is redrawn), or plainly if none is.
            print_formatted_text(ANSI(text) if self._color else text)
        if self._ring:
            self._ring = False
            self.session.output.bell()  # BEL moves no cursor: safe mid-prompt

    def prompt_text(self) -> str:
        """What the prompt reads now: `alice #rust> `, `alice> ` or `> `.

        While a password or a name is asked for, the client's prompt for it
        instead.
        """
        if self._secret is not None:
            return self._secret
        if self._asked is not None:
            return self._asked
        where = f"{self._name} {self._room}" if self._room else self._name
        return f"{where}> " if where else "> "

    async def read_lines(self, deliver: Callable[[str], None]) -> None:
        """Prompt for lines and `deliver` each, until Ctrl-D or Ctrl-C.

        Cancelling it restores the terminal (prompt_toolkit does).
        """
        while True:
            try:
                text = await self.session.prompt_async(self.prompt_text)
            except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C
                break
            self._secret = None  # one line answers a password prompt
            deliver(text)
        await asyncio.sleep(0)  # a checkpoint on every way out (ASYNC910)


async def _first(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of `futures` is done, without cancelling any."""
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


async def run_terminal(
    ui: TerminalUI,
    client: ClientHandle,
    done: asyncio.Future[outcome.Outcome[None]],
) -> None:
    """Run the prompt beside `client` until the user leaves or it finishes.

    `done` gets the client's outcome (trio's guest-run `done_callback`).
    Ctrl-D and Ctrl-C at the prompt end input, so the client leaves politely
    (`/quit`, then a bounded wait for the goodbye). If this coroutine is
    cancelled (a SIGINT while leaving), the client is cancelled and awaited
    before the cancellation propagates, so it never outlives the loop. The
    terminal is restored in every case.

    Raises what the client raised (`trio_chat.client.ClientError`...).
    """
    try:
        with patch_stdout(raw=True):
            prompt = asyncio.ensure_future(ui.read_lines(client.deliver))
            try:
                await _first(prompt, done)
            finally:
                prompt.cancel()
                await asyncio.wait({prompt})  # it restores the terminal
        if not done.done():
            client.end_input()
            await _first(done)
    finally:
        if not done.done():
            client.cancel()
            await _first(done)
    done.result().unwrap()
