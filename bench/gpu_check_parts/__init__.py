"""The parts of the GPU check (`bench/gpu_check.py`), one module each, and what they share.

Every module imports only the standard library when it is imported; torch, megatron, Triton and
`common` (which needs tqdm) are imported inside the functions that use them, so that the check's
entry can list the missing wheels and refuse a bare image in one line before any of them loads,
and `--cpu` can set `TRITON_INTERPRET` before the kernels are defined.
"""
