"""The HuggingFace tokenizer path end to end, offline: a byte-level BPE `tokenizer.json` trained here
with the `tokenizers` package, tools/preprocess_domains.py --tokenizer-type HuggingFaceTokenizer,
training and an exact resume with pretrain_acodm.py, and the check that refuses a corpus indexed
with another tokenizer."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import trainer_runs as runs
from launching import REPO, run

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("transformers")  # megatron.core's HuggingFaceTokenizer wraps transformers.AutoTokenizer

PREPROCESS = os.path.join(REPO, "tools", "preprocess_domains.py")
HF = ["--tokenizer-type", "HuggingFaceTokenizer"]
EOS, PAD = "<|endoftext|>", "<|pad|>"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # a local folder must never reach for the hub


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


def train_tokenizer(folder, texts: list[str], config: dict) -> str:
    """A byte-level BPE tokenizer of 400 ids (end-of-text and pad among them) in a HuggingFace folder."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    os.makedirs(folder, exist_ok=True)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as stream:
        json.dump(config, stream)
    return str(folder)


CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "pad_token": PAD}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, domain_texts) -> str:
    texts = [text for domain in domain_texts.values() for text in domain]
    return train_tokenizer(tmp_path_factory.mktemp("hf") / "tokenizer", texts, CONFIG)


@pytest.fixture(scope="module")
def hf_corpus(tmp_path_factory, hf_folder, domain_texts) -> str:
    """domain_texts indexed by tools/preprocess_domains.py with the HuggingFace folder (two workers)."""
    from conftest import write_jsonl_corpus

    folder = tmp_path_factory.mktemp("hf-corpus")
    inputs = write_jsonl_corpus(folder / "jsonl", domain_texts)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in OFFLINE.items():
            patch.setenv(name, value)
        completed = run(PREPROCESS, ["--input", inputs, "--output-dir", str(folder / "out"), *HF, "--tokenizer-model", hf_folder,
                                     "--append-eod", "--workers", "2"], cwd=str(folder))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return str(folder / "out" / "domains.json")


def test_indexed_documents_are_the_tokenizers_own_ids(hf_corpus, hf_folder, domain_texts):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    reference = tokenizers.Tokenizer.from_file(os.path.join(hf_folder, "tokenizer.json"))
    eos = reference.token_to_id(EOS)
    manifest = json.load(open(hf_corpus))
    assert manifest["tokenizer"]["type"] == "HuggingFaceTokenizer"
    assert manifest["tokenizer"]["vocab_size"] == reference.get_vocab_size() == 400
    for domain in manifest["domains"]:
        dataset = IndexedDataset(os.path.join(os.path.dirname(hf_corpus), domain["prefix"]))
        documents = [dataset[index].tolist() for index in range(len(dataset.document_indices) - 1)]
        assert documents == [reference.encode(text).ids + [eos] for text in domain_texts[domain["name"]]]
        assert all(reference.decode(ids[:-1]) == text for ids, text in zip(documents, domain_texts[domain["name"]]))


@pytest.fixture(scope="module")
def hf_runs(tmp_path_factory, hf_corpus, hf_folder):
    """Six steps straight, and the same six as three, a stop, and a resume from the checkpoint."""
    folder = tmp_path_factory.mktemp("hf-runs")
    straight, resumed = str(folder / "straight"), str(folder / "resumed")
    steps = ["--train-iters", "6", "--eval-interval", "3", "--mixer", "acodm", *HF]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in OFFLINE.items():
            patch.setenv(name, value)
        runs.train(folder, runs.arguments(hf_corpus, hf_folder, straight, *steps))
        interrupted = runs.arguments(hf_corpus, hf_folder, resumed, *steps, "--save-interval", "3")
        runs.train(folder, interrupted + ["--exit-interval", "3"])
        second = runs.train(folder, interrupted + ["--load", resumed])
    return straight, resumed, second


def test_training_resumes_exactly(hf_runs):
    straight, resumed, second = hf_runs
    assert f"resumed from {resumed}" in second.stdout and "at iteration 3" in second.stdout
    expected_train, expected_valid, expected_records = runs.losses(straight)
    got_train, got_valid, got_records = runs.losses(resumed)
    assert len(expected_train) == 6 and len(expected_valid) == 2
    assert got_train == expected_train and got_valid == expected_valid
    assert [record["domains"] for record in got_records] == [record["domains"] for record in expected_records]


def test_corpus_of_another_tokenizer_is_refused(refused, hf_corpus, hf_folder, preprocessed_corpus, tokenizer_model, tmp_path):
    line = refused(runs.arguments(hf_corpus, tokenizer_model, str(tmp_path / "a"), "--train-iters", "4"))
    assert line.startswith(f"error: {hf_corpus}: its domains were tokenized with a HuggingFaceTokenizer model of sha256 ")
    assert f"(400 ids), but --tokenizer-model {tokenizer_model} is " in line
    line = refused(runs.arguments(preprocessed_corpus, hf_folder, str(tmp_path / "b"), "--train-iters", "4", *HF))
    assert line.startswith(f"error: {preprocessed_corpus}: its domains were tokenized with a SentencePieceTokenizer model of sha256 ")
    assert line.endswith("pass the tokenizer the corpus was made with, or preprocess it again with this one")


def test_a_changed_folder_is_another_tokenizer(refused, hf_corpus, hf_folder, tmp_path):
    changed = str(tmp_path / "tokenizer")
    shutil.copytree(hf_folder, changed)
    with open(os.path.join(changed, "tokenizer_config.json"), "w") as stream:
        json.dump({**CONFIG, "model_max_length": 64}, stream)
    line = refused(runs.arguments(hf_corpus, changed, str(tmp_path / "run"), "--train-iters", "4", *HF))
    assert line.startswith(f"error: {hf_corpus}: its domains were tokenized with a HuggingFaceTokenizer model of sha256 ")
    assert f"(400 ids), but --tokenizer-model {changed} is " in line


def test_folder_without_an_end_of_text_token_is_refused(refused, hf_corpus, tmp_path, domain_texts):
    texts = [text for domain in domain_texts.values() for text in domain]
    folder = train_tokenizer(tmp_path / "no-eos", texts, {"tokenizer_class": "PreTrainedTokenizerFast"})
    line = refused(runs.arguments(hf_corpus, folder, str(tmp_path / "run"), "--train-iters", "4", *HF))
    assert line == (f"error: --tokenizer-model {folder}: the tokenizer has no end-of-document token; "
                    f"name one (a HuggingFace folder: \"eos_token\" in its tokenizer_config.json)")
