"""``export_model``: a trained checkpoint → serving artefacts, checked against eager.

Layout of ``export_dir`` (match models get one sub-directory per tower, named as upstream:
``user/``, ``item/``)::

    <export_dir>/[user/ | item/]
        scripted_model.pt          TorchScript (default), or with --aot:
        scripted_sparse_model.pt   + aot_dense_model.pt2 (torch.export of the dense part)
        pipeline.config            the config to feed it: its features only, no sampler
        model_meta.json            format, inputs, outputs, checkpoint, parity check

Before anything is written the model is switched to its serving view
(``set_is_inference(True)``), then wrapped (:mod:`tzrec.export.wrappers`). Each artefact is
loaded back and fed a batch of real rows; its outputs must equal the eager module's within
``PARITY_ATOL`` (and be finite) or the export fails. Tables are stored as upstream's
``QUANT_EMB`` / ``QUANT_EC_EMB`` say (:func:`~tzrec.models.inference.quant_types_from_env`:
INT8 by default for pooled tables); quantised lookups must stay within their stated bound of
the FP32 ones (:mod:`tzrec.export.quant`), and ``model_meta.json`` records the storage.
The directory appears whole or not at all, under a lock (:mod:`tzrec.export.atomic`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from tzrec.core.config import save_message, which_oneof
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import BaseFeature
from tzrec.data.fg.record import raw_input_record
from tzrec.export.artifact import (
    AOT_DENSE,
    META_FILE,
    SCRIPTED,
    SCRIPTED_SPARSE,
    ExportedModel,
    load_exported,
)
from tzrec.export.atomic import (
    TMP_TAG,
    OutputError,
    describe_os_error,
    fsync_tree,
    output_lock,
    recover,
    swap_in,
    unique_name,
    write_file,
)
from tzrec.export.quant import check_quantized_lookups
from tzrec.export.scripting import (
    export_dense,
    save_exported_program,
    save_torchscript,
    script_sparse,
    to_torchscript,
)
from tzrec.export.wrappers import (
    AutocastDense,
    ExportModule,
    export_modules,
    mixed_precision_dtype,
)
from tzrec.models.inference import feature_tensor_names, inputs_from_batch, quant_types_from_env
from tzrec.protos import feature_pb2, pipeline_pb2

logger = logging.getLogger(__name__)

PARITY_ATOL = 1e-5
ITEM_TOWER = "item_tower"


def tower_dir_name(tower: str) -> str:
    """The sub-directory of ``export_dir`` a tower is written to, as upstream.

    ``user_tower`` → ``user``, ``item_tower`` → ``item``; ``""`` (a whole model) → ``""``.
    Readers also accept the former ``user_tower/`` / ``item_tower/`` layout
    (:func:`tzrec.export.artifact.tower_dir`).
    """
    return tower.removesuffix("_tower")


def resolve_checkpoint(config: pipeline_pb2.EasyRecConfig, checkpoint_path: str | None) -> Path:
    """The checkpoint to export: ``checkpoint_path``, else by ``export_config.exporter_type``.

    ``latest`` (default) takes the newest complete checkpoint; ``best`` the one whose
    evaluation in ``train_eval_result.txt`` is best on ``best_exporter_metric``.

    Raises:
        CheckpointError: no complete checkpoint.
    """
    from tzrec.core.engine.checkpoint import CheckpointStore

    ec = config.export_config
    return CheckpointStore(config.model_dir).select(
        checkpoint_path,
        "export",
        ec.exporter_type,
        ec.best_exporter_metric,
        ec.metric_larger_is_better,
    )


def load_trained_model(
    config: pipeline_pb2.EasyRecConfig, checkpoint: Path
) -> tuple[torch.nn.Module, list[BaseFeature]]:
    """Build the configured model (unsharded, on CPU) and load a checkpoint into it.

    Raises:
        CheckpointError: the checkpoint is corrupt or was written by a model of another
            shape/config.
    """
    from tzrec.core import build
    from tzrec.core.engine.checkpoint import load
    from tzrec.core.engine.engine import TrainWrapper

    features = build.create_features(config)
    path = config.train_input_path or config.eval_input_path
    if which_oneof(config.data_config, "sampler") is not None and path:
        # the dataset marks the item features negatives extend, as in training (the model's
        # tables are grouped by those rows)
        features = build.build_dataset(config, features, path, "eval").features
    model = build.build_model(config, features)
    load(checkpoint, TrainWrapper(model))
    model.eval()
    return model, features


def target_config(
    config: pipeline_pb2.EasyRecConfig, module: ExportModule
) -> pipeline_pb2.EasyRecConfig:
    """The config an artefact is fed with: its features (serving view), no sampler."""
    out = pipeline_pb2.EasyRecConfig()
    out.CopyFrom(config)
    del out.feature_configs[:]
    sequences: dict[str, Any] = {}
    originals = {}
    for fc in config.feature_configs:
        chosen = which_oneof(fc, "feature")
        if chosen and chosen[0] == "sequence_feature":
            originals[chosen[1].sequence_name] = chosen[1]
    for f in module.features:
        if f.is_grouped_sequence:
            seq = sequences.get(f.sequence_name)
            if seq is None:
                fc = out.feature_configs.add()
                seq = fc.sequence_feature
                seq.CopyFrom(originals[f.sequence_name])
                del seq.features[:]
                sequences[f.sequence_name] = seq
            getattr(seq.features.add(), f.kind).CopyFrom(f.config)
        else:
            fc = feature_pb2.FeatureConfig()
            # an FG feature keeps its own config (combo_feature, ...): predict reruns its FG
            kind = getattr(f, "fg_kind", f.kind)
            getattr(fc, kind).CopyFrom(getattr(f, "fg_config", f.config))
            out.feature_configs.append(fc)
    # features an FG feature reads as input (``feature:<name>``) come along, unused or not
    kept = {f.name for f in module.features}
    for f in module.features:
        for ref in getattr(f, "fg_references", []):
            if ref.name not in kept and not ref.is_grouped_sequence:
                kept.add(ref.name)
                fc = out.feature_configs.add()
                getattr(fc, getattr(ref, "fg_kind", ref.kind)).CopyFrom(
                    getattr(ref, "fg_config", ref.config)
                )
    chosen = which_oneof(out.data_config, "sampler")
    if chosen is not None:
        out.data_config.ClearField(chosen[0])
    del out.model_config.feature_groups[:]
    out.model_config.feature_groups.extend(module.feature_groups)
    return out


def sample_inputs(
    config: pipeline_pb2.EasyRecConfig, input_path: str, max_rows: int = 64
) -> dict[str, torch.Tensor]:
    """Feature tensors of the first rows of ``input_path``, read as ``config`` says.

    Raises:
        DataError: the input lacks a column the artefact reads, or holds no rows.
    """
    from tzrec.core.build import build_dataset, dataset_class

    cfg = pipeline_pb2.EasyRecConfig()
    cfg.CopyFrom(config)
    cfg.data_config.batch_size = max_rows
    cfg.data_config.num_workers = 0
    features = dataset_class(cfg).create_features(cfg.feature_configs, cfg.data_config)
    ds = build_dataset(cfg, features, input_path, "predict")
    for batch in ds.make_dataloader():
        return inputs_from_batch(batch, ds.features)
    raise DataError(f"{input_path}: no rows to check the exported model with")


def _input_for(config: pipeline_pb2.EasyRecConfig, name: str, item_input_path: str | None):
    """Rows to trace and check an artefact with (``--item_input_path`` is item-tower only)."""
    if name == ITEM_TOWER:
        if item_input_path:
            return item_input_path, "--item_input_path"
        chosen = which_oneof(config.data_config, "sampler")
        if chosen is not None and chosen[1].input_path.endswith((".parquet", ".pq")):
            return chosen[1].input_path, f"data_config.{chosen[0]}.input_path (the item table)"
    path = config.train_input_path or config.eval_input_path
    return path, "train_input_path"


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |b - a| over the outputs of ``a``; any NaN/inf in either is a failure.

    Raises:
        ConfigError: a missing output, a shape mismatch, or a non-finite value on either
            side (a NaN never compares as "close", so it cannot pass as a zero difference).
    """
    worst = 0.0
    for key, ref in a.items():
        if key not in b:
            raise ConfigError(f"exported model lacks output '{key}'")
        got = b[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise ConfigError(
                f"exported output '{key}' has shape {tuple(got.shape)}, eager {tuple(ref.shape)}"
            )
        if not ref.numel():
            continue
        bad_eager = int((~torch.isfinite(ref)).sum())
        bad_exported = int((~torch.isfinite(got)).sum())
        if bad_eager or bad_exported:
            raise ConfigError(
                f"output '{key}' is not finite on the parity rows: {bad_exported} NaN/inf "
                f"values exported, {bad_eager} eager, of {ref.numel()}"
            )
        worst = max(worst, float((got.double() - ref.double()).abs().max()))
    return worst


def check_finite_parameters(model: torch.nn.Module, checkpoint: Path) -> None:
    """Refuse a model whose parameters or buffers hold NaN/inf (it would serve NaN).

    Raises:
        ConfigError: names the first non-finite tensor and how many values are bad.
    """
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point() and tensor.numel():
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                others = sum(
                    1
                    for _, t in tensors
                    if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())
                )
                raise ConfigError(
                    f"{checkpoint}: parameter '{name}' holds {bad} of {tensor.numel()} "
                    f"non-finite (NaN/inf) values ({others} tensors affected); the model "
                    "diverged in training and is not exported"
                )


