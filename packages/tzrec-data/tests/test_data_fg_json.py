"""fg.json from a pipeline config: upstream's entries per feature type, assets, the CLI."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format

from tzrec.core.cli import main
from tzrec.core.errors import ConfigError
from tzrec.data.fg.fg_json import MAX_HASH_BUCKET_SIZE, create_fg_json
from tzrec.protos import pipeline_pb2


def _configs(text):
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig()).feature_configs


CORE_CONFIG = """
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
  embedding_dim: 8 hash_bucket_size: 1000 } }
feature_configs { id_feature { feature_name: "cate" expression: "item:cate" embedding_dim: 8
  vocab_list: ["x", "y"] default_value: "d" separator: "," value_dim: 2 } }
feature_configs { id_feature { feature_name: "iid" expression: "item:iid" embedding_dim: 8
  zch { zch_size: 100 } } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" value_dim: 3
  separator: "," normalizer: "method=log10" } }
feature_configs { raw_feature { feature_name: "price_b" expression: "item:price"
  boundaries: [0.5, 1.5, 10] embedding_dim: 4 } }
feature_configs { combo_feature { feature_name: "combo" expression: ["user:uid", "item:iid"]
  embedding_dim: 8 hash_bucket_size: 100 } }
feature_configs { lookup_feature { feature_name: "lk" map: "user:kv" key: "item:cate"
  embedding_dim: 4 boundaries: [1, 2] combiner: "MEAN" need_key: true } }
feature_configs { lookup_feature { feature_name: "lk_vec" map: "user:kv" key: "item:cate"
  value_dim: 4 value_separator: "|" } }
feature_configs { match_feature { feature_name: "mt" nested_map: "user:nm" pkey: "ALL"
  skey: "item:brand" embedding_dim: 4 vocab_list: ["p", "q"] value_dim: 0 } }
feature_configs { expr_feature { feature_name: "same_age" expression: "u_age == i_age ? 1 : 0"
  variables: ["user:u_age", "item:i_age"] boundaries: [0.5] embedding_dim: 4 } }
feature_configs { sequence_id_feature { feature_name: "clicks" expression: "user:click_ids"
  embedding_dim: 4 hash_bucket_size: 100 sequence_length: 20 sequence_delim: "|" } }
