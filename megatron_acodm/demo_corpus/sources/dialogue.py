"""Dialogue: chatterbot-corpus's English conversations and the English fortune cookies."""

from __future__ import annotations

import zipfile

from megatron_acodm.demo_corpus.documents import as_text, pack
from megatron_acodm.demo_corpus.fetch import Fetcher
from megatron_acodm.demo_corpus.sources.base import Extracted, Source, SourceUnavailable, parse_yaml
from megatron_acodm.demo_corpus.sources.fortunes import fortune_cookies

CHATTERBOT = ("chatterbot-corpus", "1.3.3")
CHATTERBOT_ENGLISH = "chatterbot_corpus/data/english/"
SPEAKERS = ("A", "B")


def format_conversation(turns: list) -> str:
    """Alternate two speakers over a conversation's turns; non-text turns are skipped."""
    lines = [turn.strip() for turn in turns if isinstance(turn, str) and turn.strip()]
    return "\n".join(f"{SPEAKERS[number % 2]}: {line}" for number, line in enumerate(lines))


def chatterbot_english(fetcher: Fetcher) -> Extracted:
    wheel = fetcher.wheel(*CHATTERBOT)
    documents = []
    with zipfile.ZipFile(wheel.path) as archive:
        names = sorted(
            name for name in archive.namelist() if name.startswith(CHATTERBOT_ENGLISH) and name.endswith(".yml")
        )
        for name in names:
            topic = parse_yaml(as_text(archive.read(name)), f"{name} in {wheel.path.name}")
            conversations = topic.get("conversations") if isinstance(topic, dict) else None
            if isinstance(conversations, list):
                documents.extend(pack(format_conversation(turns) for turns in conversations if isinstance(turns, list)))
    if not documents:
        raise SourceUnavailable(f"{wheel.path.name} has no English conversations under {CHATTERBOT_ENGLISH}")
    return Extracted(documents, [wheel.origin()])


SOURCES = [
    Source("chatterbot-english", "dialogue", chatterbot_english),
    Source("fortunes-english", "dialogue", fortune_cookies(("fortunes", "fortunes-min"), "usr/share/games/fortunes/")),
]
