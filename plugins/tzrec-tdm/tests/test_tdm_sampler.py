"""tdm_sampler: per layer the true ancestor is the positive, negatives share its layer."""

import numpy as np
import pyarrow as pa
import pytest

from tzrec.core.errors import ConfigError, DataError
from tzrec.tdm.sampler import TDMSampler, TreeTables, layer_probabilities

LAYERS = (0, 1, 2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def tree_info(planted):
    """Node id -> (level, parent id) read independently from the predict edges."""
    levels, parent = {}, {}
    lines = open(f"{planted['tree']}/node_table.txt").read().splitlines()[2:]
    for line in lines:
        nid, _, feat = line.split("\t")
        levels[int(nid)] = int(feat.split(",")[0])
    for line in open(f"{planted['tree']}/predict_edge_table.txt").read().splitlines()[2:]:
        src, dst, _ = line.split("\t")
        parent[int(dst)] = int(src)
    return levels, parent


def _sampler(planted, sampler_config, layers=LAYERS, **kw):
    cfg = sampler_config(planted["tree"], layers)
    for k, v in kw.items():
        setattr(cfg, k, v)
    fields = [pa.field("item_id", pa.int64()), pa.field("cate_id", pa.int64())]
    return TDMSampler(cfg, fields, 8, seed=3)


def test_positives_are_the_true_ancestors_by_level(planted, sampler_config, tree_info):
    levels, parent = tree_info
    s = _sampler(planted, sampler_config)
    items = np.array([0, 9, 37, 63, 9])
    pos, neg, layers = s.sample(items)
    ids = s.tree.nodes.ids
    for r, item in enumerate(items):
        chain, node = [], int(item)
        while node in parent and parent[node] != -1:
            node = parent[node]
            chain.append(node)
        want = list(reversed(chain[:-1]))  # levels 1..5, root excluded
        assert ids[pos[r]].tolist() == want
    assert [levels[int(i)] for i in ids[pos[0]]] == [1, 2, 3, 4, 5]


def test_negatives_per_layer_same_level_distinct_never_the_positive(
    planted, sampler_config, tree_info
):
    levels, _ = tree_info
    s = _sampler(planted, sampler_config)
    items = np.arange(64)
    for _ in range(3):
        pos, neg, layers = s.sample(items)
        ids = s.tree.nodes.ids
        assert layers.tolist() == [lv for lv in range(1, 7) for _ in range(LAYERS[lv])]
        assert neg.shape == (64, sum(LAYERS))
        for r in range(64):
            positives = {lv + 1: int(ids[p]) for lv, p in enumerate(pos[r])} | {6: r}
            for lv in range(1, 7):
                got = ids[neg[r][layers == lv]].tolist()
                assert len(got) == LAYERS[lv] == len(set(got))
                assert all(levels[g] == lv for g in got)
                assert positives[lv] not in got


def test_negatives_cover_the_layer_uniformly(planted, sampler_config):
    s = _sampler(planted, sampler_config, layers=(0, 1, 1, 1, 1, 1, 6))
    pos, neg, layers = s.sample(np.zeros(4000, dtype=np.int64))
    leaf_negs = s.tree.nodes.ids[neg[:, layers == 6]].reshape(-1)
    counts = np.bincount(leaf_negs, minlength=64)
    assert counts[0] == 0  # the positive leaf
    # 24000 draws over 63 leaves of weight 1: 381 each, sd ~19
    assert counts[1:].min() > 300 and counts[1:].max() < 460


def test_expand_batch_lays_out_rows_as_upstream(planted, sampler_config):
    s = _sampler(planted, sampler_config)
    columns = {
        "user_id": pa.array([7, 8]),
        "item_id": pa.array([3, 40]),
        "cate_id": pa.array([0, 5]),
        "clk": pa.array([1, 1]),
    }
    s.expand_batch(columns, ["clk"])
    n_pos, n_neg = 5, sum(LAYERS)
    assert len(columns["user_id"]) == 2 + 2 * (n_pos + n_neg)
    users = columns["user_id"].to_pylist()
    assert users == [7, 8] + [7] * 5 + [8] * 5 + [7] * n_neg + [8] * n_neg
    assert columns["clk"].to_pylist() == [1, 1] + [1] * 10 + [0] * 2 * n_neg
    # positives: the ancestors of item 3 (category 0), whose level-3..5 nodes are all cate 0
    assert columns["cate_id"].to_pylist()[4:7] == [0, 0, 0]
    assert columns["cate_id"].to_pylist()[9:12] == [5, 5, 5]
    assert columns["item_id"].type == pa.int64()


def test_remain_ratio_keeps_sampled_middle_layers(planted, sampler_config):
    s = _sampler(planted, sampler_config, remain_ratio=0.4, probability_type="ARITHMETIC")
    seen = set()
    for _ in range(40):
        pos, neg, layers = s.sample(np.array([5, 6]))
        assert pos.shape == (2, 2)  # round(0.4 * 5)
        kept = sorted(set(layers.tolist()) - {6})
        assert len(kept) == 2 and s.tree.levels[pos[0]].tolist() == kept
        seen.add(tuple(kept))
    assert len(seen) > 3


def test_layer_probabilities_pin_upstreams_formulas():
    assert np.allclose(layer_probabilities("UNIFORM", 5), [1 / 3] * 3)
    assert np.allclose(layer_probabilities("ARITHMETIC", 5), [1 / 6, 2 / 6, 3 / 6])
    assert np.allclose(layer_probabilities("RECIPROCAL", 5), [2 / 11, 3 / 11, 6 / 11])
    with pytest.raises(ConfigError, match="probability_type: 'GEOMETRIC'"):
        layer_probabilities("GEOMETRIC", 5)


def test_config_and_data_errors_are_one_line(planted, sampler_config):
    with pytest.raises(ConfigError, match="the root's count"):
        _sampler(planted, sampler_config, layers=(1, 1, 2, 3, 4, 5, 6))
    with pytest.raises(ConfigError, match="has 5 entries but the tree .* has 7 levels"):
        _sampler(planted, sampler_config, layers=(0, 1, 2, 3, 4)).sample(np.array([1]))
    s = _sampler(planted, sampler_config)
    with pytest.raises(DataError, match="item 999 is not a node of the TDM tree"):
        s.sample(np.array([1, 999]))
    with pytest.raises(DataError, match="item 64 is not a leaf"):
        s.sample(np.array([64]))
    cfg = sampler_config(planted["tree"], LAYERS, attrs=("cate_id", "brand"))
    with pytest.raises(DataError, match="expected 4"):
        TreeTables(cfg)
