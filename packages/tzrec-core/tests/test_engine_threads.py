"""Compute threads are a pure function of the config and the core count (env override)."""

import pytest
import torch

from tzrec.core.engine import distributed
from tzrec.core.errors import ConfigError


def test_threads_leave_one_core_per_reader_worker_in_each_process_share():
    assert distributed.compute_threads(8, 2) == 6
    assert distributed.compute_threads(8, 0) == 8
    assert distributed.compute_threads(16, 2, local_world_size=2) == 6  # 8 cores each
    assert distributed.compute_threads(4, 9) == 1  # never below one thread
    assert distributed.compute_threads(3, 0, local_world_size=8) == 1
    assert distributed.compute_threads(8, 4, override="5") == 5


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_bad_thread_override_is_one_line(bad):
    with pytest.raises(ConfigError, match=f"TZREC_NUM_THREADS={bad!r}: expected an integer >= 1"):
        distributed.compute_threads(8, 0, override=bad)


def test_threads_do_not_depend_on_the_load_average(monkeypatch):
    monkeypatch.delenv("TZREC_NUM_THREADS", raising=False)
    monkeypatch.setattr(
        distributed.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False
    )
    before = torch.get_num_threads()
    try:
        chosen = []
        for load in (0.0, 3.0, 50.0):
            monkeypatch.setattr(distributed.os, "getloadavg", lambda load=load: (load,) * 3)
            torch.set_num_threads(1)
            chosen.append(distributed.fit_threads(2))
        assert chosen == [6, 6, 6]
        assert torch.get_num_threads() == 6
        monkeypatch.setenv("TZREC_NUM_THREADS", "3")
        assert distributed.fit_threads(2) == 3
    finally:
        torch.set_num_threads(before)
