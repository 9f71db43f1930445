"""pretrain_acodm.py as a user meets it: first runs on freshly indexed data at every layout, the
distributed optimizer's save and resume, the LR schedule on resume, a clean exit on SIGTERM and
SIGINT, and one `error:` line (exit 2, nothing lost) for every bad input, checkpoint or resume."""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import subprocess
import time

import numpy
import pytest
import torch

import trainer_runs as runs
from conftest import index_corpus
from launching import command, environment, run
from megatron_acodm.arguments import parse_args
from megatron_acodm.data import DynamicBlender, open_corpus, parse_data_path
from megatron_acodm.errors import UserError
from megatron_acodm.model import pad_vocab_size
from megatron_acodm.training.checkpoint import open_checkpoint
from megatron_acodm.training.evaluation import domain_evaluation_sizes, evaluation_batches
from megatron_acodm.training.exit_signal import ExitSignalHandler
from megatron_acodm.training.resume import check_resumable
from megatron_acodm.training.setup import build_scheduler
from torch.distributed.checkpoint import FileSystemReader


@pytest.fixture
def fresh_corpus(tmp_path, tokenizer_model, domain_texts) -> str:
    return index_corpus(str(tmp_path / "data"), tokenizer_model, domain_texts)


def _error_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (completed.stdout + completed.stderr).splitlines() if line.startswith("error: ")]


def _assert_one_error_line(completed: subprocess.CompletedProcess, message: str) -> None:
    """No traceback through the program and one `error:` line; exit status 2, or under torchrun its
    own status 1 after a failure summary whose root cause is that line (what the README promises)."""
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    assert 'pretrain_acodm.py", line' not in completed.stderr, output
    assert len(_error_lines(completed)) == 1 and message in _error_lines(completed)[0], output
    if "torch.distributed.run" in completed.args:
        assert completed.returncode == 1, output
        root_cause = completed.stderr.split("Root Cause (first observed failure):")[1]
        assert f"traceback : {_error_lines(completed)[0]}" in root_cause and "exitcode  : 2" in root_cause, output
    else:
        assert completed.returncode == 2, output


# ---------------------------------------------------------------- fresh data, every layout


@pytest.mark.parametrize(
    "layout",
    [["--tensor-model-parallel-size", "2"], ["--pipeline-model-parallel-size", "2"]],
    ids=["tp2", "pp2"],
)
def test_first_run_on_fresh_data_then_resume(tmp_path, fresh_corpus, tokenizer_model, layout):
    # Two ranks on data that has no index cache yet: megatron.core writes the cache of every
    # dataset, training and validation, on one rank while the other waits for it.
    save = str(tmp_path / "run")
    arguments = runs.arguments(fresh_corpus, tokenizer_model, save, "--train-iters", "4", *layout, "--load", save)
    first = runs.train(tmp_path, arguments + ["--exit-interval", "2"], processes=2)
    assert f"--load {save}: no checkpoint there (no latest_checkpointed_iteration.txt); training from iteration 0" in first.stdout
    resumed = runs.train(tmp_path, arguments, processes=2)
    assert f"resumed from {save}/iter_0000002 at iteration 2" in resumed.stdout
    train, valid, _ = runs.losses(save)
    assert len(train) == 4 and len(valid) == 1 and all(numpy.isfinite(train + valid))


