"""Which code a benchmark run ran: a content hash of the files that decide its numbers, the git
commit it ran at, and the pieces of a run's key (`digest`, `portable` command lines).

The hash covers the entry points it runs (`pretrain_acodm.py`, a tool) and every file of the
package, except the modules under `megatron_acodm/mixing/` that the run does not import: a change
to one mixer reruns that mixer's runs and nothing else. `mixing/__init__.py` and `registry.py`
import every mixer, so the import graph is not followed through them (they, and `base.py`, count
for every run); from the entry points and the run's mixer module it is followed everywhere else,
by reading the `import` statements (`ast`), so a mixer counts the shared modules it uses
(`weighting.py`, `alignment.py`, ...) and a tool the mixing modules it imports.

Imports only the standard library: the tests load it by its path.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
from typing import Any, Iterable, Optional, Sequence

PACKAGE = "megatron_acodm"
MIXING = f"{PACKAGE}/mixing"
# Counted for every run and never followed: the package's and the registry's imports reach every mixer.
EVERY_RUN = (f"{MIXING}/__init__.py", f"{MIXING}/registry.py", f"{MIXING}/base.py")
NOT_FOLLOWED = (f"{MIXING}/__init__.py", f"{MIXING}/registry.py")


def _package_files(repo: str) -> list[str]:
    """Every file of the package (no bytecode), repository-relative with '/', sorted."""
    found = []
    for folder, subfolders, files in os.walk(os.path.join(repo, PACKAGE)):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        found += [os.path.relpath(os.path.join(folder, name), repo).replace(os.sep, "/")
                  for name in files if not name.endswith((".pyc", ".pyo"))]
    return sorted(found)


def module_file(repo: str, module: str) -> Optional[str]:
    """The repository-relative file of a dotted module of the package (a package: its __init__.py), or None."""
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if os.path.isfile(os.path.join(repo, candidate)):
            return candidate
    return None


def _dotted(path: str) -> str:
    """The module a repository-relative file defines (a package's __init__.py: the package)."""
    stem = path[: -len("/__init__.py")] if path.endswith("/__init__.py") else path[: -len(".py")]
    return stem.replace("/", ".")


def imported_files(repo: str, path: str) -> set[str]:
    """The package's files that `path` imports, directly: each module named in an `import` or
    `from` statement anywhere in it (in functions too), the packages above it, and the names of a
    `from` import that are submodules."""
    with open(os.path.join(repo, path), encoding="utf-8") as stream:
        tree = ast.parse(stream.read(), filename=path)
    own = _dotted(path).split(".")
    package = own if path.endswith("/__init__.py") else own[:-1]  # what a relative import starts from
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            start = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            base = ".".join(part for part in (start, node.module or "") if part)
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    files = set()
    for module in modules:
        parts = module.split(".")
        if parts[0] != PACKAGE:
            continue
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            found = module_file(repo, ".".join(parts[:depth]))
            if found is not None:
                files.add(found)
    return files


def reached_mixing_files(repo: str, starts: Iterable[str]) -> set[str]:
    """The files under mixing/ that the files `starts` import, directly or not, without following
    the imports of mixing/__init__.py and registry.py."""
    seen, pending = set(), [start for start in starts]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        if path not in NOT_FOLLOWED:
            pending += imported_files(repo, path)
    return {path for path in seen if path.startswith(MIXING + "/")}


def run_files(repo: str, entry_points: Iterable[str], mixer_module: Optional[str]) -> list[str]:
    """The files whose content decides a run's numbers: its entry points (repository-relative), the
    package outside mixing/, mixing's EVERY_RUN and the mixing modules that the entry points and
    the mixer's module (dotted, e.g. `megatron_acodm.mixing.odm`) import."""
    entry_points = list(entry_points)
    starts = list(entry_points)
    if mixer_module is not None:
        mixer_file = module_file(repo, mixer_module)
        if mixer_file is None:
            raise ValueError(f"no file for the mixer module {mixer_module} under {repo}")
        starts.append(mixer_file)
    mixing = reached_mixing_files(repo, starts) | set(EVERY_RUN)
    package = [path for path in _package_files(repo) if not path.startswith(MIXING + "/") or path in mixing]
    return sorted(set(entry_points) | set(package))


def code_hash(repo: str, entry_points: Iterable[str], mixer_module: Optional[str]) -> str:
    """sha256 over the run's files (`run_files`): each one's path and content."""
    digest = hashlib.sha256()
    for path in run_files(repo, entry_points, mixer_module):
        with open(os.path.join(repo, path), "rb") as stream:
            content = stream.read()
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def git_commit(repo: str, paths: Iterable[str] = (PACKAGE, "pretrain_acodm.py", "tools")) -> dict[str, object]:
    """`commit`: `git rev-parse HEAD` (None outside a git checkout); `package_modified`: whether `paths` differ
    from that commit (changed, staged or new files). Reads only: no index refresh is written."""
    def git(*arguments: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", repo, *arguments], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "package_modified": None}
    status = git("status", "--porcelain", "--untracked-files=all", "--", *paths)
    return {"commit": commit.strip(), "package_modified": None if status is None else bool(status.strip())}


def digest(value: Any) -> str:
    """The sha256 of a JSON value, keys sorted: a key."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def portable(word: str, places: Sequence[tuple[str, str]]) -> str:
    """A command-line word as a key holds it: an absolute path under one of `places` ((folder, mark),
    the first that holds it) written from its mark, e.g. `<root>/proxy-seed1/policy.pt`, so that the
    key does not depend on where the repository or the runs are."""
    if not os.path.isabs(word):
        return word
    for base, mark in places:
        if word == base or word.startswith(base + os.sep):
            return mark + word[len(base):]
    return word
