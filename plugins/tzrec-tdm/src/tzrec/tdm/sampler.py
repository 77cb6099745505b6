"""``tdm_sampler``: TDM's tree sampler (positive ancestors, per-layer negatives), natively.

Upstream's TDMSampler over the tree tables (:mod:`tzrec.tdm.tree`), without graph-learn:

* the item table's ``feature`` holds ``tree_level, item_id_field, attr_fields...`` (the
  first two are prepended to ``attr_fields`` as upstream does);
* a row's positives are the ancestors of its item's leaf below the root (the
  ``edge_input_path`` edges), ordered by level;
* for each kept layer ``i`` and for the leaf layer, ``layer_num_sample[i]`` distinct
  negatives are drawn in proportion to node weight from the nodes of that layer, never the
  row's own positive there (``layer_num_sample[0]``, the root, must be 0);
* ``remain_ratio < 1`` keeps ``round(remain_ratio * (levels - 2))`` of the middle layers per
  batch, drawn without replacement with probability ``UNIFORM``, ``ARITHMETIC`` (``∝ i``) or
  ``RECIPROCAL`` (``∝ 1 / (levels - 1 - i)``) for layer ``i``; the leaf layer is always kept.

:meth:`TDMSampler.expand_batch` lays the rows out as upstream's ``expand_tdm_sample``:
``[original rows | positives (row-major) | negatives (row-major, by layer)]``, the item
columns from the sampled nodes, every other column repeated from its row, the labels
``[as read | 1 | 0]``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import arrow_utils as au
from tzrec.data.samplers.base import BaseSampler, ids_to_numpy
from tzrec.data.samplers.tables import EdgeTable, NodeTable

logger = logging.getLogger(__name__)

TREE_LEVEL = "tree_level"
_PROBABILITY_TYPES = ("UNIFORM", "ARITHMETIC", "RECIPROCAL")
#: cells of the (rows x layer nodes) key matrix drawn at once for weighted top-k
_CHUNK_CELLS = 1 << 22


def layer_probabilities(probability_type: str, num_levels: int) -> np.ndarray:
    """Upstream's probability of keeping each middle layer ``1 .. num_levels - 2``."""
    k = num_levels - 2
    if probability_type == "UNIFORM":
        p = np.full(k, 1.0 / k)
    elif probability_type == "ARITHMETIC":
        p = np.arange(1, k + 1, dtype=np.float64)
    elif probability_type == "RECIPROCAL":
        p = 1.0 / np.arange(k, 0, -1, dtype=np.float64)
    else:
        raise ConfigError(
            f"data_config.tdm_sampler.probability_type: {probability_type!r} is not one of "
            f"{', '.join(_PROBABILITY_TYPES)}"
        )
    return p / p.sum()


def tdm_attr_fields(config: Any) -> list[str]:
    """``tree_level, item_id_field, attr_fields...``: the columns of the item table's feature."""
    attrs = list(config.attr_fields)
    if not attrs or attrs[0] != TREE_LEVEL:
        attrs.insert(0, TREE_LEVEL)
    if len(attrs) < 2 or attrs[1] != config.item_id_field:
        attrs.insert(1, config.item_id_field)
    return attrs


