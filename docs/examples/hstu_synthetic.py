"""Synthetic data for ``hstu_match_kuairand.config`` (planted user -> item structure).

The generator ships with tzrec-hstu (``tzrec.hstu.synthetic``) so ``tzrec run`` can use it;
this script is its command line::

    python docs/examples/hstu_synthetic.py OUT_DIR [--num_rows N] [--seed S]

or, from Python, ``write_hstu_data(out_dir) -> {"train", "eval", "items"}``.
"""

from tzrec.hstu.synthetic import main, write_hstu_data

__all__ = ["main", "write_hstu_data"]

if __name__ == "__main__":
    main()
