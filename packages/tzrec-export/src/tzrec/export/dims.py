"""Dynamic shapes for AOT export of a dense part: one ``Dim`` per set of equal sizes.

The dense part of an exported model reads grouped embeddings. Their sizes vary per batch:

- every group output has the batch on axis 0 (one ``batch`` Dim);
- a JAGGED_SEQUENCE group's ``<g>.sequence`` is ``(items, D)``: axis 0 is the number of
  items in the batch;
- a SEQUENCE group's ``<g>.sequence`` is ``(B, L, D)``: axis 1 is the longest row.

Groups whose items come from the same sequence have equal item counts, and the dense graph
relies on it (e.g. ``actions | watchtime >= t`` over ``uih_action`` and ``uih_watchtime``),
so ``torch.export`` must see them as one symbol. A DEEP group's ``sequence_groups``
entries are padded sequence groups like any other (``layout.sequence_groups``). Which
groups share is decided from their membership, not from any one feature: a sequence
feature's *parent* is its ``sequence_feature`` (``sequence_name``) or, for a standalone
sequence feature, itself; the groups are merged (union-find) whenever they contain a
feature of the same parent, so a group mixing parents ties them together. ``value_dim``
only widens an item (the last axis), never the item count, so multi-value raw
sub-features share like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tzrec.data import BaseFeature
from tzrec.models.layout import PART_SEQUENCE, sequence_groups, split_key
from tzrec.protos import model_pb2


def _parent(feature: BaseFeature) -> str:
    return f"seq:{feature.sequence_name}" if feature.is_grouped_sequence else f"feat:{feature.name}"


def sequence_share_keys(
    features: Sequence[BaseFeature], feature_groups: Sequence[model_pb2.FeatureGroupConfig]
) -> dict[str, str]:
    """``{group_name: share key}`` for every sequence group; equal keys share one Dim.

    The key names the group's parent sequences (sorted, ``+``-joined after merging).
    """
    by_name = {f.name: f for f in features}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    members: dict[str, list[str]] = {}
    for gname, names, _ in sequence_groups(feature_groups):
        parents = [_parent(by_name[n]) for n in names if n in by_name and by_name[n].is_sequence]
        if not parents:  # a scalar serving view of a sequence group: no sequence axis
            continue
        node = f"group:{gname}"
        find(node)
        for p in parents:
            union(node, p)
        members[gname] = parents
    roots: dict[str, set[str]] = {}
    for group, parents in members.items():
        roots.setdefault(find(f"group:{group}"), set()).update(parents)
    return {
        group: "+".join(sorted(p.split(":", 1)[1] for p in roots[find(f"group:{group}")]))
        for group in members
    }


def _dim_name(key: str) -> str:
    return "seq_" + "".join(c if c.isalnum() else "_" for c in key)


def dynamic_shapes(
    grouped: Mapping[str, torch.Tensor],
    features: Sequence[BaseFeature],
    feature_groups: Sequence[model_pb2.FeatureGroupConfig],
) -> dict[str, dict[int, Any]]:
    """``torch.export`` dynamic shapes for a dict of grouped embeddings (module doc)."""
    from torch.export import Dim

    batch = Dim("batch", min=1)
    shares = sequence_share_keys(features, feature_groups)
    dims: dict[str, Any] = {}
    jagged = {name: is_jagged for name, _, is_jagged in sequence_groups(feature_groups)}
    spec: dict[str, dict[int, Any]] = {}
    for key in grouped:
        group, part = split_key(key)
        if part == PART_SEQUENCE and group in shares:
            share = shares[group]
            name = _dim_name(share)
            if jagged[group]:
                dims.setdefault(name + "__items", Dim(name + "__items", min=0))
                spec[key] = {0: dims[name + "__items"]}
            else:
                dims.setdefault(name + "__len", Dim(name + "__len", min=1))
                spec[key] = {0: batch, 1: dims[name + "__len"]}
        else:
            spec[key] = {0: batch}
    return spec
