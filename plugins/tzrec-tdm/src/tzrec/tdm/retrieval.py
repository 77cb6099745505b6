"""TDM retrieval: layer-wise beam search over the tree with a scoring model, and recall.

Upstream's ``tzrec.tools.tdm.retrieval``: with ``K = recall_num`` and branching ``n``,
scoring starts at layer ``f = ceil(log_n(2 n K))`` (the smallest ``f`` with
``n**f >= 2 n K``, at most the leaf layer): every node of layer ``f - 1`` is the first
beam. Each step scores all children of the beam with the model (one row per (user,
child)); above the leaves the ``2K`` best children form the next beam, at the leaves the
``K`` best distinct items are the user's recall. Recall@K is the fraction of input rows
whose ``item_id_field`` is among its recalled items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tzrec.core.errors import ConfigError, DataError
from tzrec.tdm.sampler import TREE_LEVEL, TreeTables

logger = logging.getLogger(__name__)

#: score(user index per row, node row per row) -> one score per row
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def first_recall_layer(recall_num: int, n_cluster: int, leaf_level: int) -> int:
    """Upstream's first scored layer ``ceil(log_n(2 n K))``, within ``[1, leaf_level]``."""
    layer, size = 0, 1
    while size < 2 * n_cluster * recall_num:
        size *= n_cluster
        layer += 1
    return max(1, min(layer, leaf_level))


