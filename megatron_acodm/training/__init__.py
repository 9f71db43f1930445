"""Training: the global step, the train loop, evaluation, checkpoints, logging and plots."""
