"""Books: Jane Austen's six novels and the King James Bible, one document per chapter."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from megatron_acodm.demo_corpus.fetch import Fetcher, read_deb_files, unpack_deb
from megatron_acodm.demo_corpus.formats.r_lazyload import RDataError, read_character_vectors
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, SourceUnavailable

AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
AUSTEN_CHAPTER = re.compile(r"(CHAPTER|Chapter) ([0-9]+|[IVXLC]+)\.?")
BIBLE_ALL_VERSES = "Gen1:1-Rev22:21"


def austen_chapters(lines: list) -> list[str]:
    """A novel's lines (as janeaustenr stores them) -> chapters, each headed by the novel's title.

    The package keeps Project Gutenberg's hard-wrapped lines with empty strings between
    paragraphs; paragraphs are unwrapped so a document reads as running prose.
    """
    lines = [line or "" for line in lines]
    title = next(line.strip() for line in lines if line.strip())
    chapters: list[list[str]] = [[]]
    for line in lines:
        if AUSTEN_CHAPTER.fullmatch(line.strip()):
            chapters.append([])
        chapters[-1].append(line)
    documents = []
    for chapter in chapters[1:]:  # chapters[0] is the title page
        paragraphs = " ".join(line.strip() if line.strip() else "\n\n" for line in chapter)
        body = "\n\n".join(part.strip() for part in paragraphs.split("\n\n") if part.strip())
        documents.append(f"{title}\n\n{body}")
    return documents


def austen_novels(fetcher: Fetcher) -> Extracted:
    deb = fetcher.deb("r-cran-janeaustenr")
    files = read_deb_files(deb, lambda path: path in (f"{AUSTEN_DATA}.rdx", f"{AUSTEN_DATA}.rdb"))
    if len(files) != 2:
        raise SourceUnavailable(f"{deb.path.name} has no {AUSTEN_DATA}.rdx/.rdb")
    try:
        novels = read_character_vectors(files[f"{AUSTEN_DATA}.rdx"], files[f"{AUSTEN_DATA}.rdb"])
    except RDataError as error:
        raise SourceUnavailable(f"cannot read the R data in {deb.path.name}: {error}") from error
    return Extracted([chapter for lines in novels.values() for chapter in austen_chapters(lines)], [deb.origin()])


def bible_chapters(listing: str) -> list[str]:
    """`bible`'s pretty-printed output -> one document per chapter.

    Chapter headings ("Genesis 1") start at the margin; verses are indented and numbered.
    """
    chapters: list[list[str]] = []
    for line in listing.splitlines():
        if line.strip() and not line[0].isspace():
            chapters.append([line.strip(), ""])
        elif line.strip() and chapters:
            chapters[-1].append(line.strip())
    return ["\n".join(chapter) for chapter in chapters]


def king_james_bible(fetcher: Fetcher) -> Extracted:
    """Dump the whole text with the package's own `bible` program, run from an unpacked copy.

    The text package stores the Bible in a custom compressed format that only this program reads.
    """
    program, data = fetcher.deb("bible-kjv"), fetcher.deb("bible-kjv-text")
    with tempfile.TemporaryDirectory(prefix="bible-kjv-") as scratch:
        unpack_deb(program, Path(scratch, "program"))
        unpack_deb(data, Path(scratch, "data"))
        command = [
            str(Path(scratch, "program/usr/bin/bible")),
            "-l",
            "100000",
            "-p",
            str(Path(scratch, "data/usr/lib")),
            BIBLE_ALL_VERSES,
        ]
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            raise SourceUnavailable(f"the bible program from {program.path.name} cannot run here: {error}") from error
    return Extracted(bible_chapters(result.stdout), [program.origin(), data.origin()])


SOURCES = [
    Source("jane-austen", "books", austen_novels),
    Source("king-james-bible", "books", king_james_bible),
]
