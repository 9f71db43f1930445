"""Part 3, kernel speed: `bench/sketch_kernels.py`'s timing at the Pythia-1B shape (8k and 16k tokens,
linear_fc2 8192 -> 2048, k = 256, 16 rows), both implementations, against the GPU's roofline."""

from __future__ import annotations

from .profiles import Profile

CPU_TIMING_REPEATS = 3  # calls timed per kernel on the CPU; on a GPU do_bench decides


def faster(results: list[dict]) -> list[dict]:
    """Per operation and token count: which implementation's median is lower, and by how much."""
    verdicts = []
    for operation, tokens in dict.fromkeys((row["operation"], row["tokens"]) for row in results):
        mine = [row for row in results if (row["operation"], row["tokens"]) == (operation, tokens)]
        rows = sorted(mine, key=lambda row: row["median_ms"])
        verdicts.append({"operation": operation, "tokens": tokens, "faster": rows[0]["implementation"],
                         "speedup": rows[-1]["median_ms"] / rows[0]["median_ms"]})
    return verdicts


def kernel_speed(profile: Profile, device: str, device_name: str) -> dict:
    from megatron_acodm.sketch import kernels, reference
    from sketch_kernels import realistic_shapes

    implementations = {"reference": reference, "triton": kernels}
    results = realistic_shapes(implementations, device, device_name, CPU_TIMING_REPEATS, profile.speed_shapes)
    return {"results": results, "faster": faster(results), "ok": True,
            "timing": "triton.testing.do_bench on a GPU (L2 flushed per call); torch.utils.benchmark on the CPU"}
