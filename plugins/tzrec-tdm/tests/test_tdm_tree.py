"""Tree tools: upstream's leaf codes, a balanced tree, its node / edge table formats."""

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from tzrec.core.cli import main
from tzrec.core.errors import DataError
from tzrec.tdm.synthetic import NUM_CATES, NUM_ITEMS, write_tdm_data
from tzrec.tdm.tree import (
    _balanced_split,
    build_tree,
    category_codes,
    cluster_codes,
    code_depth,
)


def _read(path):
    lines = open(path).read().splitlines()
    return lines[0], [ln.split("\t") for ln in lines[1:]]


def test_category_codes_follow_upstreams_split_and_pull_down_by_hand():
    # 5 items sorted (a..e): [0,5) -> [0,2) code 2, [2,5) code 1; then a=6 b=5 c=4 d=8 e=7;
    # leaves pulled to level 3 (codes >= 7) by c -> 2c+1: a=13 b=11 c=9 d=8 e=7
    ids = [10, 11, 12, 13, 14]
    codes = category_codes(["x"] * 5, ids, 2)
    assert codes.tolist() == [6, 5, 4, 8, 7]
    tree = build_tree(ids, codes, 2)
    leaf_code = {tree.item_ids[c]: c for c in tree.leaves()}
    assert leaf_code == {10: 13, 11: 11, 12: 9, 13: 8, 14: 7}
    assert tree.depth == 3
    # non-leaf ids: max item id + code + 1
    assert tree.item_ids[0] == 15 and tree.item_ids[3] == 18


def test_non_leaf_attributes_are_leaf_modes_and_raw_means():
    # leaves 0,1 under node 1 and 2,3 under node 2; strings: most common, first seen on
    # ties (Counter); numbers: pyarrow's mode, the smallest on ties; raw: mean (int: rounded)
    tree = build_tree(
        [0, 1, 2, 3],
        np.array([3, 4, 5, 6]),
        2,
        attrs=[["a", 5], ["a", 3], ["b", 3], ["c", 5]],
        raw_attrs=[[1], [2], [4], [8]],
        attr_names=["cate", "brand"],
        raw_attr_names=["price"],
    )
    assert tree.attrs[1] == ["a", 3] and tree.attrs[2] == ["b", 3] and tree.attrs[0] == ["a", 3]
    assert tree.raw_attrs[1] == [2] and tree.raw_attrs[0] == [4]  # 1.5 -> 2, 3.75 -> 4


def test_category_tree_is_balanced_and_every_item_is_one_leaf(planted):
    header, nodes = _read(f"{planted['tree']}/node_table.txt")
    assert header == "id:int64\tweight:float\tfeature:string"
    assert nodes[0][0] == "-1" and nodes[0][2].split(",")[0] == "-1"  # graph-learn's root hook
    feats = [n[2].split(",") for n in nodes[1:]]
    levels = Counter(int(f[0]) for f in feats)
    assert levels == {lv: 2**lv for lv in range(7)}  # 64 items, n_cluster 2: 7 full levels
    leaves = [int(f[1]) for f in feats if int(f[0]) == 6]
    assert sorted(leaves) == list(range(NUM_ITEMS))
    assert all(n[0] == f[1] and n[1] == "1.0" for n, f in zip(nodes[1:], feats, strict=True))
    # each category's 8 items form one subtree: their level-3 ancestor is shared
    cate_of = {int(f[1]): int(f[2]) for f in feats}
    _, edges = _read(f"{planted['tree']}/edge_table.txt")
    level_of = {int(f[1]): int(f[0]) for f in feats}
    anc = {}
    for src, dst, w in edges:
        assert w == "1.0"
        anc.setdefault(int(src), []).append(int(dst))
    assert sorted(anc) == list(range(NUM_ITEMS))
    assert all(sorted(level_of[a] for a in v) == [1, 2, 3, 4, 5] for v in anc.values())
    by_l3 = {}
    for item, ancestors in anc.items():
        l3 = next(a for a in ancestors if level_of[a] == 3)
        by_l3.setdefault(l3, set()).add(cate_of[item])
    assert len(by_l3) == NUM_CATES and all(len(c) == 1 for c in by_l3.values())
    # a level-3 node's attribute is its (single) category
    assert {cate_of[a] for a in by_l3} == set(range(NUM_CATES))


