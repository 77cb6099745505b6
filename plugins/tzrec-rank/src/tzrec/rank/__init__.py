"""tzrec-rank: classic ranking models as a tzrec plugin."""
