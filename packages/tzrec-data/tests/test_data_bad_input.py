"""Bad input is one line naming file, row and column; NaN/inf inputs are counted per column."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tzrec.core.errors import DataError
from tzrec.data import CsvDataset, ParquetDataset, create_features

FEATS = (
    'id_feature {feature_name: "cat" embedding_dim: 4 num_buckets: 1000}',
    'raw_feature {feature_name: "price"}',
)
CSV_HEADER = "cat,price,label\n"


def _csv(feature_configs, data_config, path, **kw):
    dc = data_config(
        'dataset_type: CsvDataset batch_size: 8 label_fields: "label" with_header: true '
        "num_workers: 0"
    )
    return CsvDataset(dc, create_features(feature_configs(*FEATS), dc), str(path), **kw)


def test_corrupt_parquet_data_is_one_line_naming_the_file(tmp_path, feature_configs, data_config):
    path = tmp_path / "corrupt.parquet"
    n = 5000
    pq.write_table(
        pa.table(
            {
                "cat": pa.array([str(i) for i in range(n)]),
                "price": pa.array(np.arange(n, dtype=np.float64)),
                "label": pa.array(np.arange(n) % 2),
            }
        ),
        path,
        compression="snappy",
    )
    raw = bytearray(path.read_bytes())
    for i in range(64, len(raw) // 2, 5):  # the data pages; the footer stays readable
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    dc = data_config('dataset_type: ParquetDataset batch_size: 64 label_fields: "label"')
    ds = ParquetDataset(dc, create_features(feature_configs(*FEATS), dc), str(path))
    with pytest.raises(DataError) as err:
        list(ds)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: corrupt parquet data in row group 0")


def test_bad_csv_data_row_names_file_and_row(tmp_path, feature_configs, data_config):
    # the first data block holds the bad row: it is not "cannot read csv header"
    p = tmp_path / "a.csv"
    p.write_text(CSV_HEADER + "1,2.5,1\n2,3.5\n3,4.5,0\n")
    with pytest.raises(DataError) as err:
        list(_csv(feature_configs, data_config, p, mode="eval"))
    msg = str(err.value)
    assert msg == f"{p}: row 1: expected 3 columns, got 2 ('2,3.5')"


def test_skipped_csv_rows_keep_the_row_numbers_of_later_errors(
    tmp_path, feature_configs, data_config, caplog
):
    p = tmp_path / "a.csv"
    p.write_text(CSV_HEADER + "1,2.5,1\n2,3.5\n3,4.5,0\n4,x,1\n")
    ds = _csv(feature_configs, data_config, p, mode="eval", on_bad_row="skip")
    with caplog.at_level(logging.WARNING):
        (b,) = list(ds)
    # row 1 has too few columns, row 3 a non-number: both skipped, counted, named by row
    assert b.sparse_features["__BASE__"]["cat"].values().tolist() == [1, 3]
    assert ds.summary["rows_skipped"] == 2
    assert f"{p}: row 1: expected 3 columns, got 2" in caplog.text
    assert f"{p}: row 3: column 'price'" in caplog.text


def _sampler_data(write_parquet, tmp_path, item_col, items_text=None):
    items = tmp_path / "item.txt"
    items.write_text(
        items_text
        if items_text is not None
        else "id:int64\tweight:float\tfeature:string\n"
        + "".join(f"{i}\t1\t{i}\n" for i in range(100))
    )
    return write_parquet("d.parquet", item_col), items


def test_null_candidate_names_file_row_and_column(
    tmp_path, feature_configs, data_config, write_parquet
):
    path, items = _sampler_data(
        write_parquet, tmp_path, {"cand_seq__video_id": pa.array(["1", None, "4;5"])}
    )
    dc = data_config(
        f'dataset_type: ParquetDataset batch_size: 3 negative_sampler {{input_path: "{items}" '
        'num_sample: 4 attr_fields: "video_id" item_id_field: "cand_seq__video_id"}'
    )
    fs = create_features(
        feature_configs(
            'sequence_feature {sequence_name: "cand_seq" sequence_length: 50 sequence_delim: ";" '
            'features {id_feature {feature_name: "video_id" embedding_dim: 4 num_buckets: 100}}}'
        ),
        dc,
    )
    with pytest.raises(DataError) as err:
        list(ParquetDataset(dc, fs, path, mode="train"))
    assert str(err.value) == (
        f"{path}: row 1: column 'cand_seq__video_id' (feature "
        "'negative_sampler.item_id_field'): expected a candidate item to sample negatives for, "
        "got an empty cell"
    )


def test_null_positive_item_id_is_a_bad_row_and_skippable(
    tmp_path, feature_configs, data_config, write_parquet
):
    path, items = _sampler_data(write_parquet, tmp_path, {"item_id": pa.array([1, None, 4, 7])})
    dc = data_config(
        f'dataset_type: ParquetDataset batch_size: 4 negative_sampler {{input_path: "{items}" '
        'num_sample: 3 attr_fields: "item_id" item_id_field: "item_id"}'
    )
    fs = create_features(
        feature_configs('id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}'),
        dc,
    )
    with pytest.raises(DataError, match=r"d\.parquet: row 1: column 'item_id'.*an item id"):
        list(ParquetDataset(dc, fs, path, mode="train"))
    (b,) = list(ParquetDataset(dc, fs, path, mode="train", on_bad_row="skip"))
    assert b.batch_size == 3
    assert b.sparse_features["__NEG__"]["item_id"].values().tolist()[:3] == [1, 4, 7]


def test_empty_item_table_is_one_line(tmp_path, feature_configs, data_config, write_parquet):
    path, items = _sampler_data(
        write_parquet,
        tmp_path,
        {"item_id": pa.array([1, 2])},
        items_text="id:int64\tweight:float\tfeature:string\n",
    )
    dc = data_config(
        f'dataset_type: ParquetDataset batch_size: 2 negative_sampler {{input_path: "{items}" '
        'num_sample: 3 attr_fields: "item_id" item_id_field: "item_id"}'
    )
    fs = create_features(
        feature_configs('id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}'),
        dc,
    )
    with pytest.raises(DataError) as err:
        list(ParquetDataset(dc, fs, path, mode="train"))
    assert str(err.value) == f"sampler item table {items}: no items to sample negatives from"


def test_nan_and_inf_inputs_are_counted_and_logged_per_column(
    feature_configs, data_config, write_parquet, caplog
):
    path = write_parquet(
        "nan.parquet",
        {
            "cat": pa.array(["1", "2", "3", "4", "5", "6"]),
            "price": pa.array([1.0, np.nan, np.inf, 2.0, -np.inf, 3.0]),
            "hist__ts": pa.array(["1;nan", "2", "inf;1e40", "", "3", "4"]),
            "label": pa.array([0.0, 1.0, np.nan, 0.0, 1.0, 0.0]),
        },
    )
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 label_fields: "label" num_workers: 0'
    )
    fs = create_features(
        feature_configs(
            *FEATS,
            'sequence_feature {sequence_name: "hist" sequence_delim: ";" '
            'features {raw_feature {feature_name: "ts"}}}',
        ),
        dc,
    )
    ds = ParquetDataset(dc, fs, path, mode="eval")
    with caplog.at_level(logging.WARNING):
        batches = list(ds)
    # values are passed through as read (no silent change) and counted per column
    price = np.concatenate([b.dense_features["__BASE__"]["price"].numpy() for b in batches])
    assert np.isnan(price[1, 0]) and np.isposinf(price[2, 0]) and np.isneginf(price[4, 0])
    assert ds.summary["nonfinite_values"] == {"price": 3, "hist__ts": 3, "label": 1}
    assert f"column 'price': 2 NaN/inf value(s) in a batch, first at {path}: row 1" in caplog.text
    assert f"column 'hist__ts': 3 NaN/inf value(s) in a batch, first at {path}: row 0" in (
        caplog.text
    )
    assert "NaN/inf values read in this pass" in caplog.text and "'price': 3" in caplog.text
    clean = write_parquet(
        "clean.parquet",
        {
            "cat": pa.array(["1"]),
            "price": pa.array([1.0]),
            "hist__ts": pa.array(["1"]),
            "label": pa.array([0.0]),
        },
    )
    ok = ParquetDataset(dc, fs, clean, mode="eval")
    list(ok)
    assert ok.summary["nonfinite_values"] == {}


HSTU_CAND = (
    'sequence_feature {sequence_name: "cand_seq" sequence_length: 10 sequence_delim: "|" '
    'features {id_feature {feature_name: "video_id" embedding_dim: 4 num_buckets: 100}}}'
)


@pytest.mark.parametrize(
    "label, row",
    [
        (pa.array(["1|0", None, "1"]), 1),  # a candidate row without its labels
        (pa.array([[1, 0], None, [1]], pa.list_(pa.int64())), 1),
        (pa.array([[1, 0], [1], [None]], pa.list_(pa.int64())), 2),  # a null label value
        (pa.array([[1.0, None], [1.0], [0.0]], pa.list_(pa.float64())), 0),
    ],
    ids=["null-cell", "null-list", "null-int", "null-float"],
)
def test_null_hstu_candidate_label_is_a_data_error(
    feature_configs, data_config, write_parquet, label, row
):
    path = write_parquet(
        "h.parquet",
        {"cand_seq__video_id": pa.array(["1|2", "3", "4"]), "cand_seq__action_weight": label},
    )
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 3 label_fields: "cand_seq__action_weight"'
    )
    fs = create_features(feature_configs(HSTU_CAND), dc)
    with pytest.raises(DataError, match=rf"h\.parquet: row {row}: column 'cand_seq__action_w"):
        list(ParquetDataset(dc, fs, path, mode="eval"))
