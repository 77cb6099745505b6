import logging

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec import KeyedJaggedTensor

from tzrec.core.errors import DataError
from tzrec.core.plugins import get
from tzrec.data import Batch, CsvDataset, ParquetDataset, create_dataloader, create_features

FEATS = (
    'id_feature {feature_name: "cat" embedding_dim: 4 num_buckets: 1000}',
    'raw_feature {feature_name: "price"}',
    'sequence_feature {sequence_name: "click" sequence_length: 5 sequence_delim: ";" '
    'features {id_feature {feature_name: "item" embedding_dim: 4 num_buckets: 1000}} '
    'features {raw_feature {feature_name: "ts"}}}',
)


def table(n, start=0):
    ids = np.arange(start, start + n)
    return {
        "cat": pa.array([str(i) for i in ids]),
        "price": pa.array(ids.astype(np.float64)),
        "click__item": pa.array([";".join(str(j) for j in range(i % 4)) for i in ids]),
        "click__ts": pa.array([";".join(str(j) for j in range(i % 4)) for i in ids]),
        "label": pa.array(ids % 2, pa.int64()),
        "w": pa.array(np.ones(n)),
    }


def make(feature_configs, data_config, path, extra="", **kw):
    dc = data_config(
        f'dataset_type: ParquetDataset batch_size: 4 label_fields: "label" num_workers: 0 {extra}'
    )
    return ParquetDataset(dc, create_features(feature_configs(*FEATS), dc), path, **kw)


def all_cats(batches):
    return sorted(
        int(v) for b in batches for v in b.sparse_features["__BASE__"]["cat"].values().tolist()
    )


def test_batch_contents(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(10))
    ds = make(
        feature_configs,
        data_config,
        path,
        'sample_weight_fields: "w"',
        mode="eval",
        reserved_columns=["cat"],
    )
    batches = list(ds)
    assert [b.batch_size for b in batches] == [4, 4, 2]
    b = batches[0]
    assert isinstance(b, Batch)
    kjt = b.sparse_features["__BASE__"]
    assert isinstance(kjt, KeyedJaggedTensor)
    assert kjt.keys() == ["cat", "click__item"]
    assert kjt["cat"].values().tolist() == [0, 1, 2, 3]
    assert kjt["click__item"].lengths().tolist() == [0, 1, 2, 3]
    assert kjt["click__item"].values().tolist() == [0, 0, 1, 0, 1, 2]
    assert b.dense_features["__BASE__"]["price"].tolist() == [[0.0], [1.0], [2.0], [3.0]]
    jt = b.sequence_dense_features["click__ts"]
    assert jt.lengths().tolist() == [0, 1, 2, 3] and jt.values().shape == (6, 1)
    assert b.labels["label"].tolist() == [0, 1, 0, 1]
    assert b.sample_weights["w"].dtype == torch.float32
    assert b.reserves.column("cat").to_pylist() == ["0", "1", "2", "3"]
    text = repr(b)
    assert "batch_size=4" in text and "click__item" in text
    moved = b.to("cpu")
    assert moved.labels["label"].tolist() == [0, 1, 0, 1]
    assert ds.summary["rows_read"] == 10 and ds.summary["batches"] == 3


def test_drop_remainder(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(10))
    ds = make(feature_configs, data_config, path, "drop_remainder: true", mode="eval")
    assert [b.batch_size for b in ds] == [4, 4]


def test_rows_rebatched_across_files_and_row_groups(feature_configs, data_config, write_parquet):
    a = write_parquet("a.parquet", table(5), row_group_size=3)
    write_parquet("b.parquet", table(6, start=5), row_group_size=2)
    ds = make(feature_configs, data_config, a.replace("a.parquet", "*.parquet"), mode="eval")
    batches = list(ds)
    assert [b.batch_size for b in batches] == [4, 4, 3]
    assert all_cats(batches) == list(range(11))


def test_comma_separated_paths_and_empty_file(feature_configs, data_config, write_parquet):
    a = write_parquet("a.parquet", table(3))
    empty = write_parquet("e.parquet", {k: v.slice(0, 0) for k, v in table(1).items()})
    ds = make(feature_configs, data_config, f"{a},{empty}", mode="eval")
    assert all_cats(list(ds)) == [0, 1, 2]


def test_rank_sharding_is_disjoint_and_complete(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(20), row_group_size=2)
    seen = []
    for rank in range(3):
        ds = make(feature_configs, data_config, path, mode="eval", rank=rank, world_size=3)
        seen.append(all_cats(list(ds)))
    flat = sorted(v for s in seen for v in s)
    assert flat == list(range(20))
    assert all(len(s) > 0 for s in seen)


