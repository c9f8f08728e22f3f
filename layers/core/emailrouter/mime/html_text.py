"""Plain text ↔ HTML for message bodies.

The CRM description field is HTML: plain-text mail is escaped and wrapped, and
HTML-only mail gets a text rendering for `text_body` (used for fingerprints,
matching and previews). Neither direction sanitises HTML; that is the CRM's job.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCK_TAGS = frozenset(
    {
        "br",
        "p",
        "div",
        "tr",
        "li",
        "ul",
        "ol",
        "table",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "hr",
    }
)
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_INLINE_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")


def plain_to_html(text: str) -> str:
    """Escape plain text and keep its line breaks: `a < b\\nc` → `<div>a &lt; b<br>c</div>`."""
    return "<div>" + html.escape(text).replace("\n", "<br>") + "</div>"


class _TextCollector(HTMLParser):
    """Collects the visible text of an HTML document, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    """The visible text of `markup`: tags dropped, entities decoded, blocks on their own lines."""
    collector = _TextCollector()
    try:
        collector.feed(markup)
        collector.close()
    except Exception:  # html.parser is lenient, but a body must never raise
        return _INLINE_SPACE.sub(" ", re.sub(r"<[^>]*>", " ", markup)).strip()
    lines = "".join(collector.chunks).split("\n")
    text = "\n".join(_INLINE_SPACE.sub(" ", line).strip() for line in lines)
    return _BLANK_LINES.sub("\n\n", text).strip()