def test_distributed_optimizer_from_fresh_data_resumes_exactly_and_at_another_data_parallel_size(
    tmp_path, fresh_corpus, tokenizer_model
):
    common = ["--train-iters", "4", "--use-distributed-optimizer", "--hidden-dropout", "0", "--attention-dropout", "0"]
    interrupted, reference = str(tmp_path / "interrupted"), str(tmp_path / "reference")
    runs.train(tmp_path, runs.arguments(fresh_corpus, tokenizer_model, interrupted, *common, "--exit-interval", "2"), processes=2)
    runs.train(tmp_path, runs.arguments(fresh_corpus, tokenizer_model, reference, *common), processes=2)
    one_rank = str(tmp_path / "one-rank")
    shutil.copytree(interrupted, one_rank)
    _assert_one_error_line(
        run(runs.ENTRY, runs.arguments(fresh_corpus, tokenizer_model, interrupted, *common, "--load", interrupted,
                                       "--tensor-model-parallel-size", "2"), cwd=str(tmp_path), processes=2),
        "the distributed optimizer's state reshards only across data-parallel sizes: resume at the saved "
        "--tensor-model-parallel-size and --pipeline-model-parallel-size",
    )

    runs.train(tmp_path, runs.arguments(fresh_corpus, tokenizer_model, interrupted, *common, "--load", interrupted), processes=2)
    runs.train(tmp_path, runs.arguments(fresh_corpus, tokenizer_model, one_rank, *common, "--load", one_rank))
    expected, expected_valid, expected_records = runs.losses(reference)
    got, got_valid, got_records = runs.losses(interrupted)
    # Same layout: Adam's moments and step count come back exactly, so the run does too.
    assert got == expected and got_valid == expected_valid
    assert [r["grad_norm"] for r in got_records] == [r["grad_norm"] for r in expected_records]
    # One data-parallel rank instead of two: the same sums in another order.
    assert runs.losses(one_rank)[0] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- the LR schedule on resume


def _planned_learning_rates(corpus, tokenizer_model, *extra) -> list[float]:
    """The LR megatron.core's schedule gives after each iteration of a run with these arguments."""
    args = parse_args(runs.arguments(corpus, tokenizer_model, "unused", *extra))
    scheduler = _scheduler(args)
    rates = []
    for _ in range(args.train_iters):
        scheduler.step(increment=1)
        rates.append(scheduler.get_lr(scheduler.optimizer.param_groups[0]))
    return rates


def test_a_changed_lr_schedule_is_refused_unless_told_which_wins(tmp_path, preprocessed_corpus, tokenizer_model):
    save = str(tmp_path / "run")
    runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "4"))
    before = sorted(os.listdir(save))
    longer = runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "8", "--load", save)
    _assert_one_error_line(
        run(runs.ENTRY, longer, cwd=str(tmp_path)),
        "the checkpoint's LR schedule has --lr-decay-iters (default --train-iters) 4, these arguments give 8; "
        "pass --override-opt_param-scheduler",
    )
    assert sorted(os.listdir(save)) == before

    overridden, kept = str(tmp_path / "overridden"), str(tmp_path / "kept")
    for folder, choice in ((overridden, "--override-opt_param-scheduler"), (kept, "--use-checkpoint-opt_param-scheduler")):
        shutil.copytree(save, folder)
        runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, folder, "--train-iters", "8", "--load", folder, choice))

    def logged_learning_rates(folder):
        return [record["lr"] for record in runs.losses(folder)[2]]

    # Overridden: iterations 5-8 follow the 8-iteration schedule, as a run planned that long would.
    planned = _planned_learning_rates(preprocessed_corpus, tokenizer_model, "--train-iters", "8")
    assert logged_learning_rates(overridden)[4:] == pytest.approx(planned[4:], rel=1e-12)
    assert min(planned[4:7]) > 0
    # Kept: the checkpoint's 4-iteration cosine has decayed to --min-lr 0.
    assert logged_learning_rates(kept)[4:] == [0.0] * 4


# ---------------------------------------------------------------- exiting on a signal


