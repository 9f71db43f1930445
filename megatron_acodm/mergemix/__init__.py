"""MergeMix's parts: domain experts, merged-model evaluation, surrogate search."""
