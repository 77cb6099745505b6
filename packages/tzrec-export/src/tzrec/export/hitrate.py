"""``tzrec hitrate`` and ``tzrec create-faiss-index``: upstream's tools over embedding tables.

Both read tables of embeddings that ``tzrec predict`` writes (parquet, or csv), not exported
models. ``create-faiss-index`` builds a faiss index over an item table (``id_field``,
``embedding_field``) and writes ``<index_output_dir>/faiss_index`` and ``id_mapping`` (one
id per line, in index order). ``hitrate`` builds the same index over the item table, searches
each request's user embedding(s) and scores the top K against the request's ground truth:

- a request ``r`` with ground-truth set ``G_r`` and ``n_r`` interests (``num_interests``, or
  per row ``num_interests_field``) hits ``H_r = ∪_{i < n_r} (topK_i(r) ∩ G_r)``;
- its hitrate is ``|H_r| / |G_r|``; the total is ``Σ_r |H_r| / Σ_r |G_r|``;
- with ``topk_across_interests`` the interests' results are merged first: all candidates
  ranked by score (inner product descending, L2 ascending), duplicates and all-zero
  interests dropped, the best K kept;
- requests without ground truth are skipped and counted.

Ids are compared as strings (an int ``gt_items`` list matches a string id map).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import ConfigError, DataError
from tzrec.export.atomic import OutputError, describe_os_error, fsync_dir, unique_name, write_file
from tzrec.export.commands import INDEX_TYPES, READER_TYPES
from tzrec.export.outputs import check_output, parquet_output

logger = logging.getLogger(__name__)

INDEX_FILE = "faiss_index"
ID_MAPPING_FILE = "id_mapping"


def _format(path: str, reader_type: str | None) -> str:
    if reader_type in (None, "ParquetReader", "CsvReader"):
        if reader_type == "CsvReader" or (reader_type is None and path.endswith(".csv")):
            return "csv"
        return "parquet"
    raise ConfigError(
        f"--reader_type {reader_type}: tzrec reads local {' or '.join(READER_TYPES)} tables"
    )


def read_batches(
    input_path: str, columns: list[str], batch_size: int, reader_type: str | None = None
) -> tuple[Iterator[pa.RecordBatch], int | None]:
    """Record batches of ``columns`` of a table (files, globs or a directory of parts).

    Returns:
        the batches and the table's row count when known (parquet), for progress bars.

    Raises:
        DataError: no such input, or a column missing (named, with the file).
    """
    import pyarrow.dataset as pds

    from tzrec.data.io import expand_input_path

    files = expand_input_path(input_path)
    if not files:
        raise DataError(f"{input_path}: no files to read")
    fmt = _format(files[0], reader_type)
    try:
        dataset = pds.dataset(files, format=fmt)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(
            f"{input_path}: cannot read as {fmt} ({' '.join(str(e).split())})"
        ) from None
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise DataError(
            f"{input_path}: column {', '.join(repr(c) for c in missing)} missing (the table "
            f"has {', '.join(dataset.schema.names)})"
        )
    total = dataset.count_rows() if fmt == "parquet" else None
    return dataset.to_batches(columns=columns, batch_size=batch_size), total


def embedding_matrix(
    column: pa.Array, num_interests: int = 1, name: str = "embedding"
) -> np.ndarray:
    """``(rows · num_interests, dim)`` float32 from a list, list-of-lists or string column.

    Strings are ``"v,v,…"``, interests separated by ``";"`` (as upstream).

    Raises:
        DataError: ragged dimensions, nulls, or a row without ``num_interests`` vectors.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if num_interests > 1:
            column = pc.split_pattern(column, ";").flatten()
        column = pc.split_pattern(column, ",")
        column = pc.cast(column, pa.list_(pa.float32()), safe=False)
    elif (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)) and (
        pa.types.is_list(kind.value_type) or pa.types.is_fixed_size_list(kind.value_type)
    ):
        column = column.flatten()
    if column.null_count:
        raise DataError(f"column '{name}': {column.null_count} null embeddings")
    try:
        matrix = np.asarray(column.to_pylist(), dtype=np.float32)
    except ValueError:
        raise DataError(f"column '{name}': embeddings of different lengths") from None
    if matrix.ndim != 2:
        raise DataError(f"column '{name}': expected one list of floats per embedding")
    return np.ascontiguousarray(matrix)


def ground_truth(column: pa.Array) -> list[list[str]]:
    """Each row's ground-truth ids as strings: a list column, or ``"id,id,…"`` strings."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        column = pc.split_pattern(pc.cast(column, pa.string()), ",")
    return [
        [str(v).strip() for v in row if v is not None and str(v).strip()] if row else []
        for row in column.to_pylist()
    ]


def read_embedding_table(
    input_path: str,
    id_field: str,
    embedding_field: str,
    batch_size: int = 1024,
    reader_type: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All ids (as strings) and embeddings of an item table."""
    from tqdm import tqdm

    batches, total = read_batches(input_path, [id_field, embedding_field], batch_size, reader_type)
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    with tqdm(desc="reading embeddings", total=total, unit=" rows", disable=None) as bar:
        for batch in batches:
            ids.extend(str(v) for v in batch.column(id_field).to_pylist())
            chunks.append(embedding_matrix(batch.column(embedding_field), 1, embedding_field))
            bar.update(batch.num_rows)
    if not ids:
        raise DataError(f"{input_path}: no embeddings")
    dims = {c.shape[1] for c in chunks}
    if len(dims) > 1:
        raise DataError(f"{input_path}: column '{embedding_field}' mixes dimensions {sorted(dims)}")
    return np.asarray(ids, dtype=object), np.concatenate(chunks)


def build_faiss_index(
    embeddings: np.ndarray,
    index_type: str = "IVFFlatIP",
    ivf_nlist: int = 1000,
    hnsw_m: int = 32,
    hnsw_ef_construction: int = 200,
) -> Any:
    """A faiss index of ``index_type`` over ``embeddings`` (trained when IVF).

    ``ivf_nlist`` above the number of embeddings is lowered to it (faiss needs at least one
    training point per list), with a warning.
    """
    import faiss

    if index_type not in INDEX_TYPES:
        raise ConfigError(f"--index_type {index_type}: expected one of {', '.join(INDEX_TYPES)}")
    dim = embeddings.shape[1]
    metric = faiss.METRIC_INNER_PRODUCT if index_type.endswith("IP") else faiss.METRIC_L2
    if index_type.startswith("IVFFlat"):
        if ivf_nlist <= 0:
            raise ConfigError(f"--ivf_nlist must be positive, got {ivf_nlist}")
        if ivf_nlist > len(embeddings):
            logger.warning(
                "--ivf_nlist %d > %d embeddings: using %d lists",
                ivf_nlist,
                len(embeddings),
                len(embeddings),
            )
            ivf_nlist = len(embeddings)
        quantizer = faiss.IndexFlat(dim, metric)
        index = faiss.IndexIVFFlat(quantizer, dim, ivf_nlist, metric)
        index.train(embeddings)
    elif index_type.startswith("HNSWFlat"):
        index = faiss.IndexHNSWFlat(dim, hnsw_m, metric)
        index.hnsw.efConstruction = hnsw_ef_construction
    else:
        index = faiss.IndexFlat(dim, metric)
    index.add(embeddings)
    return index


def create_faiss_index(
    embedding_input_path: str,
    index_output_dir: str,
    id_field: str,
    embedding_field: str,
    index_type: str = "IVFFlatIP",
    batch_size: int = 1024,
    ivf_nlist: int = 1000,
    hnsw_m: int = 32,
    hnsw_ef_construction: int = 200,
    reader_type: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build an index over an embedding table; write ``faiss_index`` + ``id_mapping``.

    Each file is written under a temporary name in ``index_output_dir`` and renamed.

    Raises:
        ConfigError: an index already there without ``overwrite``; ``index_output_dir`` a file.
        OutputError: the files cannot be written.
    """
    import faiss

    out = Path(index_output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--index_output_dir {out} is a file, expected a directory")
    existing = [n for n in (INDEX_FILE, ID_MAPPING_FILE) if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"--index_output_dir {out} already holds {', '.join(existing)}; pass --overwrite "
            "to replace them"
        )
    ids, embeddings = read_embedding_table(
        embedding_input_path, id_field, embedding_field, batch_size, reader_type
    )
    index = build_faiss_index(embeddings, index_type, ivf_nlist, hnsw_m, hnsw_ef_construction)
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {
            INDEX_FILE: faiss.serialize_index(index).tobytes(),
            ID_MAPPING_FILE: "".join(f"{i}\n" for i in ids).encode(),
        }
        temps = {name: unique_name(out / name, ".tmp-") for name in files}
        try:
            for name, data in files.items():
                write_file(temps[name], data)
            for name, tmp in temps.items():
                os.replace(tmp, out / name)
            fsync_dir(out)
        finally:
            for tmp in temps.values():
                if tmp.exists():
                    tmp.unlink()
    except OSError as e:
        raise OutputError(
            f"--index_output_dir {out}: not written ({describe_os_error(e)})"
        ) from None
    return {"items": len(ids), "dim": int(embeddings.shape[1]), "index": index_type}


def load_faiss_index(index_dir: str | Path) -> tuple[Any, np.ndarray]:
    """The index and id map ``create_faiss_index`` wrote."""
    import faiss

    root = Path(index_dir)
    index = faiss.read_index(str(root / INDEX_FILE))
    ids = np.asarray((root / ID_MAPPING_FILE).read_text().splitlines(), dtype=object)
    return index, ids


def search(index: Any, ids: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (distances, ids) per query row; slots faiss leaves empty get id ``""``."""
    dists, pos = index.search(np.ascontiguousarray(query, dtype=np.float32), k)
    found = np.where(pos >= 0, ids[np.clip(pos, 0, None)], "")
    return dists, found


def merge_interests(
    user_emb: np.ndarray,
    dists: np.ndarray,
    found: np.ndarray,
    top_k: int,
    num_interests: int,
    inner_product: bool,
    valid_interests: list[int] | None = None,
) -> tuple[list[list[list[float]]], list[list[list[str]]]]:
    """Per request, the best ``top_k`` distinct ids over its valid, non-zero interests.

    ``valid_interests[r]``: how many of request ``r``'s interests count (default: all).
    """
    out_d: list[list[list[float]]] = []
    out_i: list[list[list[str]]] = []
    zero = np.linalg.norm(user_emb, axis=-1) == 0.0
    for r in range(len(dists) // num_interests):
        n = num_interests if valid_interests is None else min(valid_interests[r], num_interests)
        rows = range(r * num_interests, r * num_interests + n)
        cands = [
            (float(dists[q, j]), found[q, j])
            for q in rows
            if not zero[q]
            for j in range(dists.shape[1])
            if found[q, j] != ""
        ]
        cands.sort(key=lambda c: -c[0] if inner_product else c[0])
        seen: set[str] = set()
        best = []
        for d, i in cands:
            if i not in seen:
                seen.add(i)
                best.append((d, i))
            if len(best) == top_k:
                break
        out_d.append([[d for d, _ in best]])
        out_i.append([[i for _, i in best]])
    return out_d, out_i


def request_hitrates(
    recalled: list[list[list[str]]],
    truths: list[list[str]],
    num_interests: list[int] | None = None,
) -> tuple[list[int], list[float], list[list[str]], int, int]:
    """Score requests (module doc): kept rows, their hitrates and hit ids, Σ|H|, Σ|G|."""
    kept, rates, hit_ids = [], [], []
    hits = gts = 0
    for r, (interests, truth) in enumerate(zip(recalled, truths, strict=True)):
        gt = set(truth)
        if not gt:
            continue
        n = len(interests) if num_interests is None else min(num_interests[r], len(interests))
        hit: set[str] = set()
        for ids in interests[:n]:
            hit |= gt.intersection(ids)
        kept.append(r)
        rates.append(len(hit) / len(gt))
        hit_ids.append(sorted(hit))
        hits += len(hit)
        gts += len(gt)
    return kept, rates, hit_ids, hits, gts


def hitrate(
    user_gt_input: str,
    item_embedding_input: str,
    total_hitrate_output: str | None = None,
    hitrate_details_output: str | None = None,
    batch_size: int = 1024,
    index_type: str = "IVFFlatIP",
    top_k: int = 200,
    topk_across_interests: bool = False,
    ivf_nlist: int = 1000,
    ivf_nprobe: int = 800,
    item_id_field: str = "item_id",
    item_embedding_field: str = "item_tower_emb",
    request_id_field: str = "request_id",
    gt_items_field: str = "gt_items",
    user_embedding_field: str = "user_tower_emb",
    num_interests: int = 1,
    num_interests_field: str | None = None,
    reader_type: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Total hitrate of a user table against an item table (module doc); write the outputs.

    ``total_hitrate_output``: one row, column ``hitrate``. ``hitrate_details_output``: per
    scored request ``id``, ``topk_ids`` (list per interest of ids), ``topk_dists``,
    ``hitrate`` and ``hit_ids``. Both as predict writes (a directory of part files, or one
    file for a path ending in ``.parquet``).

    Raises:
        ConfigError: bad sizes, an existing output without ``overwrite``.
        DataError: missing columns, ragged embeddings, no request with ground truth.
    """
    from tqdm import tqdm

    if top_k <= 0 or batch_size <= 0 or num_interests <= 0:
        raise ConfigError(
            f"--top_k, --batch_size and --num_interests must be positive (got {top_k}, "
            f"{batch_size}, {num_interests})"
        )
    for path, flag in (
        (total_hitrate_output, "--total_hitrate_output"),
        (hitrate_details_output, "--hitrate_details_output"),
    ):
        if path:
            check_output(path, overwrite, flag)
    ids, items = read_embedding_table(
        item_embedding_input, item_id_field, item_embedding_field, batch_size, reader_type
    )
    index = build_faiss_index(items, index_type, ivf_nlist)
    if hasattr(index, "nprobe"):
        index.nprobe = min(ivf_nprobe, index.nlist)
    columns = [request_id_field, gt_items_field, user_embedding_field]
    if num_interests_field:
        columns.append(num_interests_field)
    batches, total = read_batches(user_gt_input, columns, batch_size, reader_type)
    inner_product = index_type.endswith("IP")
    totals = {"requests": 0, "skipped": 0, "hits": 0, "gt": 0}

    def scored(details: Any) -> None:
        with tqdm(desc="tzrec hitrate", total=total, unit=" requests", disable=None) as bar:
            for batch in batches:
                user = embedding_matrix(
                    batch.column(user_embedding_field), num_interests, user_embedding_field
                )
                n = batch.num_rows
                if user.shape[0] != n * num_interests:
                    raise DataError(
                        f"{user_gt_input}: column '{user_embedding_field}' holds "
                        f"{user.shape[0]} embeddings for {n} requests x {num_interests} "
                        "interests"
                    )
                if user.shape[1] != items.shape[1]:
                    raise DataError(
                        f"{user_gt_input}: user embeddings have dim {user.shape[1]}, item "
                        f"embeddings {items.shape[1]}"
                    )
                dists, found = search(index, ids, user, top_k)
                per_req = (
                    [int(v or 0) for v in batch.column(num_interests_field).to_pylist()]
                    if num_interests_field
                    else None
                )
                if topk_across_interests:
                    d_lists, i_lists = merge_interests(
                        user, dists, found, top_k, num_interests, inner_product, per_req
                    )
                    per_req = None  # merged: one list per request already
                else:
                    d3 = dists.reshape(n, num_interests, -1)
                    i3 = found.reshape(n, num_interests, -1)
                    d_lists = [[[float(v) for v in row] for row in req] for req in d3]
                    i_lists = [[[i for i in row if i != ""] for row in req] for req in i3]
                truths = ground_truth(batch.column(gt_items_field))
                kept, rates, hit_ids, hits, gts = request_hitrates(i_lists, truths, per_req)
                totals["requests"] += len(kept)
                totals["skipped"] += n - len(kept)
                totals["hits"] += hits
                totals["gt"] += gts
                if details is not None and kept:
                    take = pa.array(kept, pa.int64())
                    details.write(
                        pa.table(
                            {
                                "id": batch.column(request_id_field).take(take),
                                "topk_ids": pa.array(
                                    [i_lists[r] for r in kept], pa.list_(pa.list_(pa.string()))
                                ),
                                "topk_dists": pa.array(
                                    [d_lists[r] for r in kept], pa.list_(pa.list_(pa.float32()))
                                ),
                                "hitrate": pa.array(rates, pa.float64()),
                                "hit_ids": pa.array(hit_ids, pa.list_(pa.string())),
                            }
                        )
                    )
                bar.update(n)

    if hitrate_details_output:
        with parquet_output(hitrate_details_output, overwrite, "--hitrate_details_output") as w:
            scored(w)
            _require_requests(totals, user_gt_input, gt_items_field)
    else:
        scored(None)
        _require_requests(totals, user_gt_input, gt_items_field)
    if totals["skipped"]:
        logger.warning(
            "%s: %d requests without ground truth skipped", user_gt_input, totals["skipped"]
        )
    total_rate = totals["hits"] / totals["gt"]
    if total_hitrate_output:
        with parquet_output(total_hitrate_output, overwrite, "--total_hitrate_output") as w:
            w.write(pa.table({"hitrate": pa.array([total_rate], pa.float64())}))
    return {
        "hitrate": total_rate,
        "requests": totals["requests"],
        "requests_skipped": totals["skipped"],
        "items": len(ids),
        "hits": totals["hits"],
        "gt_items": totals["gt"],
    }


def _require_requests(totals: dict[str, int], path: str, field: str) -> None:
    if not totals["gt"]:
        raise DataError(f"{path}: column '{field}' holds no ground-truth ids")


__all__ = [
    "INDEX_TYPES",
    "build_faiss_index",
    "create_faiss_index",
    "embedding_matrix",
    "ground_truth",
    "hitrate",
    "load_faiss_index",
    "merge_interests",
    "request_hitrates",
]
