"""Process set-up shared by every command: process group, compute threads, seeds, RNG states.

Everything here is a function of the configuration, the environment variables named below
and the machine's core count, never of what else runs on the machine, so the same command
on the same data gives the same numbers.
"""

from __future__ import annotations

import base64
import logging
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: Overrides the compute thread count (an integer >= 1).
NUM_THREADS_ENV = "TZREC_NUM_THREADS"
#: The seed of python, numpy and torch (default :data:`DEFAULT_SEED`).
SEED_ENV = "TZREC_SEED"
DEFAULT_SEED = 2024


def init_distributed() -> torch.device:
    """Join (or create, for a single process) the process group; return this rank's device."""
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if world == 1:
            # a single process needs no network rendezvous: an in-process store avoids
            # racing other jobs for a free port
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend, rank=rank, world_size=world)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every rank (a no-op for one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_from_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable value; identity for one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def first_of_ranks(value: Any) -> Any:
    """The first value other than None over all ranks, in rank order (a collective)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return next((v for v in values if v is not None), None)


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)  # pragma: no cover - platforms without affinity


def compute_threads(
    cores: int, num_workers: int, local_world_size: int = 1, override: str | None = None
) -> int:
    """Compute threads per process: a pure function of the config and the core count.

    The ``local_world_size`` processes of a machine share its ``cores``; each keeps one
    core per reader worker process (``data_config.num_workers``) free, since OpenMP
    threads spin while they wait and a step gets several times slower when threads and
    workers together outnumber the cores. ``override`` (``TZREC_NUM_THREADS``) wins.
    """
    if override:
        try:
            threads = int(override)
        except ValueError:
            threads = 0
        if threads < 1:
            from tzrec.core.errors import ConfigError

            raise ConfigError(f"{NUM_THREADS_ENV}={override!r}: expected an integer >= 1")
        return threads
    share = max(cores // max(local_world_size, 1), 1)
    return max(1, share - max(num_workers, 0))


def fit_threads(num_workers: int, local_world_size: int = 1) -> int:
    """Set torch's compute threads from :func:`compute_threads` for this machine; return it."""
    threads = compute_threads(
        machine_cores(), num_workers, local_world_size, os.environ.get(NUM_THREADS_ENV)
    )
    if threads != torch.get_num_threads():
        logger.info(
            "using %d compute thread(s) beside %d reader worker(s) on %d core(s)",
            threads,
            num_workers,
            machine_cores(),
        )
        torch.set_num_threads(threads)
    return threads


def configured_seed() -> int:
    """The seed of this run: ``TZREC_SEED`` or :data:`DEFAULT_SEED`."""
    value = os.environ.get(SEED_ENV)
    if not value:
        return DEFAULT_SEED
    try:
        return int(value)
    except ValueError:
        from tzrec.core.errors import ConfigError

        raise ConfigError(f"{SEED_ENV}={value!r}: expected an integer") from None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (fixed seeds give identical runs on CPU)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _tensor_to_text(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _text_to_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng() -> dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) generator states, as JSON-able values."""
    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": _tensor_to_text(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_tensor_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the generators to a state from :func:`capture_rng`."""
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": np.asarray(npst["key"], dtype=np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(_text_to_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [_text_to_tensor(s) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class isolated_rng:  # noqa: N801 - used like a function: ``with isolated_rng():``
    """Run a block without moving the python, numpy and torch generators of the caller.

    Evaluation creates data loaders (which draw seeds from torch's generator); isolating
    it keeps the training randomness a function of the training steps alone, so a resumed
    run sees the same random numbers as an uninterrupted one.
    """

    def __enter__(self) -> isolated_rng:
        self._state = capture_rng()
        return self

    def __exit__(self, *exc: object) -> None:
        restore_rng(self._state)


__all__ = [
    "DEFAULT_SEED",
    "NUM_THREADS_ENV",
    "SEED_ENV",
    "barrier",
    "broadcast_from_zero",
    "capture_rng",
    "compute_threads",
    "configured_seed",
    "first_of_ranks",
    "fit_threads",
    "init_distributed",
    "isolated_rng",
    "machine_cores",
    "rank",
    "restore_rng",
    "seed_everything",
    "world_size",
]
