"""The corpus sources, in the fixed order that makes the build deterministic."""

from megatron_acodm.demo_corpus.sources import (
    books,
    dialogue,
    encyclopedic,
    legal,
    maths,
    multilingual,
    source_code,
    targets,
    technical,
)
from megatron_acodm.demo_corpus.sources.base import TARGETS, TRAINING_DOMAINS, Extracted, Source, SourceUnavailable

ALL_SOURCES: list[Source] = [
    *books.SOURCES,
    *encyclopedic.SOURCES,
    *source_code.SOURCES,
    *maths.SOURCES,
    *technical.SOURCES,
    *legal.SOURCES,
    *dialogue.SOURCES,
    *multilingual.SOURCES,
    *targets.SOURCES,
]

__all__ = ["ALL_SOURCES", "TARGETS", "TRAINING_DOMAINS", "Extracted", "Source", "SourceUnavailable"]
