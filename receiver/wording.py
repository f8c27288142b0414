"""How a value is written in text for people (timeline, chat, pages, the command line).

A value is shown in double quotes with control characters escaped, never as a Python repr
(``'true'``, ``None``): the quotes make an empty value or trailing spaces visible, and a
newline inside an alert label cannot break the line it is shown in.
"""

from __future__ import annotations

import json

__all__ = ["quoted"]


def quoted(value: object) -> str:
    """``value`` as text in double quotes, control characters escaped (JSON's rules)."""
    return json.dumps(str(value), ensure_ascii=False)
