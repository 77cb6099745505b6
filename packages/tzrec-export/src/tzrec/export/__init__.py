"""tzrec.export package."""
