"""A reader for the block-style YAML found in chatterbot-corpus dialogues and lm-eval task files.

It covers block mappings and sequences (including the compact `- - item` form), plain scalars
over several lines, single- and double-quoted scalars and `|`/`>` block scalars with chomping.
Every scalar stays a string (no YAML 1.1 "yes" -> True surprises in dialogue text) and flow
collections such as `[a, b]` come back as their raw text. Anchors, aliases, tags, explicit
indentation indicators and multiple documents are not supported. Avoiding PyYAML keeps the
corpus builder free of a compiled dependency for two small file families.
"""

from __future__ import annotations

import re
from typing import Any

_KEY = re.compile(r"""(?P<key>"[^"]*"|'(?:[^']|'')*'|[^\s'"#\[\]{}|>&*!%@`][^#]*?)[ \t]*:(?:[ \t]+|$)""")
_BLOCK_HEADER = re.compile(r"(?P<style>[|>])(?P<chomp>[-+]?)(?P<explicit>[1-9]?)[-+]?\s*(#.*)?")
_SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'", re.DOTALL)
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_ESCAPED_LINE_BREAK = re.compile(r"(?<!\\)((?:\\\\)*)\\\n[ \t]*")
_SIMPLE_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}


class YamlError(ValueError):
    """The text uses YAML this reader does not handle, or is not valid YAML."""


def load(text: str) -> Any:
    """Parse one YAML document into dicts, lists and strings (None for an empty value)."""
    parser = _Parser(text)
    document = parser.node(parent_indent=-1)
    if parser.next_content_line():
        raise YamlError(f"line {parser.index + 1}: unexpected content {parser.lines[parser.index].strip()!r}")
    return document


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_sequence_item(content: str) -> bool:
    return content == "-" or content.startswith(("- ", "-\t"))


def _fold(lines: list[str]) -> str:
    """YAML line folding: a single break becomes a space, each empty line a newline."""
    result, breaks = lines[0], 0
    for line in lines[1:]:
        if not line:
            breaks += 1
            continue
        result += ("\n" * breaks if breaks else " ") + line
        breaks = 0
    return result


