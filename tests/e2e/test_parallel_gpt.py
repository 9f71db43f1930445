"""The trainer's megatron.core machinery on CPU/gloo: every parallel layout gives the single-process numbers.

Two launches of tests/parallel_worker.py serve all checks: one single process (which also saves
the initial weights of two model families with dist_checkpointing) and one `torchrun
--nproc-per-node 2` that runs TP=2, PP=2 (plain and interleaved), DP=2 (with and without the
distributed optimizer), each loading those weights into its own layout. The worker takes its
arguments from the trainer's parser and trains with `training.setup` (model, DDP, optimizer, LR
schedule) and `training.step.run_step` (schedule, per-domain loss, all-reduce, update). The
families: "llama" (RoPE, RMSNorm, SwiGLU, 2 query groups, no biases, untied output layer) and "gpt"
(learned positions, LayerNorm, GeLU, biases, tied embeddings); 4 layers, hidden 64, 4 heads, seq
32, vocab 512, micro-batch 2, global batch 8 over 2 domains, 3 Adam steps with clipping.

Tolerance: 1e-5 relative on losses and gradient norms. The layouts sum the same fp32 products in
another order (split matmuls, all-reduces): measured below 5e-7 relative.
"""

from __future__ import annotations

import json
import os

import launching
import pytest
import torch

WORKER = os.path.join(launching.TESTS, "parallel_worker.py")
RTOL = 1e-5
LOGITS_ATOL = 1e-5
TIMEOUT_S = 300

# Each parallel run and the single-process run (same model family and precision) it must reproduce.
REFERENCE_OF = {
    "tp=2": "tp=1",
    "pp=2": "tp=1",
    "pp=2,vp=2": "tp=1",
    "dp=2": "tp=1",
    "dp=2,distopt": "tp=1",
    "model=gpt,tp=2": "model=gpt",
    "model=gpt,pp=2": "model=gpt",
    "model=gpt,pp=2,vp=2": "model=gpt",
}
SINGLE_RUNS = ["tp=1", "model=gpt", "bf16"]


def _launch(arguments: list[str], folder: str, processes: int | None = None) -> None:
    """Run the worker as one plain process, or under torchrun with `processes` ranks."""
    completed = launching.run(WORKER, arguments, cwd=folder, processes=processes, timeout=TIMEOUT_S)
    output = (completed.stdout + completed.stderr)[-6000:]
    assert completed.returncode == 0, f"{' '.join(completed.args)} failed:\n{output}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{run: numbers, with "logits": the path of the run's logits} for SINGLE_RUNS and every parallel run."""
    folder = str(tmp_path_factory.mktemp("parallel_gpt"))
    checkpoints = os.path.join(folder, "initial")
    single_out, parallel_out = os.path.join(folder, "single.json"), os.path.join(folder, "parallel.json")
    _launch(["--checkpoints", checkpoints, "--save-checkpoints", "--out", single_out, "--runs", *SINGLE_RUNS], folder)
    _launch(["--checkpoints", checkpoints, "--out", parallel_out, "--runs", *REFERENCE_OF], folder, processes=2)
    merged = {}
    for out in (single_out, parallel_out):
        with open(out) as stream:
            for run, numbers in json.load(stream).items():
                merged[run] = {**numbers, "logits": f"{out}.{run}.logits.pt"}
    return merged


@pytest.mark.parametrize("run", list(REFERENCE_OF))
def test_parallel_layout_reproduces_single_process_training(results: dict, run: str) -> None:
    parallel, single = results[run], results[REFERENCE_OF[run]]
    assert parallel["losses"] == pytest.approx(single["losses"], rel=RTOL)
    assert parallel["grad_norms"] == pytest.approx(single["grad_norms"], rel=RTOL)
    assert parallel["final_loss"] == pytest.approx(single["final_loss"], rel=RTOL)
    # The clip threshold (0.5) is below every norm, so clipping acted; the steps moved the weights.
    assert min(single["grad_norms"]) > 0.5
    assert single["final_loss"] != pytest.approx(single["initial_eval_loss"], rel=1e-4)


@pytest.mark.parametrize("run", ["tp=2", "pp=2", "pp=2,vp=2", "model=gpt,tp=2", "model=gpt,pp=2"])
def test_checkpoint_saved_at_one_layout_loads_at_another(results: dict, run: str) -> None:
    """Weights saved at TP=1/PP=1 give the same logits and first loss when loaded at `run`'s layout."""
    reference = REFERENCE_OF[run]
    logits, single_logits = torch.load(results[run]["logits"]), torch.load(results[reference]["logits"])
    assert logits.shape == single_logits.shape == (8, 32, 512)
    torch.testing.assert_close(logits, single_logits, rtol=0, atol=LOGITS_ATOL)
    assert results[run]["losses"][0] == pytest.approx(results[reference]["losses"][0], rel=RTOL)


def test_bf16_runs_on_cpu_close_to_fp32(results: dict) -> None:
    bf16, fp32 = results["bf16"], results["tp=1"]
    assert bf16["param_dtype"] == "torch.bfloat16"
    assert bf16["losses"] == pytest.approx(fp32["losses"], rel=1e-3)
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=1e-3)
    assert bf16["grad_norms"] == pytest.approx(fp32["grad_norms"], rel=2e-2)
    assert bf16["losses"] != fp32["losses"]


def test_activate_cpu_compat_changes_nothing_where_cuda_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    from megatron.core.tensor_parallel import random as megatron_random

    from megatron_acodm.compat import activate_cpu_compat, cpu_compat_active

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    watched = [
        (torch.cuda, "current_device"), (torch.cuda, "synchronize"), (torch.cuda, "current_stream"), (torch.cuda, "get_rng_state"),
        (torch.cuda, "set_rng_state"), (torch.cuda, "manual_seed"), (torch.cuda.random, "get_rng_state"),
        (megatron_random, "_get_cuda_rng_state"), (megatron_random, "_set_cuda_rng_state"),
    ]
    before = [getattr(owner, name) for owner, name in watched]
    modes_before = torch._C._len_torch_function_stack()

    assert activate_cpu_compat() is False
    assert not cpu_compat_active()
    assert [getattr(owner, name) for owner, name in watched] == before
    assert torch._C._len_torch_function_stack() == modes_before


def test_pipeline_p2p_flags() -> None:
    from megatron_acodm.compat import pipeline_p2p_flags

    # gloo: interleaved schedules need blocking, unbatched p2p; 1F1B keeps megatron's default.
    assert pipeline_p2p_flags(2, backend="gloo") == {"overlap_p2p_comm": False, "batch_p2p_comm": False}
    assert pipeline_p2p_flags(None, backend="gloo") == {"overlap_p2p_comm": False, "batch_p2p_comm": True}
    # nccl: Megatron-LM's defaults.
    assert pipeline_p2p_flags(2, backend="nccl") == {"overlap_p2p_comm": True, "batch_p2p_comm": False}
    assert pipeline_p2p_flags(1, backend="nccl") == {"overlap_p2p_comm": False, "batch_p2p_comm": True}
