"""Per-domain gradient sketches: hooks on chosen layers, probes from a seed, torch reference and Triton kernels.

    sketcher = GradientSketcher(model, 2 * num_domains, layers="top3", dim=256, seed=seed)
    ... before each micro-batch's forward: sketcher.set_micro_batch_segments(batch["sketch_segments"])
    ... after the step's backward, this rank's [2K, k], summed over the whole world:
    sketch = sketcher.step_sketches()
    gram(sketch)  # [2K, 2K] ~ <G_a, G_b> over domain halves (half_segments); mixing.alignment reads it
"""

from megatron_acodm.sketch.backend import choose_backend, gram, project_and_segment_sum
from megatron_acodm.sketch.hooks import GradientSketcher, parse_sketch_layers
from megatron_acodm.sketch.probes import rank_one_probes
from megatron_acodm.sketch.segments import HALVES, first_target_row, half_segments, sketch_rows

__all__ = [
    "GradientSketcher",
    "HALVES",
    "choose_backend",
    "first_target_row",
    "gram",
    "half_segments",
    "parse_sketch_layers",
    "project_and_segment_sum",
    "rank_one_probes",
    "sketch_rows",
]
