"""The text/plain alternative of a CRM email's HTML body, made with the standard library only.

CRM bodies are HTML written by the form editor (paragraphs, divs, line breaks, lists, tables,
links). Readers that prefer plain text should see the same words with the same line structure,
not a tag soup or one endless line.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Elements that end a line of text when they open or close.
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot",
        "thead", "tr", "ul",
    }
)  # fmt: skip
_CELL = frozenset({"td", "th"})
# Elements that leave a blank line around them.
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol"})
# Elements whose content is never shown to a reader.
_HIDDEN = frozenset({"head", "script", "style", "template", "title", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities arrive decoded in handle_data
        self._out: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._links: list[str | None] = []
        self._link_text: list[int] = []

    # -- structure -------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._out.append("\n")
        elif tag in _BLOCK:
            self._break(blank=tag in _PARAGRAPH)
            if tag == "li":
                self._out.append("- ")
            if tag == "pre":
                self._pre += 1
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))
            self._link_text.append(len(self._out))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.handle_data(alt)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            return
        self.handle_starttag(tag, attrs)
        if tag in _BLOCK and tag != "hr":
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _CELL:
            self._out.append("\t")  # cells of a row stay on one line
        elif tag in _BLOCK:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._break(blank=tag in _PARAGRAPH)
        elif tag == "a" and self._links:
            href = self._links.pop()
            start = self._link_text.pop()
            text = "".join(self._out[start:]).strip()
            # Show the target when the reader cannot see it in the text (not for mailto:/cid:).
            if href and href.startswith(("http://", "https://")) and href not in text:
                self._out.append(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._out.append(data if self._pre else _SPACES.sub(" ", data))

    def _break(self, *, blank: bool) -> None:
        """End the current line (and leave a blank one), without stacking up empty lines."""
        trailing = 0
        for piece in reversed(self._out):
            stripped = piece.rstrip(" \t")
            trailing += len(stripped) - len(stripped.rstrip("\n"))
            if stripped.strip("\n"):
                break
        else:
            return  # nothing written yet: no leading empty lines
        self._out.append("\n" * max(0, (2 if blank else 1) - trailing))

    # -- result ------------------------------------------------------------------------------
    def text(self) -> str:
        lines = [line.strip(" \t") if line.strip() else "" for line in "".join(self._out).split("\n")]
        joined = "\n".join(lines).replace("\t", "  ").replace("\xa0", " ")
        return _BLANK_LINES.sub("\n\n", joined).strip("\n")


def html_to_text(html: str) -> str:
    """Plain text with the line structure of `html`: tags stripped, entities decoded.

    >>> html_to_text("<p>Hello&nbsp;<b>Ann</b>,</p><p>line one<br>line two</p><ul><li>a</li><li>b</li></ul>")
    'Hello Ann,\\n\\nline one\\nline two\\n\\n- a\\n- b'
    """
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return collector.text()
