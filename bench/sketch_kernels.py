#!/usr/bin/env python
"""Benchmark the gradient-sketch kernels: the torch reference against the Triton kernels.

    python bench/sketch_kernels.py [--repeats 5] [--output-dir bench/results]

Shapes of a realistic step on one layer: T = 8192 tokens, x = the `linear_fc2` input (ffn 8192),
delta = its output gradient (hidden 2048), k = 256 probes, K = 8 and 32 domains, bf16 activations.
Timed: `project_and_segment_sum` (the per-micro-batch hook work) and `gram` (once a
step).

- On a GPU: both implementations, timed by `triton.testing.do_bench` (CUDA events, L2 flushed
  before every call, as many calls as fit its 100 ms budget; --repeats does not apply), achieved
  bandwidth (x and delta read once) against the GPU's peak, and achieved TFLOP/s (the projections
  are 2 T k (n + m) flops).
- On a CPU (`torch.utils.benchmark`, --repeats calls or more): the reference only, plus the Triton
  kernels under TRITON_INTERPRET=1 on a tiny shape, checked against the reference. Interpretation
  runs each program in numpy one after another: it shows the kernels run and agree, and its time is
  no performance measure.

Writes <output-dir>/sketch_kernels.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings
from functools import partial
from typing import Callable, Optional

import torch

from common import describe_machine, time_cpu, time_gpu, write_json

TOKENS = 8192
FFN = 8192  # n: linear_fc2's input features
HIDDEN = 2048  # m: its output features
DIM = 256
DOMAIN_COUNTS = (8, 32)
TINY = dict(tokens=256, in_features=256, out_features=128, dim=32, num_domains=8)
SEED = 1234
# HBM bandwidth by device-name fragment, most specific first (vendor data sheets).
PEAK_BANDWIDTH_BYTES_PER_S = (
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100", 1.555e12),
)


def inputs(tokens: int, in_features: int, out_features: int, dim: int, num_domains: int, dtype: torch.dtype, device: str):
    """x, delta, u, v, token_domain for one layer's micro-batch; every domain but the last gets tokens."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(tokens, in_features, generator=generator).to(device, dtype)
    delta = torch.randn(tokens, out_features, generator=generator).to(device, dtype)
    u = (torch.randint(0, 2, (dim, out_features), generator=generator) * 2 - 1).to(device, dtype)
    v = (torch.randint(0, 2, (dim, in_features), generator=generator) * 2 - 1).to(device, dtype)
    token_domain = torch.randint(0, num_domains - 1, (tokens,), generator=generator).to(device)
    return x, delta, u, v, token_domain, num_domains


def time_ms(function: Callable[[], object], repeats: int, cuda: bool) -> dict:
    """`median_ms`, `min_ms` and `repeats` (calls timed) of `function`."""
    return time_gpu(function) if cuda else time_cpu(function, repeats)


def peak_bandwidth(device_name: str) -> Optional[float]:
    return next((peak for fragment, peak in PEAK_BANDWIDTH_BYTES_PER_S if fragment in device_name), None)


def record(implementation: str, operation: str, num_domains: int, dtype: torch.dtype, timing: dict, **extra) -> dict:
    return {
        "implementation": implementation,
        "operation": operation,
        "num_domains": num_domains,
        "dtype": str(dtype).removeprefix("torch."),
        **timing,
        **extra,
    }


def projection_rates(median_ms: float, dtype: torch.dtype, device_name: str) -> dict:
    """Bandwidth (x and delta read once, probes once) and flop rate of one projection call."""
    element = torch.finfo(dtype).bits // 8
    moved = (TOKENS * (FFN + HIDDEN) + DIM * (FFN + HIDDEN)) * element
    flops = 2 * TOKENS * DIM * (FFN + HIDDEN)
    seconds = median_ms / 1e3
    rates = {"achieved_GB_per_s": moved / seconds / 1e9, "achieved_TFLOP_per_s": flops / seconds / 1e12}
    peak = peak_bandwidth(device_name)
    if peak is not None:
        rates["peak_GB_per_s"] = peak / 1e9
        rates["fraction_of_peak_bandwidth"] = moved / seconds / peak
    return rates


