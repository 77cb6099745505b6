"""Leaf I/O helpers shared by readers and sampler tables: input paths and this rank's place."""

from __future__ import annotations

import glob
import os

import torch

from tzrec.core.errors import DataError


def expand_input_path(input_path: str) -> list[str]:
    """Files named by a comma-separated list of paths, globs and directories (sorted)."""
    files: list[str] = []
    for part in (p.strip() for p in input_path.split(",")):
        if not part:
            continue
        if any(c in part for c in "*?["):
            matched = sorted(glob.glob(part))
            if not matched:
                raise DataError(f"input path {part}: the pattern matches no file")
            files.extend(m for m in matched if os.path.isfile(m))
        elif os.path.isdir(part):
            files.extend(
                sorted(
                    os.path.join(part, n) for n in os.listdir(part) if not n.startswith((".", "_"))
                )
            )
        elif os.path.exists(part):
            files.append(part)
        else:
            raise DataError(f"input path {part}: no such file or directory")
    return files


def get_rank_world() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else RANK/WORLD_SIZE."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


__all__ = ["expand_input_path", "get_rank_world"]
