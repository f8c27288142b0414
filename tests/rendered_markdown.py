"""Hostile alert text, and what a Markdown draft becomes once rendered, to check that such
text stays text: the same elements with and without it, and the text shown as written."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

from markdown_it import MarkdownIt

__all__ = ["HOSTILE", "HOSTILE_SHOWN", "Rendered", "render"]

# A label value that tries every way into Markdown and HTML: a heading after a newline, an
# image that loads, script links, raw HTML, code, a table cell, strikethrough, emphasis, an
# escape, an entity, a list, control characters and a right-to-left override.
HOSTILE = (
    "x\n# Owned ![x](http://evil.example/p.png) [y](javascript:alert(1))"
    " <img src=x onerror=alert(1)> <script>alert(2)</script> `code` a|b ~~s~~ *e* _u_"
    " \\ &amp; \r\n1. item\x00\x07\x1b[31m\x7f\u202e"
)
# How it must read once rendered: on one line, unprintable characters replaced.
HOSTILE_SHOWN = (
    "x # Owned ![x](http://evil.example/p.png) [y](javascript:alert(1))"
    " <img src=x onerror=alert(1)> <script>alert(2)</script> `code` a|b ~~s~~ *e* _u_"
    " \\ &amp; 1. item\ufffd\ufffd\ufffd[31m\ufffd\ufffd"
)


@dataclass
class Rendered:
    """The elements (tag and attributes, in order) and the visible text of rendered HTML."""

    elements: list[tuple[str, list[tuple[str, str | None]]]] = field(default_factory=list)
    text: str = ""


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rendered = Rendered()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.rendered.elements.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.rendered.text += data


def render(markdown: str) -> Rendered:
    """``markdown`` rendered as CommonMark with raw HTML, tables and strikethrough (what
    GitHub and most wikis accept), then parsed back."""
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    collector = _Collector()
    collector.feed(md.render(markdown))
    collector.close()
    return collector.rendered