feature_configs { sequence_feature {
  sequence_name: "click_seq" sequence_length: 50 sequence_delim: ";"
  features { id_feature { feature_name: "item_id" expression: "item:item_id" embedding_dim: 8
    hash_bucket_size: 100 } }
  features { raw_feature { feature_name: "price" expression: "item:price" } }
  features { lookup_feature { feature_name: "lkv" map: "user:kv" key: "item:cate"
    value_dim: 3 } }
} }
"""

# written by hand from upstream's feature classes (tzrec/features/*.py ``_fg_json``)
CORE_EXPECTED = [
    {
        "feature_type": "id_feature",
        "feature_name": "user_id",
        "default_value": "",
        "expression": "user:user_id",
        "value_type": "string",
        "need_prefix": False,
        "hash_bucket_size": 1000,
        "value_dim": 0,
    },
    {
        "feature_type": "id_feature",
        "feature_name": "cate",
        "default_value": "d",
        "expression": "item:cate",
        "value_type": "string",
        "need_prefix": False,
        "separator": ",",
        "vocab_list": ["d", "<OOV>", "x", "y"],
        "default_bucketize_value": 1,
        "value_dim": 2,
    },
    {
        "feature_type": "id_feature",
        "feature_name": "iid",
        "default_value": "",
        "expression": "item:iid",
        "value_type": "string",
        "need_prefix": False,
        "hash_bucket_size": 2**63 - 1,
        "value_dim": 0,
    },
    {
        "feature_type": "raw_feature",
        "feature_name": "price",
        "default_value": "0",
        "expression": "item:price",
        "value_type": "float",
        "separator": ",",
        "value_dim": 3,
        "normalizer": "method=log10",
    },
    {
        "feature_type": "raw_feature",
        "feature_name": "price_b",
        "default_value": "0",
        "expression": "item:price",
        "value_type": "float",
        "boundaries": [0.5, 1.5, 10.0],
    },
    {
        "feature_type": "combo_feature",
        "feature_name": "combo",
        "default_value": "",
        "expression": ["user:uid", "item:iid"],
        "value_type": "string",
        "need_prefix": False,
        "value_dim": 0,
        "hash_bucket_size": 100,
    },
    {
        "feature_type": "lookup_feature",
        "feature_name": "lk",
        "map": "user:kv",
        "key": "item:cate",
        "default_value": "0",
        "value_type": "float",
        "needDiscrete": False,
        "needKey": True,
        "combiner": "mean",
        "boundaries": [1.0, 2.0],
    },
    {
        "feature_type": "lookup_feature",
        "feature_name": "lk_vec__lookup",
        "map": "user:kv",
        "key": "item:cate",
        "default_value": "0|0|0|0",
        "value_type": "string",
        "needDiscrete": True,
        "needKey": False,
        "combiner": "",
        "value_dim": 1,
        "stub_type": True,
    },
    {
        "feature_type": "raw_feature",
        "feature_name": "lk_vec",
        "default_value": "0",
        "expression": "feature:lk_vec__lookup",
        "separator": "|",
        "value_dim": 4,
        "value_type": "float",
    },
    {
        "feature_type": "match_feature",
        "feature_name": "mt",
        "user": "user:nm",
        "category": "ALL",
        "item": "item:brand",
        "matchType": "multihit",
        "default_value": "0",
        "value_type": "string",
        "needDiscrete": True,
        "show_category": False,
        "show_item": False,
        "vocab_list": ["0", "<OOV>", "p", "q"],
        "default_bucketize_value": 1,
        "value_dim": 0,
    },
    {
        "feature_type": "expr_feature",
        "feature_name": "same_age",
        "default_value": "0",
        "expression": "u_age == i_age ? 1 : 0",
        "variables": ["user:u_age", "item:i_age"],
        "value_type": "float",
        "boundaries": [0.5],
    },
    {
        "feature_type": "sequence_id_feature",
        "feature_name": "clicks",
        "default_value": "0",
        "expression": "user:click_ids",
        "value_type": "string",
        "need_prefix": False,
        "hash_bucket_size": 100,
        "value_dim": 1,
        "sequence_delim": "|",
        "sequence_length": 20,
    },
    {
        "sequence_name": "click_seq",
        "sequence_length": 50,
        "sequence_delim": ";",
        "sequence_pk": "user:click_seq",
        "features": [
            {
                "feature_type": "id_feature",
                "feature_name": "item_id",
                "default_value": "0",
                "expression": "item:item_id",
                "value_type": "string",
                "need_prefix": False,
                "hash_bucket_size": 100,
                "value_dim": 1,
            },
            {
                "feature_type": "raw_feature",
                "feature_name": "price",
                "default_value": "0",
                "expression": "item:price",
                "value_type": "float",
            },
            {
                "feature_type": "lookup_feature",
                "feature_name": "lkv__lookup",
                "map": "user:kv",
                "key": "item:cate",
                "default_value": "0,0,0",
                "value_type": "string",
                "needDiscrete": True,
                "needKey": False,
                "combiner": "",
                "value_dim": 1,
                "stub_type": True,
            },
            {
                "feature_type": "raw_feature",
                "feature_name": "lkv",
                "default_value": "0",
                "expression": "feature:lkv__lookup",
                "separator": ",",
                "value_dim": 3,
                "value_type": "float",
                "sequence_fields": ["lkv__lookup"],
            },
        ],
    },
]


def test_id_raw_combo_lookup_match_expr_sequence_entries_are_upstreams():
    got = create_fg_json(_configs(CORE_CONFIG), reserves=["label", "request_id"])
    assert got == {"features": CORE_EXPECTED, "reserves": ["label", "request_id"]}
    assert MAX_HASH_BUCKET_SIZE == 9223372036854775807
    # key order follows upstream too (a serving diff of the two files stays empty)
    assert list(got["features"][1]) == list(CORE_EXPECTED[1])


OTHER_CONFIG = """
feature_configs { combine_feature { feature_name: "comb" expression: "item:tags"
  value_map: [{key: "a" value: 1.5}] combiner: "MEAN" num_buckets: 7 embedding_dim: 4 } }
feature_configs { overlap_feature { feature_name: "ov" query: "user:q" title: "item:t"
  method: "query_common_ratio" boundaries: [0.25] embedding_dim: 4 } }
feature_configs { kv_dot_product { feature_name: "kv" query: "user:q" document: "item:d"
  kv_delimiter: 0.5 separator: "|" } }
feature_configs { bool_mask_feature { feature_name: "bm" expression: ["item:tags", "item:mask"]
  embedding_dim: 4 hash_bucket_size: 10 } }
feature_configs { custom_feature { feature_name: "cu" operator_name: "EditDistance"
  operator_lib_file: "pyfg/lib/libedit_distance.so" expression: ["user:q", "item:t"]
  operator_params { fields { key: "encoding" value { string_value: "utf-8" } } }
  embedding_dim: 4 boundaries: [1, 2] } }