class TreeTables:
    """The tree's nodes (levels, ids, attributes, weights) and its edge tables.

    Args:
        config: a ``TDMSampler`` config.
        attr_types: arrow types of the data columns the attributes extend.
        multival_sep: separator of multi-value attributes.
        predict: load the parent -> child edges (retrieval) instead of the ancestors.
    """

    def __init__(
        self,
        config: Any,
        attr_types: dict[str, pa.DataType] | None = None,
        multival_sep: str = "\x03",
        predict: bool = False,
    ) -> None:
        self.attr_fields = tdm_attr_fields(config)
        self.item_id_field = config.item_id_field
        field_delim = config.field_delimiter if config.HasField("field_delimiter") else None
        types = dict(attr_types or {})
        types[TREE_LEVEL] = pa.int64()
        types.setdefault(self.item_id_field, pa.int64())
        self.nodes = NodeTable(
            config.item_input_path,
            self.attr_fields,
            config.attr_delimiter,
            field_delim,
            types,
            multival_sep,
        )
        path = self.path = config.item_input_path
        levels = self.nodes.attrs[TREE_LEVEL]
        if levels.null_count:
            raise DataError(f"{path}: a node has an empty tree_level")
        self.levels = levels.to_numpy(zero_copy_only=False).astype(np.int64)
        real = self.levels >= 0  # the -1 placeholder row leads graph-learn to the root
        if not real.any():
            raise DataError(f"{path}: no tree nodes (every tree_level is < 0)")
        self.num_levels = int(self.levels[real].max()) + 1
        #: row indices of the nodes of each level
        self.layer_rows = [np.nonzero(self.levels == lv)[0] for lv in range(self.num_levels)]
        empty = [lv for lv, rows in enumerate(self.layer_rows) if len(rows) == 0]
        if empty:
            raise DataError(f"{path}: tree level {empty[0]} has no nodes")
        if len(self.layer_rows[0]) != 1:
            raise DataError(f"{path}: tree level 0 has {len(self.layer_rows[0])} nodes, expected 1")
        edge_path = config.predict_edge_input_path if predict else config.edge_input_path
        self.edges = EdgeTable(edge_path, field_delim)
        self.edge_path = edge_path

    @property
    def root_row(self) -> int:
        """Row of the root node."""
        return int(self.layer_rows[0][0])

    def rows_of(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Node rows of ``ids``; a one-line error naming the first id not in the tree."""
        rows = self.nodes.index_of(ids)
        if (rows < 0).any():
            bad = ids[np.nonzero(rows < 0)[0][0]]
            raise DataError(f"{what} {int(bad)} is not a node of the TDM tree {self.path}")
        return rows

    def children_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(parent position, child row)`` for every child of the given node rows."""
        ids = self.nodes.ids[rows]
        q, dst = self.edges.neighbors(ids, 1 << 62)
        return q, self.rows_of(dst, f"{self.edge_path}: child")


class TDMSampler(BaseSampler):
    """Upstream's TDM training sampler (see the module docstring).

    Constructed as every sampler: ``cls(config, input_fields, batch_size, is_training,
    multival_sep)``; :meth:`expand_batch` is what the reader calls per batch.
    """

    #: the sampler lays out whole rows itself (the reader does not append ``__NEG__`` rows)
    expands_rows = True

    def __init__(
        self,
        config: Any,
        input_fields: list[pa.Field] | None,
        batch_size: int,
        is_training: bool = True,
        multival_sep: str = "\x03",
        seed: int = 0,
    ) -> None:
        super().__init__(config, input_fields, batch_size, is_training, multival_sep, seed)
        self.attr_fields = tdm_attr_fields(config)
        self.layer_num_sample = [int(n) for n in config.layer_num_sample]
        if len(self.layer_num_sample) < 2:
            raise ConfigError(
                "data_config.tdm_sampler.layer_num_sample: expected one count per tree level "
                f"(root first, at least 2), got {self.layer_num_sample}"
            )
        if self.layer_num_sample[0] != 0:
            raise ConfigError(
                "data_config.tdm_sampler.layer_num_sample: the root's count (the first) must "
                f"be 0, got {self.layer_num_sample[0]}"
            )
        self.num_levels = len(self.layer_num_sample)
        self.remain_ratio = float(config.remain_ratio)
        if not 0.0 < self.remain_ratio <= 1.0:
            raise ConfigError(
                f"data_config.tdm_sampler.remain_ratio: expected (0, 1], got {self.remain_ratio}"
            )
        self.remain_p = None
        if self.remain_ratio < 1.0 and self.num_levels > 2:
            self.remain_p = layer_probabilities(config.probability_type, self.num_levels)
        elif config.probability_type not in _PROBABILITY_TYPES:
            layer_probabilities(config.probability_type, 3)  # raises the one-line error

    def _load(self) -> None:
        tree = TreeTables(self.config, self.attr_types, self.multival_sep)
        if tree.num_levels != self.num_levels:
            raise ConfigError(
                f"data_config.tdm_sampler.layer_num_sample has {self.num_levels} entries but "
                f"the tree {self.config.item_input_path} has {tree.num_levels} levels"
            )
        self._t_tree = tree

    @property
    def tree(self) -> TreeTables:
        """The loaded tree tables."""
        self.init()
        return self._t_tree

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_t_tree", None)
        return state

    # ---- sampling ----------------------------------------------------------------------
    def remain_layers(self) -> np.ndarray:
        """The middle layers kept for this batch (all unless ``remain_ratio < 1``)."""
        middle = np.arange(1, self.num_levels - 1)
        if self.remain_p is None:
            return middle
        keep = int(round(self.remain_ratio * (self.num_levels - 2)))
        chosen = self.rng.choice(middle, keep, replace=False, p=self.remain_p)
        return np.sort(chosen)

    def positive_rows(self, leaf_rows: np.ndarray) -> np.ndarray:
        """``(B, levels - 2)`` node rows of each leaf's ancestors below the root, by level."""
        tree = self.tree
        width = self.num_levels - 2
        q, dst = tree.edges.neighbors(tree.nodes.ids[leaf_rows], 1 << 62)
        counts = np.bincount(q, minlength=len(leaf_rows))
        bad = np.nonzero(counts != width)[0]
        if len(bad):
            item = int(tree.nodes.ids[leaf_rows[bad[0]]])
            raise DataError(
                f"{tree.edge_path}: item {item} has {int(counts[bad[0]])} ancestor edges, "
                f"expected {width} (one per level between the root and the leaves)"
            )
        rows = tree.rows_of(dst, f"{tree.edge_path}: ancestor")
        levels = tree.levels[rows]
        order = np.lexsort((levels, q))
        rows = rows[order].reshape(len(leaf_rows), width)
        want = np.arange(1, self.num_levels - 1)
        if width and not (tree.levels[rows] == want).all():
            r = int(np.nonzero((tree.levels[rows] != want).any(1))[0][0])
            raise DataError(
                f"{tree.edge_path}: the ancestors of item {int(tree.nodes.ids[leaf_rows[r]])} "
                f"are not one per level 1..{self.num_levels - 2}"
            )
        return rows

    def layer_negatives(self, layer: int, positive_rows: np.ndarray, num: int) -> np.ndarray:
        """``(B, num)`` distinct node rows of ``layer`` per row, weighted, never its positive.

        Weighted sampling without replacement by Gumbel top-k (``log w + Gumbel`` keys, the
        positive's key -inf); a layer with fewer than ``num + 1`` nodes samples with
        replacement among its other nodes (logged once).
        """
        tree = self.tree
        nodes = tree.layer_rows[layer]
        b = len(positive_rows)
        if num == 0:
            return np.zeros((b, 0), dtype=np.int64)
        weights = tree.nodes.weights[nodes]
        with np.errstate(divide="ignore"):
            logw = np.log(weights)
        pos_at = np.searchsorted(nodes, positive_rows)
        m = len(nodes)
        eligible = int((weights > 0).sum()) - 1
        if eligible <= 0:
            raise DataError(
                f"{self.config.item_input_path}: tree level {layer} has no node with positive "
                "weight besides the positive to sample negatives from"
            )
        if eligible < num:
            if not self._warned:
                logger.warning(
                    "tdm_sampler: tree level %d has %d candidate nodes for %d negatives; "
                    "sampling with replacement",
                    layer,
                    eligible,
                    num,
                )
                self._warned = True
            p = np.where(weights > 0, weights, 0.0)
            out = np.empty((b, num), dtype=np.int64)
            for r in range(b):
                pr = p.copy()
                pr[pos_at[r]] = 0.0
                out[r] = self.rng.choice(m, num, replace=True, p=pr / pr.sum())
            return nodes[out]
        out = np.empty((b, num), dtype=np.int64)
        step = max(1, _CHUNK_CELLS // m)
        for start in range(0, b, step):
            stop = min(b, start + step)
            keys = logw[None, :] + self.rng.gumbel(size=(stop - start, m))
            keys[np.arange(stop - start), pos_at[start:stop]] = -np.inf
            top = np.argpartition(-keys, num - 1, axis=1)[:, :num]
            # order by key: successive weighted draws without replacement
            order = np.argsort(-np.take_along_axis(keys, top, 1), axis=1, kind="stable")
            out[start:stop] = np.take_along_axis(top, order, 1)
        return nodes[out]

    def sample(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node rows for one batch of leaf item ids.

        Returns:
            ``(positives (B, kept middle layers), negatives (B, sum of kept counts), layers
            of the negatives' columns)``.
        """
        tree = self.tree
        leaf_rows = tree.rows_of(item_ids, "data_config.tdm_sampler.item_id_field: item")
        leaf_level = self.num_levels - 1
        off_leaf = tree.levels[leaf_rows] != leaf_level
        if off_leaf.any():
            bad = int(item_ids[np.nonzero(off_leaf)[0][0]])
            raise DataError(
                f"data_config.tdm_sampler.item_id_field: item {bad} is not a leaf of the TDM "
                f"tree (level {int(tree.levels[tree.nodes.index_of(np.array([bad]))[0]])}, "
                f"leaves are at level {leaf_level})"
            )
        ancestors = self.positive_rows(leaf_rows)
        kept = self.remain_layers()
        positives = ancestors[:, kept - 1] if len(kept) else ancestors[:, :0]
        negs, layers = [], []
        for layer in [*kept.tolist(), leaf_level]:
            pos = leaf_rows if layer == leaf_level else ancestors[:, layer - 1]
            num = self.layer_num_sample[layer]
            negs.append(self.layer_negatives(layer, pos, num))
            layers += [layer] * num
        negatives = np.concatenate(negs, axis=1)
        return positives, negatives, np.asarray(layers, dtype=np.int64)

    def get(
        self, input_data: dict[str, pa.Array], num_sample: int | None = None, exact: bool = False
    ) -> dict[str, pa.Array]:
        """Upstream's ``get`` as one dict: each attribute's positives, then its negatives.

        The positives are ``B x kept middle layers`` rows, the negatives ``B x`` the kept
        layers' ``layer_num_sample`` rows, both row-major (see :meth:`expand_batch`).
        """
        ids = ids_to_numpy(input_data[self.item_id_field], self.item_id_field)
        pos, neg, _ = self.sample(ids)
        return self._attributes(np.concatenate([pos.reshape(-1), neg.reshape(-1)]))

    def _attributes(self, rows: np.ndarray) -> dict[str, pa.Array]:
        attrs = self.tree.nodes.take_attrs(rows)
        attrs.pop(TREE_LEVEL, None)
        return attrs

    def expand_batch(self, columns: dict[str, pa.Array], label_fields: list[str]) -> dict[str, Any]:
        """Lay out one batch as upstream's ``expand_tdm_sample`` (in place; see the module doc).

        Item columns are the sampled attributes the data has; a configured attribute the
        data lacks is skipped with a warning (as upstream).

        Returns:
            no extra batch tensors (an empty dict).
        """
        field = self.item_id_field
        ids = ids_to_numpy(au.combine(columns[field]), field)
        b = len(ids)
        pos, neg, _ = self.sample(ids)
        sampled = self._attributes(np.concatenate([pos.reshape(-1), neg.reshape(-1)]))
        missing = [a for a in sampled if a not in columns]
        if missing and not self._warned:
            logger.warning("tdm_sampler: attr_fields %s are not data columns; ignored", missing)
            self._warned = True
        n_pos, n_neg = pos.size, neg.size
        labels = set(label_fields)
        rows = np.concatenate(
            [
                np.arange(b),
                np.repeat(np.arange(b), pos.shape[1]),
                np.repeat(np.arange(b), neg.shape[1]),
            ]
        )
        take = pa.array(rows, pa.int64())
        for name in list(columns):
            base = au.combine(columns[name])
            if name in sampled:
                columns[name] = pa.concat_arrays([base, _cast_like(sampled[name], base.type, name)])
            elif name in labels:
                ones = pa.array(np.ones(n_pos)).cast(base.type)
                zeros = pa.array(np.zeros(n_neg)).cast(base.type)
                columns[name] = pa.concat_arrays([base, ones, zeros])
            else:
                columns[name] = base.take(take)
        return {}


def _cast_like(values: pa.Array, t: pa.DataType, name: str) -> pa.Array:
    if values.type == t:
        return values
    try:
        return values.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"tdm_sampler: node attribute '{name}' ({values.type}) does not fit the data "
            f"column's type {t}"
        ) from None


__all__ = ["TDMSampler", "TreeTables", "layer_probabilities", "tdm_attr_fields"]
