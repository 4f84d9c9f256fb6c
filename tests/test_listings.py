"""Replies that list things fit the asker's outbox, whatever the server holds.

Each reply is measured as queued for its asker at once (nothing is written
meanwhile, the strictest case), on a server with the smallest outbox it
accepts and content at every limit: four-byte characters everywhere.
"""

from __future__ import annotations

import re

import pytest

from trio_chat import events as ev
from trio_chat.chat import HELP_LINES, REPLAY_OUTBOX_SHARE, Chat
from trio_chat.hub import Hub, Member
from trio_chat.limits import (
    LIST_OUTBOX_SHARE,
    MAX_SERVER_LINE_BYTES,
    MIN_OUTBOX_BYTES,
    MIN_OUTBOX_MESSAGES,
    Limits,
)
from trio_chat.moderation import BanRecord, Moderation
from trio_chat.protocol import decode_event, encode_event, parse_request

NOW = 1_795_475_428.0
#: Mathematical bold small letters: four bytes each, and valid in names.
BOLD = [chr(0x1D41A + index) for index in range(26)]
#: A roomy outbox for everyone but the asker: only the asker is measured.
ROOMY = 1 << 30


def long_name(index: int, length: int = 24) -> str:
    """A distinct name of `length` four-byte letters."""
    letters = []
    for _ in range(length):
        index, digit = divmod(index, 26)
        letters.append(BOLD[digit])
    return "".join(letters)


def text_of(length: int) -> str:
    return "𝄞" * length  # four bytes each


class Server:
    """A chat with the smallest outbox there may be, and its members."""

    def __init__(self, **limits: int) -> None:
        settings: dict[str, int] = {
            "outbox_max_bytes": MIN_OUTBOX_BYTES,
            "outbox_max_messages": MIN_OUTBOX_MESSAGES,
            "flood_rate": 0,
            "max_rooms": 0,
            "max_rooms_per_user": 0,
            "max_paste_lines": 0,
        }
        self.limits = Limits(**(settings | limits))
        self.chat = Chat(
            Hub(),
            clock=lambda: NOW,
            limits=self.limits,
            moderation=Moderation(operators=["root"]),
        )
        self.members: list[Member] = []

    def join(self, name: str, *, roomy: bool = True) -> Member:
        size = {"max_messages": ROOMY, "max_bytes": ROOMY} if roomy else {}
        member = Member(
            f"c{len(self.members) + 1}",
            encode=encode_event,
            max_messages=size.get("max_messages", self.limits.outbox_max_messages),
            max_bytes=size.get("max_bytes", self.limits.outbox_max_bytes),
        )
        assert self.chat.choose_name(member, name)
        self.members.append(member)
        self.settle()
        return member

    def say(self, member: Member, line: str) -> None:
        request = parse_request(line)
        assert request is not None
        self.chat.handle(member, request)

    def settle(self) -> None:
        for member in self.members:
            member.take(1 << 40)

    def ask(
        self, member: Member, line: str, *, share: int = LIST_OUTBOX_SHARE
    ) -> list[str]:
        """The reply to `line`, checked to fit its share; as lines."""
        self.settle()
        self.say(member, line)
        assert member.evicted is None, line
        queued, messages = member.behind()
        data = member.take(1 << 40)
        self.settle()
        assert queued <= self.limits.outbox_max_bytes // share, (
            line,
            queued,
        )
        assert messages <= 2, (line, messages)  # one piece (an ERR at most)
        lines = data.decode().split("\r\n")[:-1]
        for text in lines:
            assert len(text.encode()) + 2 <= MAX_SERVER_LINE_BYTES
            decode_event(text)
        return lines


def pages(server: Server, member: Member, command: str, kind: str) -> list[str]:
    """Every item of a paged listing, page after page, and that it is paged."""
    items: list[str] = []
    page = 1
    while True:
        lines = server.ask(member, f"{command} {page}")
        items += [line for line in lines if line.startswith(kind)]
        more = [line for line in lines if line.endswith("for the next page.")]
        if not more:
            break
        match = re.search(r": (/\S+(?: \S+)?) (\d+) for the next page\.$", more[0])
        assert match is not None and int(match.group(2)) == page + 1, more
        page += 1
        assert page < 10_000
    assert page > 1, f"{command} fits one page: the test proves nothing"
    heading = next(line for line in lines if line.startswith("INFO "))
    assert heading.endswith(f", page {page} of {page}:"), heading
    return items


@pytest.fixture
def crowded() -> tuple[Server, Member]:
    """Rooms, people, bans and ignores at their longest."""
    server = Server()
    asker = server.join("asker", roomy=False)
    people = [server.join(long_name(index)) for index in range(120)]
    for index, person in enumerate(people):
        server.say(person, f"/away {text_of(200)}")
        for room in range(index * 2, index * 2 + 2):
            server.say(person, f"/join #{long_name(room, 32)}")
            server.say(person, f"/topic {text_of(300)}")
        server.settle()
    for room in range(60):  # one person in many rooms
        server.say(people[0], f"/join #{long_name(1000 + room, 32)}")
    for index in range(300):
        server.chat.moderation.add(
            BanRecord("name", long_name(5000 + index), text_of(200), "root", NOW, None)
        )
    for index in range(100):
        asker.ignore(long_name(9000 + index))
    server.say(people[1], "/switch #lobby")
    for _ in range(30):  # each about a quarter of the smallest outbox
        server.say(people[1], text_of(500))
    server.settle()
    asker.identified = "root"  # a server operator: /bans too
    return server, asker


