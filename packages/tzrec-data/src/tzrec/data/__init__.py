"""tzrec.data package."""