def export_model(
    pipeline_config: pipeline_pb2.EasyRecConfig,
    model_dir: str | None,
    export_dir: str,
    checkpoint_path: str | None = None,
    item_input_path: str | None = None,
    aot: bool = False,
    overwrite: bool = False,
    asset_files: str | None = None,
    additional_export_config: dict[str, Any] | None = None,
) -> list[Path]:
    """Export a trained model (the ``default`` exporter, ``tzrec export``); return the dirs.

    Raises:
        ConfigError: ``export_dir`` exists without ``overwrite``, no/mismatched checkpoint,
            an artefact whose outputs differ from the eager model's.
        DataError: the sample input lacks a column the artefact reads.
    """
    config = pipeline_config
    if model_dir:
        config.model_dir = model_dir
    out_dir = Path(export_dir)
    try:
        with output_lock(out_dir, "--export_dir"):
            recover(out_dir)
            if out_dir.exists() and not overwrite:
                raise ConfigError(
                    f"--export_dir {out_dir} already exists; pass --overwrite to replace it"
                )
            return _export_locked(
                config,
                out_dir,
                checkpoint_path,
                item_input_path,
                aot,
                asset_files,
                additional_export_config,
            )
    except OSError as e:
        raise OutputError(f"export to {out_dir} failed: {describe_os_error(e)}") from None
    except RuntimeError as e:  # torch's C++ file I/O errors (c10::Error) are RuntimeErrors
        text = " ".join(str(e).split())
        if "PytorchStream" not in text:
            raise
        raise OutputError(f"export to {out_dir} failed: {text[-300:]}") from None


