"""Shared sampler machinery: weighted sampling without replacement and input flattening."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from tzrec.core.errors import DataError
from tzrec.data import arrow_utils as au
from tzrec.data.samplers.tables import NodeTable

logger = logging.getLogger(__name__)

#: Key of the ``[n, 2]`` (query row, neighbour offset) array of hard negatives.
HARD_NEG_INDICES = "hard_neg_indices"


def ids_to_numpy(arr: pa.Array, field: str) -> np.ndarray:
    """int64 ids of a flat id column."""
    arr = au.combine(arr)
    try:
        return arr.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"sampler input column '{field}': expected integer ids") from None


def build_sampler_input(
    columns: dict[str, pa.Array],
    item_id_field: str,
    user_id_field: str | None,
    item_id_delim: str,
) -> tuple[dict[str, pa.Array], pa.ListArray]:
    """Flatten multi-value positives (``"1;2"`` or list cells); repeat user ids to match.

    Returns:
        ``(inputs, positives_per_row)``: flat item (and user) id arrays for the sampler,
        and the per-row positives as a list array.
    """
    pos = au.to_list_array(columns[item_id_field], item_id_delim)
    off = au.list_offsets(pos)
    inputs = {item_id_field: au.list_values(pos)}
    if user_id_field:
        users = au.combine(columns[user_id_field])
        rows = au.parent_rows(off)
        inputs[user_id_field] = users.take(pa.array(rows))
    return inputs, pos


class BaseSampler:
    """Base of the native samplers.

    Args:
        config: the sampler config message.
        input_fields: arrow fields of the input data, used to type sampled attributes like
            the real columns.
        batch_size: batch size (for estimates only).
        is_training: ``False`` uses ``num_eval_sample`` when set.
        multival_sep: separator of multi-value attributes for list-typed columns.
        seed: random seed (the dataset reseeds each worker).
    """

    def __init__(
        self,
        config: Any,
        input_fields: list[pa.Field] | None,
        batch_size: int,
        is_training: bool = True,
        multival_sep: str = "\x03",
        seed: int = 0,
    ) -> None:
        self.config = config
        self.batch_size = batch_size
        # a sampler without one count (TDM's per-layer ``layer_num_sample``) has no num_sample
        self.num_sample = int(getattr(config, "num_sample", 0))
        if not is_training and config.HasField("num_eval_sample"):
            self.num_sample = int(config.num_eval_sample)
        self.attr_fields = list(config.attr_fields)
        self.attr_types = {f.name: f.type for f in (input_fields or [])}
        self.item_id_field = config.item_id_field
        self.user_id_field = getattr(config, "user_id_field", "") or ""
        self.item_id_delim = getattr(config, "item_id_delim", ";") or ";"
        self.multival_sep = multival_sep
        self.field_delimiter = (
            config.field_delimiter if config.HasField("field_delimiter") else None
        )
        #: Attribute -> the item-table column holding it when the table lacks the attribute's
        #: own name (a candidate sequence's ``cand_seq__video_id`` stored as ``video_id``).
        self.table_columns: dict[str, str] = {}
        self.rng = np.random.default_rng(seed)
        self._loaded = False
        self._warned = False

    def set_seed(self, seed: int) -> None:
        """Reseed the sampler's random generator."""
        self.rng = np.random.default_rng(seed)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("_loaded"):
            # tables are reloaded lazily in worker processes rather than pickled
            for k in list(state):
                if k.startswith("_t_"):
                    del state[k]
            state["_loaded"] = False
        return state

    def init(self) -> None:
        """Load the tables (called lazily by the first ``get``)."""
        if not self._loaded:
            self._load()
            self._loaded = True

    def _load(self) -> None:
        raise NotImplementedError

    def _item_table(self, path: str) -> NodeTable:
        table = NodeTable(
            path,
            self.attr_fields,
            self.config.attr_delimiter,
            self.field_delimiter,
            self.attr_types,
            self.multival_sep,
            self.table_columns,
        )
        if len(table.ids) == 0:
            raise DataError(f"sampler item table {path}: no items to sample negatives from")
        return table

    def get(
        self, input_data: dict[str, pa.Array], num_sample: int | None = None, exact: bool = False
    ) -> dict[str, pa.Array]:
        """Sample negatives for one batch of (flattened) positives.

        Args:
            input_data: flat ``item_id_field`` (and ``user_id_field``) arrays.
            num_sample: negatives to draw (default: the config's ``num_sample``).
            exact: unused by the base samplers (they always return ``num_sample``).

        Returns:
            attribute name -> array of ``num_sample`` sampled items (hard-negative samplers
            append the hard negatives and add ``hard_neg_indices``).
        """
        raise NotImplementedError

    # ---- sampling primitives ---------------------------------------------------------
    def _weighted_without_replacement(
        self, table: NodeTable, n: int, exclude: np.ndarray
    ) -> np.ndarray:
        """``n`` distinct rows drawn in proportion to weight, none of them in ``exclude``.

        I.i.d. draws keep their first occurrence, which is exactly successive weighted
        draws without replacement; the draw size adapts (dynamic expand factor) until ``n``
        rows are found. Draws use a guide table over the cumulative weights (O(1) per draw
        instead of a binary search), exclusion a bitmap over the table's rows.
        """
        if n <= 0:
            return np.zeros(0, np.int64)
        dist = self.__dict__.get("_t_dist")
        if dist is None or dist.table is not table:
            dist = self._t_dist = WeightedDraws(table.weights)
            dist.table = table
        total = dist.total
        exclude = exclude[exclude >= 0]
        excluded = np.zeros(0, np.int64)
        if len(exclude):
            excluded = np.unique(exclude)
        eligible = dist.positive - int(dist.is_positive[excluded].sum())
        if total <= 0 or eligible <= 0:
            raise DataError("negative sampler: no item with positive weight left to sample")
        replace = eligible < n
        if replace and not self._warned:
            logger.warning(
                "negative sampler: only %d candidate items for %d negatives; sampling with "
                "replacement",
                eligible,
                n,
            )
            self._warned = True
        mask = dist.mask
        mask[excluded] = True
        try:
            chosen = np.zeros(0, np.int64)
            for _ in range(64):
                need = n - len(chosen)
                if need <= 0:
                    break
                m = int(need * 1.25) + 16
                cand = dist.draw(self.rng.random(m) * total)
                if len(excluded):
                    cand = cand[~mask[cand]]
                if replace:
                    chosen = np.concatenate([chosen, cand])
                    continue
                chosen = _first_occurrences(np.concatenate([chosen, cand]))
        finally:
            mask[excluded] = False
        if len(chosen) < n:
            raise DataError(f"negative sampler: could only draw {len(chosen)} of {n} negatives")
        return chosen[:n]

    def _uniform_excluding_edges(
        self,
        table: NodeTable,
        user_idx: np.ndarray,
        pos_idx: np.ndarray,
        per_query: int,
        edge_keys: np.ndarray,
    ) -> np.ndarray:
        """``per_query`` uniform rows per query, rejecting the query user's positive edges."""
        q = len(user_idx)
        n_items = len(table.ids)
        users = np.repeat(user_idx, per_query)
        pos = np.repeat(pos_idx, per_query)
        out = self.rng.integers(0, n_items, size=q * per_query)
        for _ in range(32):
            keys = users * n_items + out
            bad = out == pos
            if len(edge_keys):
                at = np.minimum(np.searchsorted(edge_keys, keys), len(edge_keys) - 1)
                bad |= (edge_keys[at] == keys) & (users >= 0)
            if not bad.any():
                break
            out[bad] = self.rng.integers(0, n_items, size=int(bad.sum()))
        return out


