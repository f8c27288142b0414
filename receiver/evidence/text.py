"""Text from outside, shown as text: alert labels, titles, reasons, error messages.

Why escape for Markdown and HTML both: the postmortem draft and a bundle's notes are pasted
into wikis, issues and documents whose renderers take inline HTML as well as Markdown. Alert
data is data: ``![x](http://…)`` in a label must not load an image (a request that tells a
stranger someone read the draft), ``[x](javascript:…)`` must not become a link,
``<img onerror=…>`` must not become an element, a backtick must not open code, a ``|`` must not
split a table's cell and a newline must not start a heading. Each function here gives text
that every CommonMark or GitHub renderer shows as written; our own Markdown goes around it.
:func:`printable` is the part the SVG chart shares: one line, nothing XML 1.0 forbids.

A bare ``http://`` address stays as it is: some renderers link it, but the link then shows
where it goes, which is what a reader sees in any plain text.
"""

from __future__ import annotations

import re

__all__ = ["code", "literal", "printable"]

# Control characters (C0 but whitespace, DEL, C1), lone surrogates (valid in a JSON string,
# not encodable as UTF-8), U+FFFE and U+FFFF (not characters), and the marks that reorder text
# as displayed (bidirectional overrides and isolates): XML 1.0 forbids some, no reader can see
# the others as they are, so each becomes U+FFFD.
_UNPRINTABLE = re.compile(
    r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]"
)
REPLACEMENT = "\ufffd"
# Characters that open Markdown (emphasis, code, links, tables, strikethrough, escapes); "_"
# only counts at a word's edge, so RATE_LIMIT_MODE stays readable in the raw text.
_MARKDOWN = frozenset("\\`*[]|~")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What starts a block when it begins a line: a heading, a list item, a setext underline.
_BLOCK_START = re.compile(r"^(?:[#+=-]|\d+[.)])")


def printable(text: str) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), with
    characters that cannot be shown replaced by U+FFFD."""
    return _UNPRINTABLE.sub(REPLACEMENT, " ".join(text.split()))


def literal(text: str, *, limit: int | None = None) -> str:
    """``text`` as Markdown that renders as exactly this text, on one line, cut at ``limit``
    characters (before escaping, so that an escape is never cut in half)."""
    flat = printable(text)
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    out: list[str] = []
    last = len(flat) - 1
    for i, char in enumerate(flat):
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MARKDOWN or (
            char == "_" and not (0 < i < last and flat[i - 1].isalnum() and flat[i + 1].isalnum())
        ):
            out.append("\\" + char)
        else:
            out.append(char)
    shown = "".join(out)
    block = _BLOCK_START.match(shown)
    if block:
        # Escape the character that makes the block ("#", "-", or the "." after a number).
        end = block.end() - 1
        shown = f"{shown[:end]}\\{shown[end:]}"
    return shown


def code(text: str) -> str:
    """``text`` as an inline code span (a query, say), whatever backticks it holds."""
    flat = printable(text)
    longest = max((len(run) for run in re.findall("`+", flat)), default=0)
    fence = "`" * (longest + 1)
    # A space keeps a backtick at either end from joining the fence; renderers strip it.
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"
