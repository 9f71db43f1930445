"""Weights & Biases with Megatron-LM's options: a real two-rank run in offline mode, read back from the
run file wandb leaves under --wandb-save-dir and compared with the run's metrics JSONL; and the
refusals before the run starts."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
from collections import defaultdict

import pytest

import trainer_runs as runs
from megatron_acodm.arguments import parse_args
from megatron_acodm.metrics.reader import read_metrics

# wandb's run file is a LevelDB log: a 7-byte file header (":W&B", magic, version), then 32 KiB
# blocks of chunks, each a 7-byte header (crc32, length, type) and a piece of one protobuf Record:
# a whole one (type 1), or its first, middle or last piece (2, 3, 4). wandb has no reader of these
# files of its own (its public API reads from the server), so the test reads them.
FILE_HEADER, BLOCK, CHUNK_HEADER = 7, 32 * 1024, 7
WHOLE, LAST = 1, 4


def run_file_records(path: str) -> list:
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    records, pending, position = [], b"", FILE_HEADER
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        _, length, kind = struct.unpack("<IHB", data[position:position + CHUNK_HEADER]) if left_in_block >= CHUNK_HEADER else (0, 0, 0)
        if kind == 0:  # a block's zero padding
            position += left_in_block
            continue
        pending += data[position + CHUNK_HEADER:position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        if kind in (WHOLE, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history_by_step(records) -> dict[int, dict[str, float]]:
    """Every logged key's value at each step (rows logged at one step merge, as wandb shows them)."""
    rows = defaultdict(dict)
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                rows[record.history.step.num]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return rows


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory, preprocessed_corpus, tokenizer_model, target_set):
    """Four steps of --mixer acodm with a target set on two ranks, W&B offline; (its output, save dir, run file)."""
    pytest.importorskip("wandb")
    folder = tmp_path_factory.mktemp("wandb")
    save, wandb_dir = str(folder / "run"), str(folder / "wandb-files")
    environment = {"WANDB_MODE": "offline", **{name: str(folder / name.lower()) for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        completed = runs.train(folder, runs.arguments(
            preprocessed_corpus, tokenizer_model, save, "--train-iters", "4", "--mixer", "acodm", "--target-data-path", target_set,
            "--wandb-project", "acodm-tests", "--wandb-exp-name", "tiny-acodm", "--wandb-save-dir", wandb_dir,
        ), processes=2)
    run_files = glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(run_files) == 1, run_files  # one rank writes, as Megatron-LM's last rank does
    return completed, save, run_files[0]


def test_offline_run_holds_the_metrics_files_scalars(offline_run):
    _, save, run_file = offline_run
    records = run_file_records(run_file)
    (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert run.project == "acodm-tests" and run.display_name == "tiny-acodm"
    history = history_by_step(records)
    _, train, valid = read_metrics(os.path.join(save, "metrics.jsonl"))
    assert [record["iteration"] for record in train] == [1, 2, 3, 4] and [record["iteration"] for record in valid] == [4]

    compared = 0
    for record in train:
        row = history[record["iteration"]]
        expected = {"lm-loss": record["lm_loss"], "learning-rate": record["lr"], "grad-norm": record["grad_norm"],
                    "tokens-per-second": record["tokens_per_s"]}
        for name, domain in record["domains"].items():
            expected |= {f"domain-loss/{name}": domain["loss"], f"domain-weight/{name}": domain["weight"],
                         f"domain-share/{name}": domain["share"], f"domain-score/{name}": domain["score"],
                         f"domain-score-snr/{name}": domain["score_snr"]}
        expected |= {f"mixer/{key.replace('_', '-')}": value for key, value in record["mixer"].items()}
        for key, value in expected.items():
            assert row.get(key) == value, (record["iteration"], key)
            compared += value is not None
    (evaluation,) = valid
    row = history[4]
    expected = {"validation/lm-loss-token-weighted": evaluation["lm_loss"], "validation/lm-loss-uniform-mean": evaluation["lm_loss_uniform"],
                "validation/target-loss-mean": evaluation["target_loss"], "validation/target-loss/task": evaluation["targets"]["task"]["loss"]}
    expected |= {f"validation/domain-loss/{name}": domain["loss"] for name, domain in evaluation["domains"].items()}
    for key, value in expected.items():
        assert value is not None and row[key] == value, key
    assert compared >= 4 * (4 + 3 * 5)  # every overall and per-domain number was measured, so none was left out


def test_offline_run_config_is_the_run_arguments(offline_run):
    _, save, run_file = offline_run
    config = {}
    for record in run_file_records(run_file):
        if record.WhichOneof("record_type") == "config":
            config |= {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.config.update}
    assert config["mixer"] == "acodm" and config["train_iters"] == 4 and config["wandb_exp_name"] == "tiny-acodm"
    assert config["save"] == save


def test_cpu_run_logs_no_memory(offline_run):
    completed, save, _ = offline_run
    lines = [line for line in completed.stdout.splitlines() if " iteration " in line and "lm loss:" in line]
    assert len(lines) == 4 and not any("memory" in line for line in lines)
    _, train, _ = read_metrics(os.path.join(save, "metrics.jsonl"))
    assert all(record["memory_allocated_mib"] is None and record["max_memory_allocated_mib"] is None for record in train)


def test_save_dir_defaults_to_the_checkpoint_folder():
    args = parse_args(["--data-path", "d.json", "--train-iters", "1", "--tokenizer-model", "t.model", "--save", "ckpt",
                       "--wandb-project", "p", "--wandb-exp-name", "e"])
    assert args.wandb_save_dir == os.path.join("ckpt", "wandb")


def test_without_the_package_the_run_is_refused_naming_the_install(refused, preprocessed_corpus, tokenizer_model, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail, as when it is not installed
    line = refused(runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "run"), "--train-iters", "4",
                                  "--wandb-project", "p", "--wandb-exp-name", "e"))
    assert line.startswith("error: --wandb-project p: the wandb package cannot be imported (")
    assert line.endswith("; install it with `pip install wandb`, or drop --wandb-project")


def test_save_dir_that_is_a_file_is_refused(refused, preprocessed_corpus, tokenizer_model, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    line = refused(runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "run"), "--train-iters", "4",
                                  "--wandb-project", "p", "--wandb-exp-name", "e", "--wandb-save-dir", str(taken)))
    assert line == f"error: --wandb-save-dir {taken}: is a file, not a folder; give a folder (it is created when missing)"


@pytest.mark.parametrize("options, message", [
    (["--wandb-project", "p"], "--wandb-project needs --wandb-exp-name (the run's name in the project)"),
    (["--wandb-exp-name", "e"], "--wandb-exp-name names a W&B run: add --wandb-project, or drop it"),
    (["--wandb-save-dir", "w"], "--wandb-save-dir is for a W&B run: add --wandb-project, or drop it"),
])
def test_options_that_need_each_other(refused, preprocessed_corpus, tokenizer_model, tmp_path, options, message):
    line = refused(runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "run"), "--train-iters", "4", *options))
    assert line == f"pretrain_acodm.py: error: {message} (see --help)"
