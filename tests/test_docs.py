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


# --------------------------------------------------------------------------
# The README's nc session, replayed against a real server


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_SERVER_LINE = re.compile(r"^[A-Z]+( |$)")


def _readme_nc_session() -> list[str]:
    start = README.index("```\n$ nc 127.0.0.1 7777\n") + len(
        "```\n$ nc 127.0.0.1 7777\n"
    )
    return README[start : README.index("```", start)].splitlines()


async def test_the_readme_nc_session_is_what_the_server_says() -> None:
    import trio
    from chatpeer import Peer
    from test_client import TEST_TIMEOUT, serving

    session = _readme_nc_session()
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as port:
            # alice, before carol comes: what the session's HIST and TOPIC
            # lines say she did.
            alice = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await alice.join("alice")
            for line in session:
                if line.startswith("HIST MSG ") and "<alice> " in line:
                    await alice.send(line.split("<alice> ", 1)[1])
                elif line.startswith("HIST TOPIC ") and " alice " in line:
                    await alice.send("/topic " + line.split(" ", 5)[5])
                    await alice.expect("TOPIC")
            carol = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            skipping = False
            for line in session:
                if line == "...":  # lines left out: up to the next one shown
                    skipping = True
                elif not _SERVER_LINE.match(line):  # typed by carol
                    await carol.send(line)
                else:
                    if line.startswith("MSG ") and "<alice> " in line:
                        await alice.send(line.split("<alice> ", 1)[1])
                    expected = _TIMESTAMP.sub("TS", line)
                    got = _TIMESTAMP.sub("TS", await carol.line() or "")
                    while skipping and got != expected:
                        got = _TIMESTAMP.sub("TS", await carol.line() or "")
                    skipping = False
                    assert got == expected
            await alice.aclose()
            await carol.aclose()


# --------------------------------------------------------------------------
# The README's walk through mutual TLS, run


def _sh_block_after(marker: str) -> list[list[str]]:
    """The commands of the ```sh block after `marker`: continuations joined,
    comments dropped, each split as the shell would."""
    import shlex

    start = README.index("```sh\n", README.index(marker)) + len("```sh\n")
    text = README[start : README.index("```", start)].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line]


def _local(argv: list[str], **changes: str) -> list[str]:
    """A README command for this machine: `trio-chat` is this Python's, each
    `changes` key (an argument) becomes its value."""
    import sys

    assert argv[0] == "trio-chat", argv
    return [
        sys.executable,
        "-m",
        "trio_chat",
        *(changes.get(arg, arg) for arg in argv[1:]),
    ]


async def test_the_readme_mutual_tls_walk_through_works(tmp_path: Path) -> None:
    import shutil
    import subprocess

    import trio
    from chatpeer import Peer
    from test_client import TEST_TIMEOUT

    from trio_chat.tls import client_context

    # Names of this machine for the LAN's: chat.lan is localhost here.
    here = {"chat.lan": "localhost", "0.0.0.0": "127.0.0.1"}
    lan = _sh_block_after("**On a LAN.**")
    mutual = _sh_block_after("**Client certificates (mutual TLS).**")
    gen_server, gen_clients = lan[0], mutual[0]
    serve, client = mutual[1], mutual[2]
    assert gen_server[1] == gen_clients[1] == "gen-certs"
    assert "--client-ca" in serve and "--cert" in client
    with trio.fail_after(TEST_TIMEOUT):
        for argv in (gen_server, gen_clients):
            await trio.run_process(_local(argv, **here), cwd=tmp_path)
        server = await trio.lowlevel.open_process(
            [*_local(serve, **here), "--port", "0", "--db", ":memory:"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.stdout is not None
            listening = b""
            while b"\n" not in listening:
                listening += await server.stdout.receive_some()
            port = listening.split(b"\n")[0].rsplit(b":", 1)[1].split()[0].decode()
            # bob is in, with his certificate ...
            certs = tmp_path / "lan-certs"
            context = client_context(
                certs / "ca.pem", certfile=certs / "bob.pem", keyfile=certs / "bob.key"
            )
            bob = Peer(
                await trio.open_ssl_over_tcp_stream(
                    "localhost",
                    int(port),
                    ssl_context=context,
                    https_compatible=False,
                )
            )
            await bob.join("bob")
            # ... and alice, on her machine, with the files handed to her.
            machine = tmp_path / "alice"
            (machine / "lan-certs").mkdir(parents=True)
            shutil.copy(certs / "ca.pem", machine / "lan-certs")
            for name in ("alice.pem", "alice.key"):
                shutil.copy(certs / name, machine)
            result = await trio.run_process(
                [*_local(client, **here), "--port", port],
                cwd=machine,
                stdin=b"hello over mutual TLS\n",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            while not (await bob.expect("MSG")).endswith("hello over mutual TLS"):
                pass
            await bob.aclose()
        finally:
            server.terminate()
            with trio.move_on_after(TEST_TIMEOUT, shield=True):
                await server.wait()
