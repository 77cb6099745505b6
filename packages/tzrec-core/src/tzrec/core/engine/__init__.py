"""The model-agnostic training engine.

``distributed`` (process group, seeds, generator states, compute threads), ``engine``
(:class:`~tzrec.core.engine.engine.Engine`: sharding, steps, schedules), ``loop``
(``tzrec train`` / ``tzrec eval``), ``checkpoint`` (the one checkpoint store), ``lock``
(one run per model_dir), ``guards`` (non-finite losses, label domains), ``optim``
(optimizers, schedules, clipping) and ``summary`` (TensorBoard, progress, result files).
"""
