import numpy as np
import pyarrow as pa
import pytest

from tzrec.core.errors import ConfigError
from tzrec.data import create_features
from tzrec.data.arrow_utils import BadRows, hash_strings
from tzrec.data.features import (
    DenseData,
    IdFeature,
    RawFeature,
    SequenceDenseData,
    SequenceSparseData,
    SparseData,
)


def one(feature_configs, text, data_config=None):
    (f,) = create_features(feature_configs(text), data_config)
    return f


def test_id_feature_multi_value_cells_split_on_x03(feature_configs):
    f = one(feature_configs, 'id_feature {feature_name: "cat" embedding_dim: 8 num_buckets: 10}')
    d = f.parse({"cat": pa.array(["1", "2\x033", "", None])})
    assert isinstance(d, SparseData)
    assert d.values.tolist() == [1, 2, 3]
    assert d.lengths.tolist() == [1, 2, 0, 0]
    assert f.is_sparse and not f.is_sequence and f.num_embeddings == 10
    assert f.embedding_dim == 8 and f.embedding_name == "cat_emb" and f.pooling == "sum"
    assert f.value_dim == 0 and f.output_dim == 8


def test_id_feature_custom_multival_sep(feature_configs, data_config):
    dc = data_config('dataset_type: ParquetDataset fg_encoded_multival_sep: "|"')
    f = one(feature_configs, 'id_feature {feature_name: "c" embedding_dim: 4 num_buckets: 10}', dc)
    assert f.parse({"c": pa.array(["1|2"])}).values.tolist() == [1, 2]


def test_id_feature_accepts_int_and_list_columns(feature_configs):
    f = one(feature_configs, 'id_feature {feature_name: "c" embedding_dim: 4 num_buckets: 10}')
    d = f.parse({"c": pa.array([3, None, 4])})
    assert d.values.tolist() == [3, 4] and d.lengths.tolist() == [1, 0, 1]
    d = f.parse({"c": pa.array([[1, 2], [], None, [5]])})
    assert d.values.tolist() == [1, 2, 5] and d.lengths.tolist() == [2, 0, 0, 1]


def test_id_feature_fg_encoded_default_fills_empty_cells(feature_configs):
    f = one(
        feature_configs,
        'id_feature {feature_name: "c" embedding_dim: 4 num_buckets: 10 '
        'fg_encoded_default_value: "7"}',
    )
    d = f.parse({"c": pa.array(["1\x032", "", None])})
    assert d.values.tolist() == [1, 2, 7, 7] and d.lengths.tolist() == [2, 1, 1]


def test_hash_bucket_hashes_strings_stably_and_mods_ints(feature_configs):
    f = one(
        feature_configs, 'id_feature {feature_name: "h" embedding_dim: 4 hash_bucket_size: 100}'
    )
    d = f.parse({"h": pa.array(["apple", "123", "apple\x03pear"])})
    assert d.values[1] == 23
    assert d.values[0] == d.values[2]
    assert (d.values >= 0).all() and (d.values < 100).all()
    h = hash_strings(pa.array(["apple", "apple", "", "b"]))
    assert h[0] == h[1] and len(set(h.tolist())) == 3
    assert f.num_embeddings == 100


def test_vocab_list_maps_default_and_oov_like_upstream(feature_configs):
    f = one(
        feature_configs,
        'id_feature {feature_name: "v" embedding_dim: 4 vocab_list: ["a", "b"]}',
    )
    d = f.parse({"v": pa.array(["a", "b", "zzz", ""])})
    assert d.values.tolist() == [2, 3, 1, 0]
    assert f.num_embeddings == 4


def test_vocab_dict_with_default_bucketize_value(feature_configs):
    f = one(
        feature_configs,
        'id_feature {feature_name: "v" embedding_dim: 4 vocab_dict: {key: "a" value: 2} '
        'vocab_dict: {key: "b" value: 3} default_bucketize_value: 1}',
    )
    d = f.parse({"v": pa.array(["b", "x"])})
    assert d.values.tolist() == [3, 1]
    assert f.num_embeddings == 4


def test_embedding_name_is_shared(feature_configs):
    fs = create_features(
        feature_configs(
            'id_feature {feature_name: "a" embedding_dim: 4 num_buckets: 5 embedding_name: "t"}',
            'id_feature {feature_name: "b" embedding_dim: 4 num_buckets: 5 embedding_name: "t"}',
        )
    )
    assert {f.embedding_name for f in fs} == {"t"}


def test_weighted_id_feature(feature_configs):
    f = one(
        feature_configs,
        'id_feature {feature_name: "w" embedding_dim: 4 num_buckets: 10 weighted: true}',
    )
    d = f.parse({"w": pa.array(["1:0.5\x032:2", ""])})
    assert d.values.tolist() == [1, 2]
    np.testing.assert_allclose(d.weights, [0.5, 2.0])


def test_expression_column_is_the_fallback(feature_configs):
    f = one(
        feature_configs,
        'id_feature {feature_name: "uid" expression: "user:user_id" embedding_dim: 4 '
        "num_buckets: 10}",
    )
    assert f.input_names == ["uid", "user_id"]
    assert f.resolve_input({"user_id", "x"}) == "user_id"
    assert f.parse({"user_id": pa.array(["3"])}).values.tolist() == [3]
    assert f.resolve_input({"uid", "user_id"}) == "uid"


