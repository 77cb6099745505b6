"""``data_config.force_base_data_group``: identical batches where upstream's padding is a no-op."""

import logging

import pyarrow as pa
import pytest

from tzrec.core.errors import ConfigError
from tzrec.data import ParquetDataset, create_features
from tzrec.data.readers import base as readers_base


def _items(tmp_path):
    items = tmp_path / "item.txt"
    items.write_text(
        "id:int64\tweight:float\tfeature:string\n" + "".join(f"{i}\t1\t{i}\n" for i in range(100))
    )
    return items


def _flat(batch):
    """Every tensor of a batch by name (sparse values/lengths, dense values, infos)."""
    out = {}
    for group, kjt in batch.sparse_features.items():
        for key in kjt.keys():
            out[f"{group}/{key}/values"] = kjt[key].values().tolist()
            out[f"{group}/{key}/lengths"] = kjt[key].lengths().tolist()
    for group, kt in batch.dense_features.items():
        out[f"{group}/dense"] = kt.values().tolist()
    for key, value in batch.additional_infos.items():
        out[f"info/{key}"] = value.tolist()
    return out


def test_without_sampler_batches_are_identical_and_logged_once(
    feature_configs, data_config, write_parquet, caplog, monkeypatch
):
    monkeypatch.setattr(readers_base, "_FORCE_BASE_LOGGED", False)
    path = write_parquet(
        "data.parquet",
        {
            "user_id": pa.array([1, 2, 3, 4, 5]),
            "price": pa.array([0.5, 1.5, 2.5, 3.5, 4.5]),
            "label": pa.array([0, 1, 0, 1, 1]),
        },
    )
    feats = (
        'id_feature {feature_name: "user_id" embedding_dim: 4 num_buckets: 10}',
        'raw_feature {feature_name: "price"}',
    )
    batches = {}
    caplog.set_level(logging.INFO, logger=readers_base.__name__)
    for force in ("false", "true", "true"):  # the second forced dataset logs nothing
        dc = data_config(
            f'dataset_type: ParquetDataset batch_size: 2 label_fields: "label" '
            f"force_base_data_group: {force}"
        )
        ds = ParquetDataset(dc, create_features(feature_configs(*feats), dc), path, mode="train")
        batches[force] = [_flat(b) for b in ds]
    assert len(batches["true"]) == 3
    assert batches["true"] == batches["false"]
    assert caplog.text.count("force_base_data_group: tzrec's data groups keep their own") == 1


def test_candidate_sequence_sampler_keeps_one_row_count(
    tmp_path, feature_configs, data_config, write_parquet
):
    path = write_parquet(
        "data.parquet",
        {
            "cand_seq__video_id": pa.array(["1", "2;3", "4"]),
            "uih__video_id": pa.array(["5;6", "", "7"]),
        },
    )
    dc = data_config(
        "dataset_type: ParquetDataset batch_size: 3 force_base_data_group: true "
        f'negative_sampler {{input_path: "{_items(tmp_path)}" num_sample: 8 '
        'attr_fields: "video_id" item_id_field: "cand_seq__video_id"}'
    )
    fs = create_features(
        feature_configs(
            'sequence_feature {sequence_name: "cand_seq" sequence_length: 50 sequence_delim: ";" '
            'features {id_feature {feature_name: "video_id" embedding_dim: 4 num_buckets: 100}}}',
            'sequence_feature {sequence_name: "uih" sequence_length: 50 sequence_delim: ";" '
            'features {id_feature {feature_name: "video_id" embedding_dim: 4 num_buckets: 100}}}',
        ),
        dc,
    )
    (b,) = list(ParquetDataset(dc, fs, path, mode="train"))
    assert list(b.sparse_features) == ["__BASE__"]
    assert b.sparse_features["__BASE__"]["cand_seq__video_id"].lengths().tolist() == [1, 2, 9]
    assert b.sparse_features["__BASE__"]["uih__video_id"].lengths().tolist() == [2, 0, 1]


def test_appended_negative_rows_are_refused_in_one_line(
    tmp_path, feature_configs, data_config, write_parquet
):
    path = write_parquet(
        "data.parquet",
        {"user_id": pa.array([1, 2]), "item_id": pa.array([3, 4]), "label": pa.array([0, 1])},
    )
    items = tmp_path / "items.txt"
    items.write_text(
        "id:int64\tweight:float\tfeature:string\n" + "".join(f"{i}\t1\t{i}\n" for i in range(50))
    )
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 2 label_fields: "label" '
        "force_base_data_group: true "
        f'negative_sampler {{input_path: "{items}" num_sample: 4 '
        'attr_fields: "item_id" item_id_field: "item_id"}'
    )
    fs = create_features(
        feature_configs(
            'id_feature {feature_name: "user_id" embedding_dim: 4 num_buckets: 100}',
            'id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}',
        ),
        dc,
    )
    with pytest.raises(ConfigError, match=r"^data_config.force_base_data_group: not supported"):
        ParquetDataset(dc, fs, path, mode="train")


def test_the_schema_walk_accepts_the_field():
    from tzrec.core.support import check_supported_fields
    from tzrec.protos import pipeline_pb2

    config = pipeline_pb2.EasyRecConfig()
    config.data_config.force_base_data_group = True
    assert check_supported_fields(config, "p.config", allow_unsupported=False) == []
