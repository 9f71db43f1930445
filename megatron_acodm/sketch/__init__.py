"""Per-domain gradient sketches: hooks on chosen layers, probes from a seed, torch reference and Triton kernels.

    sketcher = GradientSketcher(model, num_domains, layers="top3", dim=256, seed=seed)
    ... before each micro-batch's forward: sketcher.set_micro_batch_domains(batch["domain_ids"])
    ... after the step's backward, this rank's [K, k], summed over the whole world:
    sketch = sketcher.step_sketches()
    gram(sketch)  # [K, K] ~ <G_a, G_b>; the mixers turn it into alignments
"""

from megatron_acodm.sketch.backend import choose_backend, gram, project_and_segment_sum
from megatron_acodm.sketch.hooks import GradientSketcher, parse_sketch_layers
from megatron_acodm.sketch.probes import rank_one_probes

__all__ = [
    "GradientSketcher",
    "choose_backend",
    "gram",
    "parse_sketch_layers",
    "project_and_segment_sum",
    "rank_one_probes",
]
