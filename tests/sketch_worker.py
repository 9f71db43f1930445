"""Computes gradient sketches of a tiny megatron GPT for tests/e2e/test_sketch.py; writes them to `--out`.

Modes:
- `single` (one process): builds the model, saves its initial weights with dist_checkpointing to
  `--checkpoint`, then records the exact per-domain gradients of the sketched layers (one backward
  per domain), sketches for several dims and seeds (many sketchers hooked at once), sketches of
  one global batch cut into 1, 2 or 4 micro-batches, sketches of the bf16 model, and the hooks
  found on the model's modules before, with and after a sketcher.
- `layouts` (under `torchrun --nproc-per-node 2`): loads those weights at each layout of `--runs`
  (`tp=2`, `pp=2`, `dp=2`) and records the all-reduced sketches for the same dims and seeds.
- `kernels` (run with TRITON_INTERPRET=1 set): the Triton kernels and the torch reference on random
  inputs, through `backend` (so the choice of backend is exercised too).
- `compile` (without TRITON_INTERPRET): compiles the kernels ahead of time for Hopper (sm_90),
  which needs no GPU, so that what the interpreter cannot check (types, layouts, tl.dot shapes)
  is checked for the real target.

Sketches use the summed (not averaged) token loss (`calculate_per_token_loss`), so the gradient of
a global batch does not depend on how it is cut into micro-batches.
"""

from __future__ import annotations

import argparse
import logging
import os
from functools import partial
from typing import Callable, Iterator

import torch

# The kernel inputs are the ones the kernel benchmark and the GPU check use.
from megatron_acodm.sketch.kernel_inputs import ragged_inputs, sketch_rows

SEED = 1234
VOCAB = 512
SEQ = 32
GLOBAL_BATCH = 8
NUM_DOMAINS = 4  # domain 3 gets no sequence: its sketch and gradient must be exactly zero
SEQUENCE_DOMAINS = [0, 0, 1, 2, 2, 2, 0, 1]
# Domain 1 echoes domain 0 (its sequences are domain 0's with every fourth token redrawn), so their
# gradients align and the Gram matrix has off-diagonal entries worth estimating; domain 2 is apart.
ECHOED_DOMAIN, ECHO_DOMAIN = 0, 1
SKETCH_LAYERS = "top3"  # layers 1, 2, 3 of 4: at PP=2 one on the first stage, two on the second
DIMS = (16, 64, 256, 1024)
SEEDS_PER_DIM = 8
LAYOUT_DIM = 256
MEAN_DIM = 16
MEAN_SEEDS = 200
SPLIT_DIM = 64
NUM_LAYERS = 4
# The model, as the trainer's command line gives it (without biases, which it does not offer).
MODEL_ARGV = [
    "--data-path", "unused", "--tokenizer-model", "unused", "--train-iters", "1",
    "--num-layers", str(NUM_LAYERS), "--hidden-size", "64", "--ffn-hidden-size", "128", "--num-attention-heads", "4",
    "--seq-length", str(SEQ), "--hidden-dropout", "0", "--attention-dropout", "0",
    "--position-embedding-type", "rope", "--normalization", "RMSNorm", "--swiglu", "--untie-embeddings-and-output-weights",
]


def global_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    sequences = torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=generator)
    domains = torch.tensor(SEQUENCE_DOMAINS)
    echoed = sequences[domains == ECHOED_DOMAIN][: int((domains == ECHO_DOMAIN).sum())].clone()
    redrawn = torch.arange(SEQ + 1) % 4 == 0
    echoed[:, redrawn] = torch.randint(0, VOCAB, (len(echoed), int(redrawn.sum())), generator=generator)
    sequences[domains == ECHO_DOMAIN] = echoed
    return {
        "tokens": sequences[:, :-1].contiguous(),
        "labels": sequences[:, 1:].contiguous(),
        "position_ids": torch.arange(SEQ).expand(GLOBAL_BATCH, SEQ),
        "domain_ids": domains,
    }


