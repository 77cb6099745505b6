"""tzrec.kernels: jagged ops and HSTU attention."""
