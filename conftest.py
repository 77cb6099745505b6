"""Repository-wide pytest setup, loaded before any package's tests or imports.

Without a GPU, Triton kernels run under Triton's interpreter. The variable must be set
before anything imports triton (torch and torchrec may), hence here and not in a package.
"""

import os
import shutil
import sys

import pytest

if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def no_leftover_process_group():
    """End a default process group an in-process run left, so later tests start without one.

    A leftover group makes torchmetrics synchronise metrics a later test computes by hand
    (one pytest worker runs many files), which failed tests by test order alone.
    """
    yield
    dist = sys.modules.get("torch.distributed")  # never import torch just for this
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
