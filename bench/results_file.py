"""Writing a benchmark's figures: atomically, as strict JSON, with paths inside the repository
made relative to it (results are committed; the machine they ran on is not their business)."""

from __future__ import annotations

import json
import os
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_relative(value: Any) -> Any:
    """`value` with every string that is a path under the repository rewritten relative to it."""
    if isinstance(value, str) and value.startswith(REPO + os.sep):
        return os.path.relpath(value, REPO)
    if isinstance(value, dict):
        return {key: repo_relative(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [repo_relative(item) for item in value]
    return value


def write_json(path: str, data: Any) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(repo_relative(data), stream, indent=1, allow_nan=False)
        stream.write("\n")
    os.replace(temporary, path)
