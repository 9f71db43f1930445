"""Per-domain corpora: the domains manifest, tokenizer adapters and the dynamic blender."""

from megatron_acodm.data.blender import DynamicBlender, StepPlan
from megatron_acodm.data.corpus import Corpus, open_corpus
from megatron_acodm.data.manifest import Domain, Manifest, load_manifest, parse_data_path
from megatron_acodm.data.tokenizers import Tokenizer

__all__ = [
    "Corpus",
    "Domain",
    "DynamicBlender",
    "Manifest",
    "StepPlan",
    "Tokenizer",
    "load_manifest",
    "open_corpus",
    "parse_data_path",
]
