"""Multi-line messages in the client: sending a paste, showing one as a block.

Several lines typed at once (a terminal paste) reach the client as one text;
it sends them as `/paste N` and the lines, split to the limits the server
announced, and shows them, like the `MORE` lines of others, under the first
line's text. Against a scripted server (`test_client`), then once against
the real one; the rendering as plain tables.
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing
from chatpeer import Peer
from test_client import TS, ClientRun, RecordingUI, ServerEnd, serving, start

from trio_chat import events as ev
from trio_chat.client import ClientConfig, run_client
from trio_chat.limits import Limits
from trio_chat.protocol import decode_event
from trio_chat.render import render_event, render_own_lines

#: Ceiling for a whole test (virtual time under autojump_clock).
TEST_TIMEOUT = 60.0
NOW = 1_795_475_428.0  # 2026-11-23T23:10:28Z, 23:10 in UTC


async def join_announcing(
    run: ClientRun, *, options: str = " paste-lines=50 paste-bytes=16384"
) -> ServerEnd:
    """Accept `run`'s connection; greet with `options` in HELLO; welcome alice."""
    server = await run.net.accept()
    await server.send(
        f"HELLO trio-chat/1 trio-chat/0.1.0 max-line=4096{options}",
        "NAME Choose a name:",
    )
    assert await server.line() == "alice"
    await server.send("WELCOME alice You are in #lobby as alice.")
    await run.ui.expect("You are in #lobby as alice.")
    return server


async def lines_from(server: ServerEnd, count: int) -> list[str | None]:
    return [await server.line() for _ in range(count)]


def block_under(first: str, text: str, more: str) -> bool:
    """Whether display line `more` shows `text` under `first`'s message text."""
    column = first.index("> ") + 2
    return more == " " * column + text


async def test_a_paste_goes_as_one_message_and_shows_as_a_block(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run)
        await run.type("def f(x):\n    return x\n")  # a trailing newline, as pasted
        assert await lines_from(server, 3) == ["/paste 2", "def f(x):", "    return x"]
        first = await run.ui.expect("<alice> def f(x):")
        more = run.ui.lines[run.ui.lines.index(first) + 1]
        assert block_under(first, "    return x", more)
        await run.type("after")
        assert await server.line() == "after"


async def test_paste_lines_are_text_even_the_commands_among_them(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run)
        await run.type("/quit\n/bell off")
        assert await lines_from(server, 3) == ["/paste 2", "/quit", "/bell off"]
        await run.type("still here")
        assert await server.line() == "still here"
        assert not run.done.is_set()


async def test_a_paste_over_the_servers_limits_goes_in_parts(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run, options=" paste-lines=3 paste-bytes=100")
        lines = [f"/{n} " + "x" * 37 for n in range(7)]  # 40 bytes each
        await run.type("\n".join(lines))
        # 100 bytes: two lines a paste; the last, alone, is a plain text line.
        assert await lines_from(server, 10) == [
            "/paste 2",
            *lines[0:2],
            "/paste 2",
            *lines[2:4],
            "/paste 2",
            *lines[4:6],
            "/" + lines[6],
        ]


async def test_blank_lines_at_a_parts_edge_are_left_out(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run, options=" paste-lines=2 paste-bytes=100")
        await run.type("one\ntwo\n\n\nthree\n")
        assert await lines_from(server, 4) == ["/paste 2", "one", "two", "three"]


async def test_without_pastes_the_lines_go_one_by_one_as_text(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run, options="")
        await run.type("first\n/quit\n\n  \nlast")
        assert await lines_from(server, 3) == ["first", "//quit", "last"]
        await run.type("/who")
        assert await server.line() == "/who"


async def test_one_line_left_of_a_paste_is_an_ordinary_line(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run)
        await run.type("\n/join #dev\n  \n")
        assert await server.line() == "/join #dev"


async def test_a_paste_with_a_line_over_the_limit_is_not_sent(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run)
        await run.type("fine\n" + "x" * 5000 + "\nfine too", "after")
        await run.ui.expect(
            "not sent: line 2 of those 3 lines is 5000 bytes;"
            " the server takes at most 4096"
        )
        assert await server.line() == "after"


async def test_a_paste_at_the_name_prompt_is_no_name(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery)
        server = await run.net.accept()
        await server.greet()
        await run.ui.expect("Choose a name")
        await run.type("alice\nbob", "carol")
        await run.ui.expect("not sent: several lines are no name")
        assert await server.line() == "carol"


