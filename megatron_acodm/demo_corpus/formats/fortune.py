"""fortune(6) cookie files: plain text with one `%` line between entries."""

from __future__ import annotations

from pathlib import PurePosixPath


def split_fortunes(text: str) -> list[str]:
    """The entries of a cookie file, stripped, without empty ones."""
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current).strip())
            current = []
        else:
            current.append(line.rstrip())
    entries.append("\n".join(current).strip())
    return [entry for entry in entries if entry]


def is_offensive(path: str) -> bool:
    """Packages mark offensive cookies by folder (`off/`) or, BSD-style, by an `-o` name suffix."""
    parts = PurePosixPath(path).parts
    return "off" in parts[:-1] or parts[-1].endswith("-o")


def is_cookie_file(path: str) -> bool:
    """Cookie text, not the `.dat` random-access tables strfile(1) writes next to it."""
    return not path.endswith(".dat")
