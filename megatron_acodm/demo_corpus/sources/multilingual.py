"""Multilingual: GNOME's desktop help in its fully translated languages, and fortunes in four languages."""

from __future__ import annotations

import logging
from collections import defaultdict
from xml.etree.ElementTree import ParseError

from megatron_acodm.demo_corpus.fetch import Fetcher, read_deb_files
from megatron_acodm.demo_corpus.formats.mallard import page_paragraphs
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, SourceUnavailable
from megatron_acodm.demo_corpus.sources.fortunes import fortune_cookies

log = logging.getLogger(__name__)

HELP_ROOT = "usr/share/help/"
ENGLISH = "C"  # the untranslated originals
MAX_HELP_LANGUAGES = 15


def _language(path: str) -> str:
    return path[len(HELP_ROOT) :].split("/", 1)[0]


def gnome_help(fetcher: Fetcher) -> Extracted:
    """Help pages of the languages that translate every English page, English leftovers removed.

    Translations fall back to the English string for messages nobody translated yet; such
    paragraphs are dropped so the domain stays non-English.
    """
    deb = fetcher.deb("gnome-user-docs")
    pages = read_deb_files(deb, lambda path: path.startswith(HELP_ROOT) and path.endswith(".page"))
    by_language: dict[str, dict[str, bytes]] = defaultdict(dict)
    for path, data in pages.items():
        by_language[_language(path)][path.split("/", 4)[-1]] = data
    english = by_language.pop(ENGLISH, {})
    if not english:
        raise SourceUnavailable(f"{deb.path.name} has no English ({ENGLISH}) help pages")
    complete = sorted(language for language, translated in by_language.items() if english.keys() <= translated.keys())
    languages = complete[:MAX_HELP_LANGUAGES]
    english_paragraphs = {paragraph for data in english.values() for paragraph in _paragraphs(data)}
    documents = []
    for language in languages:
        for data in by_language[language].values():
            kept = [paragraph for paragraph in _paragraphs(data) if paragraph not in english_paragraphs]
            documents.append("\n\n".join(kept))
    log.info("gnome-help languages: %s", " ".join(languages))
    return Extracted(documents, [{**deb.origin(), "languages": languages}])


def _paragraphs(page: bytes) -> list[str]:
    try:
        return page_paragraphs(page)
    except ParseError:
        return []  # a malformed page is skipped, like a missing translation


SOURCES = [
    Source("gnome-help", "multilingual", gnome_help),
    Source("fortunes-de", "multilingual", fortune_cookies(("fortunes-de",), "usr/share/games/fortunes/de/")),
    Source("fortunes-ru", "multilingual", fortune_cookies(("fortunes-ru",), "usr/share/games/fortunes/ru/")),
    Source("fortunes-it", "multilingual", fortune_cookies(("fortunes-it",), "usr/share/games/fortunes/it/")),
    Source("fortunes-es", "multilingual", fortune_cookies(("fortunes-es",), "usr/share/games/fortunes/es/")),
]