def test_exit_signal_handler_under_torchrun_saves_and_exits_cleanly(tmp_path, preprocessed_corpus, tokenizer_model):
    save = str(tmp_path / "run")
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "1000", "--eval-interval", "1000",
                               "--exit-signal-handler")
    process = subprocess.Popen(command(runs.ENTRY, arguments, processes=2), cwd=str(tmp_path), env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(save, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics) and open(metrics).read().count('"kind": "train"') >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # what a cluster sends; torchrun passes it on to every rank
    stdout, stderr = process.communicate(timeout=120)
    last = runs.losses(save)[2][-1]["iteration"]
    assert f"exiting at iteration {last} on a signal to exit (--exit-signal-handler)" in stdout, stdout[-2000:] + stderr[-2000:]
    assert last < 1000
    assert open(os.path.join(save, "latest_checkpointed_iteration.txt")).read().strip() == str(last)

    resumed = runs.train(tmp_path, arguments + ["--load", save, "--exit-interval", str(last + 2)], processes=2)
    assert f"resumed from {save}/iter_{last:07d} at iteration {last}" in resumed.stdout
    assert runs.losses(save)[2][-1]["iteration"] == last + 2


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_exit_signal_handler_remembers_the_first_signal_and_lets_a_second_through(sent):
    seen = []
    previous = signal.signal(sent, lambda number, frame: seen.append(number))
    try:
        handler = ExitSignalHandler(torch.device("cpu"))
        os.kill(os.getpid(), sent)
        assert handler.received == sent and seen == []
        os.kill(os.getpid(), sent)  # an impatient second Ctrl-C acts as it would without the handler
        assert seen == [sent]
    finally:
        signal.signal(sent, previous)


# ---------------------------------------------------------------- one error line for each bad input


def test_a_split_without_validation_trains_without_evaluating(tmp_path, preprocessed_corpus, tokenizer_model):
    save = str(tmp_path / "run")
    runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "4", "--split", "100"))
    train, valid, _ = runs.losses(save)
    assert len(train) == 4 and valid == []


def test_eval_iters_zero_turns_evaluation_off(preprocessed_corpus, tokenizer):
    blender = _blender(parse_args(runs.arguments(preprocessed_corpus, tokenizer.model, "unused", "--train-iters", "4")), tokenizer)
    assert evaluation_batches(domain_evaluation_sizes(blender, eval_iters=0, global_batch_size=8), 8) == []
    batches = evaluation_batches(domain_evaluation_sizes(blender, eval_iters=1, global_batch_size=8), 8)
    assert sum(len(domains) for domains, _ in batches) == 8


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, preprocessed_corpus, tokenizer_model):
    """A 4-iteration run with checkpoints at iterations 2 and 4."""
    folder = tmp_path_factory.mktemp("saved")
    save = str(folder / "run")
    runs.train(folder, runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "4", "--save-interval", "2"))
    return save


def _truncate_a_tensor_file(save):
    path = os.path.join(save, "iter_0000004", "__0_0.distcp")
    os.truncate(path, os.path.getsize(path) // 2)


def _remove(*parts):
    return lambda save: os.remove(os.path.join(save, *parts))


def _zero_a_tensor_file(save):
    path = os.path.join(save, "iter_0000004", "__0_0.distcp")
    with open(path, "r+b") as stream:
        stream.write(bytes(os.path.getsize(path)))


def _damage_inside_a_tensor(save):
    """Zero a stretch inside the first stored tensor: the file keeps its size and its items' ends."""
    path = os.path.join(save, "iter_0000004", "__0_0.distcp")
    item = min((item for item in FileSystemReader(os.path.dirname(path)).read_metadata().storage_data.values()
                if item.relative_path == "__0_0.distcp" and item.length > 4096), key=lambda item: item.offset)
    with open(path, "r+b") as stream:
        stream.seek(item.offset + 64)
        stream.write(bytes(2048))


def _write_binary_junk_into_the_tracker(save):
    with open(os.path.join(save, "latest_checkpointed_iteration.txt"), "wb") as stream:
        stream.write(b"\xff\xfe\x00junk")


EARLIER = "{save}/iter_0000002 is complete: write 2 into {save}/latest_checkpointed_iteration.txt to resume from it"
BROKEN_CHECKPOINTS = {
    "truncated-tensor-file": (_truncate_a_tensor_file, "{save}/iter_0000004: the checkpoint is broken, __0_0.distcp is truncated"),
    "missing-common-state": (_remove("iter_0000004", "common.pt"), "{save}/iter_0000004: the checkpoint is broken, common.pt is missing; " + EARLIER),
    "missing-tensor-metadata": (_remove("iter_0000004", ".metadata"), "{save}/iter_0000004: the checkpoint is broken, .metadata is missing; " + EARLIER),
    "missing-checkpoint-format": (_remove("iter_0000004", "metadata.json"), "{save}/iter_0000004: the checkpoint is broken, metadata.json is missing; " + EARLIER),
    "zeroed-tensor-file": (_zero_a_tensor_file, "{save}/iter_0000004: the checkpoint is broken, __0_0.distcp is damaged (the item at byte 0 "
                                                "is not what torch.save wrote); " + EARLIER),
    "binary-tracker": (_write_binary_junk_into_the_tracker, r"latest_checkpointed_iteration.txt: expected an iteration number, found '\\xff\\xfe"),
}


@pytest.mark.parametrize("case", list(BROKEN_CHECKPOINTS))
def test_a_broken_checkpoint_is_named_with_an_earlier_one_that_loads(tmp_path, saved_run, case):
    breaking, message = BROKEN_CHECKPOINTS[case]
    save = str(tmp_path / "run")
    shutil.copytree(saved_run, save)
    breaking(save)
    with pytest.raises(UserError) as raised:
        open_checkpoint(save)
    assert message.format(save=save) in str(raised.value)


def _resume_arguments(corpus, tokenizer, save, *extra):
    args = parse_args(runs.arguments(corpus, tokenizer.model, save, "--train-iters", "4", "--load", save, *extra))
    # What the trainer derives once the tokenizer is loaded.
    args.padded_vocab_size = pad_vocab_size(tokenizer.vocab_size, args.make_vocab_size_divisible_by, args.tensor_model_parallel_size)
    return args


def _scheduler(args):
    return build_scheduler(args, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.lr))


