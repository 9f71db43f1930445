"""fortune(6) cookie packages, shared by the English dialogue domain and the multilingual one."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Callable

from megatron_acodm.demo_corpus.documents import pack
from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.formats.fortune import is_cookie_file, is_offensive, split_fortunes
from megatron_acodm.demo_corpus.sources.base import Extracted, deb_texts

# Files of ASCII drawings or package banners rather than sentences.
PICTURE_FILES = frozenset({"ascii-art", "asciiart", "banner"})


def fortune_cookies(packages: tuple[str, ...], folder: str) -> Callable[[Fetcher], Extracted]:
    """An extractor for the cookie files under `folder` in `packages`, offensive ones left out."""

    def wanted(path: str) -> bool:
        return (
            path.startswith(folder)
            and is_cookie_file(path)
            and not is_offensive(path)
            and PurePosixPath(path).name not in PICTURE_FILES
        )

    def extract(fetcher: Fetcher) -> Extracted:
        documents, origins = [], []
        for package in packages:
            deb, files = deb_texts(fetcher, package, wanted)
            for text in files.values():
                documents.extend(pack(split_fortunes(text)))
            origins.append(deb.origin())
        return Extracted(documents, origins)

    return extract