def _export_locked(
    config: pipeline_pb2.EasyRecConfig,
    out_dir: Path,
    checkpoint_path: str | None,
    item_input_path: str | None,
    aot: bool,
    asset_files: str | None,
    additional_export_config: dict[str, Any] | None = None,
) -> list[Path]:
    """The export proper, under ``out_dir``'s lock: write a temporary copy, swap it in."""
    checkpoint = resolve_checkpoint(config, checkpoint_path)
    model, _ = load_trained_model(config, checkpoint)
    check_finite_parameters(model, checkpoint)
    model.set_is_inference(True)  # before any wrapper: towers pick their serving view
    quant = quant_types_from_env()
    modules = export_modules(model, quant)
    # the FP32 twins (same weights) that quantised lookups are checked against
    references = {m.name: m for m in export_modules(model)} if quant != ("FP32", "FP32") else {}
    precision = export_mixed_precision(config)
    for m in [*modules, *references.values()]:
        m.set_mixed_precision(precision)
    tmp = unique_name(out_dir, TMP_TAG)
    tmp.mkdir()
    written: list[Path] = []
    from tqdm import tqdm

    bar = tqdm(modules, desc="tzrec export", unit=" artefact", disable=None)
    try:
        for module in bar:
            bar.set_postfix_str(module.name or "model")
            sub = tower_dir_name(module.name)
            target = tmp / sub if sub else tmp
            target.mkdir(parents=True, exist_ok=True)
            cfg = target_config(config, module)
            path, source = _input_for(config, module.name, item_input_path)
            try:
                inputs = sample_inputs(cfg, path)
            except (DataError, ConfigError) as e:
                hint = (
                    " (pass --item_input_path: a one-row-per-item table)"
                    if (module.name == ITEM_TOWER and not item_input_path)
                    else ""
                )
                raise type(e)(
                    f"exporting {module.name or 'the model'} from {source}: {e}{hint}"
                ) from None
            write_artefact(
                module,
                cfg,
                inputs,
                target,
                aot,
                checkpoint,
                additional_export_config,
                references.get(module.name),
            )
            written.append(out_dir / sub if sub else out_dir)
        if asset_files:
            for asset in asset_files.split(","):
                shutil.copy(asset, tmp / Path(asset).name)
        fsync_tree(tmp)
        swap_in(tmp, out_dir)
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return written


