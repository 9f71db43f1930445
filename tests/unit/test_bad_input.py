"""Bad input to pretrain_acodm.py is refused before any process group starts: one `error:` line
naming the argument or file and the fix, exit status 2, and nothing already written touched.

The entry point's `main` runs in this process with the process group's start replaced by a
failure (`refused`, in conftest.py), so each case also shows that its check comes before any rank
joins a job.
"""

from __future__ import annotations

import json
import os

import pytest

import trainer_runs as runs
from megatron_acodm.arguments import parse_args


@pytest.fixture
def earlier_run(tmp_path):
    """A --save folder holding what an earlier run wrote, and how to tell it is untouched."""
    save = tmp_path / "run"
    save.mkdir()
    (save / "metrics.jsonl").write_text('{"kind": "run"}\n')
    (save / "latest_checkpointed_iteration.txt").write_text("2\n")
    return save


def _contents(folder) -> dict:
    return {path: open(path, "rb").read() for path in sorted(str(p) for p in folder.rglob("*") if p.is_file())}


def _arguments(corpus, tokenizer_model, save, *extra) -> list[str]:
    return runs.arguments(corpus, tokenizer_model, str(save), "--train-iters", "4", *extra)


def _partly_weighted(manifest_path, tmp_path) -> str:
    manifest = json.loads(open(manifest_path).read())
    manifest["domains"][0]["weight"] = 0.7
    return _rewritten(manifest, manifest_path, tmp_path / "partly-weighted.json")


def _misspelled_weight(manifest_path, tmp_path) -> str:
    manifest = json.loads(open(manifest_path).read())
    for domain in manifest["domains"]:
        domain["wieght"] = 1.0
    return _rewritten(manifest, manifest_path, tmp_path / "misspelled.json")


def _rewritten(manifest: dict, original: str, path) -> str:
    """`manifest` written to `path`, its prefixes still naming the original's files."""
    folder = os.path.dirname(original)
    for domain in manifest["domains"]:
        domain["prefix"] = os.path.join(folder, domain["prefix"])
    path.write_text(json.dumps(manifest))
    return str(path)


# (case, extra arguments given {tmp, corpus}, the error line's words)
CASES = [
    ("split-not-a-number", ["--split", "90,abc"], "--split '90,abc': give up to three shares train,valid,test"),
    ("micro-batch-zero", ["--micro-batch-size", "0"], "--micro-batch-size (0) must be >= 1"),
    ("cache-is-a-file", ["--data-cache-path", "{tmp}/a-file"], "--data-cache-path {tmp}/a-file: is a file, not a folder"),
    ("tensorboard-is-a-file", ["--tensorboard-dir", "{tmp}/a-file"], "--tensorboard-dir {tmp}/a-file: is a file, not a folder"),
    ("metrics-is-a-folder", ["--metrics-path", "{tmp}"],
     "--metrics-path {tmp}: is a folder; give a file name, e.g. --metrics-path {tmp}/metrics.jsonl"),
    ("load-is-a-file", ["--load", "{tmp}/a-file"], "--load {tmp}/a-file: is a file; give the --save folder of an earlier run"),
    ("odm-prior-word", ["--mixer", "odm", "--mixing-prior", "tokenz"], "--mixing-prior 'tokenz': no domains ['tokenz'] in --data-path; give one of uniform, tokens, data-path, a blend file (BLEND.json) or domain names"),
    ("odm-prior-missing", ["--mixer", "odm", "--mixing-prior", "{tmp}/missing.json"],
     "--mixing-prior {tmp}/missing.json: no such blend file; write one with tools/mergemix.py --output {tmp}/missing.json"),
    ("acodm-prior-missing", ["--mixer", "acodm", "--mixing-prior", "{tmp}/missing.json"], "--mixing-prior {tmp}/missing.json: no such blend file"),
    ("ado-prior-missing", ["--mixer", "ado", "--mixing-prior", "{tmp}/missing.json"], "--mixing-prior {tmp}/missing.json: no such blend file"),
    ("export-under-a-file", ["--mixer", "acodm", "--acodm-export-policy", "{tmp}/a-file/policy.pt"],
     "--acodm-export-policy {tmp}/a-file/policy.pt: {tmp}/a-file is a file, so nothing can be created under it"),
    ("export-into-proc", ["--mixer", "acodm", "--acodm-export-policy", "/proc/policy.pt"],
     "--acodm-export-policy /proc/policy.pt: cannot write in /proc"),
    ("export-is-a-folder", ["--mixer", "acodm", "--acodm-export-policy", "{tmp}"], "--acodm-export-policy {tmp}: is a folder"),
    ("policy-garbage", ["--mixer", "acodm", "--acodm-policy", "{tmp}/garbage.pt"],
     "{tmp}/garbage.pt: not a readable AC-ODM policy (IndexError); re-export it with --mixer acodm --acodm-export-policy"),
    ("floor-above-1/K", ["--mixing-floor", "0.5"], "--mixing-floor (0.5) must be in [0, 1/K] = [0, 0.3333] for the 3 domains of --data-path"),
    ("option-of-another-mixer", ["--mixer", "ado", "--odm-smoothing", "0.3"], "--odm-smoothing is read by --mixer odm only, not by --mixer ado; drop it"),
    ("prior-of-a-static-run", ["--mixer", "static", "--mixing-prior", "tokens"], "--mixing-prior is read by --mixer odm, acodm, ado, aioli, dga, not by --mixer static"),
    ("policy-without-acodm", ["--acodm-policy", "{tmp}/p.pt"], "--acodm-policy is read by --mixer acodm only, not by --mixer static"),
    ("data-path-bin", ["--data-path", "{corpus_folder}/code_text_document.bin"],
     "--data-path {corpus_folder}/code_text_document.bin: give the prefix of the .bin/.idx pair, without the suffix: "
     "--data-path {corpus_folder}/code_text_document"),
    ("data-path-idx", ["--data-path", "{corpus_folder}/code_text_document.idx"], "give the prefix of the .bin/.idx pair"),
    ("manifest-and-prefix", ["--data-path", "{corpus}", "{corpus_folder}/code_text_document"],
     "a manifest ({corpus}) must be the only item; give one domains.json"),
    ("weights-on-some-domains", ["--data-path", "{partly_weighted}"],
     "{partly_weighted}: domains ['code'] have a 'weight' and ['multilingual', 'prose'] have none; give every domain a weight, or none"),
    ("misspelled-field", ["--data-path", "{misspelled}"],
     "{misspelled}: domain 'code': unknown field 'wieght'; a domain holds 'name', 'prefix'"),
]