def _top_per_user(users: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best-scored rows of each user (ties: the earlier row)."""
    order = np.lexsort((np.arange(len(users)), -scores, users))
    u = users[order]
    starts = np.searchsorted(u, u, side="left")
    rank = np.arange(len(u)) - starts
    return np.sort(order[rank < k])


def beam_search(
    tree: TreeTables, score: Scorer, num_users: int, recall_num: int, n_cluster: int = 2
) -> list[np.ndarray]:
    """Each user's ``recall_num`` best leaves (node rows, best first), by beam search.

    Raises:
        ConfigError: ``recall_num`` < 1.
    """
    if recall_num < 1:
        raise ConfigError(f"--recall_num: expected at least 1, got {recall_num}")
    leaf = tree.num_levels - 1
    first = first_recall_layer(recall_num, n_cluster, leaf)
    users = np.arange(num_users, dtype=np.int64)
    nodes = np.full(num_users, tree.root_row, dtype=np.int64)
    for _ in range(1, first):  # every node of layer first - 1 is the first beam
        q, child = tree.children_rows(nodes)
        users, nodes = users[q], child
    result: list[np.ndarray] = [np.zeros(0, np.int64)] * num_users
    for layer in range(first, leaf + 1):
        q, child = tree.children_rows(nodes)
        users, nodes = users[q], child
        if len(nodes) == 0:
            break
        scores = np.asarray(score(users, nodes), dtype=np.float64).reshape(-1)
        if layer < leaf:
            keep = _top_per_user(users, scores, 2 * recall_num)
            users, nodes = users[keep], nodes[keep]
            continue
        # leaves: the best K distinct items per user
        order = np.lexsort((np.arange(len(users)), -scores, users))
        users, nodes = users[order], nodes[order]
        key = users * (len(tree.nodes.ids) + 1) + nodes
        _, first_seen = np.unique(key, return_index=True)
        first_seen = np.sort(first_seen)
        users, nodes = users[first_seen], nodes[first_seen]
        starts = np.searchsorted(users, users, side="left")
        keep = (np.arange(len(users)) - starts) < recall_num
        users, nodes = users[keep], nodes[keep]
        bounds = np.searchsorted(users, np.arange(num_users + 1))
        result = [nodes[bounds[i] : bounds[i + 1]] for i in range(num_users)]
    return result


class NodeScorer:
    """Scores (user row, tree node) pairs with a TDM model, one row per pair.

    Every feature column the model reads comes from the node's attributes when the tree
    has it (``item_id_field`` and ``attr_fields``), else from the user's input row
    (:attr:`user_columns`, set per input batch).

    Args:
        features: the features the model reads.
        tree: the tree (node attributes typed like the input columns).
        forward: ``Batch -> outputs`` with ``probs`` (``(rows, 2)`` or ``(rows,)``).
    """

    def __init__(self, features: list[Any], tree: TreeTables, forward: Callable) -> None:
        from tzrec.data.parser import DataParser

        self.features = features
        self.parser = DataParser(features)
        self.input_columns = sorted({n for f in features for n in f.input_names})
        self.tree = tree
        self.forward = forward
        self.user_columns: dict[str, pa.Array] = {}

    @classmethod
    def from_export(cls, export_dir: str | Path, tree: TreeTables) -> NodeScorer:
        """A scorer running the exported artefact in ``export_dir`` (``tzrec export``)."""
        from tzrec.core.build import dataset_class
        from tzrec.export.artifact import load_exported
        from tzrec.models.inference import inputs_from_batch

        model = load_exported(export_dir)
        cfg = model.config
        features = dataset_class(cfg).create_features(cfg.feature_configs, cfg.data_config)
        return cls(features, tree, lambda batch: model(inputs_from_batch(batch, features)))

    @property
    def node_columns(self) -> set[str]:
        """Input columns taken from the tree's nodes."""
        return {a for a in self.tree.nodes.attrs if a != TREE_LEVEL}

    def __call__(self, users: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """Positive-class probability of each (user, node) row."""
        attrs = self.tree.nodes.take_attrs(nodes)
        take = pa.array(users, pa.int64())
        cols = {}
        for name in self.input_columns:
            if name in attrs and name != TREE_LEVEL:
                cols[name] = attrs[name]
            elif name in self.user_columns:
                cols[name] = self.user_columns[name].take(take)
            else:
                raise DataError(f"retrieval input: column '{name}' is missing")
        batch = self.parser.parse(cols, len(nodes))
        with torch.no_grad():
            probs = self.forward(batch)["probs"]
        if probs.dim() == 2:
            probs = probs[:, 1] if probs.size(1) > 1 else probs[:, 0]
        return probs.double().numpy()


def retrieve_batch(
    scorer: NodeScorer, rb: pa.RecordBatch, recall_num: int, n_cluster: int
) -> list[list[int]]:
    """The recalled item ids of each row of one input batch."""
    scorer.user_columns = {n: rb.column(n) for n in rb.schema.names}
    recalls = beam_search(scorer.tree, scorer, rb.num_rows, recall_num, n_cluster)
    ids = scorer.tree.nodes.ids
    return [ids[r].tolist() for r in recalls]


def tdm_retrieval(
    pipeline_config: Any,
    export_dir: str,
    predict_input_path: str,
    predict_output_path: str | None,
    recall_num: int = 200,
    n_cluster: int = 2,
    reserved_columns: list[str] | None = None,
    batch_size: int | None = None,
) -> float:
    """Beam-search every input row's user over the tree; write recalls; return recall@K.

    ``pipeline_config`` supplies ``data_config.tdm_sampler`` (the tree tables, the item id
    field); the scores come from the exported model in ``export_dir``.

    Raises:
        ConfigError: no ``tdm_sampler`` in the config.
        DataError: an input column is missing, or an item id is not a tree node.
    """
    dc = pipeline_config.data_config
    if not dc.HasField("tdm_sampler"):
        raise ConfigError("tdm-retrieval: the pipeline config has no data_config.tdm_sampler")
    sampler_cfg = dc.tdm_sampler
    item_field = sampler_cfg.item_id_field
    reserved = list(reserved_columns or [])
    bs = int(batch_size or dc.eval_batch_size or dc.batch_size or 256)
    scorer: NodeScorer | None = None
    total = hits = 0
    tables = []
    for rb in _iter_input(predict_input_path, bs):
        if scorer is None:
            types = {f.name: f.type for f in rb.schema}
            tree = TreeTables(sampler_cfg, types, predict=True)  # typed like the input
            scorer = NodeScorer.from_export(export_dir, tree)
            need = [c for c in scorer.input_columns if c not in scorer.node_columns]
            need += [item_field, *reserved]
            missing = sorted({c for c in need if c not in rb.schema.names})
            if missing:
                raise DataError(
                    f"{predict_input_path}: column {', '.join(map(repr, missing))} missing "
                    "(read by the model, the tdm_sampler's item_id_field or --reserved_columns)"
                )
        recall_ids = retrieve_batch(scorer, rb, recall_num, n_cluster)
        truth = rb.column(item_field).cast(pa.int64()).to_numpy(zero_copy_only=False)
        hits += sum(int(t in set(r)) for t, r in zip(truth.tolist(), recall_ids, strict=True))
        total += rb.num_rows
        out = {c: rb.column(c) for c in reserved}
        out["recall_ids"] = pa.array(recall_ids, pa.list_(pa.int64()))
        tables.append(pa.table(out))
    if total == 0:
        raise DataError(f"{predict_input_path}: no rows to retrieve for")
    if predict_output_path:
        out_path = Path(predict_output_path)
        if out_path.suffix not in (".parquet", ".pq"):
            out_path.mkdir(parents=True, exist_ok=True)
            out_path = out_path / "part-0.parquet"
        else:
            out_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), out_path)
    recall = hits / total
    logger.info("Retrieval Finished. Recall:%s", recall)
    return recall


def _iter_input(path: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.dataset as pds

    from tzrec.data.io import expand_input_path

    files = expand_input_path(path)
    if not files:
        raise DataError(f"{path}: no files to read")
    fmt = "csv" if files[0].endswith(".csv") else "parquet"
    try:
        dataset = pds.dataset(files, format=fmt)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as {fmt} ({' '.join(str(e).split())})") from None
    for rb in dataset.to_batches(batch_size=batch_size):
        if rb.num_rows:
            yield rb


__all__ = ["NodeScorer", "beam_search", "first_recall_layer", "retrieve_batch", "tdm_retrieval"]
