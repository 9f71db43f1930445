"""Math: the PARI/GP manuals in TeX and Metamath's set.mm (ZFC set theory) without its proofs."""

from __future__ import annotations

from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.formats.metamath import strip_proofs
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, deb_texts

PARI_DOC_FOLDER = "usr/share/pari/doc/"
SET_MM = "usr/share/metamath/databases/set.mm"


def pari_manuals(fetcher: Fetcher) -> Extracted:
    deb, files = deb_texts(fetcher, "pari-doc", lambda path: path.startswith(PARI_DOC_FOLDER) and path.endswith(".tex"))
    return Extracted(list(files.values()), [deb.origin()])


def metamath_set_theory(fetcher: Fetcher) -> Extracted:
    deb, files = deb_texts(fetcher, "metamath-databases", lambda path: path == SET_MM)
    return Extracted([strip_proofs(files[SET_MM])], [deb.origin()])


SOURCES = [
    Source("pari-gp-manuals", "math", pari_manuals),
    Source("metamath-set-mm", "math", metamath_set_theory),
]
