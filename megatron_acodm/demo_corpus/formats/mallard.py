"""Mallard help pages (GNOME's `.page` XML): the readable text, one paragraph per line group.

Block elements (titles, paragraphs, code screens) become paragraphs; containers (sections,
lists, notes, tables) are walked into; the `<info>` metadata (credits, links, revision dates,
licences) is dropped because it is the same boilerplate on every page.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

TEXT_BLOCKS = {"title", "subtitle", "desc", "p", "screen", "code", "synopsis"}
VERBATIM_BLOCKS = {"screen", "code"}  # whitespace is meaningful in commands and code
SKIPPED = {"info", "media", "comment", "links"}


def _local_name(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def page_paragraphs(xml: bytes) -> list[str]:
    """The text paragraphs of one page, in document order; raises ElementTree.ParseError if malformed."""
    paragraphs: list[str] = []

    def visit(element) -> None:
        name = _local_name(element.tag)
        if name in SKIPPED:
            return
        if name in TEXT_BLOCKS:
            text = "".join(element.itertext())
            text = text.strip("\n") if name in VERBATIM_BLOCKS else " ".join(text.split())
            if text.strip():
                paragraphs.append(text)
            return
        for child in element:
            visit(child)

    visit(ElementTree.fromstring(xml))
    return paragraphs
