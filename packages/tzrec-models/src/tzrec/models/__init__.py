"""tzrec.models package."""
