"""The line protocol's session, sans-IO: the login dialogue, pastes and the
protocol's own refusals, line by line, with no server around it.

The chat behind it is tested with events (`test_chat_for_wires.py`), the
lines themselves in `test_protocol.py`; this is what sits between them.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_chat import events as ev
from trio_chat.limits import Limits
from trio_chat.protocol import NEED_DATA, encode_event
from trio_chat.wire import NOOP, Closed, Refused
from trio_chat.wire.line import NOT_HTTP, NOT_TLS, LineSession, request_cost

NAME_PROMPT = ev.NamePrompt("Choose a name.")
SERVER_PROMPT = ev.PasswordPrompt("*", "This server needs a password: send it.")


def drain(session: LineSession) -> tuple[list[object], bytes]:
    events: list[object] = []
    while (event := session.next_event()) is not NEED_DATA:
        events.append(event)
    return events, session.data_to_send()


def feed(session: LineSession, data: bytes) -> tuple[list[object], bytes]:
    session.receive_data(data)
    return drain(session)


def prompted(limits: Limits | None = None) -> LineSession:
    session = LineSession(limits=limits or Limits())
    assert session.send(NAME_PROMPT) == encode_event(NAME_PROMPT)
    return session


def welcomed(limits: Limits | None = None) -> LineSession:
    session = prompted(limits)
    assert feed(session, b"alice\n") == ([ev.ChooseName("alice", False)], b"")
    session.send(ev.Welcome("alice", "You are in #lobby."))
    assert session.registered
    return session


def test_a_name_at_the_prompt_is_chosen() -> None:
    session = prompted()
    assert not session.registered
    assert feed(session, b"  alice \r\n") == ([ev.ChooseName("alice", False)], b"")


def test_nick_and_since_before_the_name() -> None:
    session = prompted()
    events, _ = feed(session, b"/since 2023-11-14T22:13:20Z\n/nick bob\n")
    assert events == [ev.Since(1_700_000_000.0), ev.ChooseName("bob", False)]


def test_an_empty_line_or_another_command_asks_again() -> None:
    session = prompted()
    assert feed(session, b"\n") == ([], encode_event(NAME_PROMPT))
    events, out = feed(session, b"/join #dev\n")
    assert events == []
    assert out == encode_event(
        ev.Error("not-registered", "Choose a name first.")
    ) + encode_event(NAME_PROMPT)


def test_quit_at_the_prompt_says_bye() -> None:
    session = prompted()
    assert feed(session, b"/quit\n") == ([Refused("quit", "Bye!")], b"")
    assert feed(session, b"more\n") == ([], b"")  # nothing after


def test_the_server_password_prompt_takes_any_line() -> None:
    session = LineSession()
    session.send(SERVER_PROMPT)
    assert feed(session, b"/s3cret\n") == ([ev.ServerPassword("/s3cret")], b"")
    session.send(SERVER_PROMPT)  # wrong: asked again
    assert feed(session, b"/quit\n") == ([Refused("quit", "Bye!")], b"")


def test_a_registered_name_is_logged_in_with_its_password() -> None:
    session = prompted()
    feed(session, b"alice\n")
    session.send(ev.PasswordPrompt("alice", "Password for alice?"))
    # A password may start with a slash; it is the password all the same.
    events, _ = feed(session, b"/correct horse\n")
    assert events == [ev.LogIn("alice", "/correct horse")]
    assert session.send(ev.LoggedIn("alice")) == b""
    assert drain(session) == ([ev.ChooseName("alice", True)], b"")


def test_a_wrong_password_goes_back_to_the_name_prompt() -> None:
    session = prompted()
    feed(session, b"alice\n")
    session.send(ev.PasswordPrompt("alice", "Password for alice?"))
    feed(session, b"wrong\n")
    error = ev.Error("bad-password", "Wrong password for alice.")
    assert session.send(error) == encode_event(error) + encode_event(NAME_PROMPT)
    assert feed(session, b"bob\n") == ([ev.ChooseName("bob", False)], b"")


def test_nick_at_the_password_prompt_picks_another_name() -> None:
    session = prompted()
    feed(session, b"alice\n")
    session.send(ev.PasswordPrompt("alice", "Password for alice?"))
    assert feed(session, b"/nick bob\n") == ([ev.ChooseName("bob", False)], b"")


def test_too_many_tries_at_the_prompt() -> None:
    session = prompted(Limits(max_name_attempts=2))
    assert feed(session, b"a b\n")[0] == [ev.ChooseName("a b", False)]
    assert feed(session, b"c d\n")[0] == [ev.ChooseName("c d", False)]
    assert feed(session, b"e f\n") == (
        [Refused("too-many-attempts", "No valid name in 2 tries; bye.")],
        b"",
    )


def test_an_http_request_is_told_what_this_is() -> None:
    session = prompted()
    events, _ = feed(session, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert events == [Refused("not-http", NOT_HTTP)]


def test_a_tls_handshake_on_a_plain_port_is_told_what_this_is() -> None:
    session = prompted()
    events, _ = feed(session, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert events == [Refused("tls-not-enabled", NOT_TLS)]


def test_a_tls_session_does_not_look_for_tls() -> None:
    session = LineSession(tls=True)
    session.send(NAME_PROMPT)
    events, _ = feed(session, b"\x16alice\n")
    assert events == [ev.ChooseName("\x16alice", False)]  # the chat refuses it


def test_a_line_too_long_at_the_prompt_asks_again() -> None:
    session = prompted(Limits(max_line_bytes=16))
    events, out = feed(session, b"x" * 40 + b"\nalice\n")
    assert events == [ev.ChooseName("alice", False)]
    assert out == encode_event(
        ev.Error(
            "line-too-long", "Line too long (the most is 16 bytes); it was not sent."
        )
    ) + encode_event(NAME_PROMPT)


def test_chat_lines_become_requests() -> None:
    session = welcomed()
    events, out = feed(session, b"hello\n/me waves\n/join #dev\n")
    assert events == [ev.Say("hello"), ev.Me("waves"), ev.Join("#dev")]
    assert out == b""


def test_a_blank_line_asks_for_nothing_but_counts() -> None:
    # Nothing for the chat, but a line all the same: the flood limit sees it.
    session = welcomed()
    assert feed(session, b"\r\n   \r\n\x00\r\n") == ([NOOP, NOOP, NOOP], b"")
    assert request_cost(NOOP) == 1


def test_a_paste_is_one_request_that_costs_more() -> None:
    session = welcomed()
    events, _ = feed(session, b"/paste 3\none\ntwo\nthree\n")
    assert events == [ev.Say("one\ntwo\nthree")]
    assert request_cost(ev.Say("one\ntwo\nthree")) == 1  # 1 + 3 // 10
    many = ev.Say("\n".join(["x"] * 25))
    assert request_cost(many) == 3
    assert request_cost(ev.Say("one line")) == 1


def test_a_paste_that_does_not_finish_in_time_is_refused() -> None:
    session = welcomed(Limits(paste_timeout=10.0))
    session.tick(100.0)
    feed(session, b"/paste 3\none\n")
    assert session.deadline == 110.0
    session.tick(110.0)
    events, out = drain(session)
    assert events == []
    assert out.startswith(b"ERR paste-")
    assert session.deadline == float("inf")
    assert feed(session, b"after\n")[0] == [ev.Say("after")]


def test_the_end_of_the_stream_and_an_endless_line_close() -> None:
    session = welcomed()
    assert feed(session, b"") == ([Closed("connection closed")], b"")
    session = welcomed(Limits(max_unterminated_bytes=100))
    assert feed(session, b"y" * 200) == ([Closed("read queue exceeded")], b"")


def test_no_pings_in_the_line_protocol() -> None:
    session = welcomed()
    assert not session.keepalive and not session.ping("x")
    assert not session.awaiting_pong
    assert session.data_to_send() == b""


CLIENT = b"hello\n/paste 2\na\nb\n/me waves\n" + b"z" * 5000 + b"\nlast\n"


@given(st.lists(st.integers(1, len(CLIENT) - 1), max_size=10))
def test_any_chunking_gives_the_same_requests(cuts: list[int]) -> None:
    expected = feed(welcomed(), CLIENT)
    session = welcomed()
    events: list[object] = []
    out = b""
    start = 0
    for end in [*sorted(set(cuts)), len(CLIENT)]:
        if end > start:
            got, said = feed(session, CLIENT[start:end])
            events += got
            out += said
            start = end
    assert (events, out) == expected
    assert expected[0] == [
        ev.Say("hello"),
        ev.Say("a\nb"),
        ev.Me("waves"),
        ev.Say("last"),
    ]
