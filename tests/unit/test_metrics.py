"""megatron_acodm.metrics (console, JSONL, TensorBoard, progress) and the mixture plot."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

from launching import REPO, load_script
from megatron_acodm.errors import UserError
from megatron_acodm.metrics import EvalRecord, MetricsLogger, TrainRecord, validation_means
from megatron_acodm.metrics.reader import read_metrics

DOMAINS = ["prose", "code", "multilingual"]
SCIENTIFIC = r"\d\.\d{6}E[+-]\d{2}"


def train_record(iteration: int, loss: float = 5.123456, **overrides) -> TrainRecord:
    fields = dict(
        iteration=iteration,
        train_iters=100,
        consumed_samples=32 * iteration,
        elapsed_s=0.5 * iteration,
        iteration_ms=123.44,
        lr=1e-4,
        lm_loss=loss,
        grad_norm=1.2345,
        tokens_per_s=12345.4,
        global_batch_size=32,
        domain_loss=[loss - 0.5, None, loss + 0.5],
        domain_weight=[0.5, 0.25, 0.25],
        domain_share=[0.5, 0.0, 0.5],
    )
    fields.update(overrides)
    return TrainRecord(**fields)


def make_logger(path: Path, **options) -> tuple[MetricsLogger, io.StringIO]:
    stream = io.StringIO()
    options.setdefault("progress_stream", io.StringIO())
    return MetricsLogger(DOMAINS, jsonl_path=path, train_iters=100, stream=stream, **options), stream


def field(line: str, name: str) -> str:
    match = re.search(rf"\| {re.escape(name)}: +([^|]*?) \|", "|" + line.split("]", 1)[1])
    assert match, f"no '{name}' field in {line!r}"
    return match.group(1)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_line_has_megatron_fields_and_formats(tmp_path):
    logger, stream = make_logger(tmp_path / "m.jsonl")
    logger.log_train(train_record(10, loss_scale=4096.0, skipped_iterations=1, nan_iterations=0))
    line, *table = stream.getvalue().splitlines()

    assert re.match(r" \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] iteration       10/     100 \|", line)
    assert " consumed samples:          320 |" in line
    assert field(line, "elapsed time per iteration (ms)") == "123.4"
    assert re.fullmatch(SCIENTIFIC, field(line, "learning rate")) and float(field(line, "learning rate")) == 1e-4
    assert " global batch size:    32 |" in line
    assert field(line, "lm loss") == "5.123456E+00"
    assert field(line, "loss scale") == "4096.0"
    assert field(line, "grad norm") == "1.234"
    assert field(line, "tokens per second") == "12345"
    assert " number of skipped iterations:   1 |" in line and " number of nan iterations:   0 |" in line
    # Megatron's order: loss, loss scale, grad norm; tokens per second after them.
    assert line.index("lm loss") < line.index("loss scale") < line.index("grad norm") < line.index("tokens per second")

    assert table[0].split() == ["domain", "loss", "weight", "share"]
    assert [row.split() for row in table[1:]] == [
        ["prose", "4.6235", "0.5000", "0.5000"],
        ["code", "-", "0.2500", "0.0000"],
        ["multilingual", "5.6235", "0.2500", "0.5000"],
    ]


def test_console_line_leaves_out_what_was_not_measured(tmp_path):
    logger, stream = make_logger(tmp_path / "m.jsonl")
    logger.log_train(train_record(3, grad_norm=None))
    line = stream.getvalue().splitlines()[0]
    for absent in ("grad norm", "loss scale", "skipped iterations", "nan iterations"):
        assert absent not in line


def test_records_round_trip_through_read_metrics(tmp_path):
    path = tmp_path / "logs" / "m.jsonl"
    logger, _ = make_logger(path)
    config = argparse.Namespace(mixer="odm", lr=3e-4, clip_grad=math.inf, save=tmp_path, sizes=(1, 2), extra={"k": {1}})
    logger.log_run(config)
    logger.log_train(train_record(10, nan_iterations=2, lm_loss=float("nan")))
    logger.log_eval(EvalRecord(10, [2.0, None, 4.0], [100, 0, 300], domain_loss_se=[0.125, None, 0.5]))
    logger.close()

    headers, train, valid = read_metrics(path)
    assert headers[0]["domains"] == DOMAINS and headers[0]["start_iteration"] is None
    assert headers[0]["config"] == {
        "mixer": "odm", "lr": 3e-4, "clip_grad": "inf", "save": str(tmp_path), "sizes": [1, 2], "extra": {"k": [1]}
    }
    (record,) = train
    assert record["kind"] == "train" and record["iteration"] == 10 and record["consumed_samples"] == 320
    assert record["lm_loss"] is None  # not finite: the file stays strict JSON
    assert record["grad_norm"] == 1.2345 and record["tokens_per_s"] == 12345.4 and record["nan_iterations"] == 2
    assert record["loss_scale"] is None and record["skipped_iterations"] is None
    assert record["domains"] == {
        "prose": {"loss": 4.623456, "weight": 0.5, "share": 0.5},
        "code": {"loss": None, "weight": 0.25, "share": 0.0},
        "multilingual": {"loss": 5.623456, "weight": 0.25, "share": 0.5},
    }
    (evaluation,) = valid
    assert evaluation["iteration"] == 10
    assert evaluation["domains"]["code"] == {"loss": None, "loss_se": None, "corpus_tokens": 0}
    assert evaluation["domains"]["prose"] == {"loss": 2.0, "loss_se": 0.125, "corpus_tokens": 100}
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))


def test_mixer_diagnostics_join_the_domain_table_and_the_json(tmp_path):
    path = tmp_path / "m.jsonl"
    logger, stream = make_logger(path)
    logger.log_run({})
    record = train_record(
        10,
        domain_diagnostics={"score": [0.5, -0.25, float("nan")], "score_snr": [3.0, 1.0, 0.0]},
        mixer_diagnostics={"critic_fit": 0.125},
    )
    logger.log_train(record)
    logger.close()
    lines = stream.getvalue().splitlines()
    assert lines[1].split() == ["domain", "loss", "weight", "share", "score", "score_snr"]
    assert lines[2].split()[-2:] == ["0.5", "3"] and lines[4].split()[-2:] == ["-", "0"]
    assert lines[5].strip() == "critic_fit: 0.125"
    (train,) = read_metrics(path)[1]
    assert train["domains"]["code"] == {"loss": None, "weight": 0.25, "share": 0.0, "score": -0.25, "score_snr": 1.0}
    assert train["domains"]["multilingual"]["score"] is None and train["mixer"] == {"critic_fit": 0.125}


def test_resumed_run_reads_back_without_duplicates(tmp_path):
    path = tmp_path / "m.jsonl"
    first, _ = make_logger(path)
    first.log_run({"mixer": "static"})
    for iteration in range(1, 11):
        first.log_train(train_record(iteration, loss=1.0))
    first.close()
    resumed, _ = make_logger(path)
    resumed.log_run({"mixer": "static"})
    for iteration in range(6, 13):
        resumed.log_train(train_record(iteration, loss=2.0))
    resumed.close()

    headers, train, _ = read_metrics(path)
    assert len(headers) == 2
    assert [record["iteration"] for record in train] == list(range(1, 13))
    assert [record["lm_loss"] for record in train] == [1.0] * 5 + [2.0] * 7


def test_resume_point_drops_what_the_interrupted_run_wrote_after_it(tmp_path):
    path = tmp_path / "m.jsonl"
    first, _ = make_logger(path)
    first.log_run({}, start_iteration=0)
    for iteration in range(1, 11):
        first.log_train(train_record(iteration, loss=1.0))
        if iteration % 5 == 0:
            first.log_eval(EvalRecord(iteration, [1.0, 1.0, 1.0], [1, 1, 1]))
    first.close()
    resumed, _ = make_logger(path)
    resumed.log_run({}, start_iteration=5)  # the checkpoint was at 5; this run was killed after step 7
    for iteration in (6, 7):
        resumed.log_train(train_record(iteration, loss=2.0))
    resumed.close()

    _, train, valid = read_metrics(path)
    assert [record["iteration"] for record in train] == [1, 2, 3, 4, 5, 6, 7]
    assert [record["lm_loss"] for record in train][-3:] == [1.0, 2.0, 2.0]
    assert [record["iteration"] for record in valid] == [5]


def test_half_written_last_line_is_cut_when_the_run_resumes(tmp_path):
    path = tmp_path / "m.jsonl"
    first, _ = make_logger(path)
    first.log_train(train_record(1))
    first.close()
    with open(path, "a") as file:
        file.write('{"kind": "train", "itera')  # killed mid-write
    resumed, stream = make_logger(path)
    resumed.log_train(train_record(2))
    resumed.close()
    assert "dropped a half-written last line" in stream.getvalue()
    assert [record["iteration"] for record in read_metrics(path)[1]] == [1, 2]


def test_validation_means_against_a_hand_computation(tmp_path):
    losses, tokens = [2.0, None, 4.0, 3.0], [100, 50, 300, 0]
    # Only domains with a loss and tokens count: (2*100 + 4*300) / 400 and (2 + 4) / 2.
    assert validation_means(losses, tokens) == pytest.approx((3.5, 3.0))
    assert validation_means([None, None], [0, 0]) == (None, None)

    names = ["a", "b", "c", "d"]
    stream = io.StringIO()
    logger = MetricsLogger(names, jsonl_path=tmp_path / "m.jsonl", train_iters=10, stream=stream)
    logger.log_eval(EvalRecord(100, losses, tokens))
    logger.close()
    text = stream.getvalue()
    assert " validation loss at iteration 100 | lm loss (token-weighted): 3.500000E+00 |" in text
    assert " lm loss (uniform mean): 3.000000E+00 |" in text
    rule, header, closing_rule = text.splitlines()[:3]
    assert set(rule) == {"-"} and rule == closing_rule and len(rule) == len(header) + 1
    (record,) = read_metrics(tmp_path / "m.jsonl")[2]
    assert record["lm_loss"] == pytest.approx(3.5) and record["lm_loss_uniform"] == pytest.approx(3.0)
    assert record["domains"]["b"] == {"loss": None, "loss_se": None, "corpus_tokens": 50}


def test_non_logging_rank_writes_nothing(tmp_path):
    progress = FakeTerminal()
    logger, stream = make_logger(
        tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb", is_logging_rank=False, progress_stream=progress
    )
    logger.log_run({"mixer": "odm"})
    logger.log_train(train_record(1))
    logger.log_eval(EvalRecord(1, [1.0, 1.0, 1.0], [1, 1, 1]))
    logger.advance(1)
    logger.close()
    assert list(tmp_path.iterdir()) == []
    assert stream.getvalue() == "" and progress.getvalue() == ""


def test_progress_bar_only_on_a_terminal(tmp_path):
    quiet = io.StringIO()
    logger, _ = make_logger(tmp_path / "a.jsonl", progress_stream=quiet)
    logger.advance(5)
    logger.close()
    assert quiet.getvalue() == ""

    terminal = FakeTerminal()
    logger, _ = make_logger(tmp_path / "b.jsonl", progress_stream=terminal)
    logger.log_run({}, start_iteration=40)
    logger.advance(5)
    logger.close()
    assert "45/100" in terminal.getvalue()


def test_missing_tensorboard_is_one_notice_and_no_crash(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    logger, stream = make_logger(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    logger.log_train(train_record(1))
    logger.log_train(train_record(2))
    logger.log_eval(EvalRecord(2, [1.0, 1.0, 1.0], [1, 1, 1]))
    logger.close()
    notices = [line for line in stream.getvalue().splitlines() if "pip install tensorboard" in line]
    assert len(notices) == 1 and "TensorBoard" in notices[0]
    assert len(read_metrics(tmp_path / "m.jsonl")[1]) == 2


def test_tensorboard_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger, _ = make_logger(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    logger.log_train(train_record(1))
    logger.log_eval(EvalRecord(1, [1.0, None, 3.0], [1, 0, 1], target_loss={"quiz": 4.0}))
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"lm-loss", "learning-rate", "grad-norm", "tokens-per-second", "domain-weight/code"} <= tags
    assert {"domain-loss/prose", "domain-share/multilingual", "validation/lm-loss-uniform-mean"} <= tags
    assert "domain-loss/code" not in tags  # no tokens, no point
    assert {"validation/target-loss/quiz", "validation/target-loss-mean"} <= tags


def test_target_loss_is_printed_and_recorded_beside_the_validation_loss(tmp_path):
    logger, stream = make_logger(tmp_path / "m.jsonl")
    logger.log_eval(EvalRecord(5, [1.0, 2.0, 3.0], [1, 1, 1], target_loss={"quiz": 4.0, "gsm8k": 5.0}, target_loss_se={"quiz": 0.25, "gsm8k": None}))
    logger.log_eval(EvalRecord(10, [1.0, 2.0, 3.0], [1, 1, 1]))
    logger.close()
    lines = stream.getvalue().splitlines()
    target_lines = [line for line in lines if line.startswith(" target loss (held-out)")]
    assert target_lines == [" target loss (held-out) | quiz: 4.000000E+00 | gsm8k: 5.000000E+00 | mean: 4.500000E+00 |"]
    _, _, valid = read_metrics(tmp_path / "m.jsonl")
    assert valid[0]["targets"] == {"quiz": {"loss": 4.0, "loss_se": 0.25}, "gsm8k": {"loss": 5.0, "loss_se": None}}
    assert valid[0]["target_loss"] == 4.5
    assert "targets" not in valid[1]  # a run without target sets writes nothing of them


def test_per_domain_lists_must_match_the_domains(tmp_path):
    logger, _ = make_logger(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="domain_weight has 2 entries for 3 domains"):
        logger.log_train(train_record(1, domain_weight=[0.5, 0.5]))


# The plot -----------------------------------------------------------------------------------------


def write_synthetic_run(path: Path, *, with_eval: bool = True) -> Path:
    logger, _ = make_logger(path)
    logger.log_run({"mixer": "acodm"}, start_iteration=0)
    for iteration in range(10, 101, 10):
        drift = iteration / 400
        weights = [0.5 - drift, 0.25, 0.25 + drift]
        loss = 3.0 + 5.0 * math.exp(-iteration / 40)
        losses = [loss - 0.4, loss + 0.2, loss + 0.5]
        logger.log_train(train_record(iteration, loss, domain_loss=losses, domain_weight=weights, domain_share=weights))
        if with_eval and iteration % 20 == 0:
            logger.log_eval(EvalRecord(iteration, [value + 0.1 for value in losses], [4096, 2048, 1024], target_loss={"quiz": loss + 0.3}))
    logger.close()
    return path


def load_cli():
    return load_script(os.path.join(REPO, "tools", "plot_mixture.py"))


@pytest.mark.parametrize("with_eval", [True, False])
def test_plot_tool_writes_a_png_next_to_the_metrics(tmp_path, capsys, with_eval):
    pytest.importorskip("matplotlib")
    metrics = write_synthetic_run(tmp_path / "run.jsonl", with_eval=with_eval)
    assert load_cli().main([str(metrics)]) == 0
    image = (tmp_path / "run.png").read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n") and 20_000 < len(image) < 2_000_000
    assert "run.png" in capsys.readouterr().out


def test_plot_output_option(tmp_path):
    pytest.importorskip("matplotlib")
    from megatron_acodm.metrics.plots import plot_mixture

    metrics = write_synthetic_run(tmp_path / "run.jsonl")
    output = plot_mixture(metrics, tmp_path / "figures" / "mix.png")
    assert output == str(tmp_path / "figures" / "mix.png")
    assert Path(output).read_bytes().startswith(b"\x89PNG")


def test_plot_draws_each_target_sets_held_out_loss(tmp_path):
    pytest.importorskip("matplotlib")
    from megatron_acodm.metrics.plots import _draw

    headers, train, valid = read_metrics(write_synthetic_run(tmp_path / "run.jsonl"))
    figure = _draw(headers, train, valid)
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert "target quiz (held-out)" in labels
    losses = figure.axes[1].lines[-1].get_ydata()
    assert list(losses) == pytest.approx([record["targets"]["quiz"]["loss"] for record in valid])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such metrics file"),
        ("", "the metrics file is empty"),
        ('{"kind": "run", "domains": []}\n\n{"kind": "train", oops}\n', "line 3: not a JSON record"),
        ('{"kind": "train", "iteration": "7"}\n', "line 1: a train record needs an integer iteration"),
        ('{"kind": "run", "domains": ["a"], "config": {}}\n', 'no training records'),
    ],
)
def test_plot_errors_name_the_file_and_line(tmp_path, capsys, content, message):
    metrics = tmp_path / "metrics.jsonl"
    if content is not None:
        metrics.write_text(content)
    assert load_cli().main([str(metrics)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(metrics) in error and message in error
    if content is not None and "training records" not in message:
        with pytest.raises(UserError, match=re.escape(message)):
            read_metrics(metrics)


def test_missing_matplotlib_names_the_install_command(tmp_path, monkeypatch):
    from megatron_acodm.metrics.plots import PlotDependencyError, plot_mixture

    metrics = write_synthetic_run(tmp_path / "run.jsonl")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotDependencyError, match="pip install matplotlib"):
        plot_mixture(metrics)
