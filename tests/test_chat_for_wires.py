"""The chat's requests and events for wire formats other than the line protocol.

IRC names the room on every command, answers with structured replies
(NAMES, LIST, ISON, WHOIS, MODE) and never answers a NOTICE; these tests
drive a `Chat` directly and look at the events each member was sent.
"""

from __future__ import annotations

import math
from typing import TypeVar

from trio_chat import events as ev
from trio_chat.chat import Chat
from trio_chat.hub import Hub, Member
from trio_chat.limits import MIN_OUTBOX_BYTES, Limits
from trio_chat.moderation import Moderation
from trio_chat.protocol import encode_event

NOW = 1_795_475_428.0
E = TypeVar("E")


class Events:
    """An encoder that lets a test see the events a member was sent.

    Each event becomes a numbered line as long as the line protocol's, so
    replies that fit a budget measure as they would on the wire.
    """

    def __init__(self) -> None:
        self.seen: dict[bytes, ev.ServerEvent] = {}

    def __call__(self, event: ev.ServerEvent) -> bytes:
        token = str(len(self.seen)).encode()
        self.seen[token] = event
        size = len(encode_event(event))
        return token + b" " * max(size - len(token) - 1, 0) + b"\n"


def member(conn_id: str) -> Member:
    return Member(conn_id, encode=Events())


def sent(who: Member) -> list[ev.ServerEvent]:
    """The events `who` was sent since the last call, in order."""
    assert isinstance(who.encode, Events)
    seen = who.encode.seen
    data = b""
    while more := who.take(1 << 40):  # a take is a write's worth
        data += more
    return [seen[line.strip()] for line in data.splitlines()]


def of(kind: type[E], events: list[ev.ServerEvent]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


def chat_with(*names: str, **limits: int) -> tuple[Chat, list[Member]]:
    chat = Chat(Hub(), clock=lambda: NOW, limits=Limits(**limits))
    members = [member(f"c{index}") for index, _ in enumerate(names, 1)]
    for one, name in zip(members, names, strict=True):
        assert chat.choose_name(one, name)
    for one in members:
        sent(one)
    return chat, members


def test_say_and_me_name_their_room() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Join("#dev"))
    chat.handle(bob, ev.Join("#dev"))
    chat.handle(bob, ev.Switch("#lobby"))
    sent(alice)
    sent(bob)
    chat.handle(bob, ev.Say("in dev", "#dev"))
    chat.handle(bob, ev.Me("waves", "#DEV"))
    assert of(ev.Message, sent(alice)) == [ev.Message(NOW, "#dev", "bob", "in dev")]
    chat.handle(bob, ev.Me("waves", "#DEV"))
    assert of(ev.Action, sent(alice)) == [ev.Action(NOW, "#dev", "bob", "waves")]
    chat.handle(bob, ev.Say("hi", "#nowhere"))
    (error,) = sent(bob)
    assert error == ev.Error("not-in-room", "You are not in #nowhere.", "#nowhere")


def test_a_notice_is_relayed_as_one_and_never_answered() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(bob, ev.Say("build done", "#lobby", notice=True))
    assert sent(alice) == [ev.Message(NOW, "#lobby", "bob", "build done", True)]
    chat.handle(bob, ev.Say("x", "#nowhere", notice=True))
    chat.handle(bob, ev.PrivateMsg("nobody", "x", notice=True))
    assert sent(bob) == []
    chat.handle(alice, ev.Away("lunch"))
    chat.handle(bob, ev.PrivateMsg("alice", "ping", notice=True))
    assert sent(bob) == []
    assert of(ev.Private, sent(alice)) == [
        ev.Private(NOW, "bob", "alice", "ping", True)
    ]
    # The same to a muted or lectured room: nothing comes back.
    chat.handle(alice, ev.RoomMode("lecture", "on", "#lobby"))
    sent(bob)
    chat.handle(bob, ev.Say("x", "#lobby", notice=True))
    assert sent(bob) == []


