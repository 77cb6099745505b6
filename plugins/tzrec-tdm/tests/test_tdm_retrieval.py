"""Beam search over the tree: upstream's layer schedule, exact on a max-heap scorer."""

import numpy as np
import pytest

from tzrec.core.errors import ConfigError
from tzrec.tdm.retrieval import beam_search, first_recall_layer
from tzrec.tdm.sampler import TreeTables


@pytest.fixture(scope="module")
def tree(planted, sampler_config):
    return TreeTables(sampler_config(planted["tree"]), predict=True)


def test_first_recall_layer_is_ceil_log_n_of_2nk():
    assert first_recall_layer(8, 2, 6) == 5  # 2**5 >= 2*2*8
    assert first_recall_layer(1, 2, 6) == 2
    assert first_recall_layer(1, 4, 3) == 2  # 4**2 >= 8
    assert first_recall_layer(200, 2, 6) == 6  # at most the leaf layer


def _max_heap_scorer(tree, leaf_scores):
    """Each node scores the best of its leaves (TDM's max-heap tree), per user."""
    parent = {}
    q, child = tree.children_rows(np.arange(len(tree.nodes.ids)))
    for p, c in zip(q.tolist(), child.tolist(), strict=True):
        parent[c] = p
    n_users, leaves = leaf_scores.shape
    best = np.full((n_users, len(tree.nodes.ids)), -np.inf)
    leaf_rows = tree.layer_rows[-1]
    leaf_index = {int(r): i for i, r in enumerate(leaf_rows)}
    for r in leaf_rows.tolist():
        node = r
        while True:
            best[:, node] = np.maximum(best[:, node], leaf_scores[:, leaf_index[r]])
            if node not in parent:
                break
            node = parent[node]
    calls = []

    def score(users, nodes):
        calls.append(nodes.copy())
        return best[users, nodes]

    return score, calls, leaf_rows


def test_beam_search_finds_the_brute_force_top_k_on_a_max_heap(tree):
    rng = np.random.default_rng(0)
    leaf_scores = rng.random((6, 64))
    score, calls, leaf_rows = _max_heap_scorer(tree, leaf_scores)
    got = beam_search(tree, score, 6, 8, 2)
    for u in range(6):
        want = leaf_rows[np.argsort(-leaf_scores[u])[:8]]
        assert got[u].tolist() == want.tolist()
    # upstream's schedule: layer 5 (all 32 nodes) then the 2K=16 best nodes' 32 children
    assert [np.unique(tree.levels[c]).tolist() for c in calls] == [[5], [6]]
    assert [len(c) for c in calls] == [6 * 32, 6 * 32]


def test_beam_search_prunes_by_score(tree):
    # a scorer that is not a max-heap: the beam keeps only high-scoring inner nodes, so a
    # leaf under a low-scoring parent is never reached even if it scores best
    rng = np.random.default_rng(1)
    scores = rng.random(len(tree.nodes.ids))
    leaf = int(tree.layer_rows[-1][0])
    scores[leaf] = 10.0
    q, child = tree.children_rows(np.arange(len(tree.nodes.ids)))
    parent = int(q[child == leaf][0])
    scores[parent] = -1.0
    got = beam_search(tree, lambda u, n: scores[n], 1, 2, 2)
    assert leaf not in got[0].tolist() and len(got[0]) == 2
    scores[parent] = 5.0
    assert beam_search(tree, lambda u, n: scores[n], 1, 2, 2)[0][0] == leaf


def test_recall_num_must_be_positive(tree):
    with pytest.raises(ConfigError, match="--recall_num"):
        beam_search(tree, lambda u, n: n * 0.0, 1, 0, 2)
