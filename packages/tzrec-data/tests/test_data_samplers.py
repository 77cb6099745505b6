import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import ParquetDataset, combine_neg_as_candidate_sequence, create_features
from tzrec.data.samplers import (
    HardNegativeSampler,
    HardNegativeSamplerV2,
    NegativeSampler,
    NegativeSamplerV2,
    build_sampler_input,
)
from tzrec.protos import sampler_pb2


def items_file(tmp_path, n=50, weights=None):
    p = tmp_path / "item.txt"
    w = weights if weights is not None else np.ones(n)
    lines = ["id:int64\tweight:float\tfeature:string"]
    lines += [f"{i}\t{w[i]}\t{i}:{i % 5}" for i in range(n)]
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def node_file(tmp_path, name, ids):
    p = tmp_path / name
    p.write_text("id:int64\tweight:float\n" + "".join(f"{i}\t1\n" for i in ids))
    return str(p)


def edge_file(tmp_path, name, edges):
    p = tmp_path / name
    p.write_text(
        "src_id:int64\tdst_id:int64\tweight:float\n"
        + "".join(f"{s}\t{d}\t{w}\n" for s, d, w in edges)
    )
    return str(p)


def cfg(cls, text):
    return text_format.Parse(text, cls())


def neg_sampler(tmp_path, num_sample=10, **kw):
    c = cfg(
        sampler_pb2.NegativeSampler,
        f'input_path: "{items_file(tmp_path, **kw)}" num_sample: {num_sample} '
        'attr_fields: "item_id" attr_fields: "cat" item_id_field: "item_id" '
        "num_eval_sample: 3",
    )
    return c


def test_negative_sampler_distinct_excludes_positives(tmp_path):
    s = NegativeSampler(neg_sampler(tmp_path, 40), [pa.field("item_id", pa.int64())], 4)
    out = s.get({"item_id": pa.array([0, 1, 2, 3, 4])})
    ids = out["item_id"].to_numpy()
    assert len(ids) == 40 and len(set(ids.tolist())) == 40
    assert not set(ids.tolist()) & {0, 1, 2, 3, 4}
    assert out["item_id"].type == pa.int64()
    assert out["cat"].to_pylist() == [str(i % 5) for i in ids]


def test_negative_sampler_respects_weights(tmp_path):
    w = np.zeros(50)
    w[[7, 8, 9]] = 1.0
    s = NegativeSampler(neg_sampler(tmp_path, 3, weights=w), None, 4)
    assert sorted(int(x) for x in s.get({"item_id": pa.array([1])})["item_id"].to_pylist()) == [
        7,
        8,
        9,
    ]


def test_num_eval_sample_used_in_eval(tmp_path):
    s = NegativeSampler(neg_sampler(tmp_path, 10), None, 4, is_training=False)
    assert len(s.get({"item_id": pa.array([1])})["item_id"]) == 3


def test_more_negatives_than_items_samples_with_replacement(tmp_path):
    s = NegativeSampler(neg_sampler(tmp_path, 80), None, 4)
    ids = s.get({"item_id": pa.array([0])})["item_id"].to_pylist()
    assert len(ids) == 80 and "0" not in ids


def test_parquet_item_table(tmp_path):
    p = tmp_path / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array(np.arange(20)),
                "weight": pa.array(np.ones(20)),
                "item_id": pa.array(np.arange(20)),
                "cat": pa.array(["c"] * 20),
            }
        ),
        p,
    )
    c = cfg(
        sampler_pb2.NegativeSampler,
        f'input_path: "{p}" num_sample: 5 attr_fields: "item_id" attr_fields: "cat" '
        'item_id_field: "item_id"',
    )
    out = NegativeSampler(c, None, 4).get({"item_id": pa.array([1])})
    assert len(out["cat"]) == 5 and 1 not in out["item_id"].to_pylist()