def mixed_precision_rtol(module: ExportModule) -> float:
    """Parity rtol of an autocast dense part: one epsilon of its dtype (0 for float32).

    The captured graph may round one reduced-precision intermediate differently from eager
    (an op autocast keeps in float32, a fused cast); that moves an output by about one unit
    in the last place of the output's scale, so each output may differ by
    ``PARITY_ATOL + rtol * max(1, max |eager output|)``.
    """
    if not isinstance(module.dense, AutocastDense):
        return 0.0
    return float(torch.finfo(module.dense.dtype).eps)


def _max_excess(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float) -> float:
    """Largest ``max|b - a| - rtol * max(1, max|a|)`` over the outputs (after _max_abs_diff)."""
    worst = 0.0
    for key, ref in a.items():
        if ref.numel():
            scale = max(1.0, float(ref.abs().max()))
            diff = float((b[key].double() - ref.double()).abs().max())
            worst = max(worst, diff - rtol * scale)
    return worst


def export_mixed_precision(config: pipeline_pb2.EasyRecConfig) -> str:
    """``export_config.mixed_precision`` (``BF16`` / ``FP16`` / ``""``), as upstream resolves it.

    The export uses the export config's value only; a warning says when it differs from
    ``train_config.mixed_precision``.
    """
    export_mp = config.export_config.mixed_precision.strip().upper()
    mixed_precision_dtype(export_mp)  # refuse unknown values in one line
    train_mp = config.train_config.mixed_precision.strip().upper()
    if train_mp != export_mp:
        logger.warning(
            "export_config.mixed_precision=%r differs from train_config.mixed_precision=%r; "
            "export uses %r",
            export_mp,
            train_mp,
            export_mp,
        )
    return export_mp


def write_artefact(
    module: ExportModule,
    cfg: pipeline_pb2.EasyRecConfig,
    inputs: dict[str, torch.Tensor],
    target: Path,
    aot: bool,
    checkpoint: Path,
    extra_meta: dict[str, Any] | None = None,
    reference: ExportModule | None = None,
) -> None:
    """Write one artefact (+ config, meta) into ``target`` and check it against eager.

    ``extra_meta`` (``--additional_export_config``) is merged into ``model_meta.json`` as
    upstream merges it into its ``model_acc.json``; a key tzrec writes itself is refused.
    ``reference``: the FP32 twin of a module with quantised tables; its lookups must be
    within the stated bound of the reference's (the artefact itself still equals ``module``
    within ``PARITY_ATOL``).
    """
    label = module.name or "model"
    start = time.time()
    with torch.no_grad():
        eager = module(inputs)
        grouped = module.sparse(inputs)
        if aot:
            save_torchscript(script_sparse(module), target / SCRIPTED_SPARSE)
            save_exported_program(export_dense(module, grouped), target / AOT_DENSE)
        else:
            save_torchscript(to_torchscript(module, grouped), target / SCRIPTED)
    save_message(cfg, target / "pipeline.config")
    meta = {
        "format": "aot" if aot else "torchscript",
        "tower": module.name,
        "inputs": [n for f in module.features for n in feature_tensor_names(f)],
        "features": [f.name for f in module.features],
        "raw_inputs": raw_input_record(module.features),
        "outputs": sorted(eager),
        "output_row_lengths": module.output_row_lengths,
        "checkpoint": str(checkpoint),
        "quant": quant_meta(module),
        "mixed_precision": module.mixed_precision,
    }
    clash = sorted(set(extra_meta or {}) & (set(meta) | set(_CHECK_KEYS)))
    if clash:
        raise ConfigError(
            f"--additional_export_config: {', '.join(clash)} are written by tzrec itself"
        )
    meta.update(extra_meta or {})
    write_file(target / META_FILE, json.dumps(meta, indent=2).encode())
    loaded = load_exported(target)
    rtol = mixed_precision_rtol(module)
    with torch.no_grad():
        try:
            served = loaded(inputs)
            diff = _max_abs_diff(eager, served)
        except ConfigError as e:
            raise ConfigError(f"parity check of the exported {label} failed: {e}") from None
        excess = _max_excess(eager, served, rtol) if rtol else diff
    if not excess <= PARITY_ATOL:  # also False for NaN
        bound = f"{PARITY_ATOL} + {rtol:.3g} * max(1, |eager|)" if rtol else f"{PARITY_ATOL}"
        raise ConfigError(
            f"exported {label} differs from the eager model by {diff:.3g} (> {bound}); "
            "its dense part is not trace-safe"
        )
    meta["parity_max_abs_diff"] = diff
    meta["parity_rtol"] = rtol
    meta["parity_rows"] = int(next(iter(eager.values())).shape[0])
    if isinstance(module.dense, AutocastDense):
        # the eager module and the artefact share the autocast; this is its cost vs float32
        with torch.no_grad():
            fp32 = module.dense.inner(grouped)
        meta["mixed_precision_fp32_max_abs_diff"] = _max_abs_diff(fp32, eager)
    if reference is not None and any(k != "FP32" for k in module.sparse.quant.values()):
        lookup_diff, bound = check_quantized_lookups(module.sparse, reference.sparse, inputs, label)
        meta["quant_lookup_max_abs_diff"] = lookup_diff
        meta["quant_lookup_max_bound"] = bound
        with torch.no_grad():
            meta["quant_output_max_abs_diff"] = _max_abs_diff(reference(inputs), eager)
    write_file(target / META_FILE, json.dumps(meta, indent=2).encode())
    logger.info(
        "exported %s (%s) in %.1fs, max |exported - eager| = %.2g on %d rows",
        label,
        meta["format"],
        time.time() - start,
        diff,
        meta["parity_rows"],
    )


