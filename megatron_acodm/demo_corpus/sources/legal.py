"""Legal: Debian's per-package copyright statements and the common licence texts, read from this system."""

from __future__ import annotations

from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, local_origin, local_texts

DOC_ROOT = "/usr/share/doc"
LICENSES_ROOT = "/usr/share/common-licenses"


def debian_copyright_files(fetcher: Fetcher) -> Extracted:
    files = local_texts([DOC_ROOT], lambda name: name == "copyright")
    return Extracted(list(files.values()), [local_origin(files, paths=[DOC_ROOT])])


def common_licenses(fetcher: Fetcher) -> Extracted:
    files = local_texts([LICENSES_ROOT], lambda name: True)
    return Extracted(list(files.values()), [local_origin(files, paths=[LICENSES_ROOT])])


SOURCES = [
    Source("debian-copyright", "legal", debian_copyright_files),
    Source("common-licenses", "legal", common_licenses),
]
