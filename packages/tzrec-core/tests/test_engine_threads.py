"""Compute threads fit the free cores: reader workers and busy cores are left out."""

import torch

from tzrec.core.engine import trainer


def test_threads_leave_out_reader_workers_and_busy_cores(monkeypatch):
    monkeypatch.delenv("TZREC_NUM_THREADS", raising=False)
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        monkeypatch.setattr(trainer, "busy_cores", lambda: 0)
        assert trainer.fit_threads(2) == 6
        torch.set_num_threads(8)
        monkeypatch.setattr(trainer, "busy_cores", lambda: 3)
        assert trainer.fit_threads(2) == 3
        torch.set_num_threads(8)
        monkeypatch.setattr(trainer, "busy_cores", lambda: 50)  # never below one thread
        assert trainer.fit_threads(0) == 1
        monkeypatch.setenv("TZREC_NUM_THREADS", "5")
        assert trainer.fit_threads(4) == 5
    finally:
        torch.set_num_threads(before)