def _blender(args, tokenizer):
    return DynamicBlender(open_corpus(parse_data_path(args.data_path), tokenizer), seq_length=args.seq_length,
                          global_batch_size=args.global_batch_size, seed=args.seed, split=args.split)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--global-batch-size", "4"], "saved with --global-batch-size 8, this run has --global-batch-size 4, which changes the samples "
                                       "the blender has planned; resume with --global-batch-size 8, or start a new run"),
        (["--seq-length", "16"], "saved with --seq-length 32, this run has --seq-length 16"),
        (["--num-layers", "4"], "saved with --num-layers 2, this run has --num-layers 4, which changes the model's shape"),
        (["--use-distributed-optimizer"], "saved with no --use-distributed-optimizer, this run has --use-distributed-optimizer, which "
                                          "changes the optimizer state's layout; drop --use-distributed-optimizer"),
        (["--lr", "2e-3"], "the checkpoint's LR schedule has --lr 0.001, these arguments give 0.002"),
        (["--lr-decay-style", "linear"], "the checkpoint's LR schedule has --lr-decay-style cosine, these arguments give linear"),
        (["--seed", "7"], "saved with --seed 1234, this run has --seed 7, which changes the order the blender draws samples in; "
                          "resume with --seed 1234, or start a new run"),
    ],
    ids=["global-batch", "seq-length", "num-layers", "distributed-optimizer", "lr", "decay-style", "seed"],
)
def test_resuming_with_arguments_the_checkpoint_cannot_follow_is_refused(saved_run, preprocessed_corpus, tokenizer, extra, message):
    path, state = open_checkpoint(saved_run)
    args = _resume_arguments(preprocessed_corpus, tokenizer, saved_run, *extra)
    with pytest.raises(UserError) as raised:
        check_resumable(path, state, args, _scheduler(args), _blender(args, tokenizer))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    unchanged = _resume_arguments(preprocessed_corpus, tokenizer, saved_run)
    check_resumable(path, state, unchanged, _scheduler(unchanged), _blender(unchanged, tokenizer))


