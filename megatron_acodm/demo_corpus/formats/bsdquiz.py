"""bsdgames quiz(6) data: `field:field[:field...]` lines with a small pattern language.

In a pattern, `{x}` marks optional text, `[a|b]` and a top-level `a|b` give alternatives and
a backslash quotes the next character; a line ending in a backslash continues on the next line.
The `index` file maps each data file to the names of its columns, written as patterns too.
This module turns every pattern into its canonical answer: optional text included, first
alternative taken.
"""

from __future__ import annotations

from pathlib import PurePosixPath

_CLOSING = {"{": "}", "[": "]"}


def canonical(pattern: str) -> str:
    text, _ = _alternatives(pattern, 0, stop="")
    return text.strip()


def _alternatives(pattern: str, position: int, stop: str) -> tuple[str, int]:
    """Read until the unquoted `stop` character; return the first alternative and where reading stopped."""
    choices: list[list[str]] = [[]]
    while position < len(pattern) and pattern[position] != stop:
        character = pattern[position]
        if character == "\\" and position + 1 < len(pattern):
            choices[-1].append(pattern[position + 1])
            position += 2
        elif character in _CLOSING:
            group, position = _alternatives(pattern, position + 1, _CLOSING[character])
            choices[-1].append(group)
            position += 1  # past the closing bracket
        elif character == "|":
            choices.append([])
            position += 1
        else:
            choices[-1].append(character)
            position += 1
    return "".join(choices[0]), position


def split_fields(line: str) -> list[str]:
    """Split at the colons that are neither quoted nor inside `{}` or `[]`."""
    fields, current, depth, quoted = [], [], 0, False
    for character in line:
        if quoted:
            quoted = False
        elif character == "\\":
            quoted = True
        elif character in "{[":
            depth += 1
        elif character in "}]":
            depth -= 1
        elif character == ":" and depth == 0:
            fields.append("".join(current))
            current = []
            continue
        current.append(character)
    fields.append("".join(current))
    return fields


def logical_lines(text: str) -> list[str]:
    """Join lines that end in an unquoted backslash with the line after them."""
    lines, pending = [], ""
    for line in text.splitlines():
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return [line for line in lines if line.strip()]


def read_index(text: str) -> dict[str, list[str]]:
    """Data file name -> canonical column names."""
    columns = {}
    for line in logical_lines(text):
        path, *names = split_fields(line)
        columns[PurePosixPath(path).name] = [canonical(name) for name in names]
    return columns


def question_answer_texts(column_names: list[str], data: str) -> list[str]:
    """One `column: value` block per data line, e.g. 'African: Algeria\\ncapital: Algiers'."""
    texts = []
    for line in logical_lines(data):
        values = [canonical(field) for field in split_fields(line)]
        pairs = [f"{name}: {value}" for name, value in zip(column_names, values, strict=False) if value]
        if len(pairs) >= 2:
            texts.append("\n".join(pairs))
    return texts
