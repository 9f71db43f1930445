"""Tokenizer adapters: megatron.core's tokenizer library behind Megatron-LM's `--tokenizer-type` names.

Megatron's datasets need `vocab_size`, `eod`, a `pad` distinct from `eod` and JSON-serialisable
`unique_identifiers`. megatron.core's own tokenizers provide all of these except that the
identifiers name the model's path; ours name its content, so a moved model keeps its caches and
a changed model at the same path does not silently reuse them.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass

from megatron_acodm.errors import UserError

# Megatron-LM's --tokenizer-type names -> megatron.core tokenizer library.
TOKENIZER_LIBRARIES = {
    "SentencePieceTokenizer": "sentencepiece",
    "GPTSentencePieceTokenizer": "sentencepiece",
    "Llama2Tokenizer": "sentencepiece",
    "HuggingFaceTokenizer": "huggingface",
}

# megatron.core's placeholder for "this tokenizer has no pad token" (MegatronDataset masks it).
NO_PAD = -1


@dataclass(frozen=True)
class TokenizerIdentity:
    """What `domains.json` records so a consumer can tell whether its tokenizer matches."""

    type: str
    model_sha256: str
    vocab_size: int

    def to_json(self) -> dict:
        return asdict(self)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_sha256(model: str) -> str:
    if os.path.isdir(model):  # a HuggingFace folder: hash every file, in a fixed order
        digest = hashlib.sha256()
        for name in sorted(os.listdir(model)):
            path = os.path.join(model, name)
            if os.path.isfile(path):
                digest.update(name.encode())
                digest.update(file_sha256(path).encode())
        return digest.hexdigest()
    return file_sha256(model)


class Tokenizer:
    """A megatron.core tokenizer with content-based identity and a guaranteed distinct pad."""

    def __init__(self, tokenizer_type: str, model: str):
        if tokenizer_type not in TOKENIZER_LIBRARIES:
            raise UserError(
                f"--tokenizer-type {tokenizer_type} is not supported; "
                f"choose one of {', '.join(sorted(TOKENIZER_LIBRARIES))}"
            )
        if not model or not os.path.exists(model):
            raise UserError(
                f"tokenizer model {model!r} does not exist; pass --tokenizer-model with the path "
                f"to the model file (for the demo corpus: data/demo/tokenizer.model)"
            )
        from megatron.core.tokenizers import MegatronTokenizer

        library = TOKENIZER_LIBRARIES[tokenizer_type]
        try:
            self._impl = MegatronTokenizer.from_pretrained(model, metadata_path={"library": library})
        except ImportError as error:
            raise UserError(
                f"--tokenizer-type {tokenizer_type} needs a package that is not installed ({error}); "
                f"install it (e.g. `pip install transformers`) or use a SentencePiece model"
            ) from error
        except Exception as error:  # a corrupt model file surfaces here as whatever the library raises
            raise UserError(f"cannot load tokenizer model {model}: {error}") from error
        self.type = tokenizer_type
        self.model = model
        if self._impl.eod is None:  # a HuggingFace tokenizer without an eos_token
            raise UserError(
                f"--tokenizer-model {model}: the tokenizer has no end-of-document token; "
                f"name one (a HuggingFace folder: \"eos_token\" in its tokenizer_config.json)"
            )
        self.vocab_size = int(self._impl.vocab_size)
        self.eod = int(self._impl.eod)
        pad = self._impl.pad
        self.pad = int(pad) if pad is not None and 0 <= pad != self.eod else NO_PAD
        self.identity = TokenizerIdentity(tokenizer_type, _model_sha256(model), self.vocab_size)

    @property
    def unique_identifiers(self) -> OrderedDict:
        return OrderedDict(self.identity.to_json())

    def tokenize(self, text: str) -> list[int]:
        return self._impl.tokenize(text)

    def detokenize(self, ids) -> str:
        return self._impl.detokenize(list(ids))
