"""Terminal safety: what user text may contain before it reaches a terminal.

Pure functions, no I/O. The server runs every name and every line of text
through here, so no user can move another user's cursor, recolour their
terminal, rewrite their screen or hide text with bidi controls.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# Escape sequences are removed whole, not just their ESC, so "ESC[31m"
# leaves nothing behind rather than a stray "[31m".
_ESCAPE_SEQUENCE: Final = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]?                       # CSI ... final
    | \x9b[0-?]*[ -/]*[@-~]?                         # 8-bit CSI
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])        # OSC, DCS, SOS, PM, APC
      .*?(?:\x07|\x1b\\|\x9c|$)                      # ... up to BEL or ST
    | \x1b[ -/]*[0-~]?                               # any other ESC sequence
    """,
    re.VERBOSE | re.DOTALL,
)

#: Characters kept in message text although their category is Cf: the
#: zero-width joiner and non-joiner shape emoji sequences and Persian and
#: Indic writing.
_KEPT_FORMAT_CHARACTERS: Final = frozenset("\u200c\u200d")

#: Unicode categories removed from text: controls, format characters (bidi
#: overrides, zero-width spaces...), line/paragraph separators, surrogates
#: and private use.
_REMOVED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})


def _visible(char: str) -> bool:
    if char in _KEPT_FORMAT_CHARACTERS:
        return True
    return unicodedata.category(char) not in _REMOVED_CATEGORIES


def sanitize_text(text: str) -> str:
    """Return `text` safe to show on a terminal.

    Escape sequences (CSI, OSC, DCS, 7- and 8-bit) are removed whole; a tab
    becomes a space; every other control, format, separator, surrogate or
    private-use character is removed, except U+200C and U+200D. Unassigned
    code points stay (they may be newer emoji). The result is never longer
    than `text`, and sanitising it again changes nothing.
    """
    if text.isascii() and text.isprintable():
        return text  # the common case, fast
    text = _ESCAPE_SEQUENCE.sub("", text.replace("\t", " "))
    return "".join(char for char in text if _visible(char))