def test_raw_feature_dense_value_dim_and_default(feature_configs):
    f = one(feature_configs, 'raw_feature {feature_name: "p" value_dim: 2}')
    d = f.parse({"p": pa.array(["1\x032", "", None])})
    assert isinstance(d, DenseData) and d.values.shape == (3, 2)
    assert d.values.tolist() == [[1, 2], [0, 0], [0, 0]]
    assert not f.is_sparse and f.output_dim == 2


def test_raw_feature_float_column_and_list(feature_configs):
    f = one(feature_configs, 'raw_feature {feature_name: "p"}')
    assert f.parse({"p": pa.array([1.5, None])}).values.tolist() == [[1.5], [0.0]]
    f2 = one(feature_configs, 'raw_feature {feature_name: "p" value_dim: 2}')
    assert f2.parse({"p": pa.array([[1.0, 2.0]])}).values.tolist() == [[1, 2]]


def test_raw_feature_boundaries_bucketize(feature_configs):
    f = one(
        feature_configs,
        'raw_feature {feature_name: "age" boundaries: [10, 20, 30] embedding_dim: 4}',
    )
    d = f.parse({"age": pa.array([5.0, 10.0, 25.0, 99.0])})
    assert isinstance(d, SparseData) and d.values.tolist() == [0, 1, 2, 3]
    assert f.is_sparse and f.num_embeddings == 4


def test_raw_feature_log10_normalizer(feature_configs):
    f = one(
        feature_configs,
        'raw_feature {feature_name: "x" normalizer: "method=log10,threshold=1e-10,default=-10"}',
    )
    d = f.parse({"x": pa.array([100.0, 0.0])})
    np.testing.assert_allclose(d.values.ravel(), [2.0, -10.0], rtol=1e-5)


def test_unknown_normalizer_is_a_config_error(feature_configs):
    with pytest.raises(ConfigError, match="normalizer"):
        one(feature_configs, 'raw_feature {feature_name: "x" normalizer: "method=expression"}')


def test_sequence_group_sub_features_read_prefixed_columns(feature_configs):
    fs = create_features(
        feature_configs(
            'sequence_feature {sequence_name: "click" sequence_length: 3 sequence_delim: ";" '
            'features {id_feature {feature_name: "item" embedding_dim: 4 num_buckets: 100}} '
            'features {raw_feature {feature_name: "ts"}}}'
        )
    )
    item, ts = fs
    assert isinstance(item, IdFeature) and isinstance(ts, RawFeature)
    assert item.name == "click__item" and item.input_name == "click__item"
    assert item.is_grouped_sequence and item.sequence_name == "click" and item.is_sequence
    cols = {
        "click__item": pa.array(["1;2;3;4", "5", "", None]),
        "click__ts": pa.array(["1;2;3;4", "5", "", None]),
    }
    d = item.parse(cols)
    assert isinstance(d, SequenceSparseData)
    # truncation keeps the most recent (last) items
    assert d.values.tolist() == [2, 3, 4, 5]
    assert d.seq_lengths.tolist() == [3, 1, 0, 0]
    t = ts.parse(cols)
    assert isinstance(t, SequenceDenseData) and t.values.shape == (4, 1)
    assert t.seq_lengths.tolist() == [3, 1, 0, 0]


def test_standalone_sequence_id_feature_list_column(feature_configs):
    f = one(
        feature_configs,
        'sequence_id_feature {feature_name: "hist" embedding_dim: 4 num_buckets: 100 '
        "sequence_length: 2}",
    )
    assert f.is_sequence and not f.is_grouped_sequence and f.value_dim == 1
    d = f.parse({"hist": pa.array([[1, 2, 3], [], None, [9]])})
    assert d.values.tolist() == [2, 3, 9] and d.seq_lengths.tolist() == [2, 0, 0, 1]


def test_sequence_multi_value_items(feature_configs):
    f = one(
        feature_configs,
        'sequence_id_feature {feature_name: "s" embedding_dim: 4 num_buckets: 100 value_dim: 0 '
        'sequence_delim: "|"}',
    )
    d = f.parse({"s": pa.array(["1\x032|3", ""])})
    assert d.values.tolist() == [1, 2, 3]
    assert d.item_lengths.tolist() == [2, 1] and d.seq_lengths.tolist() == [2, 0]


def test_sequence_raw_feature_value_dim(feature_configs):
    f = one(feature_configs, 'sequence_raw_feature {feature_name: "r" value_dim: 2}')
    d = f.parse({"r": pa.array(["1\x032;3\x034", ""])})
    assert d.values.tolist() == [[1, 2], [3, 4]] and d.seq_lengths.tolist() == [2, 0]


def test_malformed_id_names_rows(feature_configs):
    f = one(feature_configs, 'id_feature {feature_name: "c" embedding_dim: 4 num_buckets: 10}')
    with pytest.raises(BadRows) as e:
        f.parse({"c": pa.array(["1", "x", "2", "3\x03y"])})
    assert e.value.rows.tolist() == [1, 3] and e.value.column == "c"


def test_id_out_of_num_buckets_is_bad(feature_configs):
    f = one(feature_configs, 'id_feature {feature_name: "c" embedding_dim: 4 num_buckets: 10}')
    with pytest.raises(BadRows) as e:
        f.parse({"c": pa.array(["1", "10"])})
    assert e.value.rows.tolist() == [1]


def test_unsupported_feature_type_is_config_error(feature_configs):
    with pytest.raises(ConfigError, match="combo_feature"):
        create_features(feature_configs('combo_feature {feature_name: "x"}'))
