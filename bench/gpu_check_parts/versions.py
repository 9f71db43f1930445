"""Part 1, versions: Python, torch, CUDA, Triton, megatron-core, the GPU, and whether Transformer
Engine is there (without it the model has Megatron's local layer spec)."""

from __future__ import annotations

import importlib
import importlib.util

from .wheels import WHEEL_SITE, WHEELS


def versions(device_name: str) -> dict:
    import torch

    from common import describe_machine

    facts = describe_machine(
        ("python", "torch", "cuda", "triton", "megatron-core", "numpy", "sentencepiece", "device_name", "gpu_memory_gib",
         "cpu_count", "cpu_model", "layer_spec", "megatron_core_from_wheels"),
        cuda=torch.version.cuda,
        device_name=device_name,
        gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None,
        # What the model provider picks: without Transformer Engine, unfused attention.
        layer_spec="transformer_engine" if importlib.util.find_spec("transformer_engine") else "local",
        megatron_core_from_wheels=WHEEL_SITE in importlib.import_module("megatron.core").__file__,
    )
    return {**facts, "wheels": [requirement for requirement, _ in WHEELS], "ok": True}