def test_bad_item_table_row_is_reported(tmp_path):
    p = tmp_path / "item.txt"
    p.write_text("id:int64\tweight:float\tfeature:string\n1\t1\t1:2\n2\t1\tonly\n")
    c = cfg(
        sampler_pb2.NegativeSampler,
        f'input_path: "{p}" num_sample: 1 attr_fields: "a" attr_fields: "b" item_id_field: "a"',
    )
    with pytest.raises(DataError, match=r"item\.txt: row 1: feature has 1 attributes"):
        NegativeSampler(c, None, 4).get({"a": pa.array([1])})


def v2_config(tmp_path, cls=sampler_pb2.NegativeSamplerV2, extra=""):
    users = node_file(tmp_path, "user.txt", range(3))
    items = items_file(tmp_path, 10)
    pos = edge_file(tmp_path, "pos.txt", [(0, i, 1) for i in range(8)])
    return cfg(
        cls,
        f'user_input_path: "{users}" item_input_path: "{items}" '
        f'pos_edge_input_path: "{pos}" num_sample: 6 attr_fields: "item_id" '
        f'attr_fields: "cat" item_id_field: "item_id" user_id_field: "user_id" {extra}',
    )


def test_negative_sampler_v2_excludes_positive_edges(tmp_path):
    s = NegativeSamplerV2(v2_config(tmp_path), None, 4)
    out = s.get({"item_id": pa.array([8, 9]), "user_id": pa.array([0, 0])})
    ids = [int(x) for x in out["item_id"].to_pylist()]
    assert len(ids) == 6
    # user 0's positive edges are items 0..7 and its batch positives are 8, 9: nothing left
    # but items not in the table; with 10 items every draw must avoid 0..7 and its own pos
    assert all(i in (8, 9) for i in ids)


def test_hard_negative_sampler_appends_hard_negatives(tmp_path):
    users = node_file(tmp_path, "user.txt", range(3))
    items = items_file(tmp_path, 30)
    hard = edge_file(tmp_path, "hard.txt", [(0, 20, 1), (0, 21, 3), (0, 22, 2), (2, 25, 1)])
    c = cfg(
        sampler_pb2.HardNegativeSampler,
        f'user_input_path: "{users}" item_input_path: "{items}" '
        f'hard_neg_edge_input_path: "{hard}" num_sample: 5 num_hard_sample: 2 '
        'attr_fields: "item_id" attr_fields: "cat" item_id_field: "item_id" '
        'user_id_field: "user_id"',
    )
    out = HardNegativeSampler(c, None, 4).get(
        {"item_id": pa.array([1, 2, 3]), "user_id": pa.array([0, 1, 2])}
    )
    ids = [int(x) for x in out["item_id"].to_pylist()]
    assert len(ids) == 5 + 3
    assert ids[5:] == [21, 22, 25]  # heaviest first, capped at num_hard_sample
    assert out["hard_neg_indices"].tolist() == [[0, 0], [0, 1], [2, 0]]


def test_hard_negative_sampler_v2(tmp_path):
    hard = edge_file(tmp_path, "hard.txt", [(1, 9, 1)])
    c = v2_config(
        tmp_path,
        sampler_pb2.HardNegativeSamplerV2,
        f'hard_neg_edge_input_path: "{hard}" num_hard_sample: 1',
    )
    out = HardNegativeSamplerV2(c, None, 4).get(
        {"item_id": pa.array([8, 1]), "user_id": pa.array([0, 1])}
    )
    assert len(out["item_id"]) == 7 and out["item_id"].to_pylist()[-1] == "9"
    assert out["hard_neg_indices"].tolist() == [[1, 0]]


def test_build_sampler_input_flattens_multi_value_positives():
    inputs, pos = build_sampler_input(
        {"item_id": pa.array(["1;2", "3", ""]), "user_id": pa.array([10, 11, 12])},
        "item_id",
        "user_id",
        ";",
    )
    assert inputs["item_id"].to_pylist() == ["1", "2", "3"]
    assert inputs["user_id"].to_pylist() == [10, 10, 11]
    assert pos.to_pylist() == [["1", "2"], ["3"], None]