_CHECK_KEYS = (
    "parity_max_abs_diff",
    "parity_rows",
    "parity_rtol",
    "mixed_precision_fp32_max_abs_diff",
    "quant_lookup_max_abs_diff",
    "quant_lookup_max_bound",
    "quant_output_max_abs_diff",
)


def quant_meta(module: ExportModule) -> dict[str, Any]:
    """``model_meta.json``'s ``quant``: resolved QUANT_EMB / QUANT_EC_EMB, each table's storage."""
    pooled, sequence = module.table_quant
    tables = dict(sorted(module.sparse.quant.items()))
    return {"QUANT_EMB": pooled, "QUANT_EC_EMB": sequence, "tables": tables}


def load_checkpoint_for_predict(
    config: pipeline_pb2.EasyRecConfig,
    checkpoint_path: str | None = None,
    tower: str | None = None,
) -> ExportedModel:
    """The eager serving module of a checkpoint, behaving like a loaded artefact.

    ``tzrec predict --checkpoint_path`` uses it: no export, same inputs and outputs.

    Raises:
        ConfigError: no checkpoint; for a match model, a missing or unknown ``tower``.
    """
    checkpoint = resolve_checkpoint(config, checkpoint_path)
    model, _ = load_trained_model(config, checkpoint)
    check_finite_parameters(model, checkpoint)
    model.set_is_inference(True)
    modules = {m.name: m for m in export_modules(model)}
    if tower and tower not in modules and f"{tower}_tower" in modules:
        tower = f"{tower}_tower"  # the export directory's name (user, item) works too
    if "" in modules:
        if tower:
            raise ConfigError(f"--tower {tower}: this model has no towers; leave it out")
        module = modules[""]
    elif tower not in modules:
        raise ConfigError(
            f"--tower: a match model predicts one tower at a time, one of "
            f"{', '.join(sorted(modules))} (got {tower or 'none'})"
        )
    else:
        module = modules[tower]
    cfg = target_config(config, module)
    path, _ = _input_for(config, module.name, None)
    with torch.no_grad():
        outputs = sorted(module(sample_inputs(cfg, path, max_rows=2)))
    meta = {
        "format": "eager",
        "tower": module.name,
        "inputs": [n for f in module.features for n in feature_tensor_names(f)],
        "features": [f.name for f in module.features],
        "raw_inputs": raw_input_record(module.features),
        "outputs": outputs,
        "output_row_lengths": module.output_row_lengths,
        "checkpoint": str(checkpoint),
    }
    return ExportedModel(Path(str(checkpoint)), meta, module, config=cfg)
