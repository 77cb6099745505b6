"""``tokenize_feature``: text to token ids with the ``tokenizers`` library (upstream's semantics).

Upstream (pyfg over tokenizers-cpp) loads ``vocab_file`` as a HuggingFace ``tokenizer.json``
when ``tokenizer_type`` is ``bpe`` (any model inside the json: BPE, WordPiece, WordLevel,
Unigram), encodes without special tokens, reads an empty or missing text as
``default_value``, and sizes the embedding by the vocabulary including added tokens.
``sentencepiece`` needs the ``sentencepiece`` package, which tzrec does not ship: refused.

The optional ``text_normalizer`` runs first, on the whole arrow column (``pyarrow.compute``):
upper/lower case, full-width to half-width (``TEXT_SBC2DBC``), spaces around each Han
character (``TEXT_SPLITCHRS``), removing whitespace (``TEXT_REMOVE_SPACE``) and
``max_length`` (characters kept). ``TEXT_CHT2CHS``, ``TEXT_FILTER`` and ``stop_char_file``
need pyfg's built-in dictionaries and are refused in one line, as is an empty
``norm_options`` (pyfg's default set includes both).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Reader workers are forked processes; the library's thread pool does not survive a fork
# once used (a worker can crash), and the readers already parallelise across workers.
# A user who sets TOKENIZERS_PARALLELISM keeps their value.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

from tzrec.core.errors import ConfigError, DataError
from tzrec.data.arrow_utils import combine, decode
from tzrec.protos import feature_pb2

TOKENIZER_TYPES = ("bpe", "sentencepiece")

_FULL_WIDTH = "[\uff01-\uff5e\u3000]"
_SBC_PAIRS = [(chr(c), chr(c - 0xFEE0)) for c in range(0xFF01, 0xFF5F)] + [("\u3000", " ")]
_OPTION = feature_pb2.TextNormalizeOption
_Step = Callable[[pa.Array], pa.Array]


def _sbc2dbc(arr: pa.Array) -> pa.Array:
    """Full-width ASCII forms and the ideographic space to their half-width characters."""
    mask = pc.fill_null(pc.match_substring_regex(arr, _FULL_WIDTH), False)
    if not pc.any(mask).as_py():
        return arr
    sub = arr.filter(mask)
    for full, half in _SBC_PAIRS:
        sub = pc.replace_substring(sub, full, half)
    return pc.replace_with_mask(arr, mask, sub)


def _split_chars(arr: pa.Array) -> pa.Array:
    """One space between each Han character and its neighbours, runs of spaces collapsed."""
    spaced = pc.replace_substring_regex(arr, r"(\p{Han})", r" \1 ")
    return pc.utf8_trim(pc.replace_substring_regex(spaced, " {2,}", " "), " ")


_STEPS: dict[int, tuple[str, _Step]] = {
    _OPTION.TEXT_LOWER2UPPER: ("TEXT_LOWER2UPPER", pc.utf8_upper),
    _OPTION.TEXT_UPPER2LOWER: ("TEXT_UPPER2LOWER", pc.utf8_lower),
    _OPTION.TEXT_SBC2DBC: ("TEXT_SBC2DBC", _sbc2dbc),
    _OPTION.TEXT_SPLITCHRS: ("TEXT_SPLITCHRS", _split_chars),
    _OPTION.TEXT_REMOVE_SPACE: (
        "TEXT_REMOVE_SPACE",
        lambda a: pc.replace_substring_regex(a, r"\s+", ""),
    ),
}
#: pyfg's order of the options (its bit order), whatever order the config lists them in
_STEP_ORDER = (
    _OPTION.TEXT_LOWER2UPPER,
    _OPTION.TEXT_UPPER2LOWER,
    _OPTION.TEXT_SBC2DBC,
    _OPTION.TEXT_SPLITCHRS,
    _OPTION.TEXT_REMOVE_SPACE,
)


class TextTokenizer:
    """A loaded tokenizer plus the feature's normalizer steps and default text."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        context: str,
        default_value: str = "",
        steps: tuple[_Step, ...] = (),
        max_length: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context = context
        self.default_value = default_value
        self._steps = steps
        self._max_length = max_length

    @property
    def vocab_size(self) -> int:
        """Embedding rows: the vocabulary including added tokens (as upstream sizes it)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def normalize(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The text column after default filling and the ``text_normalizer`` steps."""
        arr = decode(combine(values))
        t = arr.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            try:
                arr = arr.cast(pa.large_string() if pa.types.is_large_binary(t) else pa.string())
            except pa.ArrowInvalid as exc:
                raise DataError(f"{self.context}: input is not valid UTF-8 text ({exc})") from exc
        elif pa.types.is_null(t):
            arr = pa.nulls(len(arr), pa.string())
        elif not (
            pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        ):
            raise DataError(f"{self.context}: input column is {t}, expected strings")
        missing = pc.fill_null(pc.equal(arr, ""), True)
        arr = pc.if_else(missing, pa.scalar(self.default_value, arr.type), arr)
        for step in self._steps:
            arr = step(arr)
        if self._max_length is not None:
            arr = pc.utf8_slice_codeunits(arr, 0, self._max_length)
        return arr

    def encode(self, values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids per row as ``(offsets, ids)``; row ``i`` is ``ids[offsets[i]:offsets[i+1]]``.

        One batch call into the library (parallel, in Rust); no special tokens are added.
        """
        texts = self.normalize(values).to_pylist()
        batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = batch(texts, add_special_tokens=False)
        n = len(encodings)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(
            itertools.chain.from_iterable(e.ids for e in encodings),
            dtype=np.int64,
            count=int(offsets[-1]),
        )
        return offsets, ids


def resolve_vocab_file(
    cfg: feature_pb2.TokenizeFeature, config_dir: str | Path | None, context: str
) -> Path:
    """``vocab_file`` (under ``asset_dir`` when set) relative to the config's folder, then cwd."""
    if not cfg.vocab_file:
        raise ConfigError(f"{context} vocab_file: must name a tokenizer.json")
    path = (
        Path(cfg.asset_dir) / cfg.vocab_file if cfg.HasField("asset_dir") else Path(cfg.vocab_file)
    )
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = ([Path(config_dir) / path] if config_dir is not None else []) + [
            Path.cwd() / path
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{context} vocab_file: {str(path)!r} not found (looked at {looked})")


def _normalizer_steps(
    cfg: feature_pb2.TokenizeFeature, context: str
) -> tuple[tuple[_Step, ...], int | None]:
    if not cfg.HasField("text_normalizer"):
        return (), None
    norm = cfg.text_normalizer
    if norm.HasField("stop_char_file"):
        raise ConfigError(
            f"{context} text_normalizer.stop_char_file: not supported (it feeds pyfg's "
            "TEXT_FILTER, which tzrec does not implement)"
        )
    options = list(norm.norm_options)
    if not options:
        raise ConfigError(
            f"{context} text_normalizer.norm_options: empty means pyfg's default set, which "
            "includes TEXT_CHT2CHS and TEXT_FILTER (not supported); list the options to apply"
        )
    for option in options:
        if option not in _STEPS:
            raise ConfigError(
                f"{context} text_normalizer.norm_options: {_OPTION.Name(option)} is not "
                f"supported (supported: {', '.join(name for name, _ in _STEPS.values())})"
            )
    steps = tuple(_STEPS[o][1] for o in _STEP_ORDER if o in options)
    return steps, (norm.max_length if norm.HasField("max_length") else None)


def build_tokenizer(
    cfg: feature_pb2.TokenizeFeature,
    config_dir: str | Path | None,
    *,
    context: str | None = None,
) -> TextTokenizer:
    """Load ``cfg.vocab_file`` and the normalizer of a (sequence_)tokenize_feature config.

    ``config_dir`` is the pipeline config's folder (relative ``vocab_file`` paths are looked
    up there first); ``context`` starts every error (default ``tokenize_feature '<name>'``).
    """
    context = context or f"tokenize_feature {cfg.feature_name!r}"
    if cfg.tokenizer_type not in TOKENIZER_TYPES:
        raise ConfigError(
            f"{context} tokenizer_type: {cfg.tokenizer_type!r} is not one of "
            f"{', '.join(TOKENIZER_TYPES)}"
        )
    if cfg.tokenizer_type == "sentencepiece":
        raise ConfigError(
            f"{context} tokenizer_type: 'sentencepiece' needs the sentencepiece package, which "
            "tzrec does not ship; convert the model to a tokenizer.json and use 'bpe'"
        )
    steps, max_length = _normalizer_steps(cfg, context)
    path = resolve_vocab_file(cfg, config_dir, context)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises plain Exception for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{context} vocab_file: {str(path)!r} is not a tokenizers tokenizer.json ({reason})"
        ) from exc
    return TextTokenizer(
        tokenizer,
        context=context,
        default_value=cfg.default_value,
        steps=steps,
        max_length=max_length,
    )


__all__ = ["TOKENIZER_TYPES", "TextTokenizer", "build_tokenizer", "resolve_vocab_file"]
