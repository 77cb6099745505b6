"""Fast paths added for throughput: they must give the same results as the simple ones."""

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from tzrec.core.errors import DataError
from tzrec.data import Batch, ParquetDataset, create_dataloader, create_features
from tzrec.data import arrow_utils as au
from tzrec.data.readers.parquet import _file_rows
from tzrec.data.samplers.base import WeightedDraws, _first_occurrences
from tzrec.data.samplers.tables import NodeTable

FEATS = (
    'id_feature {feature_name: "cat" embedding_dim: 4 num_buckets: 100}',
    'raw_feature {feature_name: "price"}',
    'sequence_feature {sequence_name: "click" sequence_length: 3 '
    'features {id_feature {feature_name: "item" embedding_dim: 4 num_buckets: 100}} '
    'features {raw_feature {feature_name: "ts"}}}',
)


def table(n):
    ids = np.arange(n)
    seq = [list(range(i % 5)) for i in ids]
    return {
        "cat": pa.array(ids % 100),
        "price": pa.array(ids.astype(np.float32)),
        "click__item": pa.array(seq, pa.list_(pa.int64())),
        "click__ts": pa.array(seq, pa.list_(pa.float32())),
        "label": pa.array(ids % 2),
    }


def dataset(feature_configs, data_config, path, extra="", **kw):
    dc = data_config(f'dataset_type: ParquetDataset label_fields: "label" {extra}')
    return ParquetDataset(dc, create_features(feature_configs(*FEATS), dc), path, **kw)


# ---- parquet: adjacent row groups are read in one pass -----------------------------------
def test_file_rows_within_and_across_row_groups():
    # run: row group 2 (file rows 6..8), then row group 0 (file rows 0..2)
    file_start = np.array([6, 0])
    stream_start = np.array([0, 3, 6])
    assert _file_rows(0, 2, file_start, stream_start).tolist() == [6, 7]
    assert _file_rows(2, 3, file_start, stream_start).tolist() == [8, 0, 1]
    assert _file_rows(4, 2, file_start, stream_start).tolist() == [1, 2]


def test_batches_span_row_groups_without_rebatching(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(23), row_group_size=5)
    ds = dataset(feature_configs, data_config, path, "batch_size: 4", mode="eval")
    batches = list(ds)
    assert [b.batch_size for b in batches] == [4, 4, 4, 4, 4, 3]
    cats = [v for b in batches for v in b.sparse_features["__BASE__"]["cat"].values().tolist()]
    assert cats == list(range(23))
    seq = [
        v for b in batches for v in b.sparse_features["__BASE__"]["click__item"].values().tolist()
    ]
    assert seq == [j for i in range(23) for j in list(range(i % 5))[-3:]]


def test_bad_row_number_in_shuffled_row_groups(feature_configs, data_config, write_parquet):
    cols = table(20)
    cats = list(range(20))
    cats[13] = 1000  # out of num_buckets, in row group 3 (rows 12..15)
    cols["cat"] = pa.array(cats)
    path = write_parquet("a.parquet", cols, row_group_size=4)
    ds = dataset(feature_configs, data_config, path, "batch_size: 3 shuffle: true", mode="train")
    with pytest.raises(DataError, match=r"a\.parquet: row 13: column 'cat'"):
        list(ds)


def test_workers_give_the_same_batches(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(40), row_group_size=6)
    one = dataset(feature_configs, data_config, path, "batch_size: 8", mode="eval")
    two = dataset(feature_configs, data_config, path, "batch_size: 8 num_workers: 2", mode="eval")

    def rows(batches):
        out = {}
        for b in batches:
            kjt = b.sparse_features["__BASE__"].to_dict()
            jt = b.sequence_dense_features["click__ts"]
            seq = kjt["click__item"].to_dense()
            ts = torch.split(jt.values().flatten(), jt.lengths().tolist())
            for i, cat in enumerate(kjt["cat"].values().tolist()):
                out[cat] = (
                    seq[i].tolist(),
                    ts[i].tolist(),
                    b.dense_features["__BASE__"]["price"][i].tolist(),
                    int(b.labels["label"][i]),
                )
        return out

    expected = rows(one)
    assert len(expected) == 40
    assert rows(create_dataloader(two, pin_memory=False)) == expected


