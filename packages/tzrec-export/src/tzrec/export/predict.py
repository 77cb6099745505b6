"""Batch prediction with an exported model: parquet/csv in, parquet out.

The input is read by the dataset the exported ``pipeline.config`` names (predict mode: no
labels, no sampler), so it parses exactly as in training. Every output row holds the
``reserved_columns`` of its input row, then the model outputs (``output_columns``, default
all): a 1-D output is a float column, a 2-D one (an embedding) a ``list<float>`` column,
a 3-D one (a multi-interest user tower) a list of ``list<float>`` per row.
Models that predict one row per candidate (DlrmHSTU) write each input row's candidates as
one list. Rows the reader skips (malformed, with ``TZREC_DATA_BAD_ROWS=skip``) are counted
and reported; every other row comes out, in input order per reader worker. Output rows
holding NaN/inf are counted per column and reported. The output (a directory of part files,
or one ``.parquet`` file) is checked first and appears whole (:mod:`tzrec.export.outputs`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tzrec.core.errors import ConfigError, DataError
from tzrec.export.artifact import ExportedModel, load_exported
from tzrec.export.outputs import check_output, parquet_output
from tzrec.models.inference import inputs_from_batch

logger = logging.getLogger(__name__)


def output_array(value: torch.Tensor, row_lengths: torch.Tensor | None = None) -> pa.Array:
    """An arrow column for one output: float for (B,), fixed-size list<float> for (B, D).

    A (B, K, D) output (a multi-interest user tower, MIND) is a list of K lists of D floats
    per row, as upstream writes it (``tzrec hitrate --num_interests K`` reads it).
    With ``row_lengths`` (models predicting one row per candidate), the rows of each input
    row are gathered into one list: ``list<float>`` / ``list<fixed_size_list<float>>``.
    """
    arr = value.detach().to(torch.float32).cpu().numpy()
    if arr.ndim == 1:
        out = pa.array(arr)
    else:
        out = pa.array(np.ascontiguousarray(arr.reshape(-1)))
        for width in reversed(arr.shape[1:]):  # innermost dim first
            out = pa.FixedSizeListArray.from_arrays(out, int(width))
    if row_lengths is None:
        return out
    offsets = np.concatenate([[0], np.cumsum(row_lengths.numpy())]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), out)


def nonfinite_rows(value: torch.Tensor) -> int:
    """How many rows (axis 0) of one output hold a NaN or inf."""
    if not value.numel() or not value.is_floating_point():
        return 0
    finite = torch.isfinite(value.detach()).reshape(value.shape[0], -1).all(dim=1)
    return int((~finite).sum())


def iter_predictions(
    model: ExportedModel,
    input_path: str,
    reserved_columns: list[str] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    dataset_type: str | None = None,
) -> Any:
    """Yield ``(reserves, {output: (value, row_lengths)}, dataset)`` per batch.

    ``row_lengths`` is None for one output row per input row, else each input row's number
    of output rows (candidates).

    Raises:
        DataError: the input lacks a column the model reads (one line, the column named).
    """
    from tzrec.core.build import build_dataset, dataset_class
    from tzrec.protos import data_pb2, pipeline_pb2

    config = pipeline_pb2.EasyRecConfig()
    config.CopyFrom(model.config)
    dc = config.data_config
    if batch_size:
        dc.batch_size = batch_size
    if num_workers is not None:
        dc.num_workers = num_workers
    if dataset_type:
        try:
            dc.dataset_type = data_pb2.DatasetType.Value(dataset_type)
        except ValueError:
            names = ", ".join(data_pb2.DatasetType.keys())
            raise ConfigError(f"--dataset_type {dataset_type!r}: expected one of {names}") from None
    features = dataset_class(config).create_features(config.feature_configs, dc)
    ds = build_dataset(config, features, input_path, "predict", reserved_columns=reserved_columns)
    row_lengths = model.meta.get("output_row_lengths")
    for batch in ds.make_dataloader():
        inputs = inputs_from_batch(batch, ds.features)
        outputs = model(inputs)
        if row_lengths:  # one output row per candidate: keep each row's candidates
            outputs = {k: (v, inputs[row_lengths]) for k, v in outputs.items()}
        else:
            outputs = {k: (v, None) for k, v in outputs.items()}
        yield batch.reserves, outputs, ds


def count_rows(input_path: str) -> int | None:
    """Rows of a parquet input from file metadata (the progress total); None when unknown."""
    from tzrec.data.io import expand_input_path

    try:
        files = expand_input_path(input_path)
        if not files or not all(f.endswith((".parquet", ".pq")) for f in files):
            return None
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # the reader reports a bad input properly; only the total is lost
        return None


def predict(
    model_path: str | ExportedModel,
    input_path: str,
    output_path: str,
    reserved_columns: list[str] | None = None,
    output_columns: list[str] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    dataset_type: str | None = None,
    max_steps: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Predict every row of ``input_path`` into ``output_path`` (parquet).

    A path ending in ``.parquet`` is written as that one file, any other as a directory
    holding ``part-0.parquet`` (upstream's layout). The output is checked before the input
    is read, written under a temporary name and swapped in whole
    (:mod:`tzrec.export.atomic`); an existing output is replaced only with ``overwrite``.

    Returns:
        ``rows_in`` (read), ``rows_skipped`` (bad rows the reader dropped), ``rows_out``,
        ``rows_nonfinite`` (most output rows holding NaN/inf in one column) and
        ``nonfinite_by_column``; non-finite rows are written as they are, and logged.

    Raises:
        ConfigError: an unknown output column, a bad model directory, an existing output.
        DataError: the input lacks a column the model reads.
        OutputError: the output cannot be written (errno and path).
    """
    check_output(output_path, overwrite, "--predict_output_path")
    model = model_path if isinstance(model_path, ExportedModel) else load_exported(model_path)
    outputs = output_columns or model.outputs
    unknown = [c for c in outputs if c not in model.outputs]
    if unknown:
        raise ConfigError(
            f"--output_columns {', '.join(unknown)}: the model outputs {', '.join(model.outputs)}"
        )
    reserved = list(reserved_columns or [])
    clash = [c for c in reserved if c in outputs]
    if clash:
        raise ConfigError(
            f"--reserved_columns {', '.join(clash)} collide with model outputs of the same name"
        )
    from tqdm import tqdm

    nonfinite: dict[str, int] = {}
    ds = None
    total = count_rows(input_path) if max_steps is None else None
    bar = tqdm(desc="tzrec predict", total=total, unit=" rows", mininterval=1.0, disable=None)
    try:
        with parquet_output(output_path, overwrite, "--predict_output_path") as writer:
            batches = iter_predictions(
                model, input_path, reserved, batch_size, num_workers, dataset_type
            )
            for step, (reserves, preds, ds) in enumerate(batches):  # noqa: B007 (ds: after)
                if max_steps is not None and step >= max_steps:
                    break
                value, lengths = next(iter(preds.values()))
                n = int(value.shape[0] if lengths is None else lengths.shape[0])
                cols: dict[str, pa.Array] = {}
                if reserved:
                    if reserves is None or reserves.num_rows != n:
                        raise DataError(f"{input_path}: reserved columns do not line up with rows")
                    for c in reserved:
                        cols[c] = reserves.column(c)
                for c in outputs:
                    cols[c] = output_array(*preds[c])
                    bad = nonfinite_rows(preds[c][0])
                    if bad:
                        nonfinite[c] = nonfinite.get(c, 0) + bad
                writer.write(pa.table(cols))
                bar.update(n)
            if not writer.rows:
                raise DataError(f"{input_path}: no rows to predict")
            summary = ds.summary if ds is not None else {"rows_read": 0, "rows_skipped": 0}
            rows_in = int(summary["rows_read"])
            skipped = int(summary["rows_skipped"])
            if max_steps is None and rows_in - skipped != writer.rows:
                raise DataError(
                    f"{input_path}: read {rows_in} rows ({skipped} skipped) but wrote {writer.rows}"
                )
            rows_out = writer.rows
    finally:
        bar.close()
    if skipped:
        logger.warning("%s: %d malformed rows skipped", input_path, skipped)
    if nonfinite:
        logger.warning(
            "%s: non-finite (NaN/inf) predictions written: %s",
            output_path,
            ", ".join(f"{c}: {n} rows" for c, n in nonfinite.items()),
        )
    return {
        "rows_in": rows_in,
        "rows_skipped": skipped,
        "rows_out": rows_out,
        "rows_nonfinite": max(nonfinite.values(), default=0),
        "nonfinite_by_column": nonfinite,
    }
