#!/usr/bin/env python
"""Benchmark the gradient-sketch kernels: the torch reference against the Triton kernels.

    python bench/sketch_kernels.py [--repeats 5] [--output-dir bench/results]

Shapes of a realistic step on one layer: T = 8192 tokens, x = the `linear_fc2` input (ffn 8192),
delta = its output gradient (hidden 2048), k = 256 probes, K = 8 and 32 domains, bf16 activations.
Timed: `project_and_segment_sum` (the per-micro-batch hook work) and `gram` (once a
step).

- On a GPU: both implementations, timed by `triton.testing.do_bench` (CUDA events, L2 flushed
  before every call, as many calls as fit its 100 ms budget; --repeats does not apply), achieved
  bandwidth (x and delta read once) and TFLOP/s (the projections are 2 T k (n + m) flops) against
  the GPU's peaks and its roofline.
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
from typing import Callable, Optional, Sequence

import torch

from common import describe_machine, time_cpu, time_gpu, write_json
from megatron_acodm.sketch.kernel_inputs import SEED, inputs, relative_difference

TOKENS = 8192
FFN = 8192  # n: linear_fc2's input features
HIDDEN = 2048  # m: its output features
DIM = 256
DOMAIN_COUNTS = (8, 32)
TINY = dict(tokens=256, in_features=256, out_features=128, dim=32, num_domains=8)
REALISTIC = tuple(dict(tokens=TOKENS, in_features=FFN, out_features=HIDDEN, dim=DIM, num_domains=count) for count in DOMAIN_COUNTS)
# By device-name fragment, most specific first: HBM bandwidth and dense (no sparsity) bf16 tensor-core
# throughput, from NVIDIA's data sheets.
PEAKS = (
    ("H200 NVL", {"bytes_per_s": 4.8e12, "bf16_flop_per_s": 835e12}),
    ("H200", {"bytes_per_s": 4.8e12, "bf16_flop_per_s": 989e12}),
    ("H100 NVL", {"bytes_per_s": 3.9e12, "bf16_flop_per_s": 835e12}),
    ("H100 PCIe", {"bytes_per_s": 2.0e12, "bf16_flop_per_s": 756e12}),
    ("H100", {"bytes_per_s": 3.35e12, "bf16_flop_per_s": 989e12}),
    ("A100-SXM4-80GB", {"bytes_per_s": 2.039e12, "bf16_flop_per_s": 312e12}),
    ("A100", {"bytes_per_s": 1.555e12, "bf16_flop_per_s": 312e12}),
)


def time_ms(function: Callable[[], object], repeats: int, cuda: bool) -> dict:
    """`median_ms`, `min_ms` and `repeats` (calls timed) of `function`."""
    return time_gpu(function) if cuda else time_cpu(function, repeats)


def device_peaks(device_name: str) -> Optional[dict]:
    """`bytes_per_s` and `bf16_flop_per_s` of the device, None for one not in PEAKS."""
    return next((peaks for fragment, peaks in PEAKS if fragment in device_name), None)


def record(implementation: str, operation: str, num_domains: int, dtype: torch.dtype, timing: dict, **extra) -> dict:
    return {
        "implementation": implementation,
        "operation": operation,
        "num_domains": num_domains,
        "dtype": str(dtype).removeprefix("torch."),
        **timing,
        **extra,
    }


def projection_rates(median_ms: float, dtype: torch.dtype, device_name: str, shape: dict) -> dict:
    """Bandwidth (x and delta read once, probes once) and flop rate of one projection call at
    `shape` (tokens, in_features, out_features, dim), and, on a device in PEAKS, their fractions of
    its peaks and of its roofline (the time the larger of the two would take at peak)."""
    element = torch.finfo(dtype).bits // 8
    features = shape["in_features"] + shape["out_features"]
    moved = (shape["tokens"] + shape["dim"]) * features * element
    flops = 2 * shape["tokens"] * shape["dim"] * features
    seconds = median_ms / 1e3
    rates = {"achieved_GB_per_s": moved / seconds / 1e9, "achieved_TFLOP_per_s": flops / seconds / 1e12}
    peaks = device_peaks(device_name)
    if peaks is not None:
        roofline_s = max(moved / peaks["bytes_per_s"], flops / peaks["bf16_flop_per_s"])
        rates.update(
            peak_GB_per_s=peaks["bytes_per_s"] / 1e9,
            fraction_of_peak_bandwidth=moved / seconds / peaks["bytes_per_s"],
            peak_bf16_TFLOP_per_s=peaks["bf16_flop_per_s"] / 1e12,
            fraction_of_peak_flops=flops / seconds / peaks["bf16_flop_per_s"],
            roofline_ms=roofline_s * 1e3,
            fraction_of_roofline=roofline_s / seconds,
        )
    return rates


def realistic_shapes(implementations: dict, device: str, device_name: str, repeats: int, shapes: Sequence[dict] = REALISTIC) -> list[dict]:
    """Each implementation's projection (bf16 activations) and Gram (fp32) timed at each shape."""
    cuda = device == "cuda"
    results = []
    for shape in shapes:
        arguments = inputs(**shape, dtype=torch.bfloat16, device=device)
        sketches = torch.randn(shape["num_domains"], shape["dim"], device=device)
        for name, module in implementations.items():
            timing = time_ms(partial(module.project_and_segment_sum, *arguments), repeats, cuda)
            results.append(record(
                name, "project_and_segment_sum", shape["num_domains"], torch.bfloat16, timing, tokens=shape["tokens"],
                **projection_rates(timing["median_ms"], torch.bfloat16, device_name, shape),
            ))
            timing = time_ms(partial(module.gram, sketches), repeats, cuda)
            results.append(record(name, "gram", shape["num_domains"], torch.float32, timing, tokens=shape["tokens"]))
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
        timing = time_cpu(partial(call, kernels), repeats)
        results.append(record(
            "triton (TRITON_INTERPRET=1)", operation, TINY["num_domains"], dtype, timing,
            shape=TINY, max_difference_to_reference_relative_to_its_max=relative_difference(call(kernels), call(reference)),
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