feature_configs { tokenize_feature { feature_name: "tok" expression: "item:title"
  vocab_file: "tok.json" embedding_dim: 4 default_value: "xyz"
  text_normalizer { max_length: 20 norm_options: [TEXT_UPPER2LOWER, TEXT_SBC2DBC,
  TEXT_REMOVE_SPACE] } } }
feature_configs { tokenize_feature { feature_name: "tok_s" expression: "item:title"
  vocab_file: "tok.json" embedding_dim: 4 tokens_as_sequence: true sequence_length: 16 } }
feature_configs { sequence_bool_mask_feature { feature_name: "sbm" expression: ["user:a",
  "user:b"] sequence_length: 3 embedding_dim: 4 hash_bucket_size: 9 } }
feature_configs { sequence_feature { sequence_name: "s" sequence_length: 5 sequence_delim: ";"
  sequence_pk: "item:pk"
  features { tokenize_feature { feature_name: "ttl" expression: "item:title" vocab_file: "tok.json"
    embedding_dim: 4 text_normalizer { norm_options: [TEXT_LOWER2UPPER] } } }
  features { custom_feature { feature_name: "cc" operator_name: "Op" operator_lib_file:
    "pyfg/lib/libop.so" expression: ["item:a"] embedding_dim: 4 hash_bucket_size: 9
    sequence_fields: ["a"] } }
} }
"""

OTHER_EXPECTED = [
    {
        "feature_type": "combine_feature",
        "feature_name": "comb",
        "default_value": "",
        "expression": "item:tags",
        "value_type": "int64",
        "need_prefix": False,
        "combiner": "mean",
        "value_map": {"a": 1.5},
        "num_buckets": 7,
        "value_dim": 1,
    },
    {
        "feature_type": "overlap_feature",
        "feature_name": "ov",
        "query": "user:q",
        "title": "item:t",
        "method": "query_common_ratio",
        "value_type": "float",
        "separator": "\x1d",
        "boundaries": [0.25],
    },
    {
        "feature_type": "kv_dot_product",
        "feature_name": "kv",
        "default_value": "0",
        "query": "user:q",
        "document": "item:d",
        "separator": "|",
        "kv_delimiter": 0.5,
    },
    {
        "feature_type": "bool_mask_feature",
        "feature_name": "bm",
        "default_value": "",
        "expression": ["item:tags", "item:mask"],
        "hash_bucket_size": 10,
        "value_dim": 0,
    },
    {
        "feature_type": "custom_feature",
        "feature_name": "cu",
        "default_value": "0",
        "operator_name": "EditDistance",
        "operator_lib_file": "pyfg/lib/libedit_distance.so",
        "is_op_thread_safe": False,
        "expression": ["user:q", "item:t"],
        "value_type": "float",
        "encoding": "utf-8",
        "boundaries": [1.0, 2.0],
        "value_dim": 1,
    },
    {
        "feature_type": "text_normalizer",
        "feature_name": "tok__text_norm",
        "expression": "item:title",
        "is_gbk_input": False,
        "is_gbk_output": False,
        "stub_type": True,
        "max_length": 20,
        "remove_space": True,
        "parameter": 4 + 8,
    },
    {
        "feature_type": "tokenize_feature",
        "feature_name": "tok",
        "default_value": "xyz",
        "vocab_file": "tok.json",
        "expression": "feature:tok__text_norm",
        "tokenizer_type": "bpe",
        "output_type": "word_id",
    },
    {
        "feature_type": "tokenize_feature",
        "feature_name": "tok_s",
        "default_value": "0",
        "vocab_file": "tok.json",
        "expression": "item:title",
        "tokenizer_type": "bpe",
        "output_type": "word_id",
    },
    {
        "feature_type": "bool_mask_feature",
        "feature_name": "sbm",
        "default_value": "0",
        "expression": ["user:a", "user:b"],
        "hash_bucket_size": 9,
        "value_dim": 0,
        "sequence_delim": ";",
        "sequence_length": 3,
    },
    {
        "sequence_name": "s",
        "sequence_length": 5,
        "sequence_delim": ";",
        "sequence_pk": "item:pk",
        "features": [
            {
                "feature_type": "text_normalizer",
                "feature_name": "ttl__text_norm",
                "expression": "item:title",
                "is_gbk_input": False,
                "is_gbk_output": False,
                "stub_type": True,
                "parameter": 2,
                "default_value": "0",
            },
            {
                "feature_type": "tokenize_feature",
                "feature_name": "ttl",
                "default_value": "0",
                "vocab_file": "tok.json",
                "expression": "feature:ttl__text_norm",
                "tokenizer_type": "bpe",
                "output_type": "word_id",
                "sequence_fields": ["ttl__text_norm"],
            },
            {
                "feature_type": "custom_feature",
                "feature_name": "cc",
                "default_value": "0",
                "operator_name": "Op",
                "operator_lib_file": "pyfg/lib/libop.so",
                "is_op_thread_safe": False,
                "expression": ["item:a"],
                "value_type": "string",
                "hash_bucket_size": 9,
                "value_dim": 1,
                "sequence_fields": ["a"],
                "is_sequence": True,
            },
        ],
    },
]


def test_combine_overlap_kv_bool_mask_custom_tokenize_entries_are_upstreams():
    assert create_fg_json(_configs(OTHER_CONFIG)) == {"features": OTHER_EXPECTED}


def test_remove_bucketizer_keeps_the_tokenizer_vocab():
    got = create_fg_json(_configs(CORE_CONFIG + OTHER_CONFIG), remove_bucketizer=True)
    flat = []
    for entry in got["features"]:
        flat.extend(entry.get("features", [entry]))
    dropped = {"hash_bucket_size", "vocab_list", "vocab_dict", "boundaries", "num_buckets"}
    assert all(not (dropped & set(e)) for e in flat)
    assert [e["vocab_file"] for e in flat if e["feature_type"] == "tokenize_feature"] == [
        "tok.json"
    ] * 3
    assert len(flat) == 28


def test_assets_are_copied_with_md5_names_and_named_relatively(tmp_path):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "vocab.txt").write_text("a 2\nb 3\n")
    (conf_dir / "tok.json").write_text("{}")
    text = """
    feature_configs { id_feature { feature_name: "c" expression: "item:c" embedding_dim: 4
      vocab_file: "vocab.txt" default_bucketize_value: 1 } }
    feature_configs { tokenize_feature { feature_name: "t" expression: "item:t"
      vocab_file: "tok.json" embedding_dim: 4 } }
    """
    out = tmp_path / "out"
    got = create_fg_json(_configs(text), asset_dir=out, config_dir=conf_dir)
    md5 = hashlib.md5(b"a 2\nb 3\n").hexdigest()
    assert got["features"][0]["vocab_file"] == f"vocab_{md5}.txt"
    assert got["features"][1]["vocab_file"] == f"tok_{hashlib.md5(b'{}').hexdigest()}.json"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"vocab_{md5}.txt", got["features"][1]["vocab_file"]]
    )
    assert (out / f"vocab_{md5}.txt").read_text() == "a 2\nb 3\n"
    # without an asset dir the config's path is written as it is (under asset_dir when set)
    plain = create_fg_json(_configs(text.replace('"vocab.txt"', '"vocab.txt" asset_dir: "/v"')))
    assert plain["features"][0]["vocab_file"] == "/v/vocab.txt"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'id_feature { feature_name: "c" expression: "item:c" embedding_dim: 4 '
            'vocab_file: "v.txt" }',
            r"^feature_configs\[0\] id_feature 'c' vocab_file: needs default_bucketize_value",
        ),
        (
            'id_feature { feature_name: "c" expression: "cate" embedding_dim: 4 }',
            r"^feature_configs\[0\] id_feature 'c' expression: 'cate' is not an fg input "
            r"'<side>:<name>' with side one of user, item, context, feature, const$",
        ),
        (
            'combo_feature { feature_name: "c" embedding_dim: 4 }',
            "combo_feature 'c' expression: must list the fg inputs",
        ),
        (
            'match_feature { feature_name: "m" nested_map: "user:nm" pkey: "ANY" skey: "item:b" }',
            "match_feature 'm' pkey: 'ANY' is not an fg input",
        ),
        (
            'expr_feature { feature_name: "e" expression: "a + * b" variables: ["user:a"] }',
            r"^feature_configs\[0\] expr_feature 'e' expression 'a \+ \* b': unexpected '\*' "
            "at column 5$",
        ),
        (
            'expr_feature { feature_name: "e" expression: "a + b" variables: ["user:a"] }',
            "expr_feature 'e' expression: 'a \\+ b' reads 'b', which variables \\(user:a\\)",
        ),
        (
            'expr_feature { feature_name: "e" expression: "1" }',
            "expr_feature 'e' variables: must list",
        ),
        (
            'tokenize_feature { feature_name: "t" expression: "item:t" vocab_file: "v.json" '
            'embedding_dim: 4 tokenizer_type: "wordpiece" }',
            "tokenize_feature 't' tokenizer_type: 'wordpiece' is not one of bpe, sentencepiece",
        ),
        (
            'sequence_tokenize_feature { feature_name: "t" expression: "item:t" '
            'vocab_file: "v.json" embedding_dim: 4 tokens_as_sequence: true }',
            "tokens_as_sequence: only valid on tokenize_feature",
        ),
        (
            'sequence_feature { sequence_name: "s" sequence_length: 3 features { id_feature { '
            'feature_name: "i" expression: "i" embedding_dim: 4 } } }',
            r"^feature_configs\[0\] sequence_feature 's' features\[0\] id_feature 'i' expression",
        ),
    ],
)
def test_bad_configs_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        create_fg_json(_configs(f"feature_configs {{ {text} }}"))
    assert "\n" not in str(err.value)


def test_a_missing_asset_names_field_and_paths(tmp_path):
    text = (
        'feature_configs { id_feature { feature_name: "c" expression: "item:c" embedding_dim: 4 '
        'vocab_file: "nope.txt" default_bucketize_value: 1 } }'
    )
    with pytest.raises(ConfigError, match=r"id_feature 'c' vocab_file: 'nope.txt' not found \("):
        create_fg_json(_configs(text), asset_dir=tmp_path / "out", config_dir=tmp_path)


# -- the command ----------------------------------------------------------------------------

CLI_CONFIG = """
train_input_path: "{train}"
data_config {{ dataset_type: ParquetDataset batch_size: 4 label_fields: "label" }}
feature_configs {{ id_feature {{ feature_name: "user_id" expression: "user:user_id"
  embedding_dim: 4 hash_bucket_size: 100 }} }}
