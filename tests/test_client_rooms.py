"""The client in rooms: current room, tags, rejoining, mentions and the bell.

The client runs against a scripted server (`test_client.FakeNetwork`) with a
`RecordingUI`, which records the room the prompt shows, the roster handed
over for completion and when the bell rang.
"""

from __future__ import annotations

import io

import trio
import trio.testing
from test_client import TEST_TIMEOUT, TS, ClientRun, FakeNetwork, ServerEnd, start

from trio_chat.client import (
    MAX_KNOWN_NAMES,
    ClientConfig,
    PlainUI,
    Roster,
    run_client,
)


def after_stamp(line: str) -> str:
    """`line` without its local `HH:MM ` time stamp (and mention mark)."""
    line = line.removeprefix("! ")
    assert line[2] == ":" and line[5] == " ", line
    return line[6:]


def rang(run: ClientRun) -> list[str]:
    """The lines the bell rang for, in order."""
    return [run.ui.lines[index - 1] for index in run.ui.bells]


async def join_room(
    run: ClientRun, server: ServerEnd, typed: str, room: str, *, who: str = ""
) -> None:
    """The user types `typed` (a /join); the server lets it into `room`."""
    await run.type(typed)
    assert await server.line() == typed
    await server.send(
        f"JOIN {TS} {room} alice", f"WHO {room} alice {who}".rstrip(), f"SWITCH {room}"
    )
    await run.ui.expect(f"now talking in {room}")