# ---- Batch pickling ----------------------------------------------------------------------
def make_batch():
    kjt = KeyedJaggedTensor(
        keys=["a", "b"],
        values=torch.tensor([1, 2, 3, 4], dtype=torch.int64),
        lengths=torch.tensor([1, 0, 2, 1], dtype=torch.int32),
        weights=torch.tensor([0.5, 1.0, 1.5, 2.0]),
    )
    kt = KeyedTensor.from_tensor_list(["x", "y"], [torch.ones(2, 1), torch.zeros(2, 3)])
    jt = JaggedTensor(values=torch.arange(6.0).view(3, 2), lengths=torch.tensor([2, 1]))
    return Batch(
        dense_features={"__BASE__": kt},
        sparse_features={"__BASE__": kjt},
        sequence_dense_features={"s": jt},
        labels={"l": torch.tensor([1, 0])},
        sample_weights={"w": torch.tensor([1.0, 2.0])[:2]},
        reserves=pa.record_batch([pa.array(["u", "v"])], names=["r"]),
        additional_infos={"hard_neg_indices": torch.tensor([[0, 1]]), "note": "x"},
        batch_size=2,
    )


def assert_same(a: Batch, b: Batch) -> None:
    ka, kb = a.sparse_features["__BASE__"], b.sparse_features["__BASE__"]
    assert ka.keys() == kb.keys() and ka.stride() == kb.stride()
    for f in ("values", "lengths", "weights"):
        x, y = getattr(ka, f)(), getattr(kb, f)()
        assert x.dtype == y.dtype and torch.equal(x, y)
    da, db = a.dense_features["__BASE__"], b.dense_features["__BASE__"]
    assert da.keys() == db.keys() and da.length_per_key() == db.length_per_key()
    assert torch.equal(da.values(), db.values())
    ja, jb = a.sequence_dense_features["s"], b.sequence_dense_features["s"]
    assert torch.equal(ja.values(), jb.values()) and torch.equal(ja.lengths(), jb.lengths())
    assert torch.equal(a.labels["l"], b.labels["l"])
    assert torch.equal(a.sample_weights["w"], b.sample_weights["w"])
    assert torch.equal(
        a.additional_infos["hard_neg_indices"], b.additional_infos["hard_neg_indices"]
    )
    assert b.additional_infos["note"] == "x"
    assert a.reserves.equals(b.reserves) and a.batch_size == b.batch_size


def test_batch_pickles_into_one_buffer():
    b = make_batch()
    c = pickle.loads(pickle.dumps(b))
    assert_same(b, c)
    storages = {
        t.untyped_storage().data_ptr()
        for t in (
            c.sparse_features["__BASE__"].values(),
            c.sparse_features["__BASE__"].lengths(),
            c.dense_features["__BASE__"].values(),
            c.labels["l"],
        )
    }
    assert len(storages) == 1


def test_batch_with_grad_tensor_pickles_field_by_field():
    b = make_batch()
    b.labels["l"] = torch.tensor([1.0, 0.0], requires_grad=True)
    c = pickle.loads(pickle.dumps(b))
    assert_same(b, c)
    assert c.labels["l"].requires_grad


