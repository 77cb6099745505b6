"""The four negative samplers, by their ``DataConfig`` oneof names."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from tzrec.data.samplers.base import (
    HARD_NEG_INDICES,
    BaseSampler,
    _positives,
    ids_to_numpy,
)
from tzrec.data.samplers.tables import EdgeTable, NodeTable


class NegativeSampler(BaseSampler):
    """``negative_sampler``: weighted items without replacement, batch positives excluded.

    Table: ``input_path`` item table ``id:int64 weight:float feature:string``.
    """

    def _load(self) -> None:
        self._t_items = self._item_table(self.config.input_path)

    def get(self, input_data, num_sample=None, exact=False):  # noqa: D102
        self.init()
        n = self.num_sample if num_sample is None else int(num_sample)
        items = self._t_items
        idx = self._weighted_without_replacement(
            items, n, _positives(items, input_data, self.item_id_field)
        )
        return items.take_attrs(idx)


class _EdgeMixin:
    def _edge_keys(self, users: NodeTable, items: NodeTable, edges: EdgeTable) -> np.ndarray:
        u = users.index_of(edges.src)
        i = items.index_of(edges.dst)
        ok = (u >= 0) & (i >= 0)
        return np.unique(u[ok] * len(items.ids) + i[ok])

    def _hard(self, edges: EdgeTable, items: NodeTable, user_ids: np.ndarray, limit: int):
        q, dst = edges.neighbors(user_ids, limit)
        idx = items.index_of(dst)
        keep = idx >= 0
        q, idx = q[keep], idx[keep]
        if len(q) == 0:
            return None, None
        starts = np.searchsorted(q, q, side="left")
        offset = np.arange(len(q)) - starts
        return idx, np.stack([q, offset], axis=1)


class NegativeSamplerV2(BaseSampler, _EdgeMixin):
    """``negative_sampler_v2``: uniform items that are not positive edges of the row's user.

    Tables: user ``id weight``, item ``id weight feature``, positive edges
    ``src_id dst_id weight``. Each positive gets ``ceil(num_sample / positives)``
    negatives (the dynamic expand factor); the first ``num_sample`` are returned.
    """

    def _load(self) -> None:
        c = self.config
        self._t_users = NodeTable(c.user_input_path, field_delimiter=self.field_delimiter)
        self._t_items = self._item_table(c.item_input_path)
        self._t_pos = EdgeTable(c.pos_edge_input_path, self.field_delimiter)
        self._t_keys = self._edge_keys(self._t_users, self._t_items, self._t_pos)

    def _simple(self, input_data, n: int) -> np.ndarray:
        items = self._t_items
        pos = _positives(items, input_data, self.item_id_field)
        users = self._t_users.index_of(
            ids_to_numpy(input_data[self.user_id_field], self.user_id_field)
        )
        num_pos = max(1, len(pos))
        ef = max(1, math.ceil(n / num_pos))
        if len(pos) == 0:
            pos, users = np.full(1, -1), np.full(1, -1)
        idx = self._uniform_excluding_edges(items, users, pos, ef, self._t_keys)
        return idx[:n]

    def get(self, input_data, num_sample=None, exact=False):  # noqa: D102
        self.init()
        n = self.num_sample if num_sample is None else int(num_sample)
        return self._t_items.take_attrs(self._simple(input_data, n))


class HardNegativeSampler(NegativeSampler, _EdgeMixin):
    """``hard_negative_sampler``: ``negative_sampler`` negatives plus hard negatives.

    Each row's user adds up to ``num_hard_sample`` heaviest neighbours from
    ``hard_neg_edge_input_path``.

    The result lists the ``num_sample`` simple negatives first, then the hard ones;
    ``hard_neg_indices[k] = (query row, offset)`` locates hard negative ``k``.
    """

    def _load(self) -> None:
        c = self.config
        self._t_items = self._item_table(c.item_input_path)
        self._t_users = NodeTable(c.user_input_path, field_delimiter=self.field_delimiter)
        self._t_hard = EdgeTable(c.hard_neg_edge_input_path, self.field_delimiter)

    def get(self, input_data, num_sample=None, exact=False):  # noqa: D102
        self.init()
        n = self.num_sample if num_sample is None else int(num_sample)
        items = self._t_items
        idx = self._weighted_without_replacement(
            items, n, _positives(items, input_data, self.item_id_field)
        )
        return _with_hard(self, items, idx, input_data, exact)


class HardNegativeSamplerV2(NegativeSamplerV2):
    """``hard_negative_sampler_v2``: ``negative_sampler_v2`` negatives plus hard negatives."""

    def _load(self) -> None:
        super()._load()
        self._t_hard = EdgeTable(self.config.hard_neg_edge_input_path, self.field_delimiter)

    def get(self, input_data, num_sample=None, exact=False):  # noqa: D102
        self.init()
        n = self.num_sample if num_sample is None else int(num_sample)
        idx = self._simple(input_data, n)
        return _with_hard(self, self._t_items, idx, input_data, exact)


def _with_hard(sampler, items: NodeTable, idx: np.ndarray, input_data, exact: bool):
    out = items.take_attrs(idx)
    if exact:
        return out
    users = ids_to_numpy(input_data[sampler.user_id_field], sampler.user_id_field)
    hard_idx, where = _EdgeMixin._hard(
        sampler, sampler._t_hard, items, users, int(sampler.config.num_hard_sample)
    )
    if hard_idx is None:
        return out
    hard = items.take_attrs(hard_idx)
    out = {k: pa.concat_arrays([v, hard[k]]) for k, v in out.items()}
    out[HARD_NEG_INDICES] = where
    return out