def test_one_row_group_is_striped_across_ranks(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(40), row_group_size=40)
    seen = []
    for rank in range(2):
        ds = make(feature_configs, data_config, path, mode="eval", rank=rank, world_size=2)
        seen.append(all_cats(list(ds)))
        assert ds.summary["rows_read"] == 20
    assert sorted(seen[0] + seen[1]) == list(range(40))
    assert len(seen[0]) == len(seen[1]) == 20


def test_dataloader_workers_read_disjoint_shards(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(24), row_group_size=4)
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 label_fields: "label" num_workers: 2'
    )
    ds = ParquetDataset(dc, create_features(feature_configs(*FEATS), dc), path, mode="eval")
    batches = list(create_dataloader(ds, pin_memory=False))
    assert all_cats(batches) == list(range(24))
    assert ds.summary["rows_read"] == 24


def test_shuffle_changes_order_but_keeps_rows(feature_configs, data_config, write_parquet):
    path = write_parquet("a.parquet", table(64), row_group_size=8)
    ds = make(
        feature_configs, data_config, path, "shuffle: true shuffle_buffer_size: 4", mode="train"
    )
    e0 = [v for b in ds for v in b.sparse_features["__BASE__"]["cat"].values().tolist()]
    e1 = [v for b in ds for v in b.sparse_features["__BASE__"]["cat"].values().tolist()]
    assert sorted(e0) == list(range(64)) and sorted(e1) == list(range(64))
    assert e0 != list(range(64)) and e0 != e1
    ev = make(feature_configs, data_config, path, "shuffle: true", mode="eval")
    assert [v for b in ev for v in b.sparse_features["__BASE__"]["cat"].values().tolist()] == list(
        range(64)
    )


