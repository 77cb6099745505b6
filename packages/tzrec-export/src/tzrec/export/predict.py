"""Batch prediction with an exported model: parquet/csv in, parquet out.

The input is read by the dataset the exported ``pipeline.config`` names (predict mode: no
labels, no sampler), so it parses exactly as in training. Every output row holds the
``reserved_columns`` of its input row, then the model outputs (``output_columns``, default
all): a 1-D output is a float column, a 2-D one (an embedding) a ``list<float>`` column.
Models that predict one row per candidate (DlrmHSTU) write each input row's candidates as
one list. Rows the reader skips (malformed, with ``TZREC_DATA_BAD_ROWS=skip``) are counted
and reported; every other row comes out, in input order per reader worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tzrec.core.errors import ConfigError, DataError
from tzrec.export.artifact import ExportedModel, load_exported
from tzrec.models.inference import inputs_from_batch

logger = logging.getLogger(__name__)


def output_array(value: torch.Tensor, row_lengths: torch.Tensor | None = None) -> pa.Array:
    """An arrow column for one output: float for (B,), fixed-size list<float> for (B, D).

    With ``row_lengths`` (models predicting one row per candidate), the rows of each input
    row are gathered into one list: ``list<float>`` / ``list<fixed_size_list<float>>``.
    """
    arr = value.detach().to(torch.float32).cpu().numpy()
    if arr.ndim == 1:
        out = pa.array(arr)
    else:
        flat = pa.array(np.ascontiguousarray(arr.reshape(-1)))
        out = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(arr.shape[1:])))
    if row_lengths is None:
        return out
    offsets = np.concatenate([[0], np.cumsum(row_lengths.numpy())]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), out)


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
    from tzrec.core.engine.trainer import build_dataset, dataset_class
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
) -> dict[str, int]:
    """Predict every row of ``input_path`` into the parquet file ``output_path``.

    Returns:
        ``rows_in`` (read), ``rows_skipped`` (bad rows the reader dropped), ``rows_out``.

    Raises:
        ConfigError: an unknown output column or a bad model directory.
        DataError: the input lacks a column the model reads.
    """
    from tqdm import tqdm

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
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer: pq.ParquetWriter | None = None
    rows_out = 0
    ds = None
    bar = tqdm(desc="tzrec predict", unit=" rows", leave=False, mininterval=1.0, disable=None)
    try:
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
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table)
            rows_out += n
            bar.update(n)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataError(f"{input_path}: no rows to predict")
    tmp.replace(out)
    summary = ds.summary if ds is not None else {"rows_read": 0, "rows_skipped": 0}
    rows_in = int(summary["rows_read"])
    skipped = int(summary["rows_skipped"])
    if max_steps is None and rows_in - skipped != rows_out:
        raise DataError(
            f"{input_path}: read {rows_in} rows ({skipped} skipped) but wrote {rows_out}"
        )
    if skipped:
        logger.warning("%s: %d malformed rows skipped", input_path, skipped)
    return {"rows_in": rows_in, "rows_skipped": skipped, "rows_out": rows_out}