def test_predict_edges_give_every_node_one_parent(planted):
    _, nodes = _read(f"{planted['tree']}/node_table.txt")
    _, edges = _read(f"{planted['tree']}/predict_edge_table.txt")
    root = nodes[1][0]
    assert edges[0] == ["-1", root, "1.0"]
    children = Counter(dst for _, dst, _ in edges[1:])
    assert set(children) == {n[0] for n in nodes[2:]} and set(children.values()) == {1}
    parents = Counter(src for src, _, _ in edges[1:])
    assert set(parents.values()) == {2}  # complete binary tree


def test_serving_tree_and_node_features(planted):
    lines = open(f"{planted['serving']}/serving_tree").read().splitlines()
    assert lines[0] == "7 2" and len(lines) == 1 + 127
    assert lines[1] == "0 64"  # root code 0, id max_item + 0 + 1
    table = pq.read_table(f"{planted['tree']}/node_feature.parquet")
    assert table.column_names == ["id", "cate_id"] and table.num_rows == 127


def test_balanced_split_caps_clusters_and_gives_the_rest_to_cluster_0():
    data = np.array([[0.0], [0.1], [0.2], [0.3], [0.4], [10.0], [10.1]])
    parts = _balanced_split(data, np.arange(7), 2, seed=0)
    assert sorted(len(p) for p in parts) == [3, 4] and len(parts[0]) == 4
    assert sorted(np.concatenate(parts).tolist()) == list(range(7))


def test_cluster_tree_groups_items_by_embedding(tmp_path):
    paths = write_tdm_data(tmp_path / "data", num_rows=8, num_eval_rows=8)
    out = tmp_path / "tree"
    rc = main(
        [
            "tdm-cluster-tree",
            "--item_input_path",
            paths["items"],
            "--item_id_field",
            "item_id",
            "--embedding_field",
            "item_emb",
            "--attr_fields",
            "cate_id",
            "--node_edge_output_file",
            str(out),
        ]
    )
    assert rc == 0
    _, nodes = _read(out / "node_table.txt")
    feats = [n[2].split(",") for n in nodes[1:]]
    assert Counter(int(f[0]) for f in feats) == {lv: 2**lv for lv in range(7)}
    # embeddings sit near their category's centre: every level-3 subtree is one category
    cate_of = {int(f[1]): int(f[2]) for f in feats if f[0] == "6"}
    codes = cluster_codes(np.array(pq.read_table(paths["items"]).column("item_emb").to_pylist()), 2)
    tree = build_tree(list(range(NUM_ITEMS)), codes, 2)
    groups = {}
    for leaf in tree.leaves():
        l3 = next(a for a in tree.ancestors(leaf) if code_depth(a, 2) == 3)
        groups.setdefault(l3, set()).add(cate_of[tree.item_ids[leaf]])
    assert len(groups) == 8 and all(len(g) == 1 for g in groups.values())


def test_tree_tool_errors_name_the_column(tmp_path, capsys):
    paths = write_tdm_data(tmp_path / "data", num_rows=8, num_eval_rows=8)
    rc = main(
        [
            "tdm-init-tree",
            "--item_input_path",
            paths["items"],
            "--item_id_field",
            "item_id",
            "--cate_id_field",
            "category",
            "--node_edge_output_file",
            str(tmp_path / "tree"),
        ]
    )
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "column 'category' missing" in err[-1]
    with pytest.raises(DataError, match="appears 2 times"):
        build_tree([1, 1, 2], np.array([1, 2, 3]), 2)