class _Parser:
    def __init__(self, text: str):
        self.lines = text.removeprefix("\ufeff").splitlines()
        self.index = 0

    def next_content_line(self) -> bool:
        """Move past blank lines, comment lines and `---`; say whether a content line remains."""
        while self.index < len(self.lines):
            stripped = self.lines[self.index].strip()
            if stripped and not stripped.startswith("#") and stripped != "---":
                return True
            self.index += 1
        return False

    def node(self, parent_indent: int) -> Any:
        """The node starting at the next content line, if it is indented deeper than its parent."""
        if not self.next_content_line():
            return None
        line = self.lines[self.index]
        indent = _indent(line)
        if indent <= parent_indent:
            return None
        content = line[indent:]
        if _is_sequence_item(content):
            return self.sequence(indent)
        if _KEY.match(content):
            return self.mapping(indent)
        self.index += 1
        return self.scalar(content.strip(" \t"), parent_indent)

    def sequence(self, indent: int) -> list:
        items = []
        while self.next_content_line():
            line = self.lines[self.index]
            if _indent(line) != indent or not _is_sequence_item(line[indent:]):
                break
            rest = line[indent + 1 :]
            if not rest.strip() or rest.strip().startswith("#"):
                self.index += 1
                items.append(self.node(indent))
                continue
            # Re-read the item's content as if it started its own line at its own column, so
            # `- - x` and `- key: value` parse as a nested sequence and a mapping.
            column = indent + 1 + _indent(rest.replace("\t", " "))
            self.lines[self.index] = " " * column + rest.strip(" \t")
            items.append(self.node(indent))
        return items

    def mapping(self, indent: int) -> dict:
        result = {}
        while self.next_content_line():
            line = self.lines[self.index]
            match = _KEY.match(line, indent) if _indent(line) == indent else None
            if match is None:
                break
            key = self.unquote_key(match.group("key"))
            rest = line[match.end() :].strip(" \t")
            self.index += 1
            if rest and not rest.startswith("#"):
                result[key] = self.scalar(rest, indent)
            elif (
                self.next_content_line()
                and _indent(self.lines[self.index]) == indent
                and _is_sequence_item(self.lines[self.index][indent:])
            ):
                result[key] = self.sequence(indent)  # `key:` followed by `- item` at the key's own indent
            else:
                result[key] = self.node(indent)
        return result

    @staticmethod
    def unquote_key(key: str) -> str:
        if key[:1] == "'":
            return key[1:-1].replace("''", "'")
        return key[1:-1] if key[:1] == '"' else key

    def scalar(self, first: str, parent_indent: int) -> str:
        """A scalar whose first line's text is `first`; `self.index` is at the line after it."""
        header = _BLOCK_HEADER.fullmatch(first)
        if header:
            return self.block_scalar(header, parent_indent)
        if first[:1] in "'\"":
            return self.quoted(first)
        return self.plain(first, parent_indent)

    def plain(self, first: str, parent_indent: int) -> str:
        lines = [first.split(" #", 1)[0].rstrip(" \t")]
        while self.index < len(self.lines):
            line = self.lines[self.index]
            stripped = line.strip(" \t")
            if stripped and (_indent(line) <= parent_indent or stripped.startswith("#")):
                break
            lines.append(stripped.split(" #", 1)[0].rstrip(" \t"))
            self.index += 1
        while len(lines) > 1 and not lines[-1]:
            lines.pop()
        return _fold(lines)

    def quoted(self, first: str) -> str:
        pattern = _SINGLE_QUOTED if first[0] == "'" else _DOUBLE_QUOTED
        text = first
        while not (match := pattern.match(text)):
            if self.index >= len(self.lines):
                raise YamlError(f"unterminated quoted scalar starting {first[:40]!r}")
            text += "\n" + self.lines[self.index]
            self.index += 1
        raw = match.group(1)
        if first[0] == "'":
            return self.fold_quoted(raw).replace("''", "'")
        raw = _ESCAPED_LINE_BREAK.sub(r"\1", raw)
        return _ESCAPE.sub(self.unescape, self.fold_quoted(raw))

    @staticmethod
    def fold_quoted(raw: str) -> str:
        lines = raw.split("\n")
        if len(lines) == 1:
            return raw
        return _fold([lines[0].rstrip(" \t")] + [line.strip(" \t") for line in lines[1:-1]] + [lines[-1].lstrip(" \t")])

    @staticmethod
    def unescape(match: re.Match) -> str:
        code = match.group(1)
        if code[0] in "xuU" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code not in _SIMPLE_ESCAPES:
            raise YamlError(f"unknown escape \\{code} in a double-quoted scalar")
        return _SIMPLE_ESCAPES[code]

    def block_scalar(self, header: re.Match, parent_indent: int) -> str:
        if header.group("explicit"):
            raise YamlError("block scalars with an explicit indentation indicator are not supported")
        lines, content_indent = [], None
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if line.strip():
                if content_indent is None:
                    content_indent = _indent(line)
                if _indent(line) < content_indent or content_indent <= parent_indent:
                    break
                lines.append(line[content_indent:])
            else:
                lines.append("")
            self.index += 1
        if not any(lines):
            return ""
        body = ("\n".join(lines) if header.group("style") == "|" else self.fold_block(lines)) + "\n"
        chomp = header.group("chomp")
        if chomp == "+":
            return body
        return body.rstrip("\n") + ("" if chomp == "-" else "\n")

    @staticmethod
    def fold_block(lines: list[str]) -> str:
        """Folded (`>`) style: breaks between ordinary lines become spaces; indented lines keep theirs."""
        result = lines[0]
        for previous, line in zip(lines, lines[1:], strict=False):
            if not line:
                result += "\n"
            elif not previous:
                result += line
            elif line[0] in " \t" or previous[0] in " \t":
                result += "\n" + line
            else:
                result += " " + line
        return result
