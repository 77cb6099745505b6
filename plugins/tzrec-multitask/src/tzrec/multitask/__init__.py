"""tzrec-multitask: multi-task ranking models as a tzrec plugin."""
