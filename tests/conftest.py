"""Shared pytest fixtures: a tiny SentencePiece model, JSONL corpora and a preprocessed corpus.

Fixtures:
- `tokenizer_model`: path to a BPE SentencePiece model (vocab 500, byte fallback, unk=0 bos=1 eos=2 pad=3), trained once per session.
- `tokenizer`: a `megatron_acodm.data.tokenizers.Tokenizer` over `tokenizer_model` (session-scoped).
- `domain_texts`: `{domain: [texts]}` for three small domains (prose, multilingual, code); non-ASCII, newlines, tabs.
- `make_jsonl_corpus`: `make_jsonl_corpus(folder, {domain: [texts]}, key="text")` writes `folder/<domain>.jsonl`, returns `folder`.
- `preprocessed_corpus`: path of a `domains.json` written by the preprocessor for `domain_texts` with --append-eod (session-scoped).
- `index_corpus(folder, tokenizer_model, {domain: [texts]})`: the same for other texts, in a folder of the test's own.
- `target_set`: a target set of 30 code-like documents (session-scoped): its domains.json.
- `schedule_file`: a mixture schedule over those three domains with a phase change at step 3 (session-scoped).
- `refused(argv)`: the one `error:` line pretrain_acodm.py gives `argv`, refused before any process group.
"""

from __future__ import annotations

import json
import os
import random
from typing import Callable

import pytest

TOKENIZER_TYPE = "SentencePieceTokenizer"


def pytest_configure(config: pytest.Config) -> None:
    # megatron.core and torch warn at import about optional GPU packages and their own deprecations.
    for warning in (
        "ignore:Transformer Engine and Apex are not installed:UserWarning",
        "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
        "ignore:The following imports from `dynamic_context.py`:DeprecationWarning",
        "ignore:The 'megatron.core.transformer.custom_layers.transformer_engine':DeprecationWarning",
    ):
        config.addinivalue_line("filterwarnings", warning)


_WORDS = {
    "prose": "the a of river stone light morning garden quiet window letter city road old new small".split(),
    "multilingual": (
        "Straße Müller größer über schön été déjà naïve français niño año mañana "
        "привет мир дом книга 東京 日本語 中文 你好 世界 😀 ✓ café"
    ).split(),
}
_CODE_LINES = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i ** 2)  # squares\n",
    "if (x != nullptr && y->z[3] >= 0) { return {\"k\": 'v'}; }\n",
    "SELECT id, name FROM users WHERE age > 42;\n",
    "class Node:\n    def __init__(self):\n        self.next = None\n",
]


