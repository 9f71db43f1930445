"""A complete run's records, kept as one `.tar.gz` beside the reports (`<output-dir>/runs/`), so that
a benchmark run in parts, on machines that do not keep their scratch folders, goes on where the
last part stopped and its report still reads every run.

An archive holds the records only, not the checkpoint (a run whose final evaluation is done needs
none): its training and result records (keys, commit, wall time), its metrics, its final
evaluation's metrics and a proxy's exported mixtures (`runs.Run.records`; not the AC-ODM actor).
Its bytes depend on those files alone (no times, no owners, no file name), so archiving a run again
changes nothing, and not on where they lie: the paths its records name (the run header logs the
command's paths) are kept from a mark for the place that holds them, `<run>/metrics.jsonl`, the
same `places` the run's key writes them from (`code_version.portable`), and are written back from
where the run is restored. A path under none of them is kept as it is. `runs.Run` restores one only
into a folder whose run is incomplete and only under the run's current keys; a damaged archive
reads as none, and the run runs again and replaces it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
from typing import Optional, Sequence

Places = Sequence[tuple[str, str]]  # (absolute folder, its mark), the innermost first

RESULT = "result.json"  # the member whose keys say which run the archive holds


def _spellings(folder: str) -> set[bytes]:
    """How a JSON string spells `folder` (non-ASCII escaped or not)."""
    return {json.dumps(folder, ensure_ascii=ascii)[1:-1].encode() for ascii in (True, False)}


def _replace_paths(data: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """`data` with each JSON string that starts with a whole `old` folder (then `/` or its end) starting with `new` instead."""
    for old, new in pairs:
        data = re.sub(b'"' + re.escape(old) + b'(?=[/"])', lambda _: b'"' + new, data)
    return data


def _marked(data: bytes, places: Places) -> bytes:
    return _replace_paths(data, [(spelling, mark.encode()) for folder, mark in places for spelling in _spellings(folder)])


def _unmarked(data: bytes, places: Places) -> bytes:
    return _replace_paths(data, [(mark.encode(), json.dumps(folder)[1:-1].encode()) for folder, mark in places])


def pack(path: str, folder: str, names: Sequence[str], places: Places) -> None:
    """Write `names` (files of `folder`) into the archive `path`, replacing it whole, their paths under `places` marked."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(names):
            with open(os.path.join(folder, name), "rb") as stream:
                data = _marked(stream.read(), places)
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o644
            archive.addfile(member, io.BytesIO(data))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as stream:
        stream.write(buffer.getvalue())
    os.replace(partial, path)


def _members(path: str) -> Optional[dict[str, bytes]]:
    """The archive's files by name; None where it is missing or damaged."""
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            members = {}
            for member in archive.getmembers():
                stream = archive.extractfile(member) if member.isfile() else None
                if stream is None or os.path.basename(member.name) != member.name:
                    return None  # only plain files at its top: nothing may land outside the run's folder
                members[member.name] = stream.read()
            return members
    except (OSError, EOFError, tarfile.TarError):
        return None


def keys(path: str) -> Optional[dict[str, Optional[str]]]:
    """The keys (`key`, `final_key`) of the run the archive holds; None where it holds none readable."""
    members = _members(path)
    try:
        result = json.loads(members[RESULT])
        return {"key": result["key"], "final_key": result["final_key"]}
    except (TypeError, KeyError, ValueError):
        return None


def unpack(path: str, folder: str, places: Places) -> bool:
    """Write the archive's files into `folder`, its marks written as `places`; False (nothing written) where it is damaged."""
    members = _members(path)
    if members is None:
        return False
    os.makedirs(folder, exist_ok=True)
    for name, data in members.items():
        with open(os.path.join(folder, name), "wb") as stream:
            stream.write(_unmarked(data, places))
    return True