#: Guide tables whose buckets span more rows than this fall back to a binary search.
_MAX_GUIDE_WIDTH = 16


class WeightedDraws:
    """Inverse-CDF draws from a weight vector: ``draw(u)`` == ``searchsorted(cum, u, "right")``.

    A guide table of ``len(weights)`` equal-probability buckets holds, per bucket, the
    first row whose cumulative weight exceeds the bucket start; a draw then only counts
    the few rows inside its bucket (vectorised over all draws). Heavily skewed weights
    (a bucket spanning more than ``_MAX_GUIDE_WIDTH`` rows) use a sorted binary search.

    Args:
        weights: non-negative weights of the table's rows.
    """

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        self.table = None
        self.n = len(weights)
        self.cum = np.cumsum(weights)
        self.total = float(self.cum[-1]) if self.n else 0.0
        self.is_positive = weights > 0
        self.positive = int(self.is_positive.sum())
        #: scratch bitmap over rows (kept all False between uses)
        self.mask = np.zeros(self.n, dtype=bool)
        self.guide = None
        if self.n and self.total > 0:
            g = self.n
            self.step = self.total / g
            grid = np.arange(g, dtype=np.float64) * self.step
            guide = np.searchsorted(self.cum, grid, side="right")
            index_type = np.int32 if self.n < 2**31 else np.int64
            guide = np.append(guide, self.n).astype(index_type)
            self.width = int(np.diff(guide).max(initial=0))
            if self.width <= _MAX_GUIDE_WIDTH:
                self.guide = guide
                self.scale = g / self.total

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Row of each point ``u`` in ``[0, total)`` of the cumulative weights."""
        n = self.n
        if self.guide is None:
            order = np.argsort(u)
            out = np.empty(len(u), dtype=np.int64)
            out[order] = np.searchsorted(self.cum, u[order], side="right")
            return np.minimum(out, n - 1)
        g = len(self.guide) - 1
        b = np.minimum((u * self.scale).astype(np.int64), g - 1)
        # exact bucket despite rounding: grid[b] <= u < grid[b + 1], with grid[j] computed
        # exactly as when the guide was built and grid[g] = inf
        b -= b.astype(np.float64) * self.step > u
        nxt = b + 1
        b += (nxt < g) & (u >= nxt.astype(np.float64) * self.step)
        lo = self.guide[b].astype(np.int64)
        width = self.guide[b + 1] - lo
        out = lo.copy()
        for k in range(self.width):
            active = width > k
            if not active.any():
                break
            at = np.minimum(lo + k, n - 1)
            out += active & (self.cum[at] <= u)
        return np.minimum(out, n - 1)


def _first_occurrences(x: np.ndarray) -> np.ndarray:
    """The distinct values of ``x`` in order of first occurrence."""
    _, first = np.unique(x, return_index=True)
    if len(first) == len(x):
        return x
    return x[np.sort(first)]


def _positives(table: NodeTable, input_data: dict[str, pa.Array], field: str) -> np.ndarray:
    return table.index_of(ids_to_numpy(input_data[field], field))
