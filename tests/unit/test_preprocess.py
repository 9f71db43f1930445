"""tools/preprocess_domains.py and megatron_acodm.indexing: JSONL -> Megatron .bin/.idx + domains.json."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy
import pytest
from launching import REPO, load_script
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_acodm.indexing import PROGRESS_NAME, PreprocessOptions, discover_inputs, preprocess_all, writing
from megatron_acodm.data.manifest import Manifest, load_manifest
from megatron_acodm.errors import UserError

TOOL = os.path.join(REPO, "tools", "preprocess_domains.py")
PROGRESS = PROGRESS_NAME

TRICKY_TEXTS = [
    "Plain ASCII prose.",
    "Grüße aus Köln — naïve café, 東京で会いましょう 😀\nсекунда строка\n\nafter a blank line",
    "def f(x):\n\treturn {'k': x ** 2}  # tab-indented\n",
    "  leading and trailing spaces  ",
    "",  # tokenizes to nothing: left out
    "never in training: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 한국어 Ω≈√",
]


def run(corpus, output, model: str, messages: list | None = None, **options) -> Manifest:
    """preprocess_all over `--input corpus`, collecting log lines into `messages`."""
    log = (messages if messages is not None else []).append
    settings = PreprocessOptions(
        output_dir=str(output), tokenizer_type="SentencePieceTokenizer", tokenizer_model=model, **options
    )
    return preprocess_all(discover_inputs(input_dir=str(corpus)), settings, log=log)


def file_state(path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns


def decoded_documents(prefix: str, tokenizer, append_eod: bool) -> list[str]:
    dataset = IndexedDataset(prefix)
    texts = []
    for index in range(len(dataset.document_indices) - 1):
        ids = dataset[index].tolist()
        if append_eod:
            assert ids[-1] == tokenizer.eod
            ids = ids[:-1]
        assert tokenizer.eod not in ids
        texts.append(tokenizer.detokenize(ids))
    return texts


@pytest.mark.parametrize("append_eod", [False, True])
def test_round_trip_decodes_to_the_input(tmp_path, tokenizer_model, tokenizer, make_jsonl_corpus, append_eod):
    corpus = make_jsonl_corpus(tmp_path / "in", {"mixed": TRICKY_TEXTS})
    run(corpus, tmp_path / "out", tokenizer_model, append_eod=append_eod)
    decoded = decoded_documents(str(tmp_path / "out" / "mixed_text_document"), tokenizer, append_eod)
    assert decoded == [text for text in TRICKY_TEXTS if text]


def test_stock_megatron_readers(preprocessed_corpus, tokenizer, domain_texts, tmp_path):
    manifest = load_manifest(preprocessed_corpus)
    assert manifest.names == sorted(domain_texts)
    prose = next(domain for domain in manifest.domains if domain.name == "prose")
    dataset = IndexedDataset(prose.prefix)
    texts = domain_texts["prose"]
    assert len(dataset) == len(texts)
    assert dataset.document_indices.tolist() == list(range(len(texts) + 1))
    assert dataset.sequence_lengths.tolist() == [len(tokenizer.tokenize(text)) + 1 for text in texts]
    assert dataset.index.dtype == numpy.uint16

    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=16,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        tokenizer=tokenizer,
        path_to_cache=str(tmp_path / "cache"),
        split="1,0,0",
    )
    documents = numpy.arange(len(texts), dtype=numpy.int32)
    gpt = GPTDataset(dataset, prose.prefix, documents, 20, Split.train, config)
    assert len(gpt) >= 20
    sample = gpt[0]
    assert sample["tokens"].shape == (16,)
    assert int(sample["tokens"].max()) < tokenizer.vocab_size


def test_one_and_two_workers_write_identical_files(tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts):
    # several imap chunks per domain, so the pool really interleaves work
    corpus = make_jsonl_corpus(tmp_path / "in", {name: texts * 10 for name, texts in domain_texts.items()})
    for workers in (1, 2):
        run(corpus, tmp_path / f"out{workers}", tokenizer_model, workers=workers, append_eod=True)
    names = sorted(os.listdir(tmp_path / "out1"))
    assert names == sorted(os.listdir(tmp_path / "out2"))
    assert "domains.json" in names and "code_text_document.bin" in names
    for name in names:
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name


def test_manifest_matches_a_direct_computation(tmp_path, tokenizer_model, tokenizer, make_jsonl_corpus, domain_texts):
    corpus = make_jsonl_corpus(tmp_path / "in", domain_texts)
    returned = run(corpus, tmp_path / "out", tokenizer_model, append_eod=True)
    manifest = load_manifest(str(tmp_path / "out" / "domains.json"))
    assert manifest == returned
    assert manifest.tokenizer == tokenizer.identity.to_json()
    for domain in manifest.domains:
        texts = domain_texts[domain.name]
        encoded = [tokenizer.tokenize(text) + [tokenizer.eod] for text in texts]
        assert domain.prefix == str(tmp_path / "out" / f"{domain.name}_text_document")
        assert domain.documents == len(texts)
        assert domain.tokens == sum(len(ids) for ids in encoded)
        assert domain.bytes == sum(len(text.encode("utf-8")) for text in texts)
        assert domain.max_token_id == max(max(ids) for ids in encoded)
        assert len(domain.inputs_sha256) == 64
    # prefixes are stored relative, so the folder can move
    stored = json.loads((tmp_path / "out" / "domains.json").read_text())
    assert [entry["prefix"] for entry in stored["domains"]] == ["code_text_document", "multilingual_text_document", "prose_text_document"]


def test_gzip_folder_and_named_domain_inputs(tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts):
    texts = domain_texts["multilingual"]
    reference = make_jsonl_corpus(tmp_path / "plain", {"multi": texts})
    run(reference, tmp_path / "reference", tokenizer_model)
    expected = (tmp_path / "reference" / "multi_text_document.bin").read_bytes()

    lines = [json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with gzip.open(inputs / "gz.jsonl.gz", "wt", encoding="utf-8") as stream:
        stream.writelines(lines)
    folder = inputs / "folder"  # split over two files, read in sorted order
    folder.mkdir()
    (folder / "part-0.jsonl").write_text("".join(lines[:15]), encoding="utf-8")
    with gzip.open(folder / "part-1.jsonl.gz", "wt", encoding="utf-8") as stream:
        stream.writelines(lines[15:])
    (inputs / "README.txt").write_text("not a domain")

    run(inputs, tmp_path / "out", tokenizer_model)
    assert load_manifest(str(tmp_path / "out" / "domains.json")).names == ["folder", "gz"]
    for name in ("folder", "gz"):
        assert (tmp_path / "out" / f"{name}_text_document.bin").read_bytes() == expected

    named = discover_inputs(domain_specs=[f"one={inputs / 'gz.jsonl.gz'}", f"two={folder}"])
    assert [(domain.name, len(domain.files)) for domain in named] == [("one", 1), ("two", 2)]
    options = PreprocessOptions(str(tmp_path / "named"), "SentencePieceTokenizer", tokenizer_model)
    preprocess_all(named, options, log=lambda message: None)
    for name in ("one", "two"):
        assert (tmp_path / "named" / f"{name}_text_document.bin").read_bytes() == expected


def test_several_json_keys_write_one_dataset_each(tmp_path, tokenizer_model, tokenizer):
    inputs = tmp_path / "in"
    inputs.mkdir()
    records = [{"text": "body one", "title": "Title one"}, {"text": "body two", "title": "Zwei"}]
    (inputs / "news.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    manifest = run(inputs, tmp_path / "out", tokenizer_model, json_keys=("text", "title"))
    assert manifest.names == ["news", "news_title"]
    assert [os.path.basename(domain.prefix) for domain in manifest.domains] == ["news_text_document", "news_title_document"]
    titles = decoded_documents(str(tmp_path / "out" / "news_title_document"), tokenizer, append_eod=False)
    assert titles == ["Title one", "Zwei"]


def test_zst_without_zstandard_names_the_file_and_the_fix(tmp_path, tokenizer_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "web.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(UserError, match=r"web\.jsonl\.zst.*pip install zstandard"):
        run(inputs, tmp_path / "out", tokenizer_model)


def test_zst_is_read_when_zstandard_is_installed(tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts):
    zstandard = pytest.importorskip("zstandard")
    plain = make_jsonl_corpus(tmp_path / "plain", {"code": domain_texts["code"]})
    run(plain, tmp_path / "reference", tokenizer_model)
    inputs = tmp_path / "in"
    inputs.mkdir()
    raw = (tmp_path / "plain" / "code.jsonl").read_bytes()
    (inputs / "code.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    run(inputs, tmp_path / "out", tokenizer_model)
    reference = tmp_path / "reference" / "code_text_document.bin"
    assert (tmp_path / "out" / "code_text_document.bin").read_bytes() == reference.read_bytes()


def test_rerun_skips_unchanged_domains_and_redoes_changed_ones(tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts):
    corpus = make_jsonl_corpus(tmp_path / "in", domain_texts)
    out = tmp_path / "out"
    run(corpus, out, tokenizer_model)
    files = {name: file_state(out / name) for name in os.listdir(out) if name.endswith((".bin", ".idx"))}

    messages: list[str] = []
    run(corpus, out, tokenizer_model, messages)
    assert sorted(messages) == ["skip code: up to date", "skip multilingual: up to date", "skip prose: up to date"]
    assert {name: file_state(out / name) for name in files} == files

    make_jsonl_corpus(tmp_path / "in", {"prose": domain_texts["prose"][:-1]})  # drop one document
    os.truncate(out / "code_text_document.bin", 10)  # damaged outputs are redone too
    messages.clear()
    manifest = run(corpus, out, tokenizer_model, messages)
    assert messages[0] == "skip multilingual: up to date"
    assert [message.split(":")[0] for message in messages[1:]] == ["code", "prose"]
    for name, state in files.items():
        assert (file_state(out / name) == state) == name.startswith("multilingual"), name
    assert manifest.domains[2].documents == len(domain_texts["prose"]) - 1

    # an option that changes the output changes the fingerprint; --force redoes everything
    messages.clear()
    run(corpus, out, tokenizer_model, messages, append_eod=True)
    assert not any(message.startswith("skip") for message in messages)
    messages.clear()
    run(corpus, out, tokenizer_model, messages, append_eod=True, force=True)
    assert len(messages) == 3 and not any(message.startswith("skip") for message in messages)


def test_rewritten_domain_keeps_a_weight_added_by_hand(tmp_path, tokenizer_model, make_jsonl_corpus):
    corpus = make_jsonl_corpus(tmp_path / "in", {"a": ["first text"], "b": ["other text"]})
    manifest_path = tmp_path / "out" / "domains.json"
    run(corpus, tmp_path / "out", tokenizer_model)
    stored = json.loads(manifest_path.read_text())
    stored["domains"][0]["weight"] = 0.25
    manifest_path.write_text(json.dumps(stored))
    make_jsonl_corpus(tmp_path / "in", {"a": ["changed text"]})
    manifest = run(corpus, tmp_path / "out", tokenizer_model)
    assert [(domain.name, domain.weight) for domain in manifest.domains] == [("a", 0.25), ("b", None)]
    assert load_manifest(str(manifest_path)) == manifest


def test_rerun_drops_domains_whose_input_was_removed(tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts):
    corpus = make_jsonl_corpus(tmp_path / "in", domain_texts)
    out = tmp_path / "out"
    run(corpus, out, tokenizer_model)
    os.remove(tmp_path / "in" / "multilingual.jsonl")
    messages: list[str] = []
    manifest = run(corpus, out, tokenizer_model, messages)
    assert messages == [
        "skip code: up to date",
        "skip prose: up to date",
        f"{out / 'domains.json'}: dropped 'multilingual' from the manifest: not among this run's inputs "
        f"(their .bin/.idx files stay in {out}; delete them if no longer needed)",
    ]
    assert manifest.names == ["code", "prose"]
    assert load_manifest(str(out / "domains.json")) == manifest
    assert os.path.exists(out / "multilingual_text_document.bin")


def test_failed_run_leaves_the_previous_manifest_as_it_was(tmp_path, tokenizer_model, tokenizer, make_jsonl_corpus):
    corpus = make_jsonl_corpus(tmp_path / "in", {"a": ["old text"], "b": ["b text"]})
    out = tmp_path / "out"
    run(corpus, out, tokenizer_model)
    published = (out / "domains.json").read_bytes()

    make_jsonl_corpus(corpus, {"a": ["new text"]})  # rewritten before c fails
    make_jsonl_corpus(corpus, {"c": ["c text"]}, key="content")
    with pytest.raises(UserError, match=r"c\.jsonl:1: no 'text' field"):
        run(corpus, out, tokenizer_model)
    assert (out / "domains.json").read_bytes() == published
    assert load_manifest(str(out / PROGRESS)).names == ["a", "b"]

    # a's files now hold the new text: restoring its old input must redo it, whatever domains.json says
    make_jsonl_corpus(corpus, {"a": ["old text"], "c": ["c text"]})
    messages: list[str] = []
    manifest = run(corpus, out, tokenizer_model, messages)
    assert [message.split(":")[0] for message in messages] == ["skip b", "a", "c"]
    assert decoded_documents(str(out / "a_text_document"), tokenizer, append_eod=False) == ["old text"]
    assert manifest.names == ["a", "b", "c"] and PROGRESS not in os.listdir(out)


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, documents: int) -> None:
    """Make the writer raise after `documents` more documents, as a crash or Ctrl-C would."""
    original = writing.IndexedDatasetBuilder.add_document
    calls = {"count": 0}

    def add_document(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] > documents:
            raise Interrupted()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(writing.IndexedDatasetBuilder, "add_document", add_document)


def test_interrupted_run_keeps_finished_domains_and_leaves_no_half_files(
    tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts, monkeypatch
):
    corpus = make_jsonl_corpus(tmp_path / "in", domain_texts)
    out = tmp_path / "out"
    interrupt_after(monkeypatch, len(domain_texts["code"]) + 5)  # code finishes, multilingual breaks midway
    with pytest.raises(Interrupted):
        run(corpus, out, tokenizer_model)
    # the finished domain is recorded, the manifest appears only when every domain is done
    assert sorted(os.listdir(out)) == [PROGRESS, "code_text_document.bin", "code_text_document.idx"]
    assert load_manifest(str(out / PROGRESS)).names == ["code"]
    finished = {name: file_state(out / name) for name in ("code_text_document.bin", "code_text_document.idx")}

    monkeypatch.undo()
    messages: list[str] = []
    manifest = run(corpus, out, tokenizer_model, messages)
    assert messages[0] == "skip code: up to date"
    assert {name: file_state(out / name) for name in finished} == finished
    assert manifest.names == ["code", "multilingual", "prose"]
    assert load_manifest(str(out / "domains.json")) == manifest
    assert PROGRESS not in os.listdir(out)

    # an interrupted redo keeps the previous complete pair and its manifest entry
    make_jsonl_corpus(tmp_path / "in", {"prose": ["a new text"] * 30})
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    interrupt_after(monkeypatch, 10)
    with pytest.raises(Interrupted):
        run(corpus, out, tokenizer_model)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_json_line_names_file_and_line(tmp_path, tokenizer_model, workers):
    inputs = tmp_path / "in"
    inputs.mkdir()
    lines = [json.dumps({"text": f"document {index}"}) for index in range(200)]
    lines[150] = '{"text": "unterminated'
    (inputs / "web.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"{inputs / 'web.jsonl'}:151: not valid JSON"):
        run(inputs, tmp_path / "out", tokenizer_model, workers=workers)
    assert not [name for name in os.listdir(tmp_path / "out") if "web" in name]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"content": "x"}', r"web\.jsonl:2: no 'text' field.*--json-keys"),
        ('{"text": ["a", "b"]}', r"web\.jsonl:2: field 'text' is a list, not a string"),
        ('["text"]', r"web\.jsonl:2: no 'text' field"),
        (b'{"text": "\xff"}', r"web\.jsonl:2: not valid JSON"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, tokenizer_model, line, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    raw = line if isinstance(line, bytes) else line.encode()
    (inputs / "web.jsonl").write_bytes(b'{"text": "fine"}\n' + raw + b"\n")
    with pytest.raises(UserError, match=message):
        run(inputs, tmp_path / "out", tokenizer_model)


def _zstd_frames(data: bytes) -> bytes:
    """`data` in two zstd frames, as parallel compressors write it."""
    import zstandard

    half = len(data) // 2
    return zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])


@pytest.mark.parametrize(
    "suffix, compress, keep",
    [
        ("gz", gzip.compress, lambda size: size - 20),
        # zstandard's own reader returns what a cut file holds: a cut inside a line read as bad JSON,
        # one at a line's end as a shorter domain, one in the first frame as no text at all.
        ("zst", _zstd_frames, lambda size: size - 20),
        ("zst", _zstd_frames, lambda size: size // 2),
        ("zst", _zstd_frames, lambda size: 12),
    ],
    ids=["gz", "zst-end", "zst-middle", "zst-start"],
)
def test_truncated_compressed_input_names_the_file(tmp_path, tokenizer_model, suffix, compress, keep):
    inputs = tmp_path / "in"
    inputs.mkdir()
    data = compress(b"".join(b'{"text": "line %d of a document"}\n' % number for number in range(4000)))
    (inputs / f"web.jsonl.{suffix}").write_bytes(data[: keep(len(data))])
    with pytest.raises(UserError, match=rf"web\.jsonl\.{suffix}: cannot be read.*check the file is complete"):
        run(inputs, tmp_path / "out", tokenizer_model)


@pytest.mark.parametrize("texts", [[], ["", ""]])
def test_empty_domain_is_an_error(tmp_path, tokenizer_model, make_jsonl_corpus, texts):
    corpus = make_jsonl_corpus(tmp_path / "in", {"empty": texts})
    with pytest.raises(UserError, match=r"empty\.jsonl: domain 'empty' has no text.*drop it or add text"):
        run(corpus, tmp_path / "out", tokenizer_model)
    assert os.listdir(tmp_path / "out") == []


def test_missing_tokenizer_model(tmp_path, make_jsonl_corpus):
    corpus = make_jsonl_corpus(tmp_path / "in", {"a": ["text"]})
    with pytest.raises(UserError, match=r"missing\.model.*does not exist"):
        run(corpus, tmp_path / "out", str(tmp_path / "missing.model"))


def test_manifest_from_another_tokenizer_is_refused_without_force(tmp_path, tokenizer_model, tokenizer, make_jsonl_corpus):
    corpus = make_jsonl_corpus(tmp_path / "in", {"a": ["some text"]})
    out = tmp_path / "out"
    run(corpus, out, tokenizer_model)
    manifest_path = out / "domains.json"
    stored = json.loads(manifest_path.read_text())
    stored["tokenizer"]["model_sha256"] = "0" * 64
    stored["domains"].append({"name": "other", "prefix": "other_text_document"})
    manifest_path.write_text(json.dumps(stored))
    with pytest.raises(UserError, match=r"domains\.json: written with another tokenizer.*--force.*--output-dir"):
        run(corpus, out, tokenizer_model)
    manifest = run(corpus, out, tokenizer_model, force=True)
    assert manifest.tokenizer == tokenizer.identity.to_json() and manifest.names == ["a"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give --input DIR or --domain NAME=PATH"),
        ({"domain_specs": ["books"]}, "expected NAME=PATH"),
        ({"domain_specs": ["a/b=x.jsonl"]}, "cannot name output files"),
        ({"domain_specs": ["a=/nonexistent.jsonl"]}, "no such file or folder"),
        ({"input_dir": "/nonexistent"}, "not a folder"),
    ],
)
def test_bad_domain_arguments(kwargs, message):
    with pytest.raises(UserError, match=message):
        discover_inputs(**kwargs)


def test_input_folder_problems(tmp_path, make_jsonl_corpus):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no domains found"):
        discover_inputs(input_dir=str(tmp_path / "empty"))
    (tmp_path / "empty" / "web").mkdir()
    with pytest.raises(UserError, match=r"web: holds no \.jsonl"):
        discover_inputs(input_dir=str(tmp_path / "empty"))
    make_jsonl_corpus(tmp_path / "twice", {"web": ["x"]})
    (tmp_path / "twice" / "web.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n'))
    with pytest.raises(UserError, match="'web' appears twice"):
        discover_inputs(input_dir=str(tmp_path / "twice"))


def test_cli_in_process(tmp_path, tokenizer_model, make_jsonl_corpus, domain_texts, capsys):
    preprocess_domains = load_script(TOOL)
    corpus = make_jsonl_corpus(tmp_path / "in", {"code": domain_texts["code"]})

    def arguments(model: str) -> list[str]:
        return [
            "--domain", f"src={corpus}/code.jsonl", "--output-dir", str(tmp_path / "out"),
            "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", model,
            "--workers", "2", "--append-eod",
        ]  # fmt: skip

    assert preprocess_domains.main(arguments(tokenizer_model)) == 0
    assert load_manifest(str(tmp_path / "out" / "domains.json")).names == ["src"]
    assert preprocess_domains.main(arguments(str(tmp_path / "nope"))) == 2

    # An --output-dir that names a file: one line, and the file untouched.
    (tmp_path / "a-file").write_text("kept")
    capsys.readouterr()
    assert preprocess_domains.main(arguments(tokenizer_model)[:2] + ["--output-dir", str(tmp_path / "a-file")] + arguments(tokenizer_model)[4:]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --output-dir {tmp_path}/a-file: is a file, not a folder; give a folder (it is created when missing)"
    ]
    assert (tmp_path / "a-file").read_text() == "kept"


def run_cli(inputs, output, tokenizer_model: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, TOOL, "--input", str(inputs), "--output-dir", str(output),
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", tokenizer_model,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_reports_data_errors_without_traceback(tmp_path, tokenizer_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "web.jsonl").write_text('{"text": "ok"}\nnot json\n')
    result = run_cli(inputs, tmp_path / "out", tokenizer_model)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "web.jsonl:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def add_domain_without_text(corpus, out) -> str:
    (corpus / "web.jsonl").write_text('{"content": "x"}\n')
    return "web.jsonl:1: no 'text' field"


def mistype_manifest_tokens(corpus, out) -> str:
    stored = json.loads((out / "domains.json").read_text())
    stored["domains"][0]["tokens"] = "many"
    (out / "domains.json").write_text(json.dumps(stored))
    return "domains.json: domain 'a': field 'tokens' is \"many\", expected a whole number >= 0"


@pytest.mark.parametrize("break_run", [add_domain_without_text, mistype_manifest_tokens])
def test_cli_failed_rerun_prints_one_error_line_and_keeps_the_manifest(
    tmp_path, tokenizer_model, make_jsonl_corpus, break_run
):
    corpus = make_jsonl_corpus(tmp_path / "in", {"a": ["some text"]})
    out = tmp_path / "out"
    run(corpus, out, tokenizer_model)
    message = break_run(tmp_path / "in", out)
    published = (out / "domains.json").read_bytes()
    result = run_cli(corpus, out, tokenizer_model)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and result.stderr.endswith(errors[0] + "\n")
    assert "Traceback" not in result.stderr
    assert (out / "domains.json").read_bytes() == published