def test_a_private_message_to_someone_away_says_so() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Away("lunch"))
    assert sent(alice) == [ev.MarkedAway("lunch", "You are marked away: lunch")]
    chat.handle(bob, ev.PrivateMsg("ALICE", "hi"))
    assert sent(bob) == [ev.AwayIs("alice", "lunch", "alice is away: lunch")]
    chat.handle(alice, ev.Back())
    assert sent(alice) == [
        ev.Private(NOW, "bob", "alice", "hi"),
        ev.MarkedAway("", "You are back."),
    ]
    chat.handle(bob, ev.PrivateMsg("carol", "hi"))
    assert sent(bob) == [
        ev.Error("no-such-user", "Nobody called carol is online.", "carol")
    ]


def test_joining_with_names_answers_in_irc_order() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Join("#dev"))
    chat.handle(alice, ev.Topic("ship it", "#dev"))
    chat.handle(alice, ev.Say("said before", "#dev"))
    chat.handle(alice, ev.Away("lunch"))
    sent(alice)
    chat.handle(bob, ev.Join("#dev", names=True))
    events = sent(bob)
    assert [type(event) for event in events] == [
        ev.Joined,
        ev.TopicIs,
        ev.Roster,
        ev.Replayed,  # the topic change
        ev.Replayed,  # the line
        ev.Switched,
    ]
    assert events[2] == ev.Roster(
        "#dev", (ev.Standing("alice", op=True, away=True), ev.Standing("bob")), 2
    )
    assert events[4] == ev.Replayed(ev.Message(NOW, "#dev", "alice", "said before"))
    # Without `names`, the line protocol's answer, history first.
    carol = member("c3")
    chat.choose_name(carol, "carol")
    sent(carol)
    chat.handle(carol, ev.Join("#dev"))
    kinds = [type(event) for event in sent(carol)]
    assert kinds[0] is ev.Replayed and ev.Roster not in kinds and ev.WhoList in kinds


def test_join_errors_name_the_room() -> None:
    chat, (alice, bob) = chat_with("alice", "bob", max_rooms_per_user=2)
    chat.handle(alice, ev.Join("#dev", "k3y"))
    chat.handle(bob, ev.Join("#Dev", "wrong", names=True))
    assert sent(bob) == [ev.Error("bad-room-key", "#dev needs the right key.", "#dev")]
    chat.handle(bob, ev.Join("#a b"))
    (error,) = sent(bob)
    assert isinstance(error, ev.Error)
    assert (error.code, error.subject) == ("room-invalid", "#a b")
    chat.handle(bob, ev.Join("#one"))
    sent(bob)
    chat.handle(bob, ev.Join("#two"))
    (error,) = sent(bob)
    assert isinstance(error, ev.Error)
    assert (error.code, error.subject) == ("too-many-rooms", "#two")


def test_part_all_leaves_every_room() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Join("#dev"))
    chat.handle(bob, ev.Join("#dev"))
    sent(bob)
    chat.handle(alice, ev.PartAll("bye"))
    assert alice.rooms == {}
    assert of(ev.Left, sent(bob)) == [
        ev.Left(NOW, "#lobby", "alice", "parted", "bye"),
        ev.Left(NOW, "#dev", "alice", "parted", "bye"),
    ]


def test_names_of_a_room_everyone_or_one_user() -> None:
    chat, (alice, bob, carol) = chat_with("alice", "bob", "Carol")
    chat.handle(bob, ev.Join("#dev"))
    chat.handle(carol, ev.Join("#dev"))
    chat.handle(carol, ev.Away("gone"))
    sent(carol)
    chat.handle(carol, ev.Names("#DEV", detail=True))
    assert sent(carol) == [
        ev.Roster(
            "#dev",
            (ev.Standing("bob", op=True), ev.Standing("Carol", away=True)),
            2,
            detail=True,
        )
    ]
    chat.handle(alice, ev.Names("*"))
    (roster,) = sent(alice)
    assert isinstance(roster, ev.Roster)
    assert [one.name for one in roster.members] == ["alice", "bob", "Carol"]
    chat.handle(alice, ev.Names("carol"))
    assert sent(alice) == [ev.Roster("Carol", (ev.Standing("Carol", away=True),), 1)]
    chat.handle(alice, ev.Names("nobody"))
    assert sent(alice) == [ev.Roster("nobody", (), 0)]
    chat.handle(alice, ev.Names("#dev"))  # not hers: who is in it stays private
    assert sent(alice) == [ev.Error("not-in-room", "You are not in #dev.", "#dev")]


