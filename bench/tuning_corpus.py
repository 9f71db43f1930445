"""The tuning corpus: where the mixers' free constants are chosen, from packages no evaluation reads.

Four domains of Debian packages that the demo corpus does not use, plus the noise domain of the
noisy corpus, and one target set for the mixers that read a task:

    elisp        Emacs Lisp sources (emacs-el; not the input-method tables of lisp/leim)
    manpages     the Linux man pages in troff source (manpages, manpages-dev)
    manpages-de  their German translations (manpages-de)
    handbooks    Debian's handbooks: the policy manual and the developers' reference (their reST
                 sources) and the Debian reference (its text edition)
    noise        uniformly random ordinary token ids, 40% of the tokens (`corpora.add_noise`)
    target set   gnu-standards: the GNU coding standards and maintainers' guide, one example per section

The demo's tokenizer encodes it, so the model is the benchmarks' own. Built once into
`<work-dir>/tuning-corpus/` by the demo corpus's builder (`megatron_acodm.demo_corpus.build`, with
these sources) and `tools/preprocess_domains.py`; built again only when it is missing.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Callable

from common import say
from corpora import DEMO_TOKENIZER, add_noise, run_tool
from megatron_acodm.demo_corpus.build import BuildOptions, build
from megatron_acodm.demo_corpus.documents import as_text
from megatron_acodm.demo_corpus.fetch import Fetcher, read_deb_files
from megatron_acodm.demo_corpus.sources import TARGETS, Extracted, Source, SourceUnavailable

DOMAINS = ("elisp", "manpages", "manpages-de", "handbooks")
TARGET = "gnu-standards"
FOLDER = "tuning-corpus"
# GNU's plain-text manuals underline each section title with '=', '*', '-' or '.'.
SECTION_TITLE = re.compile(r"^\S.*\n[=*.-]{3,}$", re.MULTILINE)


def package_texts(packages: tuple[str, ...], wanted: Callable[[str], bool]) -> Callable[[Fetcher], Extracted]:
    """An extractor: every file of `packages` that passes `wanted`, one document each (gunzipped when `.gz`)."""

    def extract(fetcher: Fetcher) -> Extracted:
        documents, origins = [], []
        for package in packages:
            deb = fetcher.deb(package)
            files = read_deb_files(deb, wanted)
            if not files:
                raise SourceUnavailable(f"{deb.path.name} holds none of the expected files")
            documents += [as_text(gzip.decompress(data) if path.endswith(".gz") else data) for path, data in files.items()]
            origins.append(deb.origin())
        return Extracted(documents, origins)

    return extract


def manual_sections(fetcher: Fetcher) -> Extracted:
    """The GNU coding standards and maintainers' guide, cut at their section titles."""
    deb = fetcher.deb("gnu-standards")
    manuals = read_deb_files(deb, lambda path: path.endswith((".text.gz",)) and path.startswith("usr/share/doc/gnu-standards/"))
    if not manuals:
        raise SourceUnavailable(f"{deb.path.name} holds no plain-text manual")
    sections = []
    for data in manuals.values():
        text = as_text(gzip.decompress(data))
        starts = [match.start() for match in SECTION_TITLE.finditer(text)] + [len(text)]
        sections += [text[start:end] for start, end in zip(starts, starts[1:])]
    return Extracted(sections, [deb.origin()])


def _man_page(language: str) -> Callable[[str], bool]:
    folder = "usr/share/man/" + (f"{language}/" if language else "")
    return lambda path: path.startswith(folder + "man") and path.endswith(".gz") and path.count("/") == folder.count("/") + 1


SOURCES = (
    Source("emacs-lisp", "elisp", package_texts(
        ("emacs-el",), lambda path: path.endswith(".el.gz") and "/lisp/" in path and "/lisp/leim/" not in path)),
    Source("linux-man-pages", "manpages", package_texts(("manpages", "manpages-dev"), _man_page(""))),
    Source("linux-man-pages-de", "manpages-de", package_texts(("manpages-de",), _man_page("de"))),
    Source("debian-policy", "handbooks", package_texts(
        ("debian-policy",), lambda path: path.startswith("usr/share/doc/debian-policy/policy.html/_sources/"))),
    Source("developers-reference", "handbooks", package_texts(
        ("developers-reference",), lambda path: path.startswith("usr/share/developers-reference/_sources/"))),
    Source("debian-reference", "handbooks", package_texts(
        ("debian-reference-en",), lambda path: path.endswith("debian-reference.en.txt.gz"))),
    Source(TARGET, TARGETS, manual_sections),
)


def ensure_tuning_corpus(work_dir: str, repo: str) -> tuple[str, str, str]:
    """The tuning corpus's manifest (its domains and the noise), its target set's manifest and the
    tokenizer, built when missing."""
    folder = os.path.abspath(os.path.join(work_dir, FOLDER))
    tokenizer = os.path.join(repo, DEMO_TOKENIZER)
    indexed, targets = os.path.join(folder, "indexed"), os.path.join(folder, "targets-indexed")
    if not os.path.exists(os.path.join(indexed, "domains.json")) or not os.path.exists(os.path.join(targets, "domains.json")):
        say(f"building the tuning corpus in {folder}")
        build(BuildOptions(output_dir=Path(folder), tokenizer_model=Path(tokenizer), parts=(*DOMAINS, TARGETS),
                           sources=SOURCES, tool="bench/tuning_corpus.py"))
        for source, destination in ((os.path.join(folder, "jsonl"), indexed), (os.path.join(folder, "targets"), targets)):
            run_tool(["tools/preprocess_domains.py", "--input", source, "--output-dir", destination,
                      "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", tokenizer,
                      "--workers", str(os.cpu_count() or 1), "--append-eod"])
    with_noise = add_noise(os.path.join(indexed, "domains.json"), os.path.join(folder, "noisy"), "SentencePieceTokenizer", tokenizer)
    return with_noise, os.path.join(targets, "domains.json"), tokenizer
