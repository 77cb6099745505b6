"""Synthetic ranking data for ``dlrm_hstu_kuairand.config`` (learnable click/like structure).

The generator ships with tzrec-hstu (``tzrec.hstu.synthetic.write_dlrm_hstu_data``); this
script is its command line::

    python docs/examples/dlrm_hstu_synthetic.py OUT_DIR [--num_rows N] [--seed S]

then point the config at the files it prints (``train_input_path``, ``eval_input_path``).
"""

import sys

from tzrec.hstu.synthetic import main, write_dlrm_hstu_data

__all__ = ["main", "write_dlrm_hstu_data"]

if __name__ == "__main__":
    main([*sys.argv[1:], "--dlrm"])