def test_a_long_roster_is_cut_to_a_share_of_the_outbox() -> None:
    chat = Chat(
        Hub(),
        clock=lambda: NOW,
        limits=Limits(outbox_max_bytes=8192, max_paste_lines=0),
    )
    people = [member(f"c{index}") for index in range(600)]
    for index, one in enumerate(people):
        assert chat.choose_name(one, f"user{index:04d}")
    sent(people[0])
    chat.handle(people[0], ev.Names("#lobby"))
    (roster,) = sent(people[0])
    assert isinstance(roster, ev.Roster)
    assert roster.total == 600
    assert 100 < len(roster.members) < 600
    size = len(encode_event(roster))
    assert size <= 8192 // 4
    assert roster.members == tuple(
        ev.Standing(f"user{index:04d}") for index in range(len(roster.members))
    )


def test_list_rooms_in_one_reply() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Join("#dev", "key"))
    chat.handle(alice, ev.Topic("ship", "#dev"))
    sent(bob)
    chat.handle(bob, ev.ListRooms())
    assert sent(bob) == [
        ev.RoomList(
            (ev.RoomInfo("#dev", 1, "ship", keyed=True), ev.RoomInfo("#lobby", 2, "")),
            2,
        )
    ]


def test_a_long_room_list_is_cut() -> None:
    chat, (alice,) = chat_with(
        "alice", outbox_max_bytes=MIN_OUTBOX_BYTES, max_paste_lines=0
    )
    for index in range(19):  # 20 rooms per user, the lobby one of them
        chat.handle(alice, ev.Join(f"#room{index:02d}"))
        chat.handle(alice, ev.Topic("a long topic " * 30, f"#room{index:02d}"))
    sent(alice)
    chat.handle(alice, ev.ListRooms())
    (listing,) = sent(alice)
    assert isinstance(listing, ev.RoomList)
    assert listing.total == 20
    assert 0 < len(listing.rooms) < 20
    assert len(encode_event(listing)) <= MIN_OUTBOX_BYTES // 4


def test_is_on_lists_who_is_online_once_each() -> None:
    chat, (alice, _bob, carol) = chat_with("alice", "bob", "carol")
    chat.handle(carol, ev.Away("x"))
    chat.handle(alice, ev.IsOn(("CAROL", "nobody", "bob", "carol"), userhost=True))
    assert sent(alice) == [
        ev.Online((ev.Standing("carol", away=True), ev.Standing("bob")), True)
    ]


def test_is_on_marks_server_operators() -> None:
    chat = Chat(Hub(), clock=lambda: NOW, moderation=Moderation(operators=["root2"]))
    alice, teacher = member("c1"), member("c2")
    chat.choose_name(alice, "alice")
    chat.is_registered = lambda name: name == "root2"
    chat.choose_name(teacher, "root2", identified=True)
    sent(alice)
    chat.handle(alice, ev.IsOn(("root2", "alice")))
    assert sent(alice) == [
        ev.Online((ev.Standing("root2", op=True), ev.Standing("alice")))
    ]


