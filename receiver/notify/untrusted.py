"""Alert data in messages for people: one line, no control characters, bounded.

Titles, label values, reasons and URLs come from whoever can send an alert, and they reach
pagers and chat. Each destination escapes them for its own markup (Slack's mrkdwn); what
every destination needs first is done here: a value shown on one line stays on one line (a
newline in a label must not forge a "Status: RESOLVED" line), control and direction-override
characters become spaces (they make text unreadable or reorder it on screen), and the length
is bounded so one long label cannot push the rest of a message out.
"""

from __future__ import annotations

import unicodedata

__all__ = ["cut", "one_line"]

ELLIPSIS = "…"
# Unicode's bidirectional overrides and isolates reorder what follows them on screen.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_break(char: str) -> bool:
    return char.isspace() or char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp")


def one_line(text: str) -> str:
    """``text`` on one line: every run of spaces, line breaks and control characters is one
    space, and none is left at either end."""
    out: list[str] = []
    pending = False
    for char in text:
        if _is_break(char):
            pending = bool(out)
            continue
        if pending:
            out.append(" ")
            pending = False
        out.append(char)
    return "".join(out)


def cut(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, otherwise its start and an ellipsis,
    ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS
