"""Retrieval evaluation of exported towers: faiss over item embeddings, HitRate/Recall@K.

Items of ``item_input_path`` are embedded by ``<export_dir>/item`` (or the former
``item_tower``); requests of ``eval_input_path`` by ``<export_dir>/user`` (``user_tower``).
An inner-product faiss index (exact ``IndexFlatIP`` or approximate ``IndexIVFFlat``)
returns each request's top K items, which are compared with its ground-truth ids
(``gt_field``):

- HitRate@K: share of requests with at least one ground-truth item in the top K;
- Recall@K: mean over requests of |top K ∩ ground truth| / |ground truth|.

Requests without ground truth are skipped and counted. Embeddings of COSINE models are
unit-length, so inner product ranks as cosine similarity. A multi-interest user tower
(MIND: ``(B, K, D)``) ranks each item by its best interest: every interest is searched, the
candidates merged by score, duplicates and all-zero (invalid) interests dropped, the best K
kept (``tzrec hitrate --topk_across_interests``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from tzrec.core.errors import ConfigError, DataError
from tzrec.export.artifact import load_exported, tower_dir
from tzrec.export.predict import count_rows, iter_predictions

logger = logging.getLogger(__name__)


def _embed(path: Path, input_path: str, column: str, batch_size: int) -> tuple[list, np.ndarray]:
    model = load_exported(path)
    emb_name = [o for o in model.outputs if o.endswith("_emb")]
    if not emb_name:
        raise ConfigError(f"{path}: outputs {model.outputs} hold no '<tower>_emb' embedding")
    from tqdm import tqdm

    keys: list = []
    chunks: list[np.ndarray] = []
    total = count_rows(input_path)
    with tqdm(desc=f"embedding {path.name}", total=total, unit=" rows", disable=None) as bar:
        for reserves, preds, _ in iter_predictions(model, input_path, [column], batch_size):
            keys.extend(reserves.column(column).to_pylist())
            chunks.append(preds[emb_name[0]][0].detach().float().numpy())
            bar.update(reserves.num_rows)
    if not chunks:
        raise DataError(f"{input_path}: no rows")
    return keys, np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def _ground_truth(value: Any, delim: str | None, first_only: bool) -> list[int]:
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(delim) if delim else re.split(r"[;,|\x1d\x03]", value)
        ids = [int(p) for p in parts if p.strip()]
    elif isinstance(value, list | tuple):
        ids = [int(v) for v in value if v is not None]
    else:
        ids = [int(value)]
    return ids[:1] if first_only else ids


def build_index(items: np.ndarray, index_type: str, nlist: int = 0, nprobe: int = 8) -> Any:
    """An inner-product faiss index over ``items`` (flat: exact; ivf: approximate)."""
    import faiss

    dim = items.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "ivf":
        nlist = nlist or max(1, int(math.sqrt(len(items))))
        nlist = min(nlist, len(items))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(items)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ConfigError(f"--index_type {index_type!r}: expected flat or ivf")
    index.add(items)
    return index


def _search_interests(index: Any, ids: np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` ids: each request's best ``k`` over its non-zero interests (module doc)."""
    from tzrec.export.hitrate import merge_interests

    n, interests, dim = users.shape
    flat = np.ascontiguousarray(users.reshape(n * interests, dim))
    dists, pos = index.search(flat, k)
    found = np.where(pos >= 0, ids.astype(str)[np.clip(pos, 0, None)], "")
    _, merged = merge_interests(flat, dists, found, k, interests, inner_product=True)
    out = np.full((n, k), -1, dtype=np.int64)
    for r, (row,) in enumerate(merged):
        out[r, : len(row)] = [int(i) for i in row]
    return out


def retrieval_metrics(
    retrieved: np.ndarray, truths: list[list[int]], ks: list[int]
) -> dict[str, float]:
    """HitRate@K and Recall@K of retrieved ids (n, max K) against ground-truth id lists."""
    hits = {k: 0.0 for k in ks}
    recalls = {k: 0.0 for k in ks}
    for row, truth in zip(retrieved, truths, strict=True):
        gt = set(truth)
        for k in ks:
            found = len(gt.intersection(row[:k].tolist()))
            hits[k] += 1.0 if found else 0.0
            recalls[k] += found / len(gt)
    n = max(len(truths), 1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"hitrate@{k}"] = hits[k] / n
        out[f"recall@{k}"] = recalls[k] / n
    return out


def evaluate_retrieval(
    export_dir: str,
    item_input_path: str,
    eval_input_path: str,
    item_id_field: str,
    gt_field: str,
    ks: list[int],
    index_type: str = "flat",
    nlist: int = 0,
    nprobe: int = 8,
    batch_size: int = 1024,
    gt_delim: str | None = None,
    gt_first_only: bool = False,
    output_path: str | None = None,
) -> dict[str, Any]:
    """Embed, index, search and score (module doc); optionally write the result as JSON."""
    try:
        user_dir, item_dir = (tower_dir(export_dir, t) for t in ("user_tower", "item_tower"))
    except ConfigError as e:
        raise ConfigError(f"--export_dir {e}") from None
    item_ids, items = _embed(item_dir, item_input_path, item_id_field, batch_size)
    try:
        ids = np.asarray([int(i) for i in item_ids], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(
            f"{item_input_path}: column '{item_id_field}' must hold integer ids"
        ) from None
    gts, users = _embed(user_dir, eval_input_path, gt_field, batch_size)
    truths = [_ground_truth(v, gt_delim, gt_first_only) for v in gts]
    keep = [i for i, t in enumerate(truths) if t]
    skipped = len(truths) - len(keep)
    if skipped:
        logger.warning("%s: %d requests without ground truth skipped", eval_input_path, skipped)
    if not keep:
        raise DataError(f"{eval_input_path}: column '{gt_field}' holds no ground-truth ids")
    index = build_index(items, index_type, nlist, nprobe)
    k_max = min(max(ks), len(ids))
    queries = users[keep]
    if queries.ndim == 3:  # one row per interest, merged per request by best score
        retrieved = _search_interests(index, ids, queries, k_max)
    else:
        _, pos = index.search(queries, k_max)
        retrieved = np.where(pos >= 0, ids[np.clip(pos, 0, None)], -1)
    metrics = retrieval_metrics(retrieved, [truths[i] for i in keep], ks)
    result = {
        "users": len(keep),
        "users_skipped": skipped,
        "items": len(ids),
        "index": index_type,
        "metrics": metrics,
    }
    if output_path:
        Path(output_path).write_text(json.dumps(result, indent=2))
    return result


def evaluate_full_corpus(
    pipeline_config: Any, export_dir: str, top_k: list[int]
) -> dict[str, Any] | None:
    """HitRate@K of a match export over the whole item table of the config's sampler.

    Applies when the negative sampler reads a parquet item table holding its ``attr_fields``
    as columns (the first is the item id): every item is embedded by the item tower, each
    eval request is searched with an exact faiss index, and its ground truth is the
    sampler's ``item_id_field`` (the first id of a candidate sequence). Random retrieval
    hits one of N items in the top K with probability K / N. None when the config has no
    such table.
    """
    from tzrec.core.config import which_oneof

    chosen = which_oneof(pipeline_config.data_config, "sampler")
    if chosen is None or not pipeline_config.eval_input_path:
        return None
    sampler = chosen[1]
    table = str(getattr(sampler, "input_path", ""))
    attrs = list(getattr(sampler, "attr_fields", []))
    if not table.endswith(".parquet") or not attrs:
        return None
    item_id = attrs[0]
    gt_field = str(sampler.item_id_field)
    first_only = "__" in gt_field  # a candidate sequence: the positive comes first
    result = evaluate_retrieval(
        export_dir,
        table,
        pipeline_config.eval_input_path,
        item_id,
        gt_field,
        sorted(set(top_k)),
        gt_first_only=first_only,
    )
    n = result["items"]
    hits = {k: v for k, v in result["metrics"].items() if k.startswith("hitrate@")}
    return {
        "metrics": hits,
        "baselines": {k: min(int(k.split("@")[1]), n) / n for k in hits},
        "about": f"full corpus: each request ranks all {n} items of {table} (faiss, exact)",
    }


__all__ = ["build_index", "evaluate_full_corpus", "evaluate_retrieval", "retrieval_metrics"]
