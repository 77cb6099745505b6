"""`tzrec hitrate` / `tzrec create-faiss-index` on small hand-made embedding tables."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tzrec.core.cli import main
from tzrec.export.hitrate import (
    build_faiss_index,
    embedding_matrix,
    ground_truth,
    load_faiss_index,
    merge_interests,
    request_hitrates,
    search,
)

# 6 items on the unit circle: item k at angle k * 60 degrees
ANGLES = np.deg2rad(np.arange(6) * 60.0)
ITEMS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)


def item_table(path):
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([10, 11, 12, 13, 14, 15]),
                "item_tower_emb": pa.array(ITEMS.tolist(), pa.list_(pa.float32())),
            }
        ),
        path,
    )
    return str(path)


def test_request_hitrate_is_hits_over_ground_truth_and_the_total_is_pooled():
    recalled = [[["1", "2"], ["3", "9"]], [["5", "6"]], [["7"]]]
    truths = [["2", "3", "4", "8"], ["6"], []]
    kept, rates, hit_ids, hits, gts = request_hitrates(recalled, truths)
    assert kept == [0, 1]  # no ground truth: skipped
    assert rates == [pytest.approx(0.5), 1.0] and hit_ids == [["2", "3"], ["6"]]
    assert (hits, gts) == (3, 5)  # total 3/5, not the mean of 0.5 and 1.0
    # a per-request interest count keeps only the first interests
    _, rates, _, _, _ = request_hitrates(recalled[:1], truths[:1], num_interests=[1])
    assert rates == [0.25]


def test_merging_interests_keeps_the_best_distinct_ids_and_drops_zero_interests():
    user = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)  # 1 request, 3
    dists = np.array([[0.9, 0.5], [0.8, 0.7], [5.0, 4.0]], dtype=np.float32)
    found = np.array([["a", "b"], ["a", "c"], ["z", "y"]], dtype=object)
    d, i = merge_interests(user, dists, found, top_k=3, num_interests=3, inner_product=True)
    assert i == [[["a", "c", "b"]]] and d[0][0] == pytest.approx([0.9, 0.7, 0.5])
    d, i = merge_interests(user, dists, found, top_k=2, num_interests=3, inner_product=False)
    assert i == [[["b", "c"]]]  # L2: smallest first
    d, i = merge_interests(user, dists, found, 3, 3, inner_product=True, valid_interests=[1])
    assert i == [[["a", "b"]]]  # only the first interest is valid


def test_embedding_and_ground_truth_columns_in_every_upstream_form():
    lists = pa.array([[1.0, 2.0], [3.0, 4.0]])
    strings = pa.array(["1,2", "3,4"])
    nested = pa.array([[[1.0, 2.0], [0.0, 1.0]], [[3.0, 4.0], [1.0, 0.0]]])
    multi = pa.array(["1,2;0,1", "3,4;1,0"])
    np.testing.assert_array_equal(embedding_matrix(lists), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(embedding_matrix(strings), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(embedding_matrix(nested, 2), embedding_matrix(multi, 2))
    assert embedding_matrix(multi, 2).shape == (4, 2)
    assert ground_truth(pa.array(["10,12", None, ""])) == [["10", "12"], [], []]
    assert ground_truth(pa.array([[10, 12], [], None])) == [["10", "12"], [], []]


@pytest.mark.parametrize("index_type", ["FlatIP", "IVFFlatIP", "HNSWFlatIP", "FlatL2"])
def test_every_index_type_finds_the_nearest_items(index_type):
    index = build_faiss_index(ITEMS, index_type, ivf_nlist=2)
    if hasattr(index, "nprobe"):
        index.nprobe = 2
    ids = np.asarray([str(i) for i in range(10, 16)], dtype=object)
    query = np.array([[np.cos(0.1), np.sin(0.1)]], dtype=np.float32)  # nearest 10, then 11
    _, found = search(index, ids, query, 2)
    assert found.tolist() == [["10", "11"]]


def test_hitrate_command_writes_total_and_per_request_details(tmp_path, capsys):
    items = item_table(tmp_path / "items.parquet")
    near = lambda deg: [float(np.cos(np.deg2rad(deg))), float(np.sin(np.deg2rad(deg)))]  # noqa: E731
    users = tmp_path / "users.parquet"
    pq.write_table(
        pa.table(
            {
                "request_id": ["r0", "r1", "r2", "r3"],
                # top 2 of r0 (at 10 deg): 10, 11; r1 (at 170 deg): 13, 12; r3: 10, 15
                "gt_items": ["11,14", "12", "", "10,13"],
                "user_tower_emb": pa.array(
                    [near(10), near(170), near(100), near(340)], pa.list_(pa.float32())
                ),
            }
        ),
        users,
    )
    total, details = tmp_path / "total", tmp_path / "details.parquet"
    args = ["hitrate", "--user_gt_input", str(users), "--item_embedding_input", items]
    args += ["--top_k", "2", "--index_type", "FlatIP"]
    out = ["--total_hitrate_output", str(total), "--hitrate_details_output", str(details)]
    assert main([*args, *out]) == 0
    # r0 hits 11 of {11, 14}; r1 hits 12 of {12}; r2 has no ground truth; r3 (at 340 deg)
    # hits 10 of {10, 13}: 3 hits of 5 ground-truth items
    assert "hitrate@2=0.600000 (3 of 5 ground-truth items, 3 requests, 1 without" in (
        capsys.readouterr().out
    )
    assert sorted(p.name for p in total.iterdir()) == ["part-0.parquet"]
    assert pq.read_table(total).to_pylist() == [{"hitrate": pytest.approx(0.6)}]
    rows = pq.read_table(details).to_pylist()
    assert [r["id"] for r in rows] == ["r0", "r1", "r3"]
    assert [r["topk_ids"] for r in rows] == [[["10", "11"]], [["13", "12"]], [["10", "15"]]]
    assert [r["hitrate"] for r in rows] == [0.5, 1.0, 0.5]
    assert [r["hit_ids"] for r in rows] == [["11"], ["12"], ["10"]]
    assert rows[0]["topk_dists"][0][0] == pytest.approx(np.cos(np.deg2rad(10)), abs=1e-5)
    # outputs exist now: refused without --overwrite, before anything is read
    assert main([*args, *out]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, *out, "--overwrite"]) == 0


def test_hitrate_with_two_interests_per_request(tmp_path):
    items = item_table(tmp_path / "items.parquet")
    users = tmp_path / "users.parquet"
    pq.write_table(
        pa.table(
            {
                "request_id": [1],
                "gt_items": pa.array([[10, 13]]),  # ints match the string id map
                "user_tower_emb": pa.array([[ITEMS[0].tolist(), ITEMS[3].tolist()]]),
            }
        ),
        users,
    )
    from tzrec.export.hitrate import hitrate

    common = dict(top_k=1, index_type="FlatIP", num_interests=2)
    assert hitrate(str(users), items, **common)["hitrate"] == 1.0
    merged = hitrate(str(users), items, topk_across_interests=True, **common)
    assert merged["hitrate"] == 0.5  # one id over both interests


def test_hitrate_names_a_missing_column(tmp_path, capsys):
    items = item_table(tmp_path / "items.parquet")
    users = tmp_path / "users.parquet"
    pq.write_table(pa.table({"request_id": [1], "gt_items": ["10"]}), users)
    args = ["hitrate", "--user_gt_input", str(users), "--item_embedding_input", items]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{users}: column 'user_tower_emb' missing" in err


def test_create_faiss_index_writes_index_and_id_mapping(tmp_path, capsys):
    items = item_table(tmp_path / "items.parquet")
    out = tmp_path / "index"
    args = ["create-faiss-index", "--embedding_input_path", items, "--index_output_dir", str(out)]
    args += ["--id_field", "item_id", "--embedding_field", "item_tower_emb"]
    assert main([*args, "--index_type", "HNSWFlatIP"]) == 0
    assert "6 embeddings of dim 2 (HNSWFlatIP)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["faiss_index", "id_mapping"]
    assert (out / "id_mapping").read_text() == "10\n11\n12\n13\n14\n15\n"
    index, ids = load_faiss_index(out)
    assert index.ntotal == 6
    assert search(index, ids, ITEMS[4:5], 1)[1].tolist() == [["14"]]
    assert main(args) == 1
    assert "already holds faiss_index, id_mapping; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--ivf_nlist", "2"]) == 0  # IVFFlatIP by default
    assert load_faiss_index(out)[0].nlist == 2
    assert sorted(p.name for p in out.iterdir()) == ["faiss_index", "id_mapping"]
