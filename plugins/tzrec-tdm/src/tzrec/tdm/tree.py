"""The TDM tree: leaf codes from item categories or embeddings, the tree, and its tables.

A tree is a complete ``n_cluster``-ary code space: the root has code 0 and node ``c`` has
children ``n*c+1 .. n*c+n``. Leaves get codes from :func:`category_codes` (items sorted by
category, split into ``n`` equal ranges recursively) or :func:`cluster_codes` (balanced
k-means over item embeddings), then :func:`build_tree` moves every leaf down to the last
level (``c -> n*c+1`` until ``c >= n**L - 1`` with ``n**L >= len(items)``), creates the
ancestors, gives each non-leaf the id ``max_item_id + code + 1`` and, as attributes, the
per-column mode of its leaves' attributes (the mean for raw attributes).

:meth:`Tree.write` writes upstream's tables (tab separated text with a typed header):
``node_table.txt`` (``id, weight, feature``: ``level,item_id,attrs..,raw_attrs..`` joined by
the attribute delimiter, led by a ``-1`` placeholder node), ``edge_table.txt`` (each leaf to
each of its ancestors below the root: the training sampler's positives) and
``predict_edge_table.txt`` (``-1`` to the root, then every parent to each child: the
retrieval beam search), plus ``node_feature.parquet`` (every node's id and attributes).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tzrec.core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

NODE_TABLE = "node_table.txt"
EDGE_TABLE = "edge_table.txt"
PREDICT_EDGE_TABLE = "predict_edge_table.txt"
NODE_FEATURE = "node_feature.parquet"
SERVING_TREE = "serving_tree"


def num_levels_below_root(num_items: int, n_cluster: int) -> int:
    """The smallest ``L`` with ``n_cluster ** L >= num_items`` (the leaves' depth)."""
    depth, size = 0, 1
    while size < num_items:
        size *= n_cluster
        depth += 1
    return depth


def code_depth(code: int, n_cluster: int) -> int:
    """Depth of ``code`` in the complete ``n_cluster``-ary code space (root 0 at depth 0)."""
    depth = 0
    while code > 0:
        code = (code - 1) // n_cluster
        depth += 1
    return depth


def category_codes(categories: list[str], item_ids: list[int], n_cluster: int) -> np.ndarray:
    """Upstream's initial tree: leaf codes of items sorted by ``(category, item_id)``.

    The sorted range ``[start, end)`` of a node with code ``c`` is cut into ``n`` parts at
    ``int(start + i*(end-start)/n)``; part ``i`` gets code ``n*c + n - i`` (upstream's order),
    until one item is left.
    """
    order = sorted(range(len(item_ids)), key=lambda i: (categories[i], item_ids[i]))
    codes = np.zeros(len(item_ids), dtype=np.int64)
    stack = [(0, len(order), 0)]
    while stack:
        start, end, code = stack.pop()
        if end <= start:
            continue
        if end == start + 1:
            codes[order[start]] = code
            continue
        for i in range(n_cluster):
            left = int(start + i * (end - start) / n_cluster)
            right = int(start + (i + 1) * (end - start) / n_cluster)
            stack.append((left, right, n_cluster * code + n_cluster - i))
    return codes


def _kmeans(data: np.ndarray, k: int, seed: int, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: ``(labels, centroids)``."""
    rng = np.random.default_rng(seed)
    n = len(data)
    centroids = np.empty((k, data.shape[1]))
    centroids[0] = data[rng.integers(n)]
    dist = ((data - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = dist.sum()
        pick = rng.choice(n, p=dist / total) if total > 0 else rng.integers(n)
        centroids[j] = data[pick]
        dist = np.minimum(dist, ((data - centroids[j]) ** 2).sum(1))
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        d = ((data[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        new = d.argmin(1)
        if it and (new == labels).all():
            break
        labels = new
        for j in range(k):
            members = data[labels == j]
            if len(members):
                centroids[j] = members.mean(0)
    return labels, centroids


def _balanced_split(data: np.ndarray, index: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Upstream's balanced k-means split of ``index`` into ``k`` parts.

    Each cluster keeps at most ``ave = len // k`` members nearest its centroid; the rest
    fill the clusters below ``ave`` in order (nearest to that cluster first) and what is
    still left joins cluster 0.
    """
    x = data[index]
    labels, centroids = _kmeans(x, k, seed)
    dist = np.sqrt(((x[:, None, :] - centroids[None, :, :]) ** 2).sum(-1))
    ave = len(index) // k
    parts: list[np.ndarray] = []
    remain: list[int] = []  # positions into ``index``
    for j in range(k):
        members = np.nonzero(labels == j)[0]
        if len(members) <= ave:
            parts.append(members)
        else:
            members = members[np.argsort(dist[members, j], kind="stable")]
            parts.append(members[:ave])
            remain.extend(members[ave:].tolist())
    rest = np.array(remain, dtype=np.int64)
    j = 0
    while j < k and len(rest):
        if len(parts[j]) >= ave:
            j += 1
            continue
        need = min(len(rest), ave - len(parts[j]))
        rest = rest[np.argsort(dist[rest, j], kind="stable")]
        parts[j] = np.append(parts[j], rest[:need])
        rest = rest[need:]
        j += 1
    if len(rest):
        parts[0] = np.append(parts[0], rest)
    return [index[p] for p in parts]


def cluster_codes(embeddings: np.ndarray, n_cluster: int, seed: int = 0) -> np.ndarray:
    """Upstream's learnt tree: leaf codes by recursive balanced k-means over embeddings.

    A set of at most ``n`` items under code ``c`` gets codes ``n*c+1 ..``; a larger set is
    split by :func:`_balanced_split`, part ``i`` under code ``n*c+i+1`` (a one-item part is
    that item's code).
    """
    data = np.asarray(embeddings, dtype=np.float64)
    codes = np.zeros(len(data), dtype=np.int64)
    queue = [(0, np.arange(len(data)))]
    while queue:
        parent, index = queue.pop()
        if len(index) <= n_cluster:
            for i, item in enumerate(index):
                codes[item] = n_cluster * parent + i + 1
            continue
        for i, part in enumerate(_balanced_split(data, index, n_cluster, seed + parent)):
            if len(part) > 1:
                queue.append((n_cluster * parent + i + 1, part))
            elif len(part) == 1:
                codes[part[0]] = n_cluster * parent + i + 1
    return codes


def _mode(values: list[Any]) -> Any:
    """Upstream's non-leaf attribute: most common non-empty value (first seen on ties)."""
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return None
    if all(isinstance(v, str) for v in present):
        return Counter(present).most_common(1)[0][0]
    counts = Counter(present)
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)  # pyarrow's mode: smallest on ties


def _mean(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    mean = float(np.mean(present))
    return int(round(mean)) if all(isinstance(v, int) for v in present) else mean


@dataclass
class Tree:
    """A built tree: nodes by code, each with its item id, level and attributes.

    Attributes:
        n_cluster: the branching factor.
        depth: the leaves' level (the root is level 0).
        codes: node codes in level order (ascending code within a level).
        item_ids: node id of each code (the item id for leaves).
        levels: level of each code.
        attrs / raw_attrs: attribute values of each code (lists, per column).
        attr_names / raw_attr_names: the attribute column names.
    """

    n_cluster: int
    depth: int
    codes: list[int]
    item_ids: dict[int, int]
    levels: dict[int, int]
    attrs: dict[int, list[Any]]
    raw_attrs: dict[int, list[Any]]
    attr_names: list[str] = field(default_factory=list)
    raw_attr_names: list[str] = field(default_factory=list)

    def parent(self, code: int) -> int:
        """The parent code (the root has none)."""
        return (code - 1) // self.n_cluster

    def children(self, code: int) -> list[int]:
        """Child codes that exist, in ascending order."""
        first = self.n_cluster * code + 1
        return [c for c in range(first, first + self.n_cluster) if c in self.item_ids]

    def leaves(self) -> list[int]:
        """Leaf codes in level order."""
        return [c for c in self.codes if self.levels[c] == self.depth]

    def ancestors(self, code: int) -> list[int]:
        """Codes from the parent up to the root."""
        out = []
        while code > 0:
            code = self.parent(code)
            out.append(code)
        return out

    def write(
        self,
        output_dir: str | os.PathLike,
        attr_delimiter: str = ",",
        serving_dir: str | os.PathLike | None = None,
    ) -> dict[str, str]:
        """Write the node, edge and predict-edge tables (upstream's format) and node features.

        ``serving_dir`` also gets upstream's ``serving_tree`` (``levels n_cluster``, then one
        ``code item_id`` line per node).

        Returns:
            table name -> path.
        """
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        d = attr_delimiter
        root = self.codes[0]

        def text(v: Any, empty: str) -> str:
            return empty if v is None else str(v)

        def feature(code: int) -> list[str]:
            parts = [str(self.levels[code]), str(self.item_ids[code])]
            if self.attr_names:
                parts.append(d.join(text(v, "") for v in self.attrs[code]))
            if self.raw_attr_names:
                parts.append(d.join(text(v, "0") for v in self.raw_attrs[code]))
            return parts

        with open(out / NODE_TABLE, "w", encoding="utf-8") as fh:
            fh.write("id:int64\tweight:float\tfeature:string\n")
            fh.write(f"-1\t1.0\t{d.join(['-1', *feature(root)[1:]])}\n")
            for code in self.codes:
                fh.write(f"{self.item_ids[code]}\t1.0\t{d.join(feature(code))}\n")
        with open(out / EDGE_TABLE, "w", encoding="utf-8") as fh:
            fh.write("src_id:int64\tdst_id:int64\tweight:float\n")
            for leaf in self.leaves():
                for anc in self.ancestors(leaf)[:-1]:  # not the root
                    fh.write(f"{self.item_ids[leaf]}\t{self.item_ids[anc]}\t1.0\n")
        with open(out / PREDICT_EDGE_TABLE, "w", encoding="utf-8") as fh:
            fh.write("src_id:int64\tdst_id:int64\tweight:float\n")
            fh.write(f"-1\t{self.item_ids[root]}\t1.0\n")
            for code in self.codes:
                for child in self.children(code):
                    fh.write(f"{self.item_ids[code]}\t{self.item_ids[child]}\t1.0\n")
        columns: dict[str, list[Any]] = {"id": [self.item_ids[c] for c in self.codes]}
        for i, name in enumerate(self.attr_names):
            columns[name] = [self.attrs[c][i] for c in self.codes]
        for i, name in enumerate(self.raw_attr_names):
            columns[name] = [self.raw_attrs[c][i] for c in self.codes]
        pq.write_table(pa.table(columns), out / NODE_FEATURE)
        paths = {
            "node_table": str(out / NODE_TABLE),
            "edge_table": str(out / EDGE_TABLE),
            "predict_edge_table": str(out / PREDICT_EDGE_TABLE),
            "node_feature": str(out / NODE_FEATURE),
        }
        if serving_dir is not None:
            Path(serving_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(serving_dir) / SERVING_TREE, "w", encoding="utf-8") as fh:
                fh.write(f"{self.depth + 1} {self.n_cluster}\n")
                for code in self.codes:
                    fh.write(f"{code} {self.item_ids[code]}\n")
            paths["serving_tree"] = str(Path(serving_dir) / SERVING_TREE)
        return paths


def build_tree(
    item_ids: list[int],
    codes: np.ndarray,
    n_cluster: int,
    attrs: list[list[Any]] | None = None,
    raw_attrs: list[list[Any]] | None = None,
    attr_names: list[str] | None = None,
    raw_attr_names: list[str] | None = None,
) -> Tree:
    """The tree over leaves with the given codes (see the module docstring).

    Raises:
        DataError: fewer than two items, duplicate item ids or negative ids.
    """
    if n_cluster < 2:
        raise ConfigError(f"--n_cluster: expected at least 2, got {n_cluster}")
    n = len(item_ids)
    if n < 2:
        raise DataError(f"a TDM tree needs at least 2 items, got {n}")
    dup = [i for i, c in Counter(item_ids).items() if c > 1]
    if dup:
        raise DataError(f"item id {dup[0]} appears {Counter(item_ids)[dup[0]]} times")
    if min(item_ids) < 0:
        raise DataError(f"item ids must be >= 0 (-1 is the root placeholder), got {min(item_ids)}")
    depth = num_levels_below_root(n, n_cluster)
    depth = max(depth, max(code_depth(int(c), n_cluster) for c in codes))
    min_code = (n_cluster**depth - 1) // (n_cluster - 1)  # first code of level ``depth``
    leaf_codes = []
    for c in codes:
        c = int(c)
        while c < min_code:
            c = c * n_cluster + 1
        leaf_codes.append(c)
    if len(set(leaf_codes)) != n:
        raise DataError("two items got the same tree code; the leaf codes are not distinct")
    max_item = max(item_ids)
    n_attr = len(attr_names or [])
    n_raw = len(raw_attr_names or [])
    item_of: dict[int, int] = {}
    below: dict[int, list[int]] = {}  # code -> leaf positions
    for pos, c in enumerate(leaf_codes):
        item_of[c] = int(item_ids[pos])
        below.setdefault(c, []).append(pos)
        while c > 0:
            c = (c - 1) // n_cluster
            below.setdefault(c, []).append(pos)
    all_codes = sorted(below)
    node_attrs: dict[int, list[Any]] = {}
    node_raw: dict[int, list[Any]] = {}
    levels: dict[int, int] = {}
    ids: dict[int, int] = {}
    for c in all_codes:
        levels[c] = code_depth(c, n_cluster)
        leaves = below[c]
        if c in item_of:
            ids[c] = item_of[c]
            node_attrs[c] = list(attrs[leaves[0]]) if n_attr else []
            node_raw[c] = list(raw_attrs[leaves[0]]) if n_raw else []
        else:
            ids[c] = max_item + c + 1
            node_attrs[c] = [_mode([attrs[p][j] for p in leaves]) for j in range(n_attr)]
            node_raw[c] = [_mean([raw_attrs[p][j] for p in leaves]) for j in range(n_raw)]
    all_codes.sort(key=lambda c: (levels[c], c))
    logger.info(
        "TDM tree: %d items, %d nodes, %d levels, branching %d",
        n,
        len(all_codes),
        depth + 1,
        n_cluster,
    )
    return Tree(
        n_cluster,
        depth,
        all_codes,
        ids,
        levels,
        node_attrs,
        node_raw,
        list(attr_names or []),
        list(raw_attr_names or []),
    )


def tree_levels(num_items: int, n_cluster: int) -> int:
    """Levels of the tree over ``num_items`` items, root included (``layer_num_sample``)."""
    return num_levels_below_root(num_items, n_cluster) + 1


__all__ = [
    "EDGE_TABLE",
    "NODE_FEATURE",
    "NODE_TABLE",
    "PREDICT_EDGE_TABLE",
    "Tree",
    "build_tree",
    "category_codes",
    "cluster_codes",
    "code_depth",
    "tree_levels",
]