# ---- sampler primitives -----------------------------------------------------------------
@pytest.mark.parametrize(
    "weights",
    [
        np.random.default_rng(0).random(1000) + 0.1,
        np.array([0.0, 1.0, 0.0, 0.0, 2.0, 0.0]),  # zero weights are never drawn
        np.concatenate([[1e6], np.ones(999)]),  # skewed: binary-search fallback
        np.array([3.0]),
    ],
)
def test_weighted_draws_match_searchsorted(weights):
    d = WeightedDraws(weights)
    cum = np.cumsum(weights)
    rng = np.random.default_rng(1)
    u = np.concatenate(
        [
            rng.random(5000) * d.total,
            cum[:-1],  # exactly on boundaries
            np.arange(len(weights)) * (d.total / len(weights)),  # guide grid points
            [0.0, np.nextafter(d.total, 0)],
        ]
    )
    expected = np.minimum(np.searchsorted(cum, u, side="right"), len(weights) - 1)
    assert np.array_equal(d.draw(u), expected)
    inside = u[u < d.total]
    assert set(d.draw(inside).tolist()) <= set(np.nonzero(weights > 0)[0].tolist())


def test_weighted_draws_guide_is_used_for_even_weights():
    assert WeightedDraws(np.ones(100)).guide is not None
    assert WeightedDraws(np.concatenate([[1e6], np.ones(999)])).guide is None


def test_first_occurrences_keeps_order():
    assert _first_occurrences(np.array([5, 3, 5, 1, 3, 7])).tolist() == [5, 3, 1, 7]
    x = np.array([4, 2, 9])
    assert _first_occurrences(x) is x


@pytest.mark.parametrize("ids", [[3, 4, 5, 6], [3, 5, 9, 10]])
def test_node_table_index_of(tmp_path, ids):
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": pa.array(ids[::-1]), "weight": pa.array([1.0] * 4)}), path)
    t = NodeTable(str(path))
    q = np.array([3, 10, 2, 5, 6, -1, 100])
    expected = [ids.index(v) if v in ids else -1 for v in q.tolist()]
    assert t.index_of(q).tolist() == expected


# ---- lazily computed error rows ---------------------------------------------------------
def test_lazy_rows():
    calls = []

    def rows():
        calls.append(1)
        return np.array([0, 0, 1])

    lazy = au.LazyRows(rows)
    assert not lazy.none and not calls
    assert lazy().tolist() == [0, 0, 1] and lazy().tolist() == [0, 0, 1]
    assert len(calls) == 1
    assert au.LazyRows(None).none and au.LazyRows(None).get() is None
    assert au.LazyRows(lazy).get().tolist() == [0, 0, 1]
    assert au.parent_rows_of_lengths(np.array([2, 0, 1])).tolist() == [0, 0, 2]


def test_sequence_id_out_of_range_names_rows(feature_configs, data_config):
    dc = data_config()
    (f, _) = create_features(
        feature_configs(
            'sequence_feature {sequence_name: "s" features {id_feature {feature_name: "i" '
            'num_buckets: 10}} features {raw_feature {feature_name: "r"}}}'
        ),
        dc,
    )
    f.resolve_input({"s__i"})
    col = pa.array([[1, 2], [], [3, 12, 4], [15]], pa.list_(pa.int64()))
    with pytest.raises(au.BadRows) as err:
        f.parse({"s__i": col})
    assert err.value.rows.tolist() == [2, 3]
    strings = pa.array(["1;2", "", "3;x", "4"])
    with pytest.raises(au.BadRows) as err:
        f.parse({"s__i": strings})
    assert err.value.rows.tolist() == [2]


def test_batch_with_shared_tensor_pickles():
    b = make_batch()
    kjt = b.sparse_features["__BASE__"]
    shared = kjt.values().clone().share_memory_()
    b.sparse_features["__BASE__"] = KeyedJaggedTensor(
        keys=kjt.keys(), values=shared, lengths=kjt.lengths(), weights=kjt.weights()
    )
    c = pickle.loads(pickle.dumps(b))
    assert_same(b, c)


def test_kjt_values_outside_workers_are_plain_memory(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(6))
    b = next(iter(dataset(feature_configs, data_config, path, "batch_size: 4", mode="eval")))
    values = b.sparse_features["__BASE__"].values()
    assert values.dtype == torch.int64 and not values.is_shared()
    assert values.tolist()[:4] == [0, 1, 2, 3]
