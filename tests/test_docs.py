"""The README and docs/PROTOCOL.md against the program.

The list of commands is kept once (`trio_chat.commands`): the README's
table, the `/help` reply PROTOCOL.md shows, the server's `/help` and the
client's Tab completion all come from it, and these tests hold them to it.
"""

from __future__ import annotations

import re
from pathlib import Path

from trio_chat import commands
from trio_chat.chat import HELP_LINES
from trio_chat.terminal import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")


def _block_after(text: str, marker: str) -> str:
    """The fenced block that follows `marker`."""
    start = text.index("```\n", text.index(marker)) + 4
    return text[start : text.index("```", start)]


def test_the_readme_table_of_commands_is_the_list() -> None:
    start = README.index("| Command | What it does |")
    end = README.index("\n\n", start) + 1
    assert README[start:end] == commands.markdown_table()


def test_help_is_the_list_and_protocol_md_shows_it() -> None:
    assert commands.help_lines() == HELP_LINES
    shown = _block_after(PROTOCOL, "The `/help` reply, verbatim:")
    assert shown == "".join(f"S: HELP {line}\n" for line in HELP_LINES)


def test_help_lines_fit_80_columns_on_the_wire() -> None:
    for line in (*commands.help_lines(), *commands.help_lines(client=True)):
        assert len(f"HELP {line}") <= 80, line


def test_tab_completes_every_command_of_the_list_and_no_other() -> None:
    assert set(COMMANDS) == set(commands.words(aliases=False))
    # Every word of the README's table (aliases included) is in the list.
    table = README[README.index("| Command | What it does |") :]
    table = table[: table.index("\n\n")]
    in_readme = {
        word for word in re.findall(r"`(/[a-z]+)", table) if not word.startswith("//")
    }
    assert in_readme == set(commands.words())


def test_every_command_the_server_parses_is_listed() -> None:
    from trio_chat import events as ev
    from trio_chat.protocol import parse_request

    for word in commands.words(client=False):
        if word == "/paste":  # taken before parsing, by trio_chat.paste
            continue
        request = parse_request(f"{word} x")
        unknown = (
            isinstance(request, ev.BadCommand) and request.code == "unknown-command"
        )
        assert not unknown, word
    assert isinstance(parse_request("/bell x"), ev.BadCommand)  # the client's own