feature_configs {{ raw_feature {{ feature_name: "price" expression: "item:price" }} }}
"""


@pytest.fixture
def cli_config(tmp_path):
    train = tmp_path / "train.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b"], "price": [1.0, 2.0], "label": [0, 1]}), train)
    path = tmp_path / "pipeline.config"
    path.write_text(CLI_CONFIG.format(train=train))
    return path


def test_cli_writes_the_fg_json_atomically(cli_config, tmp_path, capsys):
    out = tmp_path / "fg"
    out.mkdir()
    (out / "fg.json").write_text("old")
    args = ["create-fg-json", "--pipeline_config_path", str(cli_config), "--fg_output_dir"]
    rc = main([*args, str(out), "--reserves", "label, request_id", "--check_data"])
    assert rc == 0
    got = json.loads((out / "fg.json").read_text())
    assert got == create_fg_json(_configs(cli_config.read_text()), reserves=["label", "request_id"])
    assert [e["feature_name"] for e in got["features"]] == ["user_id", "price"]
    assert sorted(p.name for p in out.iterdir()) == ["fg.json"]  # no temp file left behind
    assert "read a batch of" in capsys.readouterr().out
    rc = main([*args, str(out), "--remove_bucketizer", "--fg_resource_name", "serving.json"])
    assert rc == 0
    assert "hash_bucket_size" not in json.loads((out / "serving.json").read_text())["features"][0]
    assert "hash_bucket_size" in json.loads((out / "fg.json").read_text())["features"][0]


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.config"
    bad.write_text('feature_configs { id_feature { feature_name: "u" expression: "user_id" } }')
    out = tmp_path / "x"
    out.mkdir()
    (out / "fg.json").write_text("old")
    rc = main(["create-fg-json", "--pipeline_config_path", str(bad), "--fg_output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert err.startswith("tzrec: error: feature_configs[0] id_feature 'u' expression: ")
    assert sorted(p.name for p in out.iterdir()) == ["fg.json"]
    assert (out / "fg.json").read_text() == "old"  # a failed run leaves the old file
    rc = main(
        ["create-fg-json", "--pipeline_config_path", str(bad), "--fg_output_dir", str(out / "new")]
    )
    assert rc == 1 and not (out / "new").exists()  # nothing is created for a bad config
    capsys.readouterr()
    good = tmp_path / "good.config"
    good.write_text(bad.read_text().replace('"user_id"', '"user:user_id"'))
    args = ["create-fg-json", "--pipeline_config_path", str(good), "--fg_output_dir"]
    assert main([*args, str(out), "--fg_resource_name", "a/b.json"]) == 1
    assert "--fg_resource_name: 'a/b.json' must be a plain file name" in capsys.readouterr().err
    assert main([*args, str(out / "fg.json")]) == 1
    assert "exists and is not a directory" in capsys.readouterr().err
    assert main([*args, str(out)]) == 0 and json.loads((out / "fg.json").read_text())
    with pytest.raises(SystemExit) as usage:  # --fg_output_dir is required
        main(["create-fg-json", "--pipeline_config_path", str(tmp_path / "no.config")])
    assert usage.value.code == 2