def test_combine_single_positive():
    out = combine_neg_as_candidate_sequence(
        pa.array(["1", "2"]), pa.array(["3", "4", "5", "6"]), 2, ";"
    )
    assert out.to_pylist() == ["1;3;4", "2;5;6"]


def test_combine_multi_value_positives_interleave():
    out = combine_neg_as_candidate_sequence(
        pa.array(["1;2", "3", ""]), pa.array([10, 11, 12]), 1, ";"
    )
    assert out.to_pylist() == ["1;10;2;11", "3;12", ""]


def test_combine_validates_per_row_negative_counts():
    with pytest.raises(DataError, match="candidate sequence row 1: expected 2 negatives"):
        combine_neg_as_candidate_sequence(
            pa.array(["1", "2"]), pa.array([["3", "4"], ["5"]]), 2, ";"
        )
    with pytest.raises(DataError, match="candidate sequence row 1"):
        combine_neg_as_candidate_sequence(pa.array(["1", "2"]), pa.array(["3", "4", "5"]), 2, ";")


def write_items_parquet_data(write_parquet):
    return write_parquet(
        "data.parquet",
        {
            "user_id": pa.array(["1", "2", "3", "4"]),
            "item_id": pa.array(["1", "2", "3", "4"]),
            "cat": pa.array(["1", "2", "3", "4"]),
            "label": pa.array([1, 0, 1, 0]),
        },
    )


def test_dataset_appends_negatives_to_item_side_features(
    tmp_path, feature_configs, data_config, write_parquet
):
    path = write_items_parquet_data(write_parquet)
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 label_fields: "label" '
        f'negative_sampler {{input_path: "{items_file(tmp_path)}" num_sample: 6 '
        'attr_fields: "item_id" attr_fields: "cat" item_id_field: "item_id"}'
    )
    fs = create_features(
        feature_configs(
            'id_feature {feature_name: "user_id" embedding_dim: 4 num_buckets: 100}',
            'id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}',
            'id_feature {feature_name: "cat" embedding_dim: 4 num_buckets: 100}',
        ),
        dc,
    )
    (b,) = list(ParquetDataset(dc, fs, path, mode="train"))
    assert b.batch_size == 4
    assert b.sparse_features["__BASE__"].keys() == ["user_id"]
    neg = b.sparse_features["__NEG__"]
    assert neg.stride() == 10
    ids = neg["item_id"].values().tolist()
    assert ids[:4] == [1, 2, 3, 4] and not set(ids[4:]) & {1, 2, 3, 4}
    assert neg["cat"].values().tolist()[4:] == [i % 5 for i in ids[4:]]