def test_csv_reader_with_header(feature_configs, data_config, tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("cat,price,click__item,click__ts,label\n1,2.5,1;2,3;4,1\n2,,,,0\n")
    dc = data_config(
        'dataset_type: CsvDataset batch_size: 8 label_fields: "label" with_header: true'
    )
    ds = CsvDataset(dc, create_features(feature_configs(*FEATS), dc), str(p), mode="eval")
    (b,) = list(ds)
    kjt = b.sparse_features["__BASE__"]
    assert kjt["cat"].values().tolist() == [1, 2]
    assert kjt["click__item"].lengths().tolist() == [2, 0]
    assert b.dense_features["__BASE__"]["price"].tolist() == [[2.5], [0.0]]
    assert b.labels["label"].tolist() == [1.0, 0.0]


def test_csv_reader_input_fields_without_header_and_empty_file(
    feature_configs, data_config, tmp_path
):
    p = tmp_path / "a.csv"
    p.write_text("1\t2.5\t1;2\t3;4\t1\n")
    (tmp_path / "empty.csv").write_text("")
    fields = " ".join(
        f'input_fields {{input_name: "{n}"}}'
        for n in ["cat", "price", "click__item", "click__ts", "label"]
    )
    dc = data_config(
        f'dataset_type: CsvDataset batch_size: 8 label_fields: "label" delimiter: "\\t" {fields}'
    )
    ds = CsvDataset(
        dc,
        create_features(feature_configs(*FEATS), dc),
        f"{p},{tmp_path / 'empty.csv'}",
        mode="eval",
    )
    (b,) = list(ds)
    assert b.batch_size == 1


def test_plugin_registers_readers_and_samplers():
    assert get("datasets", "ParquetDataset") is ParquetDataset
    assert get("datasets", "CsvDataset") is CsvDataset
    for name in (
        "negative_sampler",
        "negative_sampler_v2",
        "hard_negative_sampler",
        "hard_negative_sampler_v2",
    ):
        assert get("samplers", name).__name__


def test_missing_column_names_column_file_and_feature(feature_configs, data_config, write_parquet):
    cols = table(3)
    del cols["click__ts"]
    path = write_parquet("a.parquet", cols)
    with pytest.raises(
        DataError,
        match=r"a\.parquet: column 'click__ts' is missing, wanted by "
        r"feature 'click__ts'",
    ):
        make(feature_configs, data_config, path, mode="eval")


def test_missing_column_in_a_later_file(feature_configs, data_config, write_parquet):
    a = write_parquet("a.parquet", table(3))
    cols = table(3)
    del cols["cat"]
    b = write_parquet("b.parquet", cols)
    ds = make(feature_configs, data_config, f"{a},{b}", mode="eval")
    with pytest.raises(DataError, match=r"b\.parquet: column 'cat' is missing.*feature 'cat'"):
        list(ds)


def test_malformed_number_reports_file_and_row(feature_configs, data_config, write_parquet):
    cols = table(6)
    cols["cat"] = pa.array(["0", "1", "2", "3", "4x", "5"])
    path = write_parquet("a.parquet", cols)
    ds = make(feature_configs, data_config, path, mode="eval")
    with pytest.raises(DataError, match=r"a\.parquet: row 4: column 'cat' \(feature 'cat'\)"):
        list(ds)


def test_skip_policy_drops_and_counts_bad_rows(feature_configs, data_config, write_parquet, caplog):
    cols = table(6)
    cols["cat"] = pa.array(["0", "bad", "2", "3", "4x", "5"])
    cols["click__ts"] = pa.array(["", "0", "0;1", "0;1;2", "", "0;zz"])
    path = write_parquet("a.parquet", cols)
    ds = make(feature_configs, data_config, path, mode="eval", on_bad_row="skip")
    with caplog.at_level(logging.WARNING):
        batches = list(ds)
    assert all_cats(batches) == [0, 2, 3]
    assert ds.summary["rows_skipped"] == 3
    assert "skipping" in caplog.text and "a.parquet" in caplog.text


def test_inconsistent_sequence_group_is_malformed(feature_configs, data_config, write_parquet):
    cols = table(4)
    cols["click__ts"] = pa.array(["", "0", "0", "0;1;2"])
    path = write_parquet("a.parquet", cols)
    ds = make(feature_configs, data_config, path, mode="eval")
    with pytest.raises(DataError, match=r"row 2: column 'click__ts'.*sequence length differs"):
        list(ds)


def test_malformed_csv_value_names_row(feature_configs, data_config, tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("cat,price,click__item,click__ts,label\n1,2.5,1,3,1\n2,abc,,,0\n")
    dc = data_config(
        'dataset_type: CsvDataset batch_size: 8 label_fields: "label" with_header: true'
    )
    ds = CsvDataset(dc, create_features(feature_configs(*FEATS), dc), str(p), mode="eval")
    with pytest.raises(DataError, match=r"a\.csv: row 1: column 'price'"):
        list(ds)


def test_missing_label_column(feature_configs, data_config, write_parquet):
    cols = table(2)
    del cols["label"]
    path = write_parquet("a.parquet", cols)
    with pytest.raises(DataError, match="label column 'label' is missing"):
        make(feature_configs, data_config, path, mode="eval")
    ds = make(feature_configs, data_config, path, mode="predict")
    assert list(ds)[0].labels == {}


def test_pin_memory_pins_every_tensor_and_keeps_values(
    feature_configs, data_config, write_parquet, monkeypatch
):
    """Pinning needs an accelerator; on CPU, count the pin calls and check values survive."""
    path = write_parquet("a.parquet", table(4))
    b = next(iter(make(feature_configs, data_config, path, mode="eval")))
    pinned = []

    def fake_pin(self, *args, **kwargs):
        pinned.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    p = b.pin_memory()
    assert torch.equal(p.labels["label"], b.labels["label"])
    kjt, pkjt = b.sparse_features["__BASE__"], p.sparse_features["__BASE__"]
    assert torch.equal(pkjt.values(), kjt.values())
    assert torch.equal(pkjt.lengths(), kjt.lengths())
    assert pkjt.keys() == kjt.keys()
    # labels, sample weights, dense values, sparse values+lengths, sequence values+lengths
    assert len(pinned) >= 5


def test_sequence_label_column_is_kept_jagged(feature_configs, data_config, write_parquet):
    cols = table(4)
    cols["click__weight"] = pa.array(["1;0", "", "2", "3;4;5"])
    path = write_parquet("a.parquet", cols)
    dc = data_config(
        "dataset_type: ParquetDataset batch_size: 4 num_workers: 0 "
        'label_fields: ["label", "click__weight"]'
    )
    ds = ParquetDataset(dc, create_features(feature_configs(*FEATS), dc), path, mode="eval")
    b = next(iter(ds))
    assert b.labels["label"].tolist() == [0, 1, 0, 1]
    jt = b.sequence_dense_features["click__weight"]
    assert jt.lengths().tolist() == [2, 0, 1, 3]
    assert jt.values().tolist() == [1.0, 0.0, 2.0, 3.0, 4.0, 5.0]
    assert "click__weight" not in b.labels


def test_malformed_sequence_label_names_the_row(feature_configs, data_config, write_parquet):
    cols = table(3)
    cols["click__weight"] = pa.array(["1", "x;2", "3"])
    path = write_parquet("a.parquet", cols)
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 num_workers: 0 label_fields: "click__weight"'
    )
    ds = ParquetDataset(dc, create_features(feature_configs(*FEATS), dc), path, mode="eval")
    with pytest.raises(DataError, match=r"row 1: .*click__weight.*expected numbers"):
        list(ds)
