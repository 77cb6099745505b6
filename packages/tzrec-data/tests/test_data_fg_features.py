"""Feature generation without pyfg: hashing, operators and FG features (FG_NORMAL / FG_DAG).

Expected buckets are pyfg's outputs as upstream's own feature tests state them (pyfg buckets
``std::hash<std::string>`` of the text); the hash itself is pinned against a plain-Python
MurmurHash64A reference written here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import arrow_utils as au
from tzrec.data.features import create_features
from tzrec.data.fg import ops
from tzrec.data.fg.hashing import hash_bucket, std_hash
from tzrec.data.fg.record import raw_input_record
from tzrec.protos import data_pb2, feature_pb2

_M64 = (1 << 64) - 1


def _murmur64a_reference(data: bytes, seed: int = 0xC70F6907) -> int:
    """MurmurHash64A, one byte string at a time (the reference the numpy version must match)."""
    m, r = 0xC6A4A7935BD1E995, 47
    h = (seed ^ (len(data) * m)) & _M64
    nblocks = len(data) // 8
    for i in range(nblocks):
        k = int.from_bytes(data[8 * i : 8 * i + 8], "little")
        k = (k * m) & _M64
        k ^= k >> r
        k = (k * m) & _M64
        h = ((h ^ k) * m) & _M64
    tail = data[8 * nblocks :]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * m) & _M64
    h ^= h >> r
    h = (h * m) & _M64
    return h ^ (h >> r)


def _feature(text: str, mode=data_pb2.FG_NORMAL):
    fc = text_format.Parse(text, feature_pb2.FeatureConfig())
    return create_features([fc], data_pb2.DataConfig(fg_mode=mode))[0]


def test_std_hash_matches_the_reference_for_every_length_and_repeated_values():
    words = ["", "a", "abc", "1234567", "12345678", "123456789", "héllo wörld", "x" * 40]
    values = pa.array(words + words[::-1])
    got = std_hash(values)
    want = [_murmur64a_reference(w.encode()) for w in words + words[::-1]]
    assert got.tolist() == want


def test_hash_bucket_equals_pyfg_buckets_stated_by_upstream():
    # upstream id/combo/lookup tests: hash_bucket_size 100
    words = ["abc", "efg", "hij", "xyz", "ua_ia", "ua_ib", "ub_ia", "ub_ib", "x", "y", "z"]
    assert hash_bucket(pa.array(words), 100).tolist() == [33, 44, 66, 13, 37, 90, 5, 97, 35, 30, 54]
    # integers are hashed as their decimal text
    assert hash_bucket(pa.array([1, 2, 3, 4]), 100).tolist() == [95, 70, 13, 56]


def test_fg_id_feature_hashes_ids_as_pyfg_and_fg_none_keeps_modulo():
    cfg = 'id_feature { feature_name: "id" expression: "user:id_input" hash_bucket_size: 100 embedding_dim: 4 default_value: "4" }'
    f = _feature(cfg)
    d = f.parse({"id_input": pa.array([1, 2, None, 3])})
    assert d.values.tolist() == [95, 70, 56, 13] and d.lengths.tolist() == [1, 1, 1, 1]
    none = _feature(cfg, data_pb2.FG_NONE)
    assert none.parse({"id": pa.array([1, 2, 3])}).values.tolist() == [1, 2, 3]


def test_farmhash_env_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("USE_FARM_HASH_TO_BUCKETIZE", "true")
    with pytest.raises(ConfigError, match="USE_FARM_HASH_TO_BUCKETIZE"):
        _feature(
            'id_feature { feature_name: "id" expression: "user:id" hash_bucket_size: 10 embedding_dim: 4 }'
        )


_UID = ["ua\x1dub", "uc\x1dud", "uee\x1duf", "ug", "uh", "uj", "", None, ""]
_IID = ["ia\x1dib", "ic", "", "id\x1die", "if", None, "ig\x01dih", "ij", ""]


@pytest.mark.parametrize(
    "default, values, lengths",
    [
        ("", [37, 90, 5, 97, 60, 56, 40, 57, 55], [4, 2, 0, 2, 1, 0, 0, 0, 0]),
        (
            "xyz",
            [37, 90, 5, 97, 60, 56, 13, 40, 57, 55, 13, 13, 13, 13],
            [4, 2, 1, 2, 1, 1, 1, 1, 1],
        ),
    ],
)
def test_combo_feature_is_the_hashed_cartesian_product(default, values, lengths):
    f = _feature(
        'combo_feature { feature_name: "c" expression: ["user:uid", "item:iid"] '
        f'hash_bucket_size: 100 embedding_dim: 8 default_value: "{default}" }}'
    )
    assert f.input_columns == ["uid", "iid"] and f.num_embeddings == 100
    d = f.parse({"uid": pa.array(_UID), "iid": pa.array(_IID)})
    assert d.values.tolist() == values and d.lengths.tolist() == lengths


def test_combo_feature_with_vocab_list_reserves_default_and_oov():
    f = _feature(
        'combo_feature { feature_name: "c" expression: ["user:u", "item:i"] embedding_dim: 8 '
        'vocab_list: ["ua_ia", "ua_ib", "ub_ia"] }'
    )
    d = f.parse(
        {
            "u": pa.array(["ua\x1dub", "ua\x1dub", "ua\x1dub", "ua", "ua", "ua", None, "", ""]),
            "i": pa.array(["ia\x1dib", "ia", "", "ia\x1dib", "ib", "", "ia\x01dib", "ia", None]),
        }
    )
    assert d.values.tolist() == [2, 3, 4, 1, 2, 4, 2, 3, 3]
    assert d.lengths.tolist() == [4, 2, 0, 2, 1, 0, 0, 0, 0]


_KV = pa.array(["ca:1\x1dcb:2"] * 5 + ["", ""])
_CATE = pa.array(["ca\x1dcb", "ca", "ca\x1dcd", "cd", "", "ca", ""])


@pytest.mark.parametrize(
    "combiner, values, lengths",
    [
        ("sum", [4, 2, 2, 1, 1, 1, 1], [1] * 7),
        ("mean", [3, 2, 2, 1, 1, 1, 1], [1] * 7),
        ("", [2, 3, 2, 2, 1, 1, 1, 1], [2, 1, 1, 1, 1, 1, 1]),
    ],
)
def test_lookup_feature_combines_then_bucketizes(combiner, values, lengths):
    f = _feature(
        'lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate" embedding_dim: 8 '
        f'boundaries: [-0.5, 0.5, 1.5, 2.5] combiner: "{combiner}" default_value: "0" }}'
    )
    d = f.parse({"kv": _KV, "cate": _CATE})
    assert d.values.tolist() == values and d.lengths.tolist() == lengths


def test_lookup_feature_dense_reads_strings_and_arrow_maps_alike():
    f = _feature(
        'lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate" combiner: "mean" }'
    )
    assert f.parse({"kv": _KV, "cate": _CATE}).values.ravel().tolist() == [1.5, 1, 1, 0, 0, 0, 0]
    kv = pa.array([{"ca": 1, "cb": 2}] * 5 + [{}, None], type=pa.map_(pa.string(), pa.int64()))
    cate = pa.array([["ca", "cb"], ["ca"], ["ca", "cd"], ["cd"], [], ["ca"], None])
    g = _feature('lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate" }')
    assert g.parse({"kv": kv, "cate": cate}).values.ravel().tolist() == [3, 1, 1, 0, 0, 0, 0]


def test_lookup_feature_vector_values():
    f = _feature('lookup_feature { feature_name: "l" map: "user:kv" key: "item:k" value_dim: 2 }')
    kv = pa.array(["ca:1,2\x1dcb:3,4"] * 3 + ["", "ca:1,2\x1dcb:3,4"])
    d = f.parse({"kv": kv, "k": pa.array(["ca", "cd", "", "ca", ""])})
    assert d.values.tolist() == [[1, 2], [0, 0], [0, 0], [0, 0], [0, 0]]


@pytest.mark.parametrize(
    "bucketize, default, values, lengths",
    [
        ("num_buckets: 10", "", [1, 2, 1, 1], [2, 1, 1, 0, 0, 0, 0]),
        ("num_buckets: 10", "0", [1, 2, 1, 1, 0, 0, 0, 0], [2, 1, 1, 1, 1, 1, 1]),
    ],
)
def test_lookup_feature_ids(bucketize, default, values, lengths):
    f = _feature(
        f'lookup_feature {{ feature_name: "l" map: "user:kv" key: "item:c" {bucketize} '
        f'embedding_dim: 8 default_value: "{default}" }}'
    )
    kv = pa.array(["ca:1\x1dcb:2"] * 5 + ["", None])
    c = pa.array(["ca\x1dcb", "ca", "ca\x1dcd", "cd", None, "ca", ""])
    d = f.parse({"kv": kv, "c": c})
    assert d.values.tolist() == values and d.lengths.tolist() == lengths


def test_lookup_feature_hashes_looked_up_ids():
    f = _feature(
        'lookup_feature { feature_name: "l" map: "user:kv" key: "item:c" hash_bucket_size: 100 '
        'embedding_dim: 8 default_value: "z" }'
    )
    d = f.parse({"kv": pa.array(["ca:x\x1dcb:y"] * 5 + ["", ""]), "c": _CATE})
    assert d.values.tolist() == [35, 30, 35, 35, 54, 54, 54, 54]
    assert d.lengths.tolist() == [2, 1, 1, 1, 1, 1, 1]


def test_match_feature_string_and_map_nested_maps():
    f = _feature(
        'match_feature { feature_name: "m" nested_map: "user:nm" pkey: "item:p" skey: "item:s" }'
    )
    nm = pa.array(["pa^sa:0.2,sb:0.3|pb^sa:0.5", "pa^sa:0.2", "", "pb^sc:1"])
    cols = {
        "nm": nm,
        "p": pa.array(["pa", "pb", "pa", "pb"]),
        "s": pa.array(["sb", "sa", "sa", "sc"]),
    }
    assert f.parse(cols).values.ravel().tolist() == pytest.approx([0.3, 0.0, 0.0, 1.0])
    as_map = pa.array(
        [[("pa", "sa:0.2,sb:0.3"), ("pb", "sa:0.5")], [("pa", "sa:0.2")], [], [("pb", "sc:1")]],
        type=pa.map_(pa.string(), pa.string()),
    )
    assert f.parse({**cols, "nm": as_map}).values.ravel().tolist() == pytest.approx([0.3, 0, 0, 1])
    g = _feature(
        'match_feature { feature_name: "m" nested_map: "user:nm" pkey: "item:p" skey: "item:s" '
        'vocab_list: ["x", "y"] embedding_dim: 4 }'
    )
    ids = g.parse(
        {
            "nm": pa.array(["pa^sa:x,sb:y", "pa^sa:q"]),
            "p": pa.array(["pa", "pa"]),
            "s": pa.array(["sb", "sa"]),
        }
    )
    assert ids.values.tolist() == [3, 1]  # y -> 2 + 1; q is out of vocabulary (1)


def test_lookup_feature_key_from_another_feature():
    feats = create_features(
        [
            text_format.Parse(t, feature_pb2.FeatureConfig())
            for t in (
                'raw_feature { feature_name: "r" expression: "item:r" boundaries: [0.5] embedding_dim: 4 }',
                'lookup_feature { feature_name: "l" map: "user:kv" key: "feature:r" }',
            )
        ],
        data_pb2.DataConfig(fg_mode=data_pb2.FG_DAG),
    )
    look = feats[1]
    assert look.input_columns == ["kv", "r"]
    d = look.parse({"kv": pa.array(["0:10\x1d1:20", "0:10\x1d1:20"]), "r": pa.array([0.1, 0.9])})
    assert d.values.ravel().tolist() == [10, 20]  # r's bucket (0 / 1) is the key


def test_bool_mask_overlap_kv_dot_and_edit_distance():
    b = _feature(
        'bool_mask_feature { feature_name: "b" expression: ["user:v", "user:m"] separator: "," num_buckets: 1000 embedding_dim: 4 }'
    )
    d = b.parse(
        {"v": pa.array(["123,456,90,80", "1,2"]), "m": pa.array(["true,false,true,false", "0,1"])}
    )
    assert d.values.tolist() == [123, 90, 2] and d.lengths.tolist() == [2, 1]
    # an integer list mask, as upstream's table shows
    d = b.parse({"v": pa.array(["123,456,90,80"]), "m": pa.array([[1, 0, 1, 0]])})
    assert d.values.tolist() == [123, 90]
    with pytest.raises(au.BadRows, match="as many mask values"):
        b.parse({"v": pa.array(["1,2,3"]), "m": pa.array(["true,false"])})
    o = _feature(
        'overlap_feature { feature_name: "o" query: "user:q" title: "item:t" method: "query_common_ratio" separator: " " }'
    )
    assert o.parse(
        {"q": pa.array(["a b c", "x"]), "t": pa.array(["a b d", "y"])}
    ).values.ravel().tolist() == pytest.approx([2 / 3, 0])
    k = _feature(
        'kv_dot_product { feature_name: "k" query: "user:q" document: "item:d" separator: "|" }'
    )
    got = k.parse(
        {"q": pa.array(["a:0.5|b:0.5", "a|b|c"]), "d": pa.array(["d:0.5|b:0.5", "a|b|d"])}
    )
    assert got.values.ravel().tolist() == pytest.approx([0.25, 2.0])
    e = _feature(
        'custom_feature { feature_name: "e" operator_name: "EditDistance" operator_lib_file: '
        '"pyfg/lib/libedit_distance.so" expression: ["user:a", "item:b"] '
        'operator_params { fields { key: "encoding" value { string_value: "utf-8" } } } }'
    )
    out = e.parse(
        {
            "a": pa.array(["kitten", "", "héllo", None]),
            "b": pa.array(["sitting", "abc", "hello", "ab"]),
        }
    )
    assert out.values.ravel().tolist() == [3, 3, 1, 2]


def test_edit_distance_bytes_count_multibyte_characters_twice():
    assert ops.edit_distance(pa.array(["héllo"]), pa.array(["hello"])).tolist() == [2]


def test_expr_feature_evaluates_over_columns():
    f = _feature(
        'expr_feature { feature_name: "x" expression: "a + b * 2" variables: ["item:a", "user:b"] '
        "boundaries: [2.5] embedding_dim: 4 }"
    )
    d = f.parse({"a": pa.array([1.0, 2.0]), "b": pa.array([0.5, 1.0])})
    assert d.values.tolist() == [0, 1]  # 2.0 < 2.5 <= 4.0


def test_bad_inputs_name_feature_expression_and_column():
    f = _feature(
        'combo_feature { feature_name: "c" expression: ["user:u", "item:i"] hash_bucket_size: 10 embedding_dim: 4 }'
    )
    with pytest.raises(DataError, match=r"feature 'c': expression 'item:i' reads column 'i'"):
        f.resolve_input({"u"})
    look = _feature('lookup_feature { feature_name: "l" map: "user:kv" key: "item:k" }')
    with pytest.raises(au.BadType, match=r"kv \(l\): expression 'user:kv'"):
        look.parse({"kv": pa.array(["a:notanumber"]), "k": pa.array(["a"])})
    with pytest.raises(ConfigError, match="input side 'usr'"):
        _feature(
            'combo_feature { feature_name: "c" expression: ["usr:u", "item:i"] hash_bucket_size: 10 embedding_dim: 4 }'
        )
    with pytest.raises(ConfigError, match="expr_feature"):
        _feature('expr_feature { feature_name: "x" expression: "a +" variables: ["item:a"] }')
    with pytest.raises(ConfigError, match="custom_feature operator 'RegexReplace'"):
        _feature(
            'custom_feature { feature_name: "e" operator_name: "RegexReplace" operator_lib_file: "x.so" expression: ["user:a"] }'
        )


def test_fg_none_reads_the_encoded_column_of_an_fg_feature():
    f = _feature(
        'lookup_feature { feature_name: "l" map: "user:kv" key: "item:k" num_buckets: 10 embedding_dim: 4 }',
        data_pb2.FG_NONE,
    )
    assert f.input_names == ["l"]
    d = f.parse({"l": pa.array(["1\x032", "3"])})
    assert d.values.tolist() == [1, 2, 3] and d.lengths.tolist() == [2, 1]


def test_raw_input_record_lists_columns_and_transforms():
    feats = create_features(
        [
            text_format.Parse(t, feature_pb2.FeatureConfig())
            for t in (
                'id_feature { feature_name: "u" expression: "user:uid" hash_bucket_size: 10 embedding_dim: 4 }',
                'combo_feature { feature_name: "c" expression: ["user:uid", "item:iid"] hash_bucket_size: 10 embedding_dim: 4 }',
            )
        ],
        data_pb2.DataConfig(fg_mode=data_pb2.FG_DAG),
    )
    rec = raw_input_record(feats)
    assert rec == {
        "fg_mode": "FG_DAG",
        "columns": ["uid", "iid"],
        "transforms": [
            {"feature": "c", "type": "combo_feature", "expressions": ["user:uid", "item:iid"]}
        ],
    }
    assert np.array_equal(
        feats[0].parse({"uid": pa.array(["abc"])}).values, [hash_bucket(pa.array(["abc"]), 10)[0]]
    )


def test_reader_reads_every_input_column_and_names_a_missing_one(tmp_path):
    from tzrec.data.readers.parquet import ParquetDataset

    dc = data_pb2.DataConfig(
        batch_size=4, fg_mode=data_pb2.FG_DAG, dataset_type=data_pb2.ParquetDataset, num_workers=1
    )
    dc.label_fields.append("clk")
    cfg = text_format.Parse(
        'combo_feature { feature_name: "c" expression: ["user:u", "item:i"] '
        "hash_bucket_size: 100 embedding_dim: 4 }",
        feature_pb2.FeatureConfig(),
    )
    feats = create_features([cfg], dc)
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"u": ["ua", "ub"], "i": ["ia", "ib"], "clk": [0, 1]}), path)
    ds = ParquetDataset(dc, feats, str(path), mode="eval")
    batch = next(iter(ds.make_dataloader()))
    kjt = batch.sparse_features["__BASE__"]
    assert kjt["c"].values().tolist() == hash_bucket(pa.array(["ua_ia", "ub_ib"]), 100).tolist()
    pq.write_table(pa.table({"u": ["ua"], "clk": [0]}), path)
    with pytest.raises(DataError, match=r"raw.parquet: feature 'c': expression 'item:i' reads"):
        ParquetDataset(dc, create_features([cfg], dc), str(path), mode="eval")