def test_dataset_builds_candidate_sequences_with_bare_attr_names(
    tmp_path, feature_configs, data_config, write_parquet
):
    path = write_parquet(
        "data.parquet",
        {
            "cand_seq__video_id": pa.array(["1", "2;3", "4"]),
            "uih__video_id": pa.array(["5;6", "", "7"]),
        },
    )
    items = tmp_path / "item.txt"
    items.write_text(
        "id:int64\tweight:float\tfeature:string\n" + "".join(f"{i}\t1\t{i}\n" for i in range(100))
    )
    dc = data_config(
        "dataset_type: ParquetDataset batch_size: 3 "
        f'negative_sampler {{input_path: "{items}" num_sample: 8 '
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
    cand = b.sparse_features["__BASE__"]["cand_seq__video_id"]
    # upstream's layout: rows keep their positives, the 8 shared negatives join the last row
    assert cand.lengths().tolist() == [1, 2, 9]
    vals = cand.values().tolist()
    assert vals[:4] == [1, 2, 3, 4] and not set(vals[4:]) & {1, 2, 3, 4}
    assert b.additional_infos["cand_pos_lengths"].tolist() == [1, 2, 1]
    assert "__NEG__" not in b.sparse_features
    assert b.sparse_features["__BASE__"]["uih__video_id"].lengths().tolist() == [2, 0, 1]


def test_candidate_negatives_are_capped_to_fit_sequence_length(
    tmp_path, feature_configs, data_config, write_parquet, caplog
):
    path = write_parquet("data.parquet", {"cand_seq__video_id": pa.array(["1", "2;3", "4"])})
    items = tmp_path / "item.txt"
    items.write_text(
        "id:int64\tweight:float\tfeature:string\n" + "".join(f"{i}\t1\t{i}\n" for i in range(100))
    )
    dc = data_config(
        "dataset_type: ParquetDataset batch_size: 3 "
        f'negative_sampler {{input_path: "{items}" num_sample: 8 '
        'attr_fields: "video_id" item_id_field: "cand_seq__video_id"}'
    )

    def features(max_len):
        return create_features(
            feature_configs(
                f'sequence_feature {{sequence_name: "cand_seq" sequence_length: {max_len} '
                'sequence_delim: ";" features {id_feature {feature_name: "video_id" '
                "embedding_dim: 4 num_buckets: 100}}}",
            ),
            dc,
        )

    # sequence_length bounds the rows: the 8 shared negatives fill the free slots from the
    # last row back (4 + 3 + 1), in order
    (b,) = list(ParquetDataset(dc, features(5), path, mode="train"))
    cand = b.sparse_features["__BASE__"]["cand_seq__video_id"]
    assert cand.lengths().tolist() == [2, 5, 5]
    vals = cand.values().tolist()
    assert [vals[0], vals[2], vals[3], vals[7]] == [1, 2, 3, 4]
    assert b.additional_infos["cand_pos_lengths"].tolist() == [1, 2, 1]
    # only 5 free slots for 8 negatives: a short batch uses 5 and says so
    (b,) = list(ParquetDataset(dc, features(3), path, mode="train"))
    assert b.sparse_features["__BASE__"]["cand_seq__video_id"].lengths().tolist() == [3, 3, 3]
    assert "has 5 free slots in 'cand_seq' (sequence_length 3) for 8 negatives" in caplog.text


def _sampler_features(feature_configs, dc):
    return create_features(
        feature_configs(
            'id_feature {feature_name: "user_id" embedding_dim: 4 num_buckets: 100}',
            'id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}',
            'id_feature {feature_name: "cat" embedding_dim: 4 num_buckets: 100 '
            'expression: "item:cat_id"}',
        ),
        dc,
    )


def test_negative_features_derive_from_the_config_alone(tmp_path, feature_configs, data_config):
    # no data file exists: the sampler's attr_fields alone mark the __NEG__ features, as
    # upstream's create_features(neg_fields=attr_fields) does (an expression column counts)
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 negative_sampler {input_path: "nowhere" '
        'num_sample: 6 attr_fields: "item_id" attr_fields: "cat_id" item_id_field: "item_id"}'
    )
    fs = _sampler_features(feature_configs, dc)
    assert {f.name: f.data_group for f in fs} == {
        "user_id": "__BASE__",
        "item_id": "__NEG__",
        "cat": "__NEG__",
    }
    # without a sampler nothing is a negative feature
    plain = _sampler_features(feature_configs, data_config("batch_size: 4"))
    assert [f.is_neg for f in plain] == [False, False, False]


def test_candidate_sequence_sampler_marks_no_negative_features(feature_configs, data_config):
    dc = data_config(
        'negative_sampler {input_path: "nowhere" num_sample: 4 attr_fields: "video_id" '
        'item_id_field: "cand_seq__video_id"}'
    )
    fs = create_features(
        feature_configs(
            'sequence_feature {sequence_name: "cand_seq" sequence_length: 50 '
            'features {id_feature {feature_name: "video_id" embedding_dim: 4 num_buckets: 9}}}',
            'id_feature {feature_name: "video_id" embedding_dim: 4 num_buckets: 9}',
        ),
        dc,
    )
    # negatives join the candidate sequence, so even the scalar 'video_id' stays __BASE__
    assert [f.is_neg for f in fs] == [False, False]


def test_reader_refuses_features_not_built_from_its_sampler_config(
    tmp_path, feature_configs, data_config, write_parquet
):
    path = write_items_parquet_data(write_parquet)
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 label_fields: "label" '
        f'negative_sampler {{input_path: "{items_file(tmp_path)}" num_sample: 6 '
        'attr_fields: "item_id" item_id_field: "item_id"}'
    )
    fs = create_features(
        feature_configs('id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}')
    )
    with pytest.raises(ConfigError, match=r"^feature 'item_id' is not marked .*negative_sampler"):
        ParquetDataset(dc, fs, path, mode="train")
    # the reader leaves the caller's features as they are: what the model builds on
    good = create_features(
        feature_configs('id_feature {feature_name: "item_id" embedding_dim: 4 num_buckets: 100}'),
        dc,
    )
    ds = ParquetDataset(dc, good, path, mode="eval")
    assert [f.is_neg for f in ds.features] == [f.is_neg for f in good] == [True]


