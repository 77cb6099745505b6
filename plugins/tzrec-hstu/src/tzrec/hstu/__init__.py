"""tzrec.hstu package."""
