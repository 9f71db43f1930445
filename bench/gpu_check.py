#!/usr/bin/env python
"""The GPU path checked end to end, sized for one H100 in under 8 minutes; `bench/gpu_check.sh` runs it.

    bench/gpu_check.sh OUT_DIR [WHEEL_DIR] [--cpu]
    python bench/gpu_check.py OUT_DIR [--wheel-dir DIR] [--cpu]     (what the shell script runs)
    python bench/gpu_check.py --list-missing                         (the WHEELS not installed)

Parts, each timed, written to OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md as soon as it ends
(a run cut short keeps what it finished); a part that fails is recorded with its error and the
others still run, since one device session should bring back everything it can. Each part is a
module of `gpu_check_parts/`, whose docstring says what it measures:
1. versions: Python, torch, CUDA, Triton, megatron-core, the GPU; first, WHEELS (`wheels.py`) must
   import, or one `error:` line names the missing ones and the `pip download` command that fetches them.
2. kernel_correctness: the Triton sketch kernels against the torch reference, fp32 and bf16.
3. kernel_speed: both implementations timed at the Pythia-1B shape, against the GPU's roofline.
4. corpus: a synthetic corpus of 8 domains, its tokenizer and its indexing.
5. host_batch: what building one step's batch costs the host, at each model's shape.
6. training: Pythia-like 160M and 1B models under `--mixer static`, `acodm` and the acodm proxy:
   step times and peak memory against static.
The sizes of both modes are in `profiles.py`, the report and its markdown in `report.py`.

--cpu: the same parts on tiny shapes (Triton interpreted, `TRITON_INTERPRET=1`; a 2-layer x 64
model, seq 64, a few steps), so that tests/e2e/test_gpu_check.py keeps this script working where no
GPU is. Without --cpu a machine without CUDA is refused rather than checked on the CPU by surprise.
Exit status: 0 when every part passed, 1 when one failed (the JSON says which), 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import warnings
from functools import partial
from typing import Optional

from gpu_check_parts.corpus import Corpus, build_corpus
from gpu_check_parts.host_batch import host_batch
from gpu_check_parts.kernel_correctness import kernel_correctness
from gpu_check_parts.kernel_speed import kernel_speed
from gpu_check_parts.profiles import BUDGET_S, CPU, GPU, THREADS
from gpu_check_parts.report import REPORT, SUMMARY, Check
from gpu_check_parts.training import training
from gpu_check_parts.versions import versions
from gpu_check_parts.wheels import installed, missing_wheels, missing_wheels_message

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", nargs="?", metavar="OUT_DIR", help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--wheel-dir", default=os.path.join(REPO, ".whl"), help="the carried wheels, named in the missing-wheel error")
    parser.add_argument("--cpu", action="store_true", help="the CPU rehearsal: interpreted Triton, tiny shapes")
    parser.add_argument("--list-missing", action="store_true", help="print the WHEELS not installed, one a line, and exit")
    return parser.parse_args()


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def bad_input(options: argparse.Namespace) -> Optional[str]:
    """The one-line reason the check cannot start, or None."""
    if not options.output_dir:
        return "give OUT_DIR, the folder for gpu_check.json and gpu_check.md"
    if os.path.exists(options.output_dir) and not os.path.isdir(options.output_dir):
        return f"OUT_DIR {options.output_dir} is a file; give a folder (it is created if missing)"
    missing = missing_wheels()
    if missing:
        return missing_wheels_message(missing, options.wheel_dir)
    import torch

    if not options.cpu and not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}); run on a GPU machine, or pass --cpu for the CPU rehearsal on tiny shapes"
    return None


def check(options: argparse.Namespace, output_dir: str) -> dict:
    import torch

    profile, device = (CPU, "cpu") if options.cpu else (GPU, "cuda")
    torch.set_num_threads(THREADS)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be exact fp32, whatever the image sets
    device_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    scratch = tempfile.mkdtemp(prefix="gpu_check-")
    notes = [*profile.notes, f"The corpus is random words and a {profile.vocab_size}-entry vocabulary (Pythia's has 50k, whose "
             "logits would add about a tenth to the 1B model's FLOPs and a third to the 160M's): enough for a speed check."]
    run = Check(output_dir, {"mode": "cpu" if options.cpu else "gpu", "done": False, "ok": False, "budget_s": BUDGET_S,
                             "notes": notes, "parts": {}})
    facts = run.run_part("versions", partial(versions, device_name))
    if device == "cuda" and facts.get("layer_spec") == "local":
        notes.append("No Transformer Engine: Megatron's local layer spec, unfused attention; the MFU is a floor.")
    run.run_part("kernel_correctness", partial(kernel_correctness, profile, device))
    run.run_part("kernel_speed", partial(kernel_speed, profile, device, device_name))
    corpus = Corpus(os.path.join(scratch, "corpus"))
    run.run_part("corpus", partial(build_corpus, profile, corpus))
    run.run_part("host_batch", partial(host_batch, profile, corpus))
    run.run_part("training", partial(training, profile, corpus, scratch, device_name))
    run.report.update(done=True, ok=all(part["ok"] for part in run.report["parts"].values()))
    if run.report["ok"]:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        run.report["notes"].append(f"the failed runs' logs, corpus and metrics are kept in {scratch}")
    run.save()
    return run.report


def main() -> int:
    options = parse_options()
    if options.cpu:  # Triton reads it when a kernel is defined, i.e. when the kernels are imported
        os.environ["TRITON_INTERPRET"] = "1"
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    if options.list_missing:  # whether installing could help; the check below imports for real
        print("\n".join(requirement for requirement, _ in missing_wheels(installed)))
        return 0
    problem = bad_input(options)
    if problem:
        return fail(problem)
    output_dir = os.path.abspath(options.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    report = check(options, output_dir)
    failed = [name for name, part in report["parts"].items() if not part["ok"]]
    print(f"wrote {os.path.join(output_dir, SUMMARY)} and {REPORT} in {report['duration_s']:.0f} s")
    if failed:
        print(f"error: the GPU check failed in {', '.join(failed)}; see {os.path.join(output_dir, SUMMARY)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
