"""What an exported model reads: its raw input columns and the FG transform of each feature.

``model_meta.json``'s ``raw_inputs`` (written by ``tzrec export``) is this record, so a serving
system knows exactly which raw columns to send; ``tzrec predict`` reruns the same feature
generation (the exported ``pipeline.config`` keeps every FG feature's own config).
"""

from __future__ import annotations

from typing import Any


def raw_input_record(features: list[Any]) -> dict[str, Any]:
    """``{"fg_mode", "columns", "transforms"}`` of the features an artefact is fed by.

    ``columns``: every input column read, in feature order; ``transforms``: one entry per FG
    feature (``feature``, ``type``, ``expressions``), empty without feature generation.
    """
    columns: list[str] = []
    transforms: list[dict[str, Any]] = []
    mode = "FG_NONE"
    for f in features:
        mode = getattr(f, "fg_mode", mode) or mode
        for c in getattr(f, "input_columns", [f.input_name]):
            if c not in columns:
                columns.append(c)
        if getattr(f, "fg_active", False):
            transforms.append(
                {
                    "feature": f.name,
                    "type": f.fg_kind,
                    "expressions": [e for e, _, _ in f.fg_inputs],
                }
            )
    return {"fg_mode": mode, "columns": columns, "transforms": transforms}


__all__ = ["raw_input_record"]
