"""User names: what is allowed, and how two names are compared.

Pure functions, no I/O. Every comparison of names (uniqueness, reserved
names, and later bans and ignore lists) goes through `name_key`.
"""

from __future__ import annotations

import unicodedata
from typing import Final

#: Shortest and longest name, in characters after NFC normalisation.
MIN_NAME_LENGTH: Final = 1
MAX_NAME_LENGTH: Final = 24
#: Punctuation allowed in names besides letters and digits.
NAME_PUNCTUATION: Final = frozenset("_-.")
#: Names nobody may take: they would pass for the server itself.
RESERVED_NAMES: Final = frozenset(
    {"server", "trio-chat", "system", "admin", "root", "operator", "nobody"}
)
#: Letters of any script, decimal digits of any script, and the combining
#: marks that many scripts need to spell a letter.
_LETTER_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})
_MARK_CATEGORIES: Final = frozenset({"Mn", "Mc"})

#: A one-line description of the rules, for prompts and errors.
NAME_RULES: Final = (
    f"{MIN_NAME_LENGTH}-{MAX_NAME_LENGTH} letters or digits of any script, or _ - ."
    " (starting with a letter or digit)"
)


class InvalidName(ValueError):
    """The requested name breaks the rules; the message says which, for users."""


def name_key(name: str) -> str:
    """Return the key two names are compared by: NFC, then casefolded.

    `name_key("Ångström") == name_key("ÅNGSTRÖM")`.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def validate_name(raw: str) -> str:
    """Return `raw` as a valid name (stripped, NFC-normalised).

    Raises `InvalidName` with a message fit to show the user when the name is
    empty, too long, uses a character outside letters, digits and `_ - .`,
    does not start with a letter or digit, or is reserved.
    """
    name = unicodedata.normalize("NFC", raw.strip())
    if len(name) < MIN_NAME_LENGTH:
        raise InvalidName("A name cannot be empty.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"That name is {len(name)} characters; the most is {MAX_NAME_LENGTH}."
        )
    for index, char in enumerate(name):
        category = unicodedata.category(char)
        if category in _LETTER_CATEGORIES:
            continue
        if index > 0 and (char in NAME_PUNCTUATION or category in _MARK_CATEGORIES):
            continue
        if index == 0 and (char in NAME_PUNCTUATION or category in _MARK_CATEGORIES):
            raise InvalidName("A name must start with a letter or a digit.")
        shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
        raise InvalidName(
            f"A name may hold only letters, digits and _ - . (not {shown})."
        )
    if name_key(name) in _RESERVED_KEYS:
        raise InvalidName(f"The name {name!r} is reserved.")
    return name


_RESERVED_KEYS: Final = frozenset(name_key(name) for name in RESERVED_NAMES)
