"""The search's results file: a JSONL whose first line names the search's settings, then one line per
evaluated mixture (its weights, per-domain and target losses, objective, what the surrogate had
predicted, seconds). Appended and flushed line by line, so a killed search loses at most the line
it was writing, which is dropped when the file is read again."""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.errors import UserError

# Mixtures are looked up by their weights rounded to this many digits (JSON keeps 17).
_KEY_DIGITS = 9


def mixture_key(mixture: Sequence[float]) -> tuple:
    return tuple(round(float(weight), _KEY_DIGITS) for weight in mixture)


def read_results(path: str) -> tuple[dict, list[dict]]:
    """(settings, records) of a results file; a torn last line is left out."""
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    try:
        header = json.loads(lines[0])["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a results file of tools/mergemix.py ({error}); delete it to search again") from error
    records = []
    last = max(number for number, line in enumerate(lines, start=1) if line.strip())
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < last:  # only the last line can be half written
                raise UserError(f"{path}:{number}: not valid JSON ({error}); delete the file to search again") from error
    return header, records


class ResultsFile:
    def __init__(self, path: str, settings: dict):
        self.path = path
        self.records: list[dict] = []
        if os.path.isfile(path):
            saved, self.records = read_results(path)
            if saved != settings:
                raise UserError(f"{path}: written by a search with other settings; delete it or give another --work-dir")
        # (Re)written whole and atomically: a torn last line goes, and appends start on a line of their own.
        write_text_atomically(path, "".join(json.dumps(entry) + "\n" for entry in [{"settings": settings}, *self.records]))
        self._index = {mixture_key(record["mixture"].values()): record for record in self.records}


    def find(self, mixture: Sequence[float]) -> Optional[dict]:
        return self._index.get(mixture_key(mixture))

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self.records.append(record)
        self._index[mixture_key(record["mixture"].values())] = record
