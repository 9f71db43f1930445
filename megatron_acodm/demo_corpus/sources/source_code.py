"""Code: the running interpreter's Python standard library, the system's C headers, Perl modules.

These are already on any Debian machine, so nothing is downloaded; each file is a document
(long files are split later). Their provenance is the interpreter version or a content digest.
"""

from __future__ import annotations

import glob
import platform
import sysconfig

from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, local_origin, local_texts

C_HEADERS_ROOT = "/usr/include"
# Perl's module trees on Debian: architecture-independent ones, then per-architecture ones.
PERL_ROOT_PATTERNS = (
    "/usr/share/perl",
    "/usr/share/perl5",
    "/usr/lib/*/perl",
    "/usr/lib/*/perl5",
    "/usr/lib/*/perl-base",
)
# Third-party packages installed into the interpreter are not the standard library.
NOT_STDLIB = frozenset({"site-packages", "dist-packages", "__pycache__"})


def python_stdlib(fetcher: Fetcher) -> Extracted:
    stdlib = sysconfig.get_paths()["stdlib"]  # machine-specific, hence relative keys
    files = local_texts([stdlib], lambda name: name.endswith(".py"), NOT_STDLIB, relative=True)
    origin = local_origin(files, package="python-stdlib", version=platform.python_version())
    return Extracted(list(files.values()), [origin])


def c_headers(fetcher: Fetcher) -> Extracted:
    files = local_texts([C_HEADERS_ROOT], lambda name: name.endswith(".h"))
    return Extracted(list(files.values()), [local_origin(files, paths=[C_HEADERS_ROOT])])


def perl_modules(fetcher: Fetcher) -> Extracted:
    roots = sorted({root for pattern in PERL_ROOT_PATTERNS for root in glob.glob(pattern)})
    files = local_texts(roots, lambda name: name.endswith(".pm"))
    return Extracted(list(files.values()), [local_origin(files, paths=roots)])


SOURCES = [
    Source("python-stdlib", "code", python_stdlib),
    Source("c-headers", "code", c_headers),
    Source("perl-modules", "code", perl_modules),
]
