"""The IRC session, sans-IO: bytes in, requests out; events in, bytes out.

Byte-by-byte tables, as `test_protocol.py` has for the line protocol, and a
Hypothesis property that chunking never changes what a client's bytes mean.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.limits import IRC_MAX_LINE_BYTES, Limits
from trio_chat.protocol import NEED_DATA
from trio_chat.wire import NOOP, Closed
from trio_chat.wire.irc import IrcSession, encode_shared, strip_formatting

T = 1_700_000_000.0  # 2023-11-14T22:13:20Z
SERVER = "srv"


def session(*, accounts: bool = False, limits: Limits | None = None) -> IrcSession:
    return IrcSession(server_name=SERVER, accounts=accounts, limits=limits or Limits())


def drain(irc: IrcSession) -> tuple[list[object], bytes]:
    """Every event the session has, and the bytes it answered on its own."""
    events: list[object] = []
    while (event := irc.next_event()) is not NEED_DATA:
        events.append(event)
    return events, irc.data_to_send()


def feed(irc: IrcSession, data: bytes) -> tuple[list[object], bytes]:
    irc.receive_data(data)
    return drain(irc)


def registered(nick: str = "alice") -> IrcSession:
    """A session through NICK, USER and the welcome, as the server drives it."""
    irc = session()
    assert irc.send(ev.NamePrompt("Your name?")) == b""
    events, _ = feed(irc, f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    assert events == [ev.ChooseName(nick, False)]
    irc.send(ev.Welcome(nick, "You are in #lobby."))
    irc.send(ev.MotdIs(()))
    assert drain(irc) == ([ev.Names("#lobby")], b"")
    return irc


# -- registration -------------------------------------------------------------


def test_registration_welcome_motd_then_the_lobby() -> None:
    irc = session()
    irc.send(ev.NamePrompt("Your name?"))
    # The line protocol's greeting says nothing to an IRC client.
    assert irc.send(ev.Info("3 users online.")) == b""
    events, out = feed(irc, b"CAP LS 302\r\nNICK alice\r\nUSER a 0 * :Alice\r\n")
    assert events == []
    assert out == b":srv CAP * LS :multi-prefix server-time\r\n"
    events, out = feed(irc, b"CAP END\r\n")
    assert (events, out) == ([ev.ChooseName("alice", False)], b"")
    assert not irc.registered
    welcome = irc.send(ev.Welcome("alice", "You are in #lobby.")).split(b"\r\n")
    assert [line.split(b" ")[1] for line in welcome[:-1]] == [
        b"001",
        b"002",
        b"003",
        b"004",
        b"005",
        b"005",
    ]
    assert welcome[0] == b":srv 001 alice :Welcome to the trio-chat IRC network, alice"
    isupport = b" ".join(welcome[4:6])
    for token in (
        b"CASEMAPPING=rfc8265",
        b"CHANTYPES=#",
        b"PREFIX=(o)@",
        b"CHANMODES=,k,,m",
        b"NICKLEN=24",
        b"CHANNELLEN=33",
        b"TOPICLEN=300",
    ):
        assert token in isupport
    assert irc.registered
    # The MOTD (or 422) comes before the lobby's JOIN, as clients expect.
    assert irc.send(ev.MotdIs(())) == (
        b":srv 422 alice :There is no message of the day\r\n"
        b":alice!alice@trio-chat JOIN #lobby\r\n"
    )
    assert drain(irc) == ([ev.Names("#lobby")], b"")
    # A later MOTD (the MOTD command) does not join the lobby again.
    assert irc.send(ev.MotdIs(("hello",))) == (
        b":srv 375 alice :- srv Message of the day -\r\n"
        b":srv 372 alice :- hello\r\n"
        b":srv 376 alice :End of /MOTD command\r\n"
    )
    assert drain(irc) == ([], b"")


def test_commands_before_registration_get_451() -> None:
    irc = session()
    irc.send(ev.NamePrompt("Your name?"))
    assert feed(irc, b"JOIN #dev\r\n") == (
        [],
        b":srv 451 * :You have not registered\r\n",
    )


def test_unsupported_capabilities_are_refused_not_ignored() -> None:
    irc = session()
    irc.send(ev.NamePrompt("Your name?"))
    feed(irc, b"CAP LS 302\r\n")
    _, out = feed(irc, b"CAP REQ :echo-message server-time\r\n")
    assert out == b":srv CAP * NAK :echo-message server-time\r\n"
    _, out = feed(irc, b"CAP REQ :server-time\r\n")
    assert out == b":srv CAP * ACK :server-time\r\n"


def test_sasl_plain_asks_the_chat_to_log_in() -> None:
    irc = session(accounts=True)
    irc.send(ev.NamePrompt("Your name?"))
    _, out = feed(irc, b"CAP LS 302\r\nNICK alice\r\nUSER a 0 * :A\r\n")
    assert b"sasl" in out
    feed(irc, b"CAP REQ :sasl\r\n")
    assert feed(irc, b"AUTHENTICATE PLAIN\r\n") == ([], b"AUTHENTICATE +\r\n")
    token = base64.b64encode(b"alice\0alice\0correct horse").decode()
    events, _ = feed(irc, f"AUTHENTICATE {token}\r\n".encode())
    assert events == [ev.LogIn("alice", "correct horse")]


def test_a_registered_nick_without_a_password_gets_433() -> None:
    irc = session(accounts=True)
    irc.send(ev.NamePrompt("Your name?"))
    feed(irc, b"NICK alice\r\nUSER a 0 * :A\r\n")
    out = irc.send(ev.PasswordPrompt("alice", "Password for alice?"))
    assert out.startswith(b":srv 433 * alice :This name is registered")


# -- requests, byte by byte ----------------------------------------------------

REQUESTS: list[tuple[bytes, list[object], bytes]] = [
    (b"PRIVMSG #dev :hi", [ev.Say("hi", "#dev", False)], b""),
    (b"PRIVMSG #dev hi", [ev.Say("hi", "#dev", False)], b""),
    (b"NOTICE #dev :hi", [ev.Say("hi", "#dev", True)], b""),
    (b"PRIVMSG #dev :\x01ACTION waves\x01", [ev.Me("waves", "#dev")], b""),
    (b"PRIVMSG bob :hi", [ev.PrivateMsg("bob", "hi", False)], b""),
    (
        b"PRIVMSG bob :\x01ACTION waves\x01",
        [ev.PrivateMsg("bob", "* waves", False)],
        b"",
    ),
    # Formatting codes go: bold, colour with its numbers, reset.
    (b"PRIVMSG #dev :\x02bold\x02 \x0304,01red\x0f", [ev.Say("bold red", "#dev")], b""),
    (
        b"PRIVMSG #dev :\x01VERSION\x01",
        [NOOP],
        b":srv NOTICE alice :CTCP VERSION is not relayed on this server.\r\n",
    ),
    (b"PRIVMSG", [NOOP], b":srv 411 alice :No recipient given (PRIVMSG)\r\n"),
    (b"PRIVMSG #dev", [NOOP], b":srv 412 alice :No text to send\r\n"),
    (b"PRIVMSG #dev :\x02\x02", [NOOP], b":srv 412 alice :No text to send\r\n"),
    (b"NOTICE #dev", [NOOP], b""),  # NOTICE is never answered
    (
        b"PRIVMSG #a,#b,bob :x",
        [ev.Say("x", "#a"), ev.Say("x", "#b"), ev.PrivateMsg("bob", "x", False)],
        b"",
    ),
    (
        b"PRIVMSG a,b,c,d,e :x",
        [ev.PrivateMsg(name, "x", False) for name in "abcd"],
        b":srv 407 alice a,b,c,d,e :Too many targets\r\n",
    ),
    (b"JOIN #a,#b key", [ev.Join("#a", "key", True), ev.Join("#b", "", True)], b""),
    (b"JOIN nohash", [NOOP], b":srv 403 alice nohash :No such channel\r\n"),
    (b"JOIN", [NOOP], b":srv 461 alice JOIN :Not enough parameters\r\n"),
    (b"JOIN 0", [ev.PartAll()], b""),
    (b"PART #a :bye", [ev.Part("#a", "bye")], b""),
    (b"TOPIC #a", [ev.Topic(None, "#a")], b""),
    (b"TOPIC #a :new topic", [ev.Topic("new topic", "#a")], b""),
    (b"MODE #a", [ev.RoomMode("", "", "#a")], b""),
    (b"MODE #a +k sec", [ev.RoomMode("key", "sec", "#a")], b""),
    (b"MODE #a -k", [ev.RoomMode("key", "", "#a")], b""),
    (b"MODE #a +k", [NOOP], b":srv 461 alice MODE :Not enough parameters\r\n"),
    (b"MODE #a +m", [ev.RoomMode("lecture", "on", "#a")], b""),
    (b"MODE #a -m", [ev.RoomMode("lecture", "off", "#a")], b""),
    (b"MODE #a +o bob", [ev.RoomMode("op", "bob", "#a")], b""),
    (b"MODE #a +b", [NOOP], b":srv 368 alice #a :End of channel ban list\r\n"),
    (
        b"MODE #a +b x!*@*",
        [NOOP],
        b":srv 472 alice b :is not a channel mode here: bans are server-wide,"
        b" set by server operators\r\n",
    ),
    (b"MODE #a +z", [NOOP], b":srv 472 alice z :is unknown mode char to me\r\n"),
    (b"KICK #a bob :bye", [ev.Kick("bob", "bye", "#a")], b""),
    (b"NAMES #a", [ev.Names("#a")], b""),
    (b"WHO #a", [ev.Names("#a", detail=True)], b""),
    (b"LIST", [ev.ListRooms()], b""),
    (b"WHOIS bob", [ev.Whois("bob")], b""),
    (b"AWAY :lunch", [ev.Away("lunch")], b""),
    (b"AWAY", [ev.Back()], b""),
    (b"ISON a b", [ev.IsOn(("a", "b"))], b""),
    (b"USERHOST a", [ev.IsOn(("a",), userhost=True)], b""),
    (b"NICK bob2", [ev.Nick("bob2")], b""),
    (b"MOTD", [ev.Motd(None)], b""),
    (b"QUIT :bye", [ev.Quit("bye")], b""),
    (b"PING :tok", [NOOP], b":srv PONG srv :tok\r\n"),
    (b"ping tok", [NOOP], b":srv PONG srv :tok\r\n"),  # commands in any case
    (b"FOO", [NOOP], b":srv 421 alice FOO :Unknown command\r\n"),
    (b"", [NOOP], b""),  # an empty line is ignored
    (b"@time=x PRIVMSG #dev :tagged", [ev.Say("tagged", "#dev")], b""),
    (b":alice PRIVMSG #dev :sourced", [ev.Say("sourced", "#dev")], b""),
    (b"x" * IRC_MAX_LINE_BYTES, [NOOP], b":srv 417 alice :Input line was too long\r\n"),
]


@pytest.mark.parametrize(("line", "events", "out"), REQUESTS)
def test_request(line: bytes, events: list[object], out: bytes) -> None:
    irc = registered()
    assert feed(irc, line + b"\r\n") == (events, out)


def test_bare_lf_ends_a_line_too() -> None:
    irc = registered()
    assert feed(irc, b"PRIVMSG #dev :one\nPRIVMSG #dev :two\n") == (
        [ev.Say("one", "#dev"), ev.Say("two", "#dev")],
        b"",
    )


def test_after_a_too_long_line_the_next_one_counts() -> None:
    irc = registered()
    events, out = feed(
        irc, b"PRIVMSG #dev :" + b"y" * 600 + b"\r\nPRIVMSG #dev :ok\r\n"
    )
    assert events == [NOOP, ev.Say("ok", "#dev")]  # the long one counts
    assert out == b":srv 417 alice :Input line was too long\r\n"


def test_endless_line_closes_the_session() -> None:
    irc = registered()
    limit = Limits().max_unterminated_bytes
    events, out = feed(irc, b"z" * (limit + 1))
    assert events == [Closed("read queue exceeded")]
    assert out.endswith(b"ERROR :Closing link: read queue exceeded\r\n")


def test_end_of_stream_is_reported_once() -> None:
    irc = registered()
    assert feed(irc, b"") == ([Closed("connection closed")], b"")
    assert drain(irc) == ([], b"")


def test_the_server_pings_and_the_client_answers() -> None:
    irc = registered()
    assert irc.ping("tok-1")
    assert irc.data_to_send() == b"PING :tok-1\r\n"
    assert irc.awaiting_pong
    assert not irc.ping("tok-2")  # one unanswered PING at a time
    feed(irc, b"PONG srv :tok-1\r\n")
    assert not irc.awaiting_pong


# -- lines out: the same bytes for every IRC member of a room ---------------

SHARED: list[tuple[ev.ServerEvent, bytes]] = [
    (ev.Message(T, "#a", "bob", "hello"), b":bob!bob@trio-chat PRIVMSG #a :hello\r\n"),
    (
        ev.Message(T, "#a", "bob", "psst", True),
        b":bob!bob@trio-chat NOTICE #a :psst\r\n",
    ),
    (
        ev.Message(T, "#a", "bob", "one\ntwo"),
        b":bob!bob@trio-chat PRIVMSG #a :one\r\n:bob!bob@trio-chat PRIVMSG #a :two\r\n",
    ),
    (ev.MoreLine(T, "#a", "bob", "more"), b":bob!bob@trio-chat PRIVMSG #a :more\r\n"),
    (
        ev.Action(T, "#a", "bob", "waves"),
        b":bob!bob@trio-chat PRIVMSG #a :\x01ACTION waves\x01\r\n",
    ),
    (ev.Joined(T, "#a", "bob"), b":bob!bob@trio-chat JOIN #a\r\n"),
    (
        ev.JoinedMany(T, "#a", ("b", "c")),
        b":b!b@trio-chat JOIN #a\r\n:c!c@trio-chat JOIN #a\r\n",
    ),
    (ev.Left(T, "#a", "bob", "parted", "bye"), b":bob!bob@trio-chat PART #a :bye\r\n"),
    (ev.Left(T, "#a", "bob", "parted", ""), b":bob!bob@trio-chat PART #a\r\n"),
    (
        ev.Left(T, "#a", "bob", "quit", "night"),
        b":bob!bob@trio-chat QUIT :Quit: night\r\n",
    ),
    (
        ev.Left(T, "#a", "bob", "disconnected", "ping timeout"),
        b":bob!bob@trio-chat QUIT :Disconnected: ping timeout\r\n",
    ),
    (
        ev.Kicked(T, "#a", "bob", "alice", "spam"),
        b":alice!alice@trio-chat KICK #a bob :spam\r\n",
    ),
    (ev.Renamed(T, "#a", "bob", "rob"), b":bob!bob@trio-chat NICK rob\r\n"),
    (
        ev.TopicIs(T, "#a", "alice", "new topic", True),
        b":alice!alice@trio-chat TOPIC #a :new topic\r\n",
    ),
    (ev.Info("alice set a key", "#a"), b":trio-chat NOTICE #a :alice set a key\r\n"),
    # History for clients without server-time: a NOTICE that starts with
    # when it was said (a PRIVMSG would read as said now).
    (
        ev.Replayed(ev.Message(T, "#a", "bob", "old")),
        b":bob!bob@trio-chat NOTICE #a :[2023-11-14T22:13:20Z] old\r\n",
    ),
    # Presence of the past is not replayed: a client's list would be wrong.
    (ev.Replayed(ev.Joined(T, "#a", "bob")), b""),
]


@pytest.mark.parametrize(("event", "data"), SHARED)
def test_shared_line(event: ev.ServerEvent, data: bytes) -> None:
    assert encode_shared(event) == data
    # A member's own session gives room lines the same bytes.
    assert registered().send(event) == data


def test_a_long_message_is_split_never_cut() -> None:
    text = " ".join(["word"] * 200)  # 999 bytes
    data = encode_shared(ev.Message(T, "#a", "bob", text))
    lines = data.split(b"\r\n")[:-1]
    assert len(lines) == 3
    assert all(len(line) + 2 <= IRC_MAX_LINE_BYTES for line in lines)
    said = b" ".join(line.split(b" :", 1)[1].strip() for line in lines)
    assert said.decode() == text


def test_nothing_in_a_shared_line_breaks_the_framing() -> None:
    data = encode_shared(ev.Message(T, "#a", "bob", "a\rb\x00c"))
    assert data == b":bob!bob@trio-chat PRIVMSG #a :abc\r\n"
    data = encode_shared(ev.TopicIs(T, "#a", "alice", "x\r\nQUIT :fake", True))
    assert data.count(b"\r\n") == 1


REPLIES: list[tuple[ev.ServerEvent, bytes]] = [
    (
        ev.Error("name-taken", "The name bob is taken.", "bob"),
        b":srv 433 alice bob :The name bob is taken.\r\n",
    ),
    (ev.Error("not-op", "Only ops.", "#a"), b":srv 482 alice #a :Only ops.\r\n"),
    (
        ev.Error("bad-room-key", "Wrong key.", "#a"),
        b":srv 475 alice #a :Wrong key.\r\n",
    ),
    (
        ev.Error("muted", "You are muted.", "#a"),
        b":srv 404 alice #a :You are muted.\r\n",
    ),
    (ev.Error("something", "Odd."), b":srv 400 alice * :Odd.\r\n"),
    (
        ev.Roster("#a", (ev.Standing("alice", op=True), ev.Standing("bob")), 2),
        b":srv 353 alice = #a :@alice bob\r\n:srv 366 alice #a :End of /NAMES list\r\n",
    ),
    (
        ev.RoomList((ev.RoomInfo("#a", 2, "topic"),), 1),
        b":srv 321 alice Channel :Users  Name\r\n:srv 322 alice #a 2 :topic\r\n"
        b":srv 323 alice :End of /LIST\r\n",
    ),
    (ev.Online((ev.Standing("a"),)), b":srv 303 alice :a\r\n"),
    (
        ev.TopicIs(T, "#a", "alice", "t"),
        b":srv 332 alice #a :t\r\n"
        b":srv 333 alice #a alice!alice@trio-chat 1700000000\r\n",
    ),
    (ev.Private(T, "bob", "alice", "hi"), b":bob!bob@trio-chat PRIVMSG alice :hi\r\n"),
]


@pytest.mark.parametrize(("event", "data"), REPLIES)
def test_reply(event: ev.ServerEvent, data: bytes) -> None:
    assert registered().send(event) == data


def test_history_with_server_time_is_tagged() -> None:
    irc = session()
    irc.send(ev.NamePrompt("Your name?"))
    feed(irc, b"CAP LS 302\r\nCAP REQ :server-time\r\nNICK alice\r\nUSER a 0 * :A\r\n")
    feed(irc, b"CAP END\r\n")
    irc.send(ev.Welcome("alice", ""))
    data = irc.send(ev.Replayed(ev.Message(T, "#a", "bob", "old")))
    assert (
        data == b"@time=2023-11-14T22:13:20.000Z :bob!bob@trio-chat PRIVMSG #a :old\r\n"
    )


def test_formatting_is_stripped_only_where_present() -> None:
    assert strip_formatting("plain") == "plain"
    assert strip_formatting("\x1funder\x1d it\x16") == "under it"
    assert strip_formatting("\x0312,04x\x03 y") == "x y"


# -- chunking never changes the meaning ----------------------------------------

CLIENT_BYTES = (
    b"PRIVMSG #dev :hello\r\n"
    b"JOIN #a,#b key\r\n"
    b"PRIVMSG #dev :" + b"y" * 600 + b"\r\n"
    b"PING :tok\r\n"
    b"PRIVMSG #dev :\xc3\xa9t\xc3\xa9\n"
    b"MODE #a +k\r\n"
    b"PRIVMSG bob :\x01ACTION waves\x01\r\n"
    b"QUIT :bye\r\n"
)


@given(st.lists(st.integers(1, len(CLIENT_BYTES)), max_size=12))
def test_any_chunking_gives_the_same_requests_and_answers(cuts: list[int]) -> None:
    whole = registered()
    expected = feed(whole, CLIENT_BYTES)
    chunked = registered()
    events: list[object] = []
    out = b""
    start = 0
    for end in [*sorted(set(cuts)), len(CLIENT_BYTES)]:
        if end == start:
            continue  # b"" would be the end of the stream
        got, answered = feed(chunked, CLIENT_BYTES[start:end])
        events += got
        out += answered
        start = end
    assert (events, out) == expected
    assert expected[0][0] == ev.Say("hello", "#dev")
    assert ev.Say("été", "#dev") in expected[0]


FREE_TEXT = st.text(
    st.characters(exclude_categories=["Cs"]), max_size=700
)  # any text, CR, LF, NUL, IRC formatting and spaces included


@given(FREE_TEXT)
def test_free_text_never_makes_a_line_or_a_fixed_part_of_its_own(text: str) -> None:
    """Reasons, topics and notices are the trailing parameter of their own
    lines: whatever they hold, each line keeps its fixed head, and nothing
    in them starts a line of its own."""
    heads: dict[ev.ServerEvent, bytes] = {
        ev.TopicIs(T, "#a", "alice", text, True): b":alice!alice@trio-chat TOPIC #a :",
        ev.Kicked(T, "#a", "bob", "alice", text): b":alice!alice@trio-chat KICK #a bob",
        ev.Left(T, "#a", "bob", "parted", text): b":bob!bob@trio-chat PART #a",
        ev.Left(T, "#a", "bob", "quit", text): b":bob!bob@trio-chat QUIT :Quit",
        ev.Info(text, "#a"): b":trio-chat NOTICE #a :",
        ev.Message(T, "#a", "bob", text): b":bob!bob@trio-chat PRIVMSG #a :",
    }
    for event, head in heads.items():
        data = encode_shared(event)
        assert data.endswith(b"\r\n") or data == b""
        for line in data.split(b"\r\n")[:-1]:
            assert b"\r" not in line and b"\n" not in line and b"\0" not in line
            assert line.startswith(head), (event, line)
            assert len(line) + 2 <= IRC_MAX_LINE_BYTES
