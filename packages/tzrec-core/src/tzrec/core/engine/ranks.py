"""Which process writes files and prints: rank 0 of the job (``RANK`` before init)."""

import os

import torch


def is_rank_zero() -> bool:
    """Rank 0 of the process group, or of ``RANK`` when no group exists yet."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