def test_same_domain_names_over_other_data_are_refused_unless_remapped(tmp_path, saved_run, tokenizer_model, tokenizer, domain_texts):
    fewer = {domain: texts[: len(texts) // 2] for domain, texts in domain_texts.items()}
    other = index_corpus(str(tmp_path / "other"), tokenizer_model, fewer)
    path, state = open_checkpoint(saved_run)
    args = _resume_arguments(other, tokenizer, saved_run)
    with pytest.raises(UserError, match="the same names hold other data; resume on the data the run was trained on, or pass --remap-domains"):
        check_resumable(path, state, args, _scheduler(args), _blender(args, tokenizer))
    remapped = _resume_arguments(other, tokenizer, saved_run, "--remap-domains")
    check_resumable(path, state, remapped, _scheduler(remapped), _blender(remapped, tokenizer))


@pytest.mark.parametrize(
    "case, breaking, extra, message",
    [
        ("changed-model", None, ["--hidden-size", "64"],
         "saved with --hidden-size 32, this run has --hidden-size 64, which changes the model's shape; resume with --hidden-size 32"),
        ("broken-checkpoint", _truncate_a_tensor_file, [],
         "iter_0000004: the checkpoint is broken, __0_0.distcp is truncated"),
        ("damaged-tensor", _damage_inside_a_tensor, [],
         "iter_0000004: the checkpoint is broken, a tensor file holds damaged data (RuntimeError while reading it); "
         "{save}/iter_0000002 is complete"),
    ],
    ids=["changed-model", "broken-checkpoint", "damaged-tensor"],
)
def test_a_resume_that_cannot_work_is_one_error_line_and_loses_nothing(tmp_path, saved_run, preprocessed_corpus, tokenizer_model, case, breaking, extra, message):
    save = str(tmp_path / "run")
    shutil.copytree(saved_run, save)
    if breaking:
        breaking(save)
    kept = {name: open(os.path.join(save, name), "rb").read() for name in ("latest_checkpointed_iteration.txt", "metrics.jsonl")}
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "4", "--load", save, *extra)
    _assert_one_error_line(run(runs.ENTRY, arguments, cwd=str(tmp_path)), message.format(save=save))
    assert {name: open(os.path.join(save, name), "rb").read() for name in kept} == kept
    assert not filecmp.dircmp(os.path.join(saved_run, "iter_0000002"), os.path.join(save, "iter_0000002")).diff_files


def test_token_ids_beyond_the_vocabulary_in_a_changed_bin_are_one_error_line(tmp_path, fresh_corpus, tokenizer_model, tokenizer):
    # The manifest still records the old largest id: the file changed after indexing, at the same size.
    prefix = os.path.join(os.path.dirname(fresh_corpus), "code_text_document")
    tokens = numpy.memmap(prefix + ".bin", dtype=numpy.uint16, mode="r+")
    tokens[:] = tokenizer.vocab_size + 7
    tokens.flush()
    arguments = runs.arguments(fresh_corpus, tokenizer_model, str(tmp_path / "run"), "--train-iters", "3")
    # Two data-parallel ranks each read a bad sample of their own: the line is printed once.
    _assert_one_error_line(
        run(runs.ENTRY, arguments, cwd=str(tmp_path), processes=2),
        f"holds token id {tokenizer.vocab_size + 7}, beyond the tokenizer's vocabulary ({tokenizer.vocab_size} ids); "
        f"the file changed since it was indexed",
    )


def test_two_ranks_print_one_error_line(tmp_path, preprocessed_corpus, tokenizer_model):
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "run"), "--train-iters", "3", "--mixing-floor", "0.5")
    _assert_one_error_line(
        run(runs.ENTRY, arguments, cwd=str(tmp_path), processes=2),
        "error: --mixing-floor (0.5) must be in [0, 1/K] = [0, 0.3333] for the 3 domains of --data-path; lower it",
    )


def test_ctrl_c_while_starting_is_one_line_and_status_130(tmp_path, preprocessed_corpus, tokenizer_model):
    # As when tools/mergemix.py's Ctrl-C reaches an expert that is still importing megatron.core.
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "run"), "--train-iters", "3")
    # SIGINT as a terminal leaves it, even where the suite itself was started with it ignored (in the background)
    process = subprocess.Popen(command(runs.ENTRY, arguments), cwd=str(tmp_path), env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr and [line for line in stderr.splitlines() if "interrupted" in line] == [
        "interrupted: stopped without saving (the checkpoints already written are kept; with --exit-signal-handler "
        "a Ctrl-C or SIGTERM first finishes the step and saves)"
    ]