def test_data_modules_import_no_higher_layer():
    # the contract of pyproject's [tool.importlinter], checked here with its graph library so
    # the package's own tests catch a returning cycle (function-level imports included)
    import grimp

    graph = grimp.build_graph("tzrec")
    illegal = graph.find_illegal_dependencies_for_layers(
        layers=(
            "plugin",
            "readers",
            "samplers",
            "parser",
            "features",
            "batch",
            grimp.Layer("arrow_utils", "io", independent=True),
        ),
        containers={"tzrec.data"},
    )
    assert not illegal, [(d.importer, d.imported) for d in illegal]
    assert not graph.find_modules_that_directly_import("tzrec.data.readers.base") & {
        m for m in graph.modules if m.startswith("tzrec.data.samplers")
    }


def test_candidate_join_lays_out_positives_then_shared_simple_then_hard(tmp_path):
    from tzrec.data.samplers import CAND_POS_LENGTHS, NegativeJoin

    users = node_file(tmp_path, "user.txt", range(3))
    items = items_file(tmp_path, 30)
    hard = edge_file(tmp_path, "hard.txt", [(0, 20, 1), (0, 21, 3), (0, 22, 2), (2, 25, 1)])
    c = cfg(
        sampler_pb2.HardNegativeSampler,
        f'user_input_path: "{users}" item_input_path: "{items}" '
        f'hard_neg_edge_input_path: "{hard}" num_sample: 3 num_hard_sample: 2 '
        'attr_fields: "cand_seq__video_id" attr_fields: "cat" '
        'item_id_field: "cand_seq__video_id" user_id_field: "user_id"',
    )
    candidate = {"max_len": None, "name": "cand_seq", "delim": "|", "attrs": ["cand_seq__video_id"]}
    join = NegativeJoin(HardNegativeSampler(c, None, 2), [], candidate, "hard_negative_sampler")
    columns = {"cand_seq__video_id": pa.array(["1|2", "3"]), "user_id": pa.array([0, 2])}
    infos = join.apply(columns)
    # two positives of user 0 (queries 0, 1), one of user 2 (query 2); no bound: upstream puts
    # the 3 shared simple negatives and then the 5 hard ones in the last row
    rows = [r.split("|") for r in columns["cand_seq__video_id"].to_pylist()]
    assert rows[0] == ["1", "2"]
    assert rows[1][0] == "3" and len(rows[1]) == 1 + 3 + 5
    assert not set(rows[1][1:4]) & {"1", "2", "3", "20", "21", "22", "25"}
    assert rows[1][4:] == ["21", "22", "21", "22", "25"]
    assert infos[CAND_POS_LENGTHS].tolist() == [2, 1]
    assert infos["hard_neg_indices"].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]]