def _generated_texts(domain: str, count: int, seed: int) -> list[str]:
    """Deterministic documents of a few lines each, in the style of `domain`."""
    rng = random.Random(f"{domain}-{seed}")
    texts = []
    for _ in range(count):
        if domain == "code":
            texts.append("".join(rng.choice(_CODE_LINES) for _ in range(rng.randint(1, 4))))
            continue
        lines = []
        for _ in range(rng.randint(1, 3)):
            words = [rng.choice(_WORDS[domain]) for _ in range(rng.randint(3, 12))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
        texts.append("\n".join(lines))
    return texts


@pytest.fixture(scope="session")
def tokenizer_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path to a tiny BPE SentencePiece model trained once per session on generated multilingual text."""
    import sentencepiece

    folder = tmp_path_factory.mktemp("tokenizer")
    sentences = [
        line
        for domain in ("prose", "multilingual", "code")
        for text in _generated_texts(domain, 200, seed=0)
        for line in text.split("\n")
        if line.strip()
    ]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(folder / "tokenizer"),
        model_type="bpe",
        vocab_size=500,
        byte_fallback=True,  # any character round-trips, even ones never seen in training
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        # identity normalisation keeps whitespace, so decode(encode(text)) == text exactly
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    return str(folder / "tokenizer.model")


@pytest.fixture(scope="session")
def tokenizer(tokenizer_model: str):
    """A `Tokenizer` over `tokenizer_model`."""
    from megatron_acodm.data.tokenizers import Tokenizer

    return Tokenizer(TOKENIZER_TYPE, tokenizer_model)


@pytest.fixture(scope="session")
def domain_texts() -> dict[str, list[str]]:
    """Three small domains of generated documents (prose, multilingual, code)."""
    return {domain: _generated_texts(domain, 40, seed=1) for domain in ("prose", "multilingual", "code")}


def write_jsonl_corpus(folder: str | os.PathLike, domains: dict[str, list[str]], key: str = "text") -> str:
    os.makedirs(folder, exist_ok=True)
    for domain, texts in domains.items():
        with open(os.path.join(folder, f"{domain}.jsonl"), "w", encoding="utf-8") as stream:
            for text in texts:
                stream.write(json.dumps({key: text}, ensure_ascii=False) + "\n")
    return str(folder)


@pytest.fixture
def make_jsonl_corpus() -> Callable[..., str]:
    """`make_jsonl_corpus(folder, {domain: [texts]}, key="text")` writes one `<domain>.jsonl` per domain."""
    return write_jsonl_corpus


def index_corpus(folder: str | os.PathLike, tokenizer_model: str, domains: dict[str, list[str]]) -> str:
    """Write `domains` ({domain: [texts]}) as JSONL under `folder` and index it (--append-eod, one
    worker, no index cache yet); return the path of its `domains.json`."""
    from megatron_acodm.indexing import PreprocessOptions, discover_inputs, preprocess_all

    corpus = write_jsonl_corpus(os.path.join(folder, "jsonl"), domains)
    output = os.path.join(folder, "out")
    options = PreprocessOptions(output_dir=output, tokenizer_type=TOKENIZER_TYPE, tokenizer_model=tokenizer_model, append_eod=True)
    preprocess_all(discover_inputs(input_dir=corpus), options, log=lambda message: None)
    return os.path.join(output, "domains.json")


@pytest.fixture(scope="session")
def preprocessed_corpus(tmp_path_factory: pytest.TempPathFactory, tokenizer_model: str, domain_texts) -> str:
    """Path of `domains.json` for `domain_texts`, preprocessed with --append-eod, one worker."""
    return index_corpus(tmp_path_factory.mktemp("preprocessed"), tokenizer_model, domain_texts)


@pytest.fixture(scope="session")
def target_set(tmp_path_factory, tokenizer_model) -> str:
    """A target set of 30 code-like documents: its domains.json."""
    return index_corpus(tmp_path_factory.mktemp("target"), tokenizer_model, {"task": _generated_texts("code", 30, seed=5)})


@pytest.fixture
def refused(monkeypatch, capsys) -> Callable[[list[str]], str]:
    """`refused(argv)`: the one error line pretrain_acodm.py's `main` gives `argv` in this process
    (exit status 2), with the process group's start replaced by a failure: the input must be
    refused before any rank would join a job."""
    import trainer_runs
    from launching import load_script
    from megatron_acodm.training import loop

    def no_process_group(args):
        raise AssertionError("the run reached the process group: its input should have been refused before")

    monkeypatch.setattr(loop, "initialize", no_process_group)
    entry_point = load_script(trainer_runs.ENTRY)

    def refuse(argv: list[str]) -> str:
        capsys.readouterr()
        try:
            status = entry_point.main(argv)
        except SystemExit as exit_:  # argparse's own refusal
            status = exit_.code
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(lines) == 1, lines
        assert lines[0].startswith(("error: ", "pretrain_acodm.py: error: ")), lines
        return lines[0]

    return refuse


@pytest.fixture(scope="session")
def schedule_file(tmp_path_factory) -> str:
    """A mixture schedule over `domain_texts`'s domains: uniform, a phase change at step 3 (code-heavy),
    then linearly to a prose-heavy mixture at the end of the run."""
    path = tmp_path_factory.mktemp("schedule") / "schedule.json"
    uniform = {"code": 1, "multilingual": 1, "prose": 1}
    path.write_text(json.dumps({"interpolation": "linear", "points": [
        {"step": 0, "weights": uniform}, {"step": 2, "weights": uniform},
        {"step": 3, "weights": {"code": 4, "multilingual": 1, "prose": 1}},
        {"fraction": 1.0, "weights": {"code": 1, "multilingual": 1, "prose": 6}},
    ]}))
    return str(path)
