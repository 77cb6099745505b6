"""tokenize_feature: ids from the tokenizers library, defaults, normalizer options, bad configs."""

import numpy as np
import pyarrow as pa
import pytest
from google.protobuf import text_format
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from tzrec.core.errors import ConfigError, DataError
from tzrec.data.fg.tokenize import build_tokenizer
from tzrec.protos import feature_pb2

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a red fox and a brown dog",
    "tokenizers split text into tokens",
    "ABC abc efg hij",
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(
        SENTENCES, trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]", "[PAD]"])
    )
    bpe.save(str(d / "bpe.json"))
    word = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    word.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    word.add_tokens(["<extra>"])
    word.save(str(d / "word.json"))
    (d / "broken.json").write_text("{not json")
    return d


def _cfg(text):
    return text_format.Parse(
        'feature_name: "title_tok" expression: "item:title" embedding_dim: 4 ' + text,
        feature_pb2.TokenizeFeature(),
    )


def _rows(offsets, ids):
    return [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


@pytest.mark.parametrize("vocab", ["bpe.json", "word.json"])
def test_ids_equal_the_librarys_own_encode(vocab_dir, vocab):
    tok = build_tokenizer(_cfg(f'vocab_file: "{vocab}"'), vocab_dir)
    lib = Tokenizer.from_file(str(vocab_dir / vocab))
    texts = ["the quick brown fox", "a lazy dog jumps", "tokens into text", "zzz unknown"]
    offsets, ids = tok.encode(pa.array(texts))
    assert offsets.dtype == np.int64 and ids.dtype == np.int64
    expected = [lib.encode(t, add_special_tokens=False).ids for t in texts]
    assert _rows(offsets, ids) == expected
    assert all(len(r) > 0 for r in expected)
    assert tok.vocab_size == lib.get_vocab_size(with_added_tokens=True)


def test_vocab_size_counts_added_tokens(vocab_dir):
    tok = build_tokenizer(_cfg('vocab_file: "word.json"'), vocab_dir)
    lib = Tokenizer.from_file(str(vocab_dir / "word.json"))
    assert tok.vocab_size == lib.get_vocab_size(with_added_tokens=False) + 1


def test_null_and_empty_text_read_as_default_value(vocab_dir):
    lib = Tokenizer.from_file(str(vocab_dir / "word.json"))
    values = pa.array(["red fox", "", None, "dog"])
    tok = build_tokenizer(_cfg('vocab_file: "word.json"'), vocab_dir)
    offsets, ids = tok.encode(values)
    assert _rows(offsets, ids) == [lib.encode("red fox").ids, [], [], lib.encode("dog").ids]
    tok = build_tokenizer(_cfg('vocab_file: "word.json" default_value: "lazy dog"'), vocab_dir)
    offsets, ids = tok.encode(values)
    lazy = lib.encode("lazy dog").ids
    assert _rows(offsets, ids) == [lib.encode("red fox").ids, lazy, lazy, lib.encode("dog").ids]


def test_chunked_dictionary_large_and_empty_inputs(vocab_dir):
    tok = build_tokenizer(_cfg('vocab_file: "word.json"'), vocab_dir)
    plain = _rows(*tok.encode(pa.array(["red fox", "dog", "red fox"])))
    chunked = pa.chunked_array([pa.array(["red fox"]), pa.array(["dog", "red fox"])])
    assert _rows(*tok.encode(chunked)) == plain
    assert _rows(*tok.encode(pa.array(["red fox", "dog", "red fox"]).dictionary_encode())) == plain
    assert _rows(*tok.encode(pa.array(["red fox", "dog", "red fox"], pa.large_string()))) == plain
    assert _rows(*tok.encode(pa.array([b"red fox", b"dog", b"red fox"]))) == plain
    offsets, ids = tok.encode(pa.array([], pa.string()))
    assert offsets.tolist() == [0] and ids.size == 0


def test_normalizer_options_apply_in_pyfgs_order(vocab_dir):
    lib = Tokenizer.from_file(str(vocab_dir / "word.json"))
    # upstream's own test: TEXT_UPPER2LOWER makes "ABC efg" tokenize as "abc efg"
    tok = build_tokenizer(
        _cfg('vocab_file: "word.json" text_normalizer { norm_options: [TEXT_UPPER2LOWER] }'),
        vocab_dir,
    )
    assert _rows(*tok.encode(pa.array(["ABC efg"]))) == [lib.encode("abc efg").ids]
    # full-width letters and ideographic space become ASCII, then lower case
    tok = build_tokenizer(
        _cfg(
            'vocab_file: "word.json" '
            "text_normalizer { norm_options: [TEXT_SBC2DBC, TEXT_UPPER2LOWER] }"
        ),
        vocab_dir,
    )
    assert tok.normalize(pa.array(["ＲＥＤ\u3000ｆｏｘ！", "dog"])).to_pylist() == [
        "red fox!",
        "dog",
    ]
    tok = build_tokenizer(
        _cfg(
            'vocab_file: "word.json" text_normalizer { max_length: 5 '
            "norm_options: [TEXT_SPLITCHRS, TEXT_LOWER2UPPER] }"
        ),
        vocab_dir,
    )
    assert tok.normalize(pa.array(["ab中文cd", "xyz"])).to_pylist() == ["AB 中 ", "XYZ"]
    tok = build_tokenizer(
        _cfg('vocab_file: "word.json" text_normalizer { norm_options: [TEXT_REMOVE_SPACE] }'),
        vocab_dir,
    )
    assert tok.normalize(pa.array(["a b\tc", None])).to_pylist() == ["abc", ""]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'vocab_file: "missing.json"',
            r"tokenize_feature 'title_tok' vocab_file: 'missing.json' not found \(looked at ",
        ),
        ('vocab_file: ""', "tokenize_feature 'title_tok' vocab_file: must name"),
        ('vocab_file: "broken.json"', "vocab_file: '.*broken.json' is not a tokenizers"),
        (
            'vocab_file: "bpe.json" tokenizer_type: "sentencepiece"',
            "tokenizer_type: 'sentencepiece' needs the sentencepiece package",
        ),
        ('vocab_file: "bpe.json" tokenizer_type: "wordpiece"', "'wordpiece' is not one of bpe"),
        (
            'vocab_file: "bpe.json" text_normalizer { norm_options: [TEXT_CHT2CHS] }',
            "norm_options: TEXT_CHT2CHS is not supported",
        ),
        (
            'vocab_file: "bpe.json" text_normalizer { norm_options: [TEXT_FILTER] }',
            "norm_options: TEXT_FILTER is not supported",
        ),
        ('vocab_file: "bpe.json" text_normalizer { }', "norm_options: empty means pyfg's default"),
        (
            'vocab_file: "bpe.json" text_normalizer { stop_char_file: "s.txt" '
            "norm_options: [TEXT_UPPER2LOWER] }",
            "text_normalizer.stop_char_file: not supported",
        ),
    ],
)
def test_bad_configs_are_one_line_config_errors(vocab_dir, text, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_tokenizer(_cfg(text), vocab_dir)
    assert "\n" not in str(err.value)


def test_vocab_file_under_asset_dir_or_cwd(vocab_dir, tmp_path, monkeypatch):
    tok = build_tokenizer(_cfg(f'vocab_file: "word.json" asset_dir: "{vocab_dir}"'), None)
    assert tok.vocab_size > 0
    monkeypatch.chdir(vocab_dir)
    assert build_tokenizer(_cfg('vocab_file: "word.json"'), tmp_path).vocab_size == tok.vocab_size


def test_non_text_input_is_a_one_line_data_error(vocab_dir):
    tok = build_tokenizer(_cfg('vocab_file: "word.json"'), vocab_dir)
    with pytest.raises(DataError, match="tokenize_feature 'title_tok': input column is int64"):
        tok.encode(pa.array([1, 2]))
