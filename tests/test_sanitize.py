"""Terminal safety: what survives `sanitize_text` and what does not."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_chat.sanitize import sanitize_text

#: Categories no output character may have (bar ZWNJ and ZWJ, which are Cf).
REMOVED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co"}
KEPT_FORMAT = {"\u200c", "\u200d"}

#: A code point unassigned in this Python's Unicode database (U+1FAE8, an
#: emoji from Unicode 15, is unassigned in Python 3.11's Unicode 14), or
#: failing that a noncharacter, which is always unassigned.
UNASSIGNED = next(
    char for char in ("\U0001fae8", "\U0002ffff") if unicodedata.category(char) == "Cn"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # CSI: colours, cursor movement, clearing; removed whole.
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[1;38;5;196;48;2;0;0;0mloud\x1b[m", "loud"),
        ("\x1b[2J\x1b[Hgone", "gone"),
        ("a\x1b[5Ab", "ab"),
        ("a\x1b[10;20Hb", "ab"),
        ("\x1b[?25lhidden cursor", "hidden cursor"),
        ("\x1b[2Kline", "line"),
        # OSC: window title, hyperlinks; terminated by BEL or ST (ESC \).
        ("\x1b]0;pwned\x07hi", "hi"),
        ("\x1b]2;pwned\x1b\\hi", "hi"),
        ("\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\", "click"),
        # DCS and other strings.
        ("\x1bP1$r0m\x1b\\hi", "hi"),
        ("\x1b_private\x1b\\hi", "hi"),
        # 8-bit CSI and OSC.
        ("\x9b31mred", "red"),
        ("\x9d0;title\x07hi", "hi"),
        ("\x9d0;title\x9chi", "hi"),
        # Other ESC sequences: reset, save cursor, charset switch.
        ("a\x1bcb", "ab"),
        ("a\x1b7b", "ab"),
        ("a\x1b(0b", "ab"),
        # C1 controls.
        ("a\x85b", "ab"),
        ("a\x8db", "ab"),
        ("a\x80b", "ab"),
        ("a\x9cb", "ab"),
        # C0 controls and DEL.
        ("safe\roverwritten", "safeoverwritten"),
        ("abc\x08\x08\x08xyz", "abcxyz"),
        ("a\x00b", "ab"),
        ("a\x7fb", "ab"),
        ("a\x07b", "ab"),
        ("a\nb", "ab"),
        ("a\x0bb\x0cc", "abc"),
        ("a\tb", "a b"),
        ("\t\t", "  "),
        # Bidi overrides and isolates.
        ("abc\u202edcba", "abcdcba"),
        ("\u2066x\u2069", "x"),
        ("\u2067x\u2068y\u2069", "xy"),
        ("\u202a\u202b\u202c\u202d", ""),
        # Invisible format characters.
        ("a\u200bb", "ab"),
        ("\ufeffhi", "hi"),
        ("a\u2060b", "ab"),
        # Line and paragraph separators.
        ("a\u2028b\u2029c", "abc"),
        # Private use (BMP and plane 15).
        ("a\ue000b", "ab"),
        ("a\U000f0000b", "ab"),
        # Lone surrogates.
        ("a\ud800b", "ab"),
        ("\udfffx", "x"),
    ],
)
def test_removed(text: str, expected: str) -> None:
    assert sanitize_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "hello, world!",
        "👩‍💻",  # woman + ZWJ + laptop: one glyph
        "👨‍👩‍👧‍👦 family",
        "می‌خواهم",  # Persian with a zero-width non-joiner
        "你好，世界",
        "日本語とひらがな",
        "Hallå, ärligt öga",
        "Åsa Öberg",
        "🎉🙂",
        "❤️",  # heart + variation selector 16
        "e\u0301",  # combining accent
        "مرحبا بالعالم",  # right-to-left letters themselves are fine
        "हिन्दी",
        "a  b   c",
        UNASSIGNED,
        f"new emoji: {UNASSIGNED}!",
        "",
    ],
)
def test_kept(text: str) -> None:
    assert sanitize_text(text) == text


def test_unassigned_example_is_unassigned() -> None:
    # Guard for test_kept: it must exercise a category-Cn code point.
    assert unicodedata.category(UNASSIGNED) == "Cn"


#: Any character at all (surrogates included), weighted towards the ones
#: that start or end escape sequences.
hostile_text = st.text(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from("\x1b\x9b\x9d\x90\x9c[];P\x07\\\t\r\n\u202e\u200b\u200c\u200d"),
    )
)


@given(hostile_text)
@example("\x1b\x1b[31m")
@example("\x1b[\x1b]0;x\x07")
@example("\x1b]0;x\x1b\x1b\\\\")
@example("\t\x1b\t[31m")
def test_idempotent(text: str) -> None:
    once = sanitize_text(text)
    assert sanitize_text(once) == once


@given(hostile_text)
def test_never_longer(text: str) -> None:
    assert len(sanitize_text(text)) <= len(text)


@given(hostile_text)
def test_output_has_nothing_unsafe(text: str) -> None:
    for char in sanitize_text(text):
        if char not in KEPT_FORMAT:
            assert unicodedata.category(char) not in REMOVED_CATEGORIES, repr(char)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_ascii_unchanged(text: str) -> None:
    assert sanitize_text(text) == text
