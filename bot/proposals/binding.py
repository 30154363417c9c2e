"""A proposal bound to its exact statement: the SHA-256 of the SQL, shown on the card (its first
SHOWN hex digits) and carried by the Approve button as `<id>:<digits>`, so that what is applied
is what the manager saw, whatever happens to the state row in between."""

from __future__ import annotations

import hashlib

SHOWN = 12  # hex digits on the card and in the button: 48 bits, no accidental match


def digest(text: str) -> str:
    """The SHA-256 of `text` (UTF-8), in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def short(full: str) -> str:
    return full[:SHOWN]


def button_value(proposal_id: int, sql_sha256: str) -> str:
    return f"{proposal_id}:{short(sql_sha256)}"


def parse(value: str) -> tuple[int | None, str | None]:
    """A button's value: (the id it carries, the digest it carries); None for what it does
    not carry plainly (a value that is not `<digits>` or `<digits>:<hex>`)."""
    head, _, tail = value.partition(":")
    if not (head.isascii() and head.isdigit()):
        return None, None
    if tail and not (len(tail) == SHOWN and all(c in "0123456789abcdef" for c in tail)):
        return int(head), None
    return int(head), tail or None
