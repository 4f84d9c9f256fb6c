"""Properties of everything the server sends, whatever users send it."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from trio_chat.chat import Chat
from trio_chat.hub import Hub, Member
from trio_chat.protocol import Line, LineReader, encode_event, parse_request
from trio_chat.sanitize import sanitize_text

NOW = 1_795_475_428.0
#: Characters that reorder or hide text (CVE-2021-42574 and friends).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e") | {
    chr(c) for c in range(0x2066, 0x206A)
}
HOSTILE = st.sampled_from(
    [
        "\x1b[2J",
        "\x1b]0;title\x07",
        "\x9b31m",
        "\x85",
        "\r",
        "\x08\x08",
        "\x00",
        "\x7f",
        "\u202e",
        "\u2066",
        "\u200b",
        "\ufeff",
        "\u2028",
        "\ue000",
        "\ud800",
        "\u200d",
        "\t",
        "/me ",
        "/nick ",
        "/msg bob ",
        "LEAVE ",
        "<bob> ",
    ]
)
USER_TEXT = st.lists(st.one_of(st.text(max_size=20), HOSTILE), max_size=12).map("".join)


def safe_line(data: bytes) -> None:
    """Assert the invariant on one line the server sent."""
    assert data.endswith(b"\r\n")
    body = data[:-2]
    assert not any(byte < 0x20 or byte == 0x7F for byte in body), data
    text = body.decode("utf-8")  # the server sends valid UTF-8
    for char in text:
        assert not 0x80 <= ord(char) <= 0x9F, data
        assert char not in BIDI_CONTROLS, data
        assert unicodedata.category(char) not in ("Cc", "Zl", "Zp", "Cs", "Co")


def chat_pair() -> tuple[Chat, Member, Member]:
    chat = Chat(Hub(), clock=lambda: NOW)
    alice = Member("c1", encode=encode_event)
    bob = Member("c2", encode=encode_event)
    assert chat.choose_name(alice, "alice")
    assert chat.choose_name(bob, "bob")
    return chat, alice, bob


def drain(member: Member) -> list[bytes]:
    """Every line waiting for `member`, one by one."""
    return member.take().splitlines(keepends=True)


def feed(chat: Chat, member: Member, data: bytes) -> None:
    """What a connection does with bytes from its user."""
    reader = LineReader()
    reader.feed(data)
    reader.feed(b"")
    while isinstance(event := reader.next_event(), Line):
        request = parse_request(sanitize_text(event.text))
        if request is not None and not member.closed:
            chat.handle(member, request)


@given(
    st.one_of(
        USER_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=300),
    )
)
def test_every_line_the_server_sends_is_terminal_safe(data: bytes) -> None:
    chat, alice, bob = chat_pair()
    feed(chat, alice, data + b"\n" + data.replace(b"\n", b"") + b"\n")
    chat.choose_name(Member("c3", encode=encode_event), data.decode(errors="replace"))
    for line in drain(bob) + drain(alice):
        safe_line(line)


@given(USER_TEXT)
def test_sanitising_is_idempotent_and_never_grows(text: str) -> None:
    once = sanitize_text(text)
    assert sanitize_text(once) == once
    assert len(once) <= len(text)


VISIBLE = st.text(
    alphabet=st.characters(
        whitelist_categories=("L", "N", "P", "S", "Zs"),
        blacklist_characters="\u3164\u115f\u1160\uffa0",
    ),
    min_size=1,
    max_size=80,
).filter(lambda text: text.strip() and not text.startswith("/"))


@given(VISIBLE)
def test_visible_text_survives_intact(text: str) -> None:
    chat, alice, bob = chat_pair()
    drain(bob)
    feed(chat, alice, text.encode() + b"\r\n")
    (line,) = drain(bob)
    assert line == f"MSG 2026-11-23T23:10:28Z #lobby <alice> {text}\r\n".encode()
