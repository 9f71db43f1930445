"""bench/gpu_check.sh, the GPU check, kept working where no GPU is: its CPU rehearsal (`--cpu`:
interpreted Triton, a tiny model) end to end, and its one-line errors for a missing wheel and bad
arguments. The script runs as a user runs it, through bash, with this interpreter as `python3`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from launching import REPO, environment

SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")
TIMEOUT_S = 300
PARTS = {"versions", "kernel_correctness", "kernel_speed", "corpus", "host_batch", "training"}
MIXERS = {"static", "acodm", "proxy"}


def run_script(arguments: list[str], **env) -> subprocess.CompletedProcess:
    shell_env = environment()
    shell_env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + shell_env["PATH"]  # the script calls python3
    shell_env.update(env)
    return subprocess.run(["bash", SCRIPT, *arguments], env=shell_env, capture_output=True, text=True, timeout=TIMEOUT_S)


def error_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in completed.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, str]:
    out = str(tmp_path_factory.mktemp("gpu_check") / "out")
    return run_script([out, "--cpu"]), out


@pytest.fixture(scope="module")
def report(check) -> dict:
    completed, out = check
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-6000:]
    with open(os.path.join(out, "gpu_check.json")) as stream:
        return json.load(stream)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_part_ran_and_passed(report: dict) -> None:
    assert report["mode"] == "cpu" and report["done"] and report["ok"]
    assert set(report["parts"]) == PARTS
    assert all(part["ok"] and positive(part["seconds"]) for part in report["parts"].values())
    versions = report["parts"]["versions"]
    assert versions["megatron-core"] == "0.16.1" and versions["torch"] and versions["triton"]
    # The wheel a bare image would get: the current release, unless GPU_CHECK_MEGATRON_CORE names another.
    assert "megatron-core==0.19.2" in versions["wheels"]


def test_interpreted_kernels_agree_with_the_reference(report: dict) -> None:
    correctness = report["parts"]["kernel_correctness"]
    assert correctness["backend"] == "triton"
    cases = correctness["cases"]
    assert {(case["case"], case["dtype"]) for case in cases if case["operation"] == "project_and_segment_sum"} == {
        (name, dtype) for name in ("ragged", "halves", "step") for dtype in ("float32", "bfloat16")
    }
    assert sum(case["operation"] == "gram" for case in cases) == 2
    for case in cases:
        assert 0 <= case["relative_difference"] <= case["tolerance"] == correctness["tolerance"], case
    projections = [case for case in cases if case["operation"] == "project_and_segment_sum"]
    assert all(case["empty_rows"] > 0 and case["empty_rows_exact_zero"] for case in projections)


def test_both_implementations_timed(report: dict) -> None:
    speed = report["parts"]["kernel_speed"]
    timed = {(row["implementation"], row["operation"], row["tokens"]) for row in speed["results"]}
    assert len(timed) == 8 and all(positive(row["median_ms"]) for row in speed["results"])
    assert {verdict["faster"] for verdict in speed["faster"]} <= {"reference", "triton"}


def test_step_times_and_memory_against_static(report: dict) -> None:
    training = report["parts"]["training"]
    assert [(run["model"], run["mixer"]) for run in training["runs"]] == [("tiny", "static"), ("tiny", "acodm"), ("tiny", "proxy")]
    summary = training["summary"]["tiny"]
    assert set(summary["mixers"]) == MIXERS
    for cell in summary["mixers"].values():
        assert cell["measured_steps"] == 4
        for key in ("median_step_ms", "step_ratio", "peak_memory_mib", "peak_memory_ratio"):
            assert positive(cell[key]), (key, cell)
    assert summary["mixers"]["static"]["step_ratio"] == 1.0
    assert positive(summary["static_throughput"]["tokens_per_s"])
    assert summary["static_throughput"]["mfu"] is None  # no GPU peak to divide by


def test_host_batch_cost_against_the_step(report: dict) -> None:
    assert positive(report["parts"]["host_batch"]["models"]["tiny"]["batch_ms"])
    assert positive(report["host_share_of_step"]["tiny"])


def test_markdown_summary(check, report: dict) -> None:
    with open(os.path.join(check[1], "gpu_check.md")) as stream:
        summary = stream.read()
    assert summary.startswith("# GPU check (cpu): PASSED")
    assert "| ragged | project_and_segment_sum | bfloat16 |" in summary and "| proxy |" in summary


def test_missing_wheel_is_one_error_line(tmp_path) -> None:
    shim = tmp_path / "shim" / "megatron"  # a package `megatron` without `core` hides the installed one
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    out = tmp_path / "out"
    completed = run_script([str(out), str(wheels)], PYTHONPATH=str(shim.parent))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == error_lines(completed)  # one line, nothing else
    (line,) = error_lines(completed)
    assert "megatron-core==0.19.2" in line and "pip download" in line and f"-d {wheels} megatron-core==0.19.2" in line
    assert not out.exists()


def test_the_megatron_core_asked_for_replaces_another_installed_one(tmp_path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    completed = run_script([str(tmp_path / "out"), str(wheels)], GPU_CHECK_MEGATRON_CORE="0.15.3")
    assert completed.returncode == 2
    (line,) = error_lines(completed)
    assert line.startswith("error: missing megatron-core==0.15.3 (0.16.1 is installed, GPU_CHECK_MEGATRON_CORE asks for 0.15.3), ")
    assert f"-d {wheels} megatron-core==0.15.3" in line


@pytest.mark.parametrize("arguments", [[], ["--gpus", "x"], ["a", "b", "c"]])
def test_bad_arguments_are_one_error_line(arguments: list[str]) -> None:
    completed = run_script(arguments)
    assert completed.returncode == 2 and len(error_lines(completed)) == 1 and completed.stderr.count("\n") == 1


def test_output_folder_that_is_a_file(tmp_path) -> None:
    out = tmp_path / "taken"
    out.write_text("")
    completed = run_script([str(out), "--cpu"])
    assert completed.returncode == 2
    (line,) = error_lines(completed)
    assert f"OUT_DIR {out} is a file" in line