def test_every_listing_fits_the_smallest_outbox(crowded: tuple[Server, Member]) -> None:
    server, asker = crowded
    rooms = pages(server, asker, "/rooms", "ROOM ")
    assert len(rooms) == len(server.chat.hub.rooms)
    assert len({line.split(" ")[1] for line in rooms}) == len(rooms)
    names = " ".join(
        line.split(" ", 2)[2] for line in pages(server, asker, "/who *", "WHO ")
    ).split(" ")
    assert sorted(names) == sorted(member.name or "" for member in server.members)
    away = pages(server, asker, "/who *", "INFO ")
    assert sum(" is away: " in line for line in away) == 120
    bans = [
        line
        for line in pages(server, asker, "/bans", "INFO ")
        if line.startswith("INFO name ")
    ]
    assert len(bans) == 300
    (ignored,) = server.ask(asker, "/ignore")
    assert ignored.startswith("INFO You ignore ") and " more names." in ignored
    whois = server.ask(asker, f"/whois {server.members[1].name}")
    assert any(" more rooms" in line for line in whois)
    help_lines = server.ask(asker, "/help")
    assert len(help_lines) == len(HELP_LINES)
    server.say(asker, "/join #lobby")
    # History has its own share (half: replay on joining takes as much).
    history = server.ask(asker, "/history 200", share=REPLAY_OUTBOX_SHARE)
    assert history[0].startswith("INFO ") and len(history) > 1


def test_a_page_that_does_not_exist(crowded: tuple[Server, Member]) -> None:
    server, asker = crowded
    lines = server.ask(asker, "/rooms 100000")
    assert lines[0].startswith("ERR no-such-page There is no page 100000 of rooms;")
    last = int(lines[0].rsplit(" ", 1)[1].rstrip("."))
    assert server.ask(asker, f"/rooms {last}")[0].endswith(f"page {last} of {last}:")
    assert server.ask(asker, "/rooms x")[0] == "ERR usage Usage: /rooms [PAGE]"
    assert server.ask(asker, "/who * 0")[0].startswith("ERR no-such-page ")


def test_a_short_listing_is_one_page_as_before() -> None:
    server = Server()
    alice = server.join("alice", roomy=False)
    server.join("bob")
    assert server.ask(alice, "/rooms") == ["INFO 1 room:", "ROOM #lobby 2 open "]
    assert server.ask(alice, "/who") == [
        "INFO 2 users in #lobby:",
        "WHO #lobby alice bob",
    ]
    assert server.ask(alice, "/rooms 2")[0].startswith("ERR no-such-page ")


def test_requests_for_pages_parse() -> None:
    assert parse_request("/rooms") == ev.Rooms()
    assert parse_request("/list 3") == ev.Rooms(3)
    assert parse_request("/who * 2") == ev.Who("*", 2)
    assert parse_request("/who #dev 12") == ev.Who("#dev", 12)
    assert parse_request("/who #dev and more") == ev.Who("#dev")
    assert parse_request("/bans 2") == ev.Bans(2)
    assert parse_request("/bans all") == ev.BadCommand("usage", "Usage: /bans [PAGE]")
    assert parse_request("/rooms 1234567") == ev.BadCommand(
        "usage", "Usage: /rooms [PAGE]"
    )


def test_someone_dropped_as_they_join_a_room_holds_it_no_longer() -> None:
    server = Server(max_rooms=3)
    alice = server.join("alice")
    bob = server.join("bob")
    mallory = server.join("mallory", roomy=False)
    server.say(alice, "/join #dev")
    for _ in range(3):
        server.say(alice, text_of(500))  # history for whoever comes next
    server.say(alice, "/part")
    assert "#dev" not in [room.name for room in server.chat.hub.rooms.values()]
    server.settle()
    # mallory stopped reading: her outbox is almost full when she joins.
    for _ in range(7):
        server.say(bob, f"/msg mallory {text_of(250)}")
    server.say(mallory, "/join #dev")  # its history does not fit: dropped
    server.chat.hub.flush()  # (when the chat is written out)
    assert mallory.evicted == "send queue exceeded"
    server.settle()
    assert server.ask(alice, "/rooms") == ["INFO 1 room:", "ROOM #lobby 2 open "]
    for room in ("#a", "#b"):  # the server's three rooms, the lobby included
        server.say(alice, f"/join {room}")
    assert alice.current is not None and alice.current.name == "#b"


def test_rooms_per_address() -> None:
    server = Server(max_rooms_per_address=2)
    alice, bob = server.join("alice"), server.join("bob")
    alice.address = bob.address = "10.0.0.1"
    for room in ("#a", "#b"):
        server.say(alice, f"/join {room}")
    assert server.ask(bob, "/join #c") == [
        "ERR too-many-rooms Your address has created 2 rooms that are still open,"
        " the most there may be."
    ]
    server.say(bob, "/join #a")  # joining a room is not creating one
    server.say(alice, "/part #b")
    server.say(bob, "/join #c")
    assert bob.current is not None and bob.current.name == "#c"
