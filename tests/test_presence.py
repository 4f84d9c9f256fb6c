"""Presence and personal controls: away, whois, ignore, reply."""

from __future__ import annotations

import trio
import trio.testing
from chatpeer import Peer, open_peers

from trio_chat.chat import Chat
from trio_chat.server import ChatServer

NOW = 1_795_475_428.0
STAMP = "2026-11-23T23:10:28Z"


async def join_all(nursery: trio.Nursery, *names: str) -> list[Peer]:
    server = ChatServer(Chat(clock=lambda: NOW))
    peers = await open_peers(nursery, server, *names, drain_joins=True)
    for peer in peers:  # past the welcome's INFO lines
        await peer.send("/who")
        await peer.expect("WHO")
    return peers


async def test_away_is_shown_to_who_messages_and_in_who(nursery: trio.Nursery) -> None:
    alice, bob = await join_all(nursery, "alice", "bob")
    await bob.send("/away lunch")
    assert await bob.expect("INFO") == "INFO You are marked away: lunch"
    await alice.send("/msg bob are you there?")
    assert await alice.expect("INFO") == "INFO bob is away: lunch"
    assert await bob.expect("PRIV") == f"PRIV {STAMP} @bob <alice> are you there?"
    await alice.send("/who")
    await alice.expect("WHO")
    assert await alice.expect("INFO") == "INFO bob is away: lunch"
    await bob.send("/back")
    assert await bob.expect("INFO") == "INFO You are back."
    await alice.send("/whois bob")
    whois = await alice.expect("INFO")
    assert whois.startswith("INFO bob: in #lobby; online since 2026-11-23 23:10 UTC")
    assert "away" not in whois and "127.0.0.1" not in whois


async def test_ignore_hides_lines_and_private_messages(nursery: trio.Nursery) -> None:
    alice, bob, carol = await join_all(nursery, "alice", "bob", "carol")
    await alice.send("/ignore BOB")
    await alice.expect("INFO")
    await bob.send("noise")
    await bob.send("/me shouts")
    await bob.send("/msg alice psst")
    await carol.send("signal")
    assert await alice.expect("MSG") == f"MSG {STAMP} #lobby <carol> signal"
    assert not any(
        "bob" in line
        for line in alice.lines
        if line.startswith(("MSG", "ACTION", "PRIV"))
    )
    await alice.send("/unignore bob")
    await alice.expect("INFO")
    await bob.send("heard again")
    assert await alice.expect("MSG") == f"MSG {STAMP} #lobby <bob> heard again"


async def test_reply_answers_the_last_private_sender(nursery: trio.Nursery) -> None:
    alice, bob = await join_all(nursery, "alice", "bob")
    await alice.send("/reply nobody yet")
    assert (await alice.expect("ERR")).startswith("ERR no-one-to-reply ")
    await bob.send("/msg alice ping")
    await alice.expect("PRIV")
    await alice.send("/r pong")
    assert await bob.expect("PRIV") == f"PRIV {STAMP} @bob <alice> pong"
