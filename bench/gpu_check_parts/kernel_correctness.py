"""Part 2, kernel correctness: the Triton sketch kernels through `sketch.backend` against the torch
reference, fp32 and bf16: the ragged case the tests interpret (203 tokens, one empty domain), the
trainer's 2K rows (row 2k + h for half h of domain k, from `half_segments`, with empty halves and a
sequence length that is no multiple of the token tile), and the timed step shape; Gram matrices of
[2K, k] and of three row blocks. Passing: max |triton - reference| / max |reference| at most
TOLERANCE, and rows without tokens exactly zero."""

from __future__ import annotations

from functools import partial
from typing import Callable

from .profiles import Profile

# max |triton - reference| / max |reference|: the same exact products (bf16 x bf16 is exact in fp32)
# summed in another fp32 order; the interpreted tests measure about 3e-7.
TOLERANCE = 1e-4
# Sequences' domains of the 2K-row case: domain 7 absent, domains 2 and 4 with one sequence, so
# rows 5, 9, 14 and 15 get no tokens.
HALF_DOMAINS = (0, 3, 0, 1, 3, 2, 0, 3, 5, 1, 3, 4, 6, 5, 6, 6)
STEP_DOMAINS = (0, 3, 3, 6)  # the 4 sequences of the timed shape's micro-batch


def halves_inputs(shape: dict, sequence_domains: tuple, dtype, device: str):
    """`inputs` whose tokens carry the rows the trainer gives them: equal sequences, each domain's
    sequences dealt into two halves (`half_segments`: row 2k + h)."""
    import torch

    from megatron_acodm.sketch import half_segments
    from megatron_acodm.sketch.kernel_inputs import inputs

    rows = torch.from_numpy(half_segments(sequence_domains)).repeat_interleave(shape["tokens"] // len(sequence_domains))
    return inputs(**shape, dtype=dtype, device=device, token_domain=rows)


def projection_cases(profile: Profile) -> dict[str, Callable]:
    from megatron_acodm.sketch.kernel_inputs import ragged_inputs

    return {
        "ragged": ragged_inputs,
        "halves": partial(halves_inputs, profile.halves_shape, HALF_DOMAINS),
        "step": partial(halves_inputs, profile.step_shape, STEP_DOMAINS),
    }


def agreement(case: str, operation: str, dtype, got, expected, empty_rows=None) -> dict:
    """How far the kernel is from the reference, and whether that passes."""
    from megatron_acodm.sketch.kernel_inputs import relative_difference

    difference = relative_difference(got, expected)
    result = {"case": case, "operation": operation, "dtype": str(dtype).removeprefix("torch."), "shape": list(got.shape),
              "relative_difference": difference, "tolerance": TOLERANCE, "ok": difference <= TOLERANCE}
    if empty_rows is not None:
        result["empty_rows"] = int(empty_rows.sum())
        result["empty_rows_exact_zero"] = not bool(got[empty_rows].any())
        result["ok"] = result["ok"] and result["empty_rows_exact_zero"]
    return result


def kernel_correctness(profile: Profile, device: str) -> dict:
    import torch

    from megatron_acodm.sketch import backend, reference
    from megatron_acodm.sketch.kernel_inputs import sketch_rows

    chosen, why = backend.choose_backend(torch.device(device))
    cases = []
    for case, make in projection_cases(profile).items():
        for dtype in (torch.float32, torch.bfloat16):
            arguments = make(dtype, device)
            token_domain, num_rows = arguments[4], arguments[5]
            empty = torch.bincount(token_domain, minlength=num_rows) == 0
            got = backend.project_and_segment_sum(*arguments)
            cases.append(agreement(case, "project_and_segment_sum", dtype, got, reference.project_and_segment_sum(*arguments), empty))
    for rows, columns in profile.gram_shapes:
        sketches = sketch_rows(rows, columns, device)
        cases.append(agreement(f"{rows}x{columns}", "gram", torch.float32, backend.gram(sketches), reference.gram(sketches)))
    result = {
        "backend": chosen, "backend_reason": why, "tolerance": TOLERANCE,
        "tolerance_meaning": "max |triton - reference| / max |reference|; rows without tokens must be exactly zero",
        "cases": cases, "ok": chosen == "triton" and all(case["ok"] for case in cases),
    }
    if not result["ok"]:
        wrong = [f"{case['case']} {case['operation']} {case['dtype']}" for case in cases if not case["ok"]]
        result["error"] = f"backend {chosen} ({why})" if chosen != "triton" else f"beyond tolerance: {', '.join(wrong)}"
    return result