async def test_switch_sets_the_prompt_room_and_other_rooms_are_tagged(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.ui.expect("You are in #lobby")
        assert run.ui.rooms == ["#lobby"]  # the server's lobby, after WELCOME

        await join_room(run, server, "/join #rust", "#rust", who="bob")
        assert run.ui.rooms == ["#lobby", "#rust"]
        # Its own JOIN came while the lobby was still current: tagged.
        assert any(line.endswith(" #rust -- alice joined") for line in run.ui.lines)

        await server.send(
            f"MSG {TS} #lobby <bob> in the lobby",
            f"MSG {TS} #rust <bob> in rust",
            f"ACTION {TS} #lobby bob waves",
        )
        assert after_stamp(await run.ui.expect("in the lobby")) == (
            "#lobby <bob> in the lobby"
        )
        assert after_stamp(await run.ui.expect("in rust")) == "<bob> in rust"
        assert after_stamp(await run.ui.expect("waves")) == "#lobby * bob waves"

        await run.type("hello rust")  # the user's own line: the current room
        assert await server.line() == "hello rust"
        assert after_stamp(await run.ui.expect("hello rust")) == "<alice> hello rust"

        await run.type("/switch #lobby")
        assert await server.line() == "/switch #lobby"
        await server.send("SWITCH #lobby", f"MSG {TS} #rust <bob> now elsewhere")
        assert after_stamp(await run.ui.expect("now elsewhere")) == (
            "#rust <bob> now elsewhere"
        )
        assert run.ui.rooms[-1] == "#lobby"


async def test_parting_rooms_follows_the_server(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await join_room(run, server, "/join #rust", "#rust")
        await run.type("/part")
        assert await server.line() == "/part"
        await server.send(f"LEAVE {TS} #rust alice parted", "SWITCH #lobby")
        await run.ui.expect("now talking in #lobby")
        assert run.ui.rooms[-1] == "#lobby"
        assert run.ui.roster is not None
        assert run.ui.roster.rooms() == ["#lobby", "#rust"]  # #rust is known

        # Parting the last room: no SWITCH follows, and the prompt says so.
        await run.type("/part #lobby")
        assert await server.line() == "/part #lobby"
        await server.send(f"LEAVE {TS} #lobby alice parted")
        await run.ui.expect("alice left #lobby")
        assert run.ui.rooms[-1] is None


async def test_a_kick_takes_the_user_out_of_the_room(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await join_room(run, server, "/join #rust", "#rust")
        await server.send(f"KICK {TS} #rust alice bob off topic", "SWITCH #lobby")
        await run.ui.expect("alice was kicked from #rust by bob (off topic)")
        assert run.ui.rooms[-1] == "#lobby"
        # A part that reads like a kick is shown as the part it is.
        await server.send(f"LEAVE {TS} #lobby carol parted (kicked by bob: x)")
        await run.ui.expect("carol left #lobby (kicked by bob: x)")


async def test_the_message_of_the_day_is_shown(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await server.send("MOTD Exams on Friday.", "MOTD ", f"MSG {TS} #lobby <b> hi")
        await run.ui.expect("-- [motd] Exams on Friday.")
        await run.ui.expect("<b> hi")


async def test_reconnecting_rejoins_rooms_with_their_keys_then_switches_back(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.type("/join #rust wrong")
        assert await server.line() == "/join #rust wrong"
        await server.send("ERR bad-room-key #rust needs the right key.")
        await join_room(run, server, "/join rust the key", "#rust")
        await join_room(run, server, "/join #go", "#go")
        await run.type("/switch #rust")
        assert await server.line() == "/switch #rust"
        await server.send("SWITCH #rust")
        await run.ui.expect("now talking in #rust")

        await server.close()
        await run.ui.expect("connection lost")
        await run.type("typed while away")
        server = await run.net.accept()
        await server.join("alice")
        # The rooms again, with the key that worked, back to #rust, and
        # only then what was typed (so it goes to #rust too).
        assert [await server.line() for _ in range(4)] == [
            "/join #rust the key",
            "/join #go",
            "/switch #rust",
            "typed while away",
        ]
        shown = len(run.ui.lines)
        await server.send(
            f"JOIN {TS} #rust alice",
            "WHO #rust alice",
            "SWITCH #rust",
            f"JOIN {TS} #go alice",
            "WHO #go alice",
            "SWITCH #go",
            "SWITCH #rust",
        )
        await run.ui.expect("-- rejoined #rust, #go")
        assert run.ui.rooms[-1] == "#rust"
        # One SWITCH shown for the lot: the one that says where the user is.
        switches = [line for line in run.ui.lines[shown:] if "now talking" in line]
        assert switches == ["-- now talking in #rust"]


async def test_rejoining_survives_another_loss_and_forgets_refused_rooms(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await join_room(run, server, "/join #rust", "#rust")
        await join_room(run, server, "/join #go k", "#go")
        await server.close()

        # Lost again before the server answered: the same joins next time.
        # The last /join switches to #go, where alice was: no /switch needed.
        for _ in range(2):
            server = await run.net.accept()
            await server.join("alice")
            assert await server.line() == "/join #rust"
            assert await server.line() == "/join #go k"
            await trio.testing.wait_all_tasks_blocked()
            await server.close()

        server = await run.net.accept()
        await server.join("alice")
        assert await server.line() == "/join #rust"
        assert await server.line() == "/join #go k"
        await server.send(
            f"JOIN {TS} #rust alice",
            "SWITCH #rust",
            "ERR bad-room-key #go needs the right key.",
        )
        await run.ui.expect("!! #go needs the right key.")
        await run.ui.expect("-- rejoined #rust")
        assert run.ui.rooms[-1] == "#rust"
        assert run.ui.roster is not None
        assert run.ui.roster.rooms() == ["#lobby", "#rust", "#go"]  # not its own

        # The refused room is not tried again after the next loss.
        await server.close()
        server = await run.net.accept()
        await server.join("alice")
        await run.type("marker")
        assert await server.line() == "/join #rust"
        assert await server.line() == "marker"


async def test_rename_and_quit_notices_are_shown_once(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await join_room(run, server, "/join #rust", "#rust", who="bob carol")
        await server.send(
            # One per room shared with alice, as the server sends them.
            f"NICK {TS} #lobby bob -> rob",
            f"NICK {TS} #rust bob -> rob",
            f"LEAVE {TS} #lobby carol quit (bye)",
            f"LEAVE {TS} #rust carol quit (bye)",
            f"MSG {TS} #rust <rob> done",
        )
        await run.ui.expect("<rob> done")
        renames = [line for line in run.ui.lines if "now known as" in line]
        quits = [line for line in run.ui.lines if "carol left" in line]
        assert [after_stamp(line) for line in renames] == ["-- bob is now known as rob"]
        assert [after_stamp(line) for line in quits] == ["-- carol left (quit: bye)"]


async def test_roster_follows_names_and_rooms(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await server.send(
            "WHO * alice bob carol",
            f"JOIN {TS} #rust dave",
            f"MSG {TS} #lobby <eve> hi",
            f"PRIV {TS} @alice <frank> psst",
            f"NICK {TS} #lobby bob -> rob",
            f"LEAVE {TS} #lobby carol disconnected (timeout)",
            f"LEAVE {TS} #rust dave parted",  # still online
            "INFO 2 rooms:",
            "ROOM #go 3 open Go talk",
            f"TOPIC {TS} #py eve snakes",
            "INFO done",
        )
        await run.ui.expect("-- done")
        roster = run.ui.roster
        assert roster is not None
        assert sorted(roster.names()) == ["dave", "eve", "frank", "rob"]  # no alice
        assert roster.rooms()[0] == "#lobby"  # its own first
        assert sorted(roster.rooms()) == ["#go", "#lobby", "#py", "#rust"]


def test_roster_is_bounded_forgets_the_oldest_and_ignores_case() -> None:
    roster = Roster(max_names=2, max_rooms=1)
    for name in ("ann", "bob", "cid"):
        roster.saw_name(name)
    assert roster.names() == ["bob", "cid"]
    roster.saw_name("BOB")  # seen again: newest, spelt as last seen
    roster.saw_name("dan")
    assert roster.names() == ["BOB", "dan"]
    roster.renamed("bob", "bo")
    assert roster.names() == ["dan", "bo"]
    roster.joined("#mine")
    roster.saw_room("#a")
    roster.saw_room("#b")
    roster.saw_room("*")  # not a room
    assert roster.rooms() == ["#mine", "#b"]  # its own always kept
    assert MAX_KNOWN_NAMES >= 100


async def test_bell_command_is_local_and_says_what_rings(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        await run.type("/bell")
        await run.ui.expect("-- bell: mentions (the bell rings when someone names you)")
        await server.send(
            f"MSG {TS} #lobby <bob> hi Alice!",
            f"MSG {TS} #lobby <bob> malice aforethought",
            f"HIST MSG {TS} #lobby <bob> alice, earlier",
            f"MSG {TS} #lobby <ALICE> alice talks to herself",
            f"JOIN {TS} #lobby carol",
            f"PRIV {TS} @alice <bob> psst alice",
            f"MSG {TS} #lobby <bob> plain",
        )
        await run.ui.expect("<bob> plain")
        assert [after_stamp(line) for line in rang(run)] == [
            "<bob> hi Alice!",
            "[private] <bob> psst alice",
        ]
        marked = [line for line in run.ui.lines if line.startswith("! ")]
        assert [after_stamp(line) for line in marked] == [
            "<bob> hi Alice!",
            "[private] <bob> psst alice",
        ]

        await run.type("/BELL all")
        await run.ui.expect("-- bell: all")
        await server.send(
            f"MSG {TS} #lobby <bob> anything",
            f"JOIN {TS} #lobby dave",  # a notice: no bell
            f"HIST MSG {TS} #lobby <bob> history never rings",
            f"MSG {TS} #lobby <bob> end of all",
        )
        await run.ui.expect("end of all")
        assert [after_stamp(line) for line in rang(run)[2:]] == [
            "<bob> anything",
            "<bob> end of all",
        ]

        await run.type("/bell off", "/bell loud")
        await run.ui.expect("-- bell: off")
        await run.ui.expect("!! usage: /bell off|mentions|all")
        await server.send(f"MSG {TS} #lobby <bob> alice? still marked")
        assert (await run.ui.expect("still marked")).startswith("! ")
        assert len(run.ui.bells) == 4

        await run.type("after")
        assert await server.line() == "after"  # no /bell line ever went


async def test_config_bell_sets_the_starting_mode(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice", bell="off")
        server = await run.net.accept()
        await server.join("alice")
        await server.send(f"MSG {TS} #lobby <bob> alice!")
        await run.ui.expect("alice!")
        assert run.ui.bells == []


async def test_piped_output_marks_mentions_but_never_rings() -> None:
    net = FakeNetwork()
    out = io.StringIO()
    _send, lines = trio.open_memory_channel[str](1)
    config = ClientConfig(name="alice", bell="all")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_client(config, PlainUI(out), lines, connect=net.connect)
            )
            server = await net.accept()
            await server.join("alice")
            await server.send(f"MSG {TS} #lobby <bob> hi alice")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    shown = out.getvalue()
    assert "\n! " in shown and shown.rstrip().endswith(" <bob> hi alice")
    assert "\x07" not in shown


async def test_a_crowd_joining_or_leaving_is_one_line_and_kept_for_completion(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        run = start(nursery, name="alice")
        server = await run.net.accept()
        await server.join("alice")
        crowd = " ".join(f"u{i}" for i in range(12))
        await server.send(f"JOINS {TS} #lobby {crowd}")
        shown = await run.ui.expect("joined")
        assert after_stamp(shown) == (
            "-- u0, u1, u2, u3, u4, u5, u6, u7, u8, u9 and 2 more joined"
        )
        assert run.ui.roster is not None
        assert set(run.ui.roster.names()) >= {f"u{i}" for i in range(12)}
        await server.send(f"LEAVES {TS} #lobby quit u0 u11 (class is over)")
        shown = await run.ui.expect("left")
        assert after_stamp(shown) == "-- u0 and u11 left (quit: class is over)"
        names = set(run.ui.roster.names())
        assert "u0" not in names and "u11" not in names and "u5" in names
