"""Repository-wide pytest setup, loaded before any package's tests or imports.

Without a GPU, Triton kernels run under Triton's interpreter. The variable must be set
before anything imports triton (torch and torchrec may), hence here and not in a package.
"""

import os
import shutil

if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
