"""Passwords as every entry point takes them: one normal form, one set of rules.

`/register`, `/identify`, the `PASSWORD` prompt, the server password prompt
and `trio-chat adduser` all pass what they were given through
`normalize_password` before it is hashed or compared, so a password that
one of them accepts works at every other. New passwords must also pass
`password_problem`. No I/O, no trio: the chat and the CLI use it alike.
"""

from __future__ import annotations

from trio_chat.limits import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from trio_chat.sanitize import sanitize_text


def normalize_password(raw: str) -> str:
    """The form a password is hashed and compared in.

    The text sanitised as every line a client sends is (control and format
    characters and escape sequences removed, tabs made spaces), with
    surrounding whitespace stripped: what `/register PASSWORD` always took,
    since its line is parsed that way.
    """
    return sanitize_text(raw).strip()


def password_problem(password: str) -> str | None:
    """Why `password` (normalised) cannot be a new password, or None if it can.

    The reason is one line for the user.
    """
    if not password:
        return "A password cannot be empty."
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"A password needs at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"A password may have at most {MAX_PASSWORD_LENGTH} characters."
    if password.startswith("/"):
        # At the PASSWORD prompt, /nick and /quit are commands: a password
        # that could read as one could never be given there.
        return "A password may not start with / (the password prompt reads commands)."
    return None