def realistic_shapes(implementations: dict, device: str, device_name: str, repeats: int) -> list[dict]:
    cuda = device == "cuda"
    results = []
    for num_domains in DOMAIN_COUNTS:
        arguments = inputs(TOKENS, FFN, HIDDEN, DIM, num_domains, torch.bfloat16, device)
        sketches = torch.randn(num_domains, DIM, device=device)
        for name, module in implementations.items():
            timing = time_ms(partial(module.project_and_segment_sum, *arguments), repeats, cuda)
            results.append(record(
                name, "project_and_segment_sum", num_domains, torch.bfloat16, timing,
                **projection_rates(timing["median_ms"], torch.bfloat16, device_name),
            ))
            timing = time_ms(partial(module.gram, sketches), repeats, cuda)
            results.append(record(name, "gram", num_domains, torch.float32, timing))
        del arguments
    return results


def interpreted_tiny(repeats: int) -> list[dict]:
    """The Triton kernels on CPU under the interpreter: they run and match the reference."""
    from megatron_acodm.sketch import kernels, reference

    results = []
    arguments = inputs(**TINY, dtype=torch.bfloat16, device="cpu")
    sketches = torch.randn(TINY["num_domains"], TINY["dim"])
    for operation, dtype, call in (
        ("project_and_segment_sum", torch.bfloat16, lambda module: module.project_and_segment_sum(*arguments)),
        ("gram", torch.float32, lambda module: module.gram(sketches)),
    ):
        expected, got = call(reference), call(kernels)
        expected, got = (expected[0], got[0]) if isinstance(expected, tuple) else (expected, got)
        timing = time_cpu(partial(call, kernels), repeats)
        results.append(record(
            "triton (TRITON_INTERPRET=1)", operation, TINY["num_domains"], dtype, timing,
            shape=TINY, max_difference_to_reference_relative_to_its_max=float((got - expected).abs().max() / expected.abs().max()),
            note="interpreted in numpy, one program at a time: a correctness demonstration, not a performance measure",
        ))
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| implementation | operation | K | dtype | median ms | GB/s | TFLOP/s |", "|---|---|---|---|---|---|---|"]
    for row in results:
        rate = row.get("achieved_GB_per_s")
        flops = row.get("achieved_TFLOP_per_s")
        lines.append(
            f"| {row['implementation']} | {row['operation']} | {row['num_domains']} | {row['dtype']} | "
            f"{row['median_ms']:.3f} | {'' if rate is None else f'{rate:.1f}'} | {'' if flops is None else f'{flops:.2f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")

    cuda = torch.cuda.is_available()
    if not cuda:
        # Triton reads this when the kernels are defined, i.e. when `kernels` is first imported below.
        os.environ["TRITON_INTERPRET"] = "1"
    from megatron_acodm.sketch import kernels, reference

    device = "cuda" if cuda else "cpu"
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    implementations = {"reference": reference, "triton": kernels} if cuda else {"reference": reference}
    torch.manual_seed(SEED)
    results = realistic_shapes(implementations, device, device_name, options.repeats)
    if not cuda:
        results += interpreted_tiny(options.repeats)

    report = {
        "config": {
            "tokens": TOKENS, "in_features_ffn": FFN, "out_features_hidden": HIDDEN, "dim": DIM,
            "domain_counts": list(DOMAIN_COUNTS), "activation_dtype": "bfloat16", "repeats": options.repeats,
        },
        "machine": describe_machine(
            ("device", "device_name", "cpu_count", "torch_threads", "torch", "triton", "python"),
            device=device, device_name=device_name,
        ),
        "results": results,
    }
    os.makedirs(options.output_dir, exist_ok=True)
    path = os.path.join(options.output_dir, "sketch_kernels.json")
    write_json(path, report)
    print(markdown(results))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
