"""Encyclopedic: four dictd dictionaries (computing, hacker jargon, general English, WordNet).

Entries are short, so consecutive entries (alphabetical neighbours) are packed into documents.
"""

from __future__ import annotations

from typing import Callable

from megatron_acodm.demo_corpus.documents import pack
from megatron_acodm.demo_corpus.fetch import Fetcher, read_deb_files
from megatron_acodm.demo_corpus.formats.dictd import read_entries
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, SourceUnavailable


def dictd_dictionary(package: str, stem: str) -> Callable[[Fetcher], Extracted]:
    """An extractor for the dictd database `usr/share/dictd/<stem>.{index,dict.dz}` of `package`."""
    index_path, body_path = f"usr/share/dictd/{stem}.index", f"usr/share/dictd/{stem}.dict.dz"

    def extract(fetcher: Fetcher) -> Extracted:
        deb = fetcher.deb(package)
        files = read_deb_files(deb, lambda path: path in (index_path, body_path))
        if len(files) != 2:
            raise SourceUnavailable(f"{deb.path.name} has no {index_path} and {body_path}")
        return Extracted(pack(read_entries(files[index_path], files[body_path])), [deb.origin()])

    return extract


SOURCES = [
    Source("foldoc", "encyclopedic", dictd_dictionary("dict-foldoc", "foldoc")),
    Source("jargon-file", "encyclopedic", dictd_dictionary("dict-jargon", "jargon")),
    Source("gcide", "encyclopedic", dictd_dictionary("dict-gcide", "gcide")),
    Source("wordnet", "encyclopedic", dictd_dictionary("dict-wn", "wn")),
]
