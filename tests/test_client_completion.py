"""The terminal's Tab completion, prompt text and bell, without a terminal.

`ChatCompleter` is asked for completions of prompt_toolkit `Document`s, as
the prompt does on Tab; `TerminalUI` runs on an asyncio loop with a pipe for
input and a recording output instead of the terminal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from trio_chat.client import Roster
from trio_chat.terminal import COMMANDS, ChatCompleter, TerminalUI, wrap


@pytest.fixture
def completer() -> ChatCompleter:
    roster = Roster()
    roster.joined("#lobby")
    roster.joined("#rust")
    roster.saw_room("#Random")
    roster.saw_room("#go")
    for name in ("bob", "Bobby", "carol", "Åsa"):
        roster.saw_name(name)
    return ChatCompleter(roster)


def complete(completer: ChatCompleter, text: str) -> list[tuple[str, int]]:
    """(completion, start position) for `text` with the cursor at its end."""
    found = completer.get_completions(Document(text), CompleteEvent())
    return [(c.text, c.start_position) for c in found]


def texts(completer: ChatCompleter, text: str) -> list[str]:
    return [choice for choice, _ in complete(completer, text)]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("/jo", ["/join"]),
        ("/J", ["/join"]),  # case does not matter
        ("/s", ["/switch"]),
        ("/m", ["/me", "/motd", "/msg", "/mute"]),
        ("/wh", ["/who", "/whois"]),
        ("/un", ["/unban", "/unignore", "/unmute"]),
        ("/b", ["/back", "/ban", "/bans", "/bell"]),
        ("/x", []),
    ],
)
def test_commands_complete_at_the_start_of_a_line(
    completer: ChatCompleter, typed: str, expected: list[str]
) -> None:
    assert texts(completer, typed) == expected


def test_every_command_is_offered_for_a_lone_slash(completer: ChatCompleter) -> None:
    assert sorted(texts(completer, "/")) == sorted(COMMANDS)
    # The ones a new user missed, once.
    missing = "whois away back history reply ignore register identify kick mute"
    missing += " ban op key lecture motd paste bell"
    assert {f"/{word}" for word in missing.split()} <= set(COMMANDS)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("/join #r", [("#Random", -2), ("#rust", -2)]),
        ("/join r", [("#Random", -1), ("#rust", -1)]),  # '#' optional
        ("/JOIN #RU", [("#rust", -3)]),
        ("/part #l", [("#lobby", -2)]),
        ("/switch g", [("#go", -1)]),
        ("/who #", [("#go", -1), ("#lobby", -1), ("#Random", -1), ("#rust", -1)]),
    ],
)
def test_rooms_complete_after_room_commands(
    completer: ChatCompleter, typed: str, expected: list[tuple[str, int]]
) -> None:
    assert complete(completer, typed) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("bo", [("bob", -2), ("Bobby", -2)]),
        ("hi CA", [("carol", -2)]),
        ("thanks @bobb", [("Bobby", -4)]),  # the @ stays
        ("/msg c", [("carol", -1)]),
        ("/me waves at å", [("Åsa", -1)]),
        ("/part #rust bye b", [("bob", -1), ("Bobby", -1)]),  # a reason
        ("#rust", []),  # chat text, not a room command
        ("hi dave", []),
    ],
)
def test_names_complete_anywhere_else(
    completer: ChatCompleter, typed: str, expected: list[tuple[str, int]]
) -> None:
    assert complete(completer, typed) == expected


def test_no_names_for_a_room_key_and_bell_modes_for_bell(
    completer: ChatCompleter,
) -> None:
    assert texts(completer, "/join #rust b") == []  # a key is not a name
    assert texts(completer, "/bell m") == ["mentions"]
    assert texts(ChatCompleter(), "bo") == []  # no roster yet: nothing


def test_completion_reads_the_roster_as_it_changes(completer: ChatCompleter) -> None:
    assert completer.known is not None
    assert isinstance(completer.known, Roster)
    completer.known.renamed("carol", "caz")
    completer.known.saw_room("#rustaceans")
    assert texts(completer, "c") == ["caz"]
    assert texts(completer, "/join #rusta") == ["#rustaceans"]


class BellOutput(DummyOutput):
    """A terminal output that only counts bells."""

    def __init__(self) -> None:
        self.bells = 0

    def bell(self) -> None:
        self.bells += 1


@pytest.fixture
def terminal() -> Iterator[tuple[TerminalUI, BellOutput, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    output = BellOutput()
    try:
        with create_pipe_input() as pipe:
            yield TerminalUI(loop, color=False, input=pipe, output=output), output, loop
    finally:
        loop.close()


def test_prompt_shows_name_and_room(
    terminal: tuple[TerminalUI, BellOutput, asyncio.AbstractEventLoop],
) -> None:
    ui, _output, _loop = terminal
    assert ui.prompt_text() == "> "
    ui.set_name("alice")
    assert ui.prompt_text() == "alice> "
    ui.set_room("#rust")
    assert ui.prompt_text() == "alice #rust> "
    ui.set_name("alicia")
    assert ui.prompt_text() == "alicia #rust> "
    ui.set_room(None)
    assert ui.prompt_text() == "alicia> "


def test_bell_rings_the_terminal_once_per_batch(
    terminal: tuple[TerminalUI, BellOutput, asyncio.AbstractEventLoop],
) -> None:
    ui, output, loop = terminal
    ui.bell()
    ui.bell()  # in the same batch: one ring is enough
    assert output.bells == 0  # soon, not during the client's call
    loop.run_until_complete(asyncio.sleep(0))
    assert output.bells == 1
    ui.bell()
    loop.run_until_complete(asyncio.sleep(0))
    assert output.bells == 2


def test_set_roster_feeds_the_prompt_completer(
    terminal: tuple[TerminalUI, BellOutput, asyncio.AbstractEventLoop],
) -> None:
    ui, _output, _loop = terminal
    roster = Roster()
    roster.saw_name("bob")
    ui.set_roster(roster)
    assert ui.session.completer is ui.completer
    assert texts(ui.completer, "b") == ["bob"]


# --------------------------------------------------------------------------
# Long lines: cut at words, continued under their text


@pytest.mark.parametrize(
    ("line", "width", "expected"),
    [
        ("12:03 <bob> short", 40, ["12:03 <bob> short"]),
        (
            "12:03 <bob> one two three four five",
            24,
            ["12:03 <bob> one two", "            three four", "            five"],
        ),
        ("-- a notice that wraps", 12, ["-- a notice", "   that", "   wraps"]),
        ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),  # no space: cut anyway
        ("      return x + y", 13, ["      return", "      x + y"]),  # a block's
        ("12:03 <bob> one two three", 16, ["12:03 <bob> one", "  two three"]),
    ],
)
def test_long_lines_wrap_at_words_under_their_text(
    line: str, width: int, expected: list[str]
) -> None:
    assert wrap(line, width) == expected


def test_a_style_on_at_a_cut_is_ended_and_taken_up_after_the_indent() -> None:
    reverse = "\x1b[7m"
    line = f"12:03 <bob> {reverse}hello carol and more words\x1b[0m"
    assert wrap(line, 24) == [
        f"12:03 <bob> {reverse}hello carol\x1b[0m",
        f"            {reverse}and more\x1b[0m",
        f"            {reverse}words\x1b[0m",
    ]