async def test_a_paste_costs_the_clients_pacing_gently(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(
            run, options=" flood-burst=5 flood-rate=2 paste-lines=50 paste-bytes=16384"
        )
        start_time = trio.current_time()
        # 30 lines cost 4 tokens: all the client allows itself at once (one
        # less than the burst); the next line waits for a token, at 0.9 x 2/s.
        await run.type("\n".join(f"line {n}" for n in range(30)), "next")
        assert await server.line() == "/paste 30"
        await lines_from(server, 30)
        assert trio.current_time() - start_time < 0.01
        assert await server.line() == "next"
        waited = trio.current_time() - start_time
        assert waited == pytest.approx(1 / 1.8, abs=0.01)


async def test_more_lines_are_shown_under_the_message(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await join_announcing(run)
        await server.send(
            f"HIST MSG {TS} #lobby <bob> old",
            f"HIST MORE {TS} #lobby <bob> paste",
            f"MSG {TS} #lobby <bob> def f():",
            f"MORE {TS} #lobby <bob>     pass",
            f"MORE {TS} #lobby <bob> ",
            f"MORE {TS} #lobby <bob> alice: see?",
        )
        old = await run.ui.expect("[history] <bob> old")
        lines = run.ui.lines
        assert block_under(old, "paste", lines[lines.index(old) + 1])
        first = await run.ui.expect("<bob> def f():")
        at = lines.index(first)
        assert block_under(first, "    pass", lines[at + 1])
        assert lines[at + 2] == ""
        # A further line naming alice is marked, within its indent.
        assert lines[at + 3] == "!" + block_under_text(first, "alice: see?")[1:]
        assert run.ui.bells  # and it rang


def block_under_text(first: str, text: str) -> str:
    return " " * (first.index("> ") + 2) + text


# --------------------------------------------------------------------------
# Rendering, as tables


def show(line: str, *, room: str | None = "#lobby", me: str = "carol") -> str:
    return render_event(
        decode_event(line), me=me, color=False, localtime=time.gmtime, room=room
    )


@pytest.mark.parametrize(
    ("first", "more", "room"),
    [
        (
            "MSG 2026-11-23T23:10:28Z #lobby <bob> a",
            "MORE 2026-11-23T23:10:28Z #lobby <bob> b",
            "#lobby",
        ),
        (  # another room: under the text, after the room tag
            "MSG 2026-11-23T23:10:28Z #dev <bob> a",
            "MORE 2026-11-23T23:10:28Z #dev <bob> b",
            "#lobby",
        ),
        (
            "HIST MSG 2026-11-23T23:10:28Z #lobby <bob> a",
            "HIST MORE 2026-11-23T23:10:28Z #lobby <bob> b",
            "#lobby",
        ),
        (  # wide characters take two columns each
            "MSG 2026-11-23T23:10:28Z #lobby <日本語> a",
            "MORE 2026-11-23T23:10:28Z #lobby <日本語> b",
            "#lobby",
        ),
    ],
)
def test_a_more_line_goes_under_its_messages_text(
    first: str, more: str, room: str
) -> None:
    shown_first, shown_more = show(first, room=room), show(more, room=room)
    assert shown_first.endswith("> a")
    lead = shown_first.removesuffix("a")
    width = len(lead) + sum(1 for char in lead if "\u3000" <= char <= "\u9fff")
    assert shown_more == " " * width + "b"


def test_more_lines_are_sanitised_and_blank_ones_empty() -> None:
    assert show("MORE 2026-11-23T23:10:28Z #lobby <bob> \x1b[31mred") == (
        " " * len("23:10 <bob> ") + "red"
    )
    assert show("MORE 2026-11-23T23:10:28Z #lobby <bob>    ") == ""


def test_own_paste_is_shown_as_a_block() -> None:
    shown = render_own_lines(
        ["first", "  second", ""],
        me="alice",
        ts=NOW,
        color=False,
        localtime=time.gmtime,
    )
    assert shown == ["23:10 <alice> first", " " * 14 + "  second", ""]
    coloured = render_own_lines(
        ["first", "second"], me="alice", ts=NOW, color=True, localtime=time.gmtime
    )
    assert coloured[1].startswith(" " * 14) and "second" in coloured[1]


def test_more_lines_that_mention_the_user_ring_and_are_marked() -> None:
    event = decode_event("MORE 2026-11-23T23:10:28Z #lobby <bob> hi carol")
    assert isinstance(event, ev.MoreLine)
    shown = render_event(event, me="carol", color=False, localtime=time.gmtime)
    assert shown == "! " + " " * (len("23:10 <bob> ") - 2) + "hi carol"


# --------------------------------------------------------------------------
# Against the real server


async def test_a_paste_through_the_real_server(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(limits=Limits(flood_rate=0)) as port:
            bob = Peer(await trio.open_tcp_stream("127.0.0.1", port))
            await bob.join("bob")
            config = ClientConfig(host="127.0.0.1", port=port, name="alice")
            ui = RecordingUI()
            typed, lines = trio.open_memory_channel[str](10)
            nursery.start_soon(run_client, config, ui, lines)
            await ui.expect("You are in #lobby as alice.")
            await typed.send("for x in range(3):\n    print(x)")
            assert (await bob.expect("MSG")).endswith(
                " #lobby <alice> for x in range(3):"
            )
            more = await bob.line()
            assert more is not None
            assert more.startswith("MORE ")
            assert more.endswith(" #lobby <alice>     print(x)")
            await ui.expect("<alice> for x in range(3):")
            typed.close()
            assert (await bob.expect("LEAVE")).endswith(" alice quit")
            await bob.aclose()
