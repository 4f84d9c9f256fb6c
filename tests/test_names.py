"""User names: which are accepted, how they are compared, what users are told."""

from __future__ import annotations

import unicodedata

import pytest

from trio_chat.names import MAX_NAME_LENGTH, InvalidName, name_key, validate_name


@pytest.mark.parametrize(
    "name",
    [
        "bob",
        "x",
        "7",
        "Åsa",
        "Ängel",
        "日本語",
        "ひらがな",
        "Дмитрий",
        "علي",
        "हिन्दी",  # with combining vowel signs and a virama
        "Nguyễn",
        "٣٤",  # Arabic-Indic digits
        "a_b-c.d",
        "bob.",
        "bob_",
        "b--b",
        "a" * MAX_NAME_LENGTH,
    ],
)
def test_valid_names_are_accepted_unchanged(name: str) -> None:
    assert validate_name(name) == name


def test_surrounding_whitespace_is_stripped() -> None:
    assert validate_name("  bob\t") == "bob"


def test_names_are_nfc_normalised() -> None:
    decomposed = "A\u030asa"  # A + combining ring above
    assert validate_name(decomposed) == "Åsa"
    assert validate_name(decomposed) == unicodedata.normalize("NFC", decomposed)
    assert len(validate_name(decomposed)) == 3


def test_length_counts_composed_characters() -> None:
    # 24 decomposed "Å" are 48 code points in, 24 characters after NFC.
    decomposed = "A\u030a" * MAX_NAME_LENGTH
    assert validate_name(decomposed) == "Å" * MAX_NAME_LENGTH


def test_too_long_is_refused() -> None:
    assert validate_name("a" * 24) == "a" * 24
    with pytest.raises(InvalidName, match=r"25 characters; the most is 24"):
        validate_name("a" * 25)
    with pytest.raises(InvalidName):
        validate_name("Å" * 25)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ÅSA", "åsa"),
        ("Åsa", "A\u030asa"),
        ("ÅSA", "a\u030asa"),
        ("Straße", "STRASSE"),
        ("Σίσυφος", "ΣΊΣΥΦΟΣ"),  # final and medial sigma
        ("BOB", "bob"),
        ("Дмитрий", "ДМИТРИЙ"),
    ],
)
def test_name_key_matches_case_and_normalisation_variants(
    first: str, second: str
) -> None:
    assert name_key(first) == name_key(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [("bob", "bób"), ("bob", "bob_"), ("Åsa", "Asa"), ("日本", "日本語")],
)
def test_name_key_tells_different_names_apart(first: str, second: str) -> None:
    assert name_key(first) != name_key(second)


@pytest.mark.parametrize("raw", ["", " ", "   ", "\t", "\u3000"])
def test_empty_is_refused(raw: str) -> None:
    with pytest.raises(InvalidName, match="cannot be empty"):
        validate_name(raw)


@pytest.mark.parametrize("raw", ["_bob", "-bob", ".bob", "\u0301bob", "..."])
def test_leading_punctuation_or_mark_is_refused(raw: str) -> None:
    with pytest.raises(InvalidName, match="must start with a letter or a digit"):
        validate_name(raw)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("bo b", "' '"),
        ("<bob>", "'<'"),
        ("bob>", "'>'"),
        ("@bob", "'@'"),
        ("#chan", "'#'"),
        ("a:b", "':'"),
        ("bob!", "'!'"),
        ("bob/x", "'/'"),
        ("bob²", "'²'"),
        ("\x1b[31mbob", "U+001B"),
        ("bob\x1b", "U+001B"),
        ("bo\x00b", "U+0000"),
        ("bob\x7f", "U+007F"),
        ("bob\u202e", "U+202E"),
        ("bo\u200bb", "U+200B"),
        ("a\u200db", "U+200D"),
        ("bo\u00a0b", "U+00A0"),
        ("bo\ue000b", "U+E000"),
    ],
)
def test_disallowed_character_is_named(raw: str, shown: str) -> None:
    with pytest.raises(InvalidName, match=r"only letters, digits and _ - \.") as info:
        validate_name(raw)
    assert f"(not {shown})" in str(info.value)


@pytest.mark.parametrize(
    "raw",
    ["server", "Server", "SERVER", "sErVeR", "trio-chat", "Trio-Chat", "ADMIN", "Root"],
)
def test_reserved_names_are_refused_in_any_case(raw: str) -> None:
    with pytest.raises(InvalidName, match="reserved"):
        validate_name(raw)


def test_a_reserved_word_inside_a_name_is_fine() -> None:
    assert validate_name("server_fan") == "server_fan"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "a" * 25,
        "_bob",
        "bo b",
        "\x1b[2Jbob",
        "bob\u2028x",
        "bob\u0085x",
        "bob\\x",
        "SERVER",
    ],
)
def test_refusals_are_single_printable_lines(raw: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(raw)
    message = str(info.value)
    assert message
    assert message.isprintable()
    assert message.endswith(".")