@pytest.mark.parametrize("extra, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line_before_the_process_group(tmp_path, preprocessed_corpus, tokenizer_model, earlier_run, refused, extra, message):
    (tmp_path / "a-file").write_text("kept")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a torch file\n" * 100)
    names = {
        "tmp": str(tmp_path),
        "corpus": preprocessed_corpus,
        "corpus_folder": os.path.dirname(preprocessed_corpus),
        "partly_weighted": _partly_weighted(preprocessed_corpus, tmp_path),
        "misspelled": _misspelled_weight(preprocessed_corpus, tmp_path),
    }
    before = _contents(tmp_path)
    line = refused(_arguments(preprocessed_corpus, tokenizer_model, earlier_run, *[word.format(**names) for word in extra]))
    assert message.format(**names) in line
    assert _contents(tmp_path) == before  # nothing written, nothing left behind by the checks


def test_odm_starts_from_the_prior_like_every_mixer_that_reads_one(tmp_path, preprocessed_corpus):
    from megatron_acodm.arguments import parse_args
    from megatron_acodm.data import load_manifest
    from megatron_acodm.mixing import build_mixer

    manifest = load_manifest(preprocessed_corpus)
    blend = tmp_path / "blend.json"
    manifest.with_weights({"code": 0.7, "multilingual": 0.2, "prose": 0.1}).save(str(blend))
    tokens = [domain.tokens for domain in manifest.domains]
    for mixer in ("odm", "ado", "acodm"):
        args = parse_args(["--data-path", preprocessed_corpus, "--tokenizer-model", "t", "--train-iters", "10",
                           "--mixer", mixer, "--mixing-prior", str(blend)])
        built = build_mixer(mixer, names=manifest.names, initial_weights=manifest.initial_weights(), domain_tokens=tokens, args=args)
        assert built.weights() == pytest.approx([0.7, 0.2, 0.1], abs=1e-12), mixer


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--bf16", "--fp16"], "--bf16 and --fp16 are mutually exclusive"),
        (["--num-layers", "3", "--pipeline-model-parallel-size", "2"], "--num-layers (3) must be divisible"),
        (["--global-batch-size", "6", "--micro-batch-size", "4"], "--global-batch-size (6) must be divisible"),
        (["--save-interval", "5"], "--save-interval needs --save"),
        (["--lr-warmup-iters", "4"], "--lr-warmup-iters (4) must be below --lr-decay-iters (4)"),
        (["--mixer", "nope"], "invalid choice: 'nope'"),
        (["--acodm-policy", "p.pt"], "--acodm-policy is read by --mixer acodm only, not by --mixer static"),
        (["--lr", "-1"], "--lr (-1.0) must be positive"),
        (["--eval-iters", "-1"], "--eval-iters (-1) must be >= 0 (0 turns evaluation off)"),
        (["--exit-signal-handler"], "--exit-signal-handler needs --save"),
        (["--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler"], "not allowed with argument"),
        (["--sequence-parallel", "--tensor-model-parallel-size", "2"], "--sequence-parallel needs Transformer Engine or apex"),
    ],
)
def test_argument_errors_fail_at_start_like_megatron(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(["--data-path", "d.json", "--tokenizer-model", "t.model", "--train-iters", "4", *argv], world_size=2)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_under_torchrun_every_rank_leaves_the_printed_line_for_torchrun(tmp_path, monkeypatch, capsys):
    """Two ranks that found different bad samples: the first to report prints its line, and both
    error files (what torchrun's failure summary shows, for whichever rank it saw exit first) hold it."""
    import datetime

    from torch.distributed import TCPStore

    from megatron_acodm import errors
    from megatron_acodm.compat.distributed import free_port

    port = free_port()
    store = TCPStore("127.0.0.1", port, is_master=True, timeout=datetime.timedelta(seconds=5))  # the agent's
    monkeypatch.setattr(errors, "_SILENT_RANK_GRACE_S", 0.0)
    for name, value in (("TORCHELASTIC_USE_AGENT_STORE", "True"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        monkeypatch.setenv(name, value)
    for rank, line in ((1, "error: sample 87 is bad"), (0, "error: sample 11 is bad")):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / f"rank{rank}.json"))
        assert errors.report_error(line, rank_local=True) == errors.EXIT_STATUS
    assert capsys.readouterr().err == "error: sample 87 is bad\n"  # rank 1 reported first
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert record["message"]["message"] == "error: sample 87 is bad", rank
    assert store.get("megatron_acodm/error_reported/0/line") == b"error: sample 87 is bad"