def test_op_commands_name_their_room() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Join("#dev"))
    chat.handle(bob, ev.Join("#dev"))
    chat.handle(alice, ev.Switch("#lobby"))
    sent(alice)
    sent(bob)
    chat.handle(alice, ev.Topic("new", "#dev"))
    assert of(ev.TopicIs, sent(bob)) == [
        ev.TopicIs(NOW, "#dev", "alice", "new", changed=True)
    ]
    chat.handle(alice, ev.Topic(None, "#dev"))
    assert sent(alice)[-1] == ev.TopicIs(NOW, "#dev", "alice", "new")
    chat.handle(alice, ev.RoomMode("op", "BOB", "#dev"))
    changed = ev.RoomChanged(
        "#dev", "alice", "op", "bob", "alice made bob an op of #dev."
    )
    assert sent(bob) == [changed]
    chat.handle(alice, ev.RoomMode("key", "s3cret", "#dev"))
    chat.handle(alice, ev.RoomMode("lecture", "on", "#dev"))
    assert sent(bob) == [
        ev.RoomChanged("#dev", "alice", "key", "s3cret", "alice set a key on #dev."),
        ev.RoomChanged(
            "#dev",
            "alice",
            "lecture",
            "on",
            "alice says: in #dev only ops may speak now.",
        ),
    ]
    chat.handle(bob, ev.RoomMode("", "", "#dev"))
    assert sent(bob) == [ev.ModesAre("#dev", "s3cret", True)]
    chat.handle(alice, ev.Mute("bob", 60, room="#dev"))
    assert sent(bob) == [ev.Info("alice muted bob in #dev for 1m.", "#dev")]
    chat.handle(alice, ev.Kick("bob", "enough", "#dev"))
    assert of(ev.Kicked, sent(bob)) == [
        ev.Kicked(NOW, "#dev", "bob", "alice", "enough")
    ]
    chat.handle(bob, ev.Kick("alice", "", "#lobby"))
    assert sent(bob) == [
        ev.Error("not-op", "Only the ops of #lobby may do that.", "#lobby")
    ]


def test_not_an_op_is_told_which_room() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(alice, ev.Join("#dev"))
    chat.handle(bob, ev.Join("#dev"))
    sent(bob)
    chat.handle(bob, ev.Topic("mine", "#dev"))
    chat.handle(bob, ev.RoomMode("key", "x", "#dev"))
    chat.handle(bob, ev.Mute("alice", math.inf, room="#dev"))
    assert [(e.code, e.subject) for e in of(ev.Error, sent(bob))] == [
        ("not-op", "#dev"),
        ("not-op", "#dev"),
        ("not-op", "#dev"),
    ]


def test_whois_reply_carries_fields_and_the_line_text() -> None:
    chat, (alice, bob) = chat_with("alice", "bob")
    chat.handle(bob, ev.Join("#dev"))
    chat.handle(bob, ev.Away("lunch"))
    sent(alice)
    chat.handle(alice, ev.Whois("BOB"))
    (reply,) = sent(alice)
    assert reply == ev.WhoisReply(
        "bob",
        "bob: in #lobby, #dev; online since 2026-11-23 23:10 UTC; idle 0s; away: lunch",
        ("#lobby", "#dev"),
        ("#dev",),
        NOW,
        0.0,
        None,
        False,
        False,
        "lunch",
    )
    chat.handle(alice, ev.Whois("nobody"))
    assert sent(alice) == [
        ev.Error("no-such-user", "Nobody called nobody is online.", "nobody")
    ]


def test_the_motd_is_one_event() -> None:
    chat = Chat(Hub(), clock=lambda: NOW, moderation=Moderation(motd=("a", "b")))
    alice = member("c1")
    chat.choose_name(alice, "alice")
    assert ev.MotdIs(("a", "b")) in sent(alice)
    chat.handle(alice, ev.Motd())
    assert sent(alice) == [ev.MotdIs(("a", "b"))]
    bare, (bob,) = chat_with("bob")
    bare.handle(bob, ev.Motd())
    assert sent(bob) == [ev.Info("There is no message of the day."), ev.MotdIs(())]


def test_name_errors_name_the_name() -> None:
    chat, (alice,) = chat_with("alice")
    bob = member("c2")
    chat.choose_name(bob, "ALICE")
    chat.choose_name(bob, "a b")
    errors = of(ev.Error, sent(bob))
    assert [(error.code, error.subject) for error in errors] == [
        ("name-taken", "ALICE"),
        ("name-invalid", "a b"),
    ]
    chat.handle(alice, ev.Nick("x y"))
    (error,) = sent(alice)
    assert isinstance(error, ev.Error) and error.subject == "x y"
