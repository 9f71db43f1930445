"""Technical documentation: the Python 3.11 manuals (reStructuredText sources) and Vim's help."""

from __future__ import annotations

import re

from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, deb_texts

# The HTML manual ships the reST it was built from, which is cleaner text than the HTML.
PYTHON_DOC_SOURCES = "usr/share/doc/python3.11/html/_sources/"
VIM_HELP = re.compile(r"usr/share/vim/vim[0-9]+/doc/[^/]+\.txt")


def python_manuals(fetcher: Fetcher) -> Extracted:
    deb, files = deb_texts(
        fetcher, "python3.11-doc", lambda path: path.startswith(PYTHON_DOC_SOURCES) and path.endswith(".rst.txt")
    )
    return Extracted(list(files.values()), [deb.origin()])


def vim_help(fetcher: Fetcher) -> Extracted:
    deb, files = deb_texts(fetcher, "vim-runtime", lambda path: VIM_HELP.fullmatch(path) is not None)
    return Extracted(list(files.values()), [deb.origin()])


SOURCES = [
    Source("python-manuals", "technical", python_manuals),
    Source("vim-help", "technical", vim_help),
]