def micro_batches(batch: dict[str, torch.Tensor], sequences: slice, size: int) -> list[dict[str, torch.Tensor]]:
    mine = {name: tensor[sequences] for name, tensor in batch.items()}
    count = len(mine["tokens"])
    return [{name: tensor[start : start + size] for name, tensor in mine.items()} for start in range(0, count, size)]


def summed_loss(loss_mask: torch.Tensor, token_losses: torch.Tensor):
    loss_sum = (token_losses.float() * loss_mask).sum()
    return loss_sum, loss_mask.sum().to(torch.int), {"loss": loss_sum.detach().clone()}


def forward_step(sketchers: list, only_domain: int | None, data_iterator: Iterator[dict], model) -> tuple[torch.Tensor, Callable]:
    batch = next(data_iterator)
    for sketcher in sketchers:
        sketcher.set_micro_batch_segments(batch["domain_ids"])
    token_losses = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    domains = batch["domain_ids"][:, None].expand_as(batch["labels"])
    mask = torch.ones_like(domains, dtype=torch.float32) if only_domain is None else (domains == only_domain).float()
    return token_losses, partial(summed_loss, mask)


def build_model(tp: int = 1, pp: int = 1, bf16: bool = False) -> torch.nn.Module:
    from megatron.core import parallel_state

    from megatron_acodm.arguments import parse_args
    from megatron_acodm.model import gpt_model_provider, pad_vocab_size

    layout_argv = ["--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp)] + (["--bf16"] if bf16 else [])
    args = parse_args(MODEL_ARGV + layout_argv)
    args.add_bias_linear = False
    args.padded_vocab_size = pad_vocab_size(VOCAB, args.make_vocab_size_divisible_by, tp)
    model = gpt_model_provider(
        args, pre_process=parallel_state.is_pipeline_first_stage(), post_process=parallel_state.is_pipeline_last_stage()
    )
    model.config.calculate_per_token_loss = True  # summed loss: no division by tokens or micro-batches
    return model


def load(model: torch.nn.Module, checkpoint: str) -> None:
    from megatron.core import dist_checkpointing

    model.load_state_dict(dist_checkpointing.load({"model0": model.sharded_state_dict()}, checkpoint)["model0"])


def run_batches(model, batches: list[dict], sketchers: list, only_domain: int | None = None) -> None:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    get_forward_backward_func()(
        forward_step_func=partial(forward_step, sketchers, only_domain),
        data_iterator=iter(batches),
        model=[model],
        num_microbatches=len(batches),
        seq_length=SEQ,
        micro_batch_size=len(batches[0]["tokens"]),
        forward_only=False,
    )


def seed_grid() -> list[tuple[int, int]]:
    """(dim, seed) of every sketcher the single run and the layouts share."""
    return [(dim, seed) for dim in DIMS for seed in range(SEEDS_PER_DIM)]


def sketch_run(model, batches: list[dict], grid: list[tuple[int, int]]) -> tuple[dict[tuple[int, int], torch.Tensor], list[int]]:
    """All-reduced sketches for each (dim, seed), from one forward-backward with every sketcher
    hooked, and the layers hooked on this rank."""
    from megatron_acodm.sketch import GradientSketcher

    sketchers = [GradientSketcher(model, NUM_DOMAINS, layers=SKETCH_LAYERS, dim=dim, seed=seed) for dim, seed in grid]
    run_batches(model, batches, sketchers)
    model.zero_grad(set_to_none=True)
    results = {key: _summed_over_world(sketcher.step_sketches()).cpu() for key, sketcher in zip(grid, sketchers)}
    for sketcher in sketchers:
        sketcher.remove()
    return results, sketchers[0].local_layers


def _summed_over_world(sketch: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(sketch)  # as the training step does, packed with its other signals
    return sketch


def sketches_of(model, batches: list[dict], grid: list[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
    return sketch_run(model, batches, grid)[0]


def hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
        + len(module._backward_pre_hooks)
        for module in model.modules()
    )


def exact_domain_gradients(model, batch: dict) -> torch.Tensor:
    """`[K, P]` float64: each domain's summed gradient of the sketched layers' linear_fc2 weights, flattened."""
    from megatron_acodm.sketch import parse_sketch_layers

    layers = parse_sketch_layers(SKETCH_LAYERS, NUM_LAYERS)
    weights = [model.decoder.layers[index].mlp.linear_fc2.weight for index in layers]
    gradients = []
    for domain in range(NUM_DOMAINS):
        model.zero_grad(set_to_none=True)
        run_batches(model, micro_batches(batch, slice(None), 2), [], only_domain=domain)
        gradients.append(torch.cat([
            torch.zeros(weight.numel(), dtype=torch.float64) if weight.grad is None else weight.grad.double().reshape(-1)
            for weight in weights
        ]))
    model.zero_grad(set_to_none=True)
    return torch.stack(gradients)


def misuse_errors(model, sketcher, batch: dict) -> list[str]:
    """The errors of a forward with gradient and no domain ids, too few domain ids, an unknown domain."""
    errors = []
    for domain_ids in (None, batch["domain_ids"][:3], torch.full((GLOBAL_BATCH,), NUM_DOMAINS)):
        try:
            if domain_ids is not None:
                sketcher.set_micro_batch_segments(domain_ids)
            model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        except (RuntimeError, ValueError) as error:
            errors.append(str(error))
    return errors


def single(checkpoint: str) -> dict:
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    from megatron.core.transformer.module import Float16Module

    from megatron_acodm.sketch import GradientSketcher

    parallel_state.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(SEED)
    model = build_model()
    os.makedirs(checkpoint)
    dist_checkpointing.save({"model0": model.sharded_state_dict()}, checkpoint)
    batch = global_batch()
    results: dict = {"hooks_without_sketcher": hook_count(model)}

    results["exact_gradients"] = exact_domain_gradients(model, batch)
    results["hooks_after_exact_runs"] = hook_count(model)

    probe = GradientSketcher(model, NUM_DOMAINS, layers=SKETCH_LAYERS, dim=8, seed=0)
    results["hooks_with_sketcher"] = hook_count(model)
    results["hooked_modules"] = [
        name for name, module in model.named_modules() if module._forward_hooks or module._backward_hooks
    ]
    with torch.no_grad():  # evaluation: no domains set, nothing sketched, no error
        model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    results["sketch_after_no_grad_forward"] = probe.step_sketches().cpu()
    results["misuse_errors"] = misuse_errors(model, probe, batch)
    probe.remove()
    results["hooks_after_remove"] = hook_count(model)

    results["sketches"] = sketches_of(model, micro_batches(batch, slice(None), 2), seed_grid())
    mean_grid = [(MEAN_DIM, 1000 + seed) for seed in range(MEAN_SEEDS)]
    results["mean_sketches"] = torch.stack(list(sketches_of(model, micro_batches(batch, slice(None), 2), mean_grid).values()))
    results["split_sketches"] = {
        count: sketches_of(model, micro_batches(batch, slice(None), GLOBAL_BATCH // count), [(SPLIT_DIM, 7)])[(SPLIT_DIM, 7)]
        for count in (1, 2, 4)
    }

    bf16_model = build_model(bf16=True)
    load(bf16_model, checkpoint)
    wrapped = Float16Module(bf16_model.config, bf16_model)
    layout_grid = [(LAYOUT_DIM, seed) for seed in range(SEEDS_PER_DIM)]
    results["bf16_sketches"] = sketches_of(wrapped, micro_batches(batch, slice(None), 2), layout_grid)
    results["bf16_param_dtype"] = str(bf16_model.decoder.layers[-1].mlp.linear_fc2.weight.dtype)
    parallel_state.destroy_model_parallel()
    return results


def layout(spec: str, checkpoint: str) -> dict:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    sizes = {"tp": 1, "pp": 1, "dp": 1}
    key, _, value = spec.partition("=")
    sizes[key] = int(value)
    parallel_state.initialize_model_parallel(sizes["tp"], sizes["pp"])
    model_parallel_cuda_manual_seed(SEED)
    model = build_model(tp=sizes["tp"], pp=sizes["pp"])
    load(model, checkpoint)
    dp_rank, dp_size = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    assert dp_size == sizes["dp"], f"{spec}: data-parallel size {dp_size}"
    share = GLOBAL_BATCH // dp_size
    batches = micro_batches(global_batch(), slice(dp_rank * share, (dp_rank + 1) * share), 2)
    sketches, local_layers = sketch_run(model, batches, [(LAYOUT_DIM, seed) for seed in range(SEEDS_PER_DIM)])
    parallel_state.destroy_model_parallel()
    return {"sketches": sketches, "local_layers": local_layers}


def kernels() -> dict:
    """Reference and Triton (interpreted) outputs on random inputs: uneven domains, one empty, several dtypes."""
    from megatron_acodm.sketch import backend, reference

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger(backend.__name__).addHandler(handler)
    logging.getLogger(backend.__name__).setLevel(logging.INFO)

    results: dict = {"choice": backend.choose_backend(torch.device("cpu"))}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        arguments = ragged_inputs(dtype, "cpu")  # domain 0 about half of the tokens, domain 3 none
        results[f"project_{dtype}"] = (
            backend.project_and_segment_sum(*arguments), reference.project_and_segment_sum(*arguments)
        )
    x, *others = ragged_inputs(torch.float32, "cpu")
    strided_x = x.T.contiguous().T  # the same values, not contiguous
    arguments = (strided_x, *others)
    results["project_strided"] = (backend.project_and_segment_sum(*arguments), reference.project_and_segment_sum(*arguments))
    for count in (5, 37):  # 37: three blocks of Gram rows
        sketches = sketch_rows(count, 70, "cpu")  # row 3: an empty domain
        results[f"gram_{count}"] = (backend.gram(sketches), reference.gram(sketches))
    results["gram_zero"] = (
        backend.gram(torch.zeros(4, 16)), reference.gram(torch.zeros(4, 16))
    )
    results["log"] = messages
    return results


def compile_for_hopper() -> dict:
    """{kernel/dtype: PTX} for sm_90, each kernel compiled as a GPU run would specialise it."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget

    from megatron_acodm.sketch import kernels

    def compiled(kernel, pointer_types: list[str], constexprs: dict) -> str:
        names = list(inspect.signature(kernel.fn).parameters)
        scalars = len(names) - len(pointer_types) - len(constexprs)
        signature = dict(zip(names, pointer_types + ["i32"] * scalars + ["constexpr"] * len(constexprs)))
        source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        return triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]

    tiles = {"TOKENS": 64, "PROBES": 64, "FEATURES": 64, "UPCAST": False}
    return {
        **{
            f"project_{dtype}": compiled(kernels._project_and_segment_sum_kernel, [f"*{dtype}"] * 4 + ["*i64", "*fp32"], tiles)
            for dtype in ("bf16", "fp16", "fp32")
        },
        "gram": compiled(kernels._gram_kernel, ["*fp32"] * 2, {"DOMAINS": 16, "COLUMNS": 64}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["single", "layouts", "kernels", "compile"])
    parser.add_argument("--checkpoint")
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    if options.mode in ("kernels", "compile"):
        torch.save(kernels() if options.mode == "kernels" else compile_for_hopper(), options.out)
        return

    import torch.distributed as dist

    from megatron_acodm.compat import activate_cpu_compat, init_distributed

    activate_cpu_compat()
    rank, _ = init_distributed()
    if options.mode == "single":
        results = single(options.checkpoint)
    else:
        results = {spec: layout(spec, options.checkpoint) for spec in options.runs}
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, {spec: result["local_layers"] for spec, result in results.items()})
        for spec in results:
            results[spec]["local_layers"] = [ranks[spec] for ranks in gathered]
    if rank == 0:
        torch.save(results, options.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":  # dist_checkpointing's saver spawns a process that re-imports this file
    main()
