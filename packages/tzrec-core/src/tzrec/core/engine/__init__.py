"""Model-agnostic training engine pieces: optimizers, schedules, checkpoints, summaries."""
