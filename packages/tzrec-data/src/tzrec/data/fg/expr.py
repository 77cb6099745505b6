"""A safe, vectorised evaluator for ``expr_feature`` expressions (pyfg's expression language).

The expression is tokenised and parsed into a small tree here (no ``eval``/``exec``, no Python
``ast``); evaluating the tree runs numpy over whole columns. Operators, their precedence and the
function list are exactly those upstream documents for ``expr_feature``
(``docs/source/feature/feature.md``); anything else is refused at compile time in one line.

Semantics chosen where upstream does not say (documented in docs/data.md):

- arithmetic is IEEE double: ``x / 0`` is ``±inf``, ``0 / 0`` and ``log(-1)`` are ``nan``;
- comparisons and ``&&`` / ``||`` give 1.0 or 0.0 (any non-zero operand is true); ``|`` and
  ``&`` work on the operands truncated to integers;
- ``^`` is right-associative and binds tighter than a sign: ``-2^2 == -4``, ``2^3^2 == 512``;
- ``c ? a : b`` picks per row; both branches are computed over the column;
- ``round`` rounds half away from zero, ``rint`` half to even, ``mod`` is C's ``fmod``;
- reductions of an empty vector: ``len``/``reduce_sum``/``squared_norm``/``l2_norm`` give 0,
  ``reduce_prod`` 1, the others (mean, min, max, variances, ``corr``) ``nan``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import ConfigError, DataError
from tzrec.data.arrow_utils import combine, decode, is_stringlike

_NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(?i:nan|inf|infinity)$"
#: upstream's multi-value separator (the proto default of ``ExprFeature.separator``)
DEFAULT_SEPARATOR = "\x1d"
#: Earth radius (km) of ``sphere_dist`` and ``haversine``; arguments are degrees.
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class RaggedColumn:
    """A multi-value (vector) column: row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``."""

    offsets: np.ndarray
    values: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Number of values of each row."""
        return np.diff(self.offsets)

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return len(self.offsets) - 1


ExprColumn = np.ndarray | RaggedColumn | pa.Array | pa.ChunkedArray
_Value = np.ndarray | RaggedColumn

# ---------------------------------------------------------------------------------------------
# tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\|\||&&|<=|>=|!=|==|[-+*/^<>|&?:(),])
    """,
    re.VERBOSE,
)

#: binary operators and their precedence (upstream's table: higher binds tighter)
_BINARY_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "|": 3,
    "&": 4,
    "<=": 5,
    ">=": 5,
    "!=": 5,
    "==": 5,
    ">": 5,
    "<": 5,
    "+": 6,
    "-": 6,
    "*": 7,
    "/": 7,
    "^": 8,
}
_SIGN_PRECEDENCE = 7  # a sign binds tighter than + - * /, looser than ^
_CONSTANTS = {"_pi": math.pi, "_e": math.e}
_REFUSED_HINTS = {
    "%": "'%' is not an operator of the expression language (use mod(a, b))",
    "!": "'!' is not an operator of the expression language (use x == 0 or !=)",
    "=": "'=' is not an operator of the expression language (use ==)",
    "'": "strings are not part of the expression language",
    '"': "strings are not part of the expression language",
}


@dataclass(frozen=True)
class _Token:
    kind: str  # "num" | "name" | "op" | "end"
    text: str
    pos: int  # 0-based character offset


class _Errors:
    """Builds the one-line errors of one expression."""

    def __init__(self, expression: str, context: str) -> None:
        self.expression = expression
        self.context = context

    def at(self, message: str, pos: int) -> ConfigError:
        return ConfigError(
            f"{self.context} expression {self.expression!r}: {message} at column {pos + 1}"
        )

    def plain(self, message: str) -> ConfigError:
        return ConfigError(f"{self.context} expression {self.expression!r}: {message}")


def _tokenize(expression: str, errors: _Errors) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expression):
        m = _TOKEN_RE.match(expression, pos)
        if m is None:
            ch = expression[pos]
            hint = _REFUSED_HINTS.get(ch, f"unexpected character {ch!r}")
            raise errors.at(hint, pos)
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("end", "", len(expression)))
    return tokens


# ---------------------------------------------------------------------------------------------
# tree


class _Node:
    pos: int

    def eval(self, env: _Env) -> _Value | float:
        raise NotImplementedError


@dataclass
class _Num(_Node):
    value: float
    pos: int

    def eval(self, env: _Env) -> float:
        return self.value


@dataclass
class _Var(_Node):
    name: str
    pos: int

    def eval(self, env: _Env) -> _Value:
        return env.columns[self.name]


@dataclass
class _Unary(_Node):
    op: str
    operand: _Node
    pos: int

    def eval(self, env: _Env) -> _Value | float:
        v = self.operand.eval(env)
        return v if self.op == "+" else _elementwise(np.negative, [v], env, self.pos)


@dataclass
class _Binary(_Node):
    op: str
    left: _Node
    right: _Node
    pos: int

    def eval(self, env: _Env) -> _Value | float:
        return _elementwise(
            _BINARY_FUNCS[self.op], [self.left.eval(env), self.right.eval(env)], env, self.pos
        )


@dataclass
class _Ternary(_Node):
    cond: _Node
    then: _Node
    other: _Node
    pos: int

    def eval(self, env: _Env) -> _Value | float:
        args = [self.cond.eval(env), self.then.eval(env), self.other.eval(env)]
        return _elementwise(lambda c, a, b: np.where(c != 0, a, b), args, env, self.pos)


@dataclass
class _Call(_Node):
    name: str
    args: list[_Node]
    pos: int

    def eval(self, env: _Env) -> _Value | float:
        spec = _FUNCTIONS[self.name]
        args = [a.eval(env) for a in self.args]
        if spec.vector:
            vectors = [_as_ragged(a, env.num_rows) for a in args]
            return spec.fn(env, self.pos, *vectors)
        if self.name == "rnd":
            return env.rng.random(env.num_rows)
        return _elementwise(spec.fn, args, env, self.pos)


# ---------------------------------------------------------------------------------------------
# functions


def _bool(x: np.ndarray) -> np.ndarray:
    return (x != 0).astype(np.float64)


def _as_int(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.trunc(x), nan=0.0, posinf=0.0, neginf=0.0)
    return x.astype(np.int64)


def _round_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _roundp(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    scale = np.power(10.0, np.trunc(p))
    return _round_away(x * scale) / scale


def _sphere_dist(lng1, lat1, lng2, lat2) -> np.ndarray:
    # great-circle distance by the spherical law of cosines
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lng2 - lng1)
    c = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl)
    return EARTH_RADIUS_KM * np.arccos(np.clip(c, -1.0, 1.0))


def _haversine(lng1, lat1, lng2, lat2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lng2 - lng1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


_BINARY_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "||": lambda a, b: _bool(np.logical_or(a != 0, b != 0)),
    "&&": lambda a, b: _bool(np.logical_and(a != 0, b != 0)),
    "|": lambda a, b: (_as_int(a) | _as_int(b)).astype(np.float64),
    "&": lambda a, b: (_as_int(a) & _as_int(b)).astype(np.float64),
    "<=": lambda a, b: _bool(a <= b),
    ">=": lambda a, b: _bool(a >= b),
    "!=": lambda a, b: _bool(a != b),
    "==": lambda a, b: _bool(a == b),
    ">": lambda a, b: _bool(a > b),
    "<": lambda a, b: _bool(a < b),
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "^": np.power,
}


@dataclass(frozen=True)
class _Function:
    fn: Callable[..., object]
    arity: int | None  # None: one or more arguments
    vector: bool = False


def _seg(v: RaggedColumn) -> tuple[np.ndarray, np.ndarray]:
    """Row id of every value and each row's length."""
    lengths = v.lengths
    return np.repeat(np.arange(v.num_rows), lengths), lengths


def _seg_sum(v: RaggedColumn, values: np.ndarray | None = None) -> np.ndarray:
    rows, _ = _seg(v)
    vals = v.values if values is None else values
    return np.bincount(rows, weights=vals, minlength=v.num_rows).astype(np.float64)


def _seg_reduce(ufunc: np.ufunc, v: RaggedColumn, empty: float) -> np.ndarray:
    lengths = v.lengths
    out = np.full(v.num_rows, empty, dtype=np.float64)
    nonempty = lengths > 0
    if nonempty.any():
        out[nonempty] = ufunc.reduceat(v.values, v.offsets[:-1][nonempty])
    return out


def _seg_mean(v: RaggedColumn) -> np.ndarray:
    return _seg_sum(v) / v.lengths


def _seg_var(v: RaggedColumn, ddof: int) -> np.ndarray:
    rows, lengths = _seg(v)
    centred = v.values - _seg_mean(v)[rows]
    dof = (lengths - ddof).astype(np.float64)
    return _seg_sum(v, centred * centred) / np.where(dof > 0, dof, np.nan)


def _same_lengths(env: _Env, pos: int, name: str, a: RaggedColumn, b: RaggedColumn) -> None:
    if not np.array_equal(a.lengths, b.lengths):
        row = int(np.flatnonzero(a.lengths != b.lengths)[0])
        raise env.data_error(
            f"{name}() at column {pos + 1} needs vectors of equal length, row {row} has "
            f"{int(a.lengths[row])} and {int(b.lengths[row])}"
        )


def _dot(env: _Env, pos: int, a: RaggedColumn, b: RaggedColumn) -> np.ndarray:
    _same_lengths(env, pos, "dot", a, b)
    return _seg_sum(a, a.values * b.values)


def _euclid(env: _Env, pos: int, a: RaggedColumn, b: RaggedColumn) -> np.ndarray:
    _same_lengths(env, pos, "euclid_dist", a, b)
    d = a.values - b.values
    return np.sqrt(_seg_sum(a, d * d))


def _corr(env: _Env, pos: int, a: RaggedColumn, b: RaggedColumn) -> np.ndarray:
    _same_lengths(env, pos, "corr", a, b)
    rows, _ = _seg(a)
    da = a.values - _seg_mean(a)[rows]
    db = b.values - _seg_mean(b)[rows]
    return _seg_sum(a, da * db) / np.sqrt(_seg_sum(a, da * da) * _seg_sum(a, db * db))


def _vec1(fn: Callable[[RaggedColumn], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda env, pos, v: fn(v)


_FUNCTIONS: dict[str, _Function] = {
    "rnd": _Function(lambda: None, 0),
    "isnan": _Function(lambda x: np.isnan(x).astype(np.float64), 1),
    "sin": _Function(np.sin, 1),
    "cos": _Function(np.cos, 1),
    "tan": _Function(np.tan, 1),
    "asin": _Function(np.arcsin, 1),
    "acos": _Function(np.arccos, 1),
    "atan": _Function(np.arctan, 1),
    "sinh": _Function(np.sinh, 1),
    "cosh": _Function(np.cosh, 1),
    "tanh": _Function(np.tanh, 1),
    "asinh": _Function(np.arcsinh, 1),
    "acosh": _Function(np.arccosh, 1),
    "atanh": _Function(np.arctanh, 1),
    "log2": _Function(np.log2, 1),
    "log10": _Function(np.log10, 1),
    "log": _Function(np.log, 1),
    "ln": _Function(np.log, 1),
    "exp": _Function(np.exp, 1),
    "sqrt": _Function(np.sqrt, 1),
    "sign": _Function(np.sign, 1),
    "abs": _Function(np.abs, 1),
    "rint": _Function(np.rint, 1),
    "floor": _Function(np.floor, 1),
    "ceil": _Function(np.ceil, 1),
    "trunc": _Function(np.trunc, 1),
    "round": _Function(_round_away, 1),
    "roundp": _Function(_roundp, 2),
    "mod": _Function(np.fmod, 2),
    "sigmoid": _Function(lambda x: 1.0 / (1.0 + np.exp(-x)), 1),
    "sphere_dist": _Function(_sphere_dist, 4),
    "haversine": _Function(_haversine, 4),
    "min": _Function(lambda *a: np.minimum.reduce(np.broadcast_arrays(*a)), None),
    "max": _Function(lambda *a: np.maximum.reduce(np.broadcast_arrays(*a)), None),
    "sum": _Function(lambda *a: np.add.reduce(np.broadcast_arrays(*a)), None),
    "avg": _Function(lambda *a: np.add.reduce(np.broadcast_arrays(*a)) / len(a), None),
    # vector functions: each argument is a multi-value column (a scalar is a 1-vector)
    "len": _Function(_vec1(lambda v: v.lengths.astype(np.float64)), 1, True),
    "l2_norm": _Function(_vec1(lambda v: np.sqrt(_seg_sum(v, v.values**2))), 1, True),
    "squared_norm": _Function(_vec1(lambda v: _seg_sum(v, v.values**2)), 1, True),
    "dot": _Function(_dot, 2, True),
    "euclid_dist": _Function(_euclid, 2, True),
    "corr": _Function(_corr, 2, True),
    "std_dev": _Function(_vec1(lambda v: np.sqrt(_seg_var(v, 0))), 1, True),
    "pop_std_dev": _Function(_vec1(lambda v: np.sqrt(_seg_var(v, 1))), 1, True),
    "variance": _Function(_vec1(lambda v: _seg_var(v, 0)), 1, True),
    "pop_variance": _Function(_vec1(lambda v: _seg_var(v, 1)), 1, True),
    "reduce_min": _Function(_vec1(lambda v: _seg_reduce(np.minimum, v, np.nan)), 1, True),
    "reduce_max": _Function(_vec1(lambda v: _seg_reduce(np.maximum, v, np.nan)), 1, True),
    "reduce_sum": _Function(_vec1(_seg_sum), 1, True),
    "reduce_mean": _Function(_vec1(_seg_mean), 1, True),
    "reduce_prod": _Function(_vec1(lambda v: _seg_reduce(np.multiply, v, 1.0)), 1, True),
}

#: the function names an expression may call (upstream's documented list)
FUNCTION_NAMES: tuple[str, ...] = tuple(sorted(_FUNCTIONS))
#: the named constants an expression may use
CONSTANT_NAMES: tuple[str, ...] = tuple(sorted(_CONSTANTS))


# ---------------------------------------------------------------------------------------------
# evaluation environment and broadcasting


class _Env:
    def __init__(
        self,
        columns: dict[str, _Value],
        num_rows: int,
        rng: np.random.Generator,
        errors: _Errors,
    ) -> None:
        self.columns = columns
        self.num_rows = num_rows
        self.rng = rng
        self.errors = errors

    def data_error(self, message: str) -> DataError:
        return DataError(f"{self.errors.context} expression {self.errors.expression!r}: {message}")


def _elementwise(
    fn: Callable[..., np.ndarray], args: list[_Value | float], env: _Env, pos: int
) -> _Value | float:
    """``fn`` over scalars/columns/vectors; a per-row scalar repeats over that row's vector."""
    ragged = [a for a in args if isinstance(a, RaggedColumn)]
    if not ragged:
        if all(isinstance(a, float) for a in args):
            return float(fn(*[np.float64(a) for a in args]))
        return np.asarray(fn(*args), dtype=np.float64)
    first = ragged[0]
    for other in ragged[1:]:
        if other is not first and not np.array_equal(other.offsets, first.offsets):
            row = int(np.flatnonzero(other.lengths != first.lengths)[0])
            raise env.data_error(
                f"vectors combined at column {pos + 1} differ in length at row {row} "
                f"({int(first.lengths[row])} and {int(other.lengths[row])})"
            )
    rows = np.repeat(np.arange(first.num_rows), first.lengths)
    flat = [
        a.values if isinstance(a, RaggedColumn) else (a if isinstance(a, float) else a[rows])
        for a in args
    ]
    return RaggedColumn(first.offsets, np.asarray(fn(*flat), dtype=np.float64))


def _as_ragged(v: _Value | float, num_rows: int) -> RaggedColumn:
    if isinstance(v, RaggedColumn):
        return v
    values = np.broadcast_to(np.asarray(v, dtype=np.float64), (num_rows,)).copy()
    return RaggedColumn(np.arange(num_rows + 1, dtype=np.int64), values)


def _column(name: str, col: ExprColumn, errors: _Errors, separator: str) -> _Value:
    """One input as a float64 column (one value a row) or a :class:`RaggedColumn`."""
    if isinstance(col, RaggedColumn):
        return RaggedColumn(
            np.asarray(col.offsets, dtype=np.int64), np.asarray(col.values, dtype=np.float64)
        )
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return _arrow_column(name, col, errors, separator)
    arr = np.asarray(col)
    if arr.ndim == 1:
        return _to_float(name, arr, errors)
    if arr.ndim == 2:
        n, d = arr.shape
        return RaggedColumn(
            np.arange(n + 1, dtype=np.int64) * d, _to_float(name, arr.reshape(-1), errors)
        )
    raise DataError(
        f"{errors.context} expression {errors.expression!r}: column {name!r} has "
        f"{arr.ndim} dimensions, expected 1 (a value a row) or 2 (a vector a row)"
    )


def _to_float(name: str, arr: np.ndarray, errors: _Errors) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{errors.context} expression {errors.expression!r}: column {name!r} is "
            f"{arr.dtype}, expected numbers"
        )
    return arr.astype(np.float64, copy=False)


def _arrow_column(
    name: str, col: pa.Array | pa.ChunkedArray, errors: _Errors, separator: str
) -> _Value:
    col = decode(combine(col))
    t = col.type
    if is_stringlike(t):
        return _string_column(name, col, errors, separator)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if pa.types.is_fixed_size_list(t):
            col = col.cast(pa.list_(t.value_type))
        col = col.fill_null(pa.scalar([], col.type)) if col.null_count else col
        flat = col.flatten()
        if is_stringlike(flat.type):
            flat = _parse_numbers(name, flat, errors)
        elif not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)):
            raise DataError(
                f"{errors.context} expression {errors.expression!r}: column {name!r} is "
                f"{t}, expected numbers or lists of numbers"
            )
        offsets = np.asarray(col.offsets, dtype=np.int64)
        offsets = offsets - offsets[0]
        values = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return RaggedColumn(offsets, np.asarray(values, dtype=np.float64))
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    raise DataError(
        f"{errors.context} expression {errors.expression!r}: column {name!r} is {t}, "
        "expected numbers or lists of numbers"
    )


def _parse_numbers(name: str, arr: pa.Array, errors: _Errors) -> pa.Array:
    """Number strings as float64 (empty or null: nan); DataError naming the first bad one."""
    arr = arr.cast(pa.string()) if not pa.types.is_string(arr.type) else arr
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True)
    text = pc.if_else(blank, pa.scalar("nan"), pc.utf8_trim_whitespace(arr))
    try:
        return pc.cast(text, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = pc.match_substring_regex(text, _NUMBER_RE)
        bad = arr.filter(pc.invert(pc.fill_null(ok, True)))
        first = bad[0].as_py() if len(bad) else "?"
        raise DataError(
            f"{errors.context} expression {errors.expression!r}: column {name!r} holds "
            f"{first!r}, expected numbers"
        ) from None


def _string_column(name: str, arr: pa.Array, errors: _Errors, separator: str) -> _Value:
    """A number per row, or ``separator``-joined numbers (a vector) when any row has one."""
    if separator and pc.any(pc.fill_null(pc.match_substring(arr, separator), False)).as_py():
        lists = pc.split_pattern(pc.fill_null(arr.cast(pa.string()), ""), separator)
        flat = lists.flatten()
        keep = pc.not_equal(pc.utf8_trim_whitespace(flat), "")
        row = pa.array(np.repeat(np.arange(len(lists)), np.diff(lists.offsets)))
        kept_rows = np.asarray(row.filter(keep), dtype=np.int64)
        values = _parse_numbers(name, flat.filter(keep), errors).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(np.bincount(kept_rows, minlength=len(arr)), out=offsets[1:])
        return RaggedColumn(offsets, np.asarray(values, dtype=np.float64))
    return _parse_numbers(name, arr, errors).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# parser


class _Parser:
    """Precedence climbing over upstream's operator table; ``?:`` is lowest and nests right."""

    def __init__(self, tokens: list[_Token], errors: _Errors) -> None:
        self.tokens = tokens
        self.i = 0
        self.errors = errors
        self.variables: list[str] = []

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def unexpected(self, tok: _Token) -> ConfigError:
        if tok.kind == "end":
            return self.errors.at("unexpected end of expression", tok.pos)
        return self.errors.at(f"unexpected {tok.text!r}", tok.pos)

    def expect(self, text: str) -> _Token:
        if self.tok.kind == "op" and self.tok.text == text:
            return self.advance()
        tok = self.tok
        what = "end of expression" if tok.kind == "end" else repr(tok.text)
        raise self.errors.at(f"expected {text!r} but found {what}", tok.pos)

    def parse(self) -> _Node:
        node = self.ternary()
        if self.tok.kind != "end":
            raise self.unexpected(self.tok)
        return node

    def ternary(self) -> _Node:
        cond = self.binary(1)
        if self.tok.kind == "op" and self.tok.text == "?":
            q = self.advance()
            then = self.ternary()
            self.expect(":")
            other = self.ternary()
            return _Ternary(cond, then, other, q.pos)
        return cond

    def binary(self, min_prec: int) -> _Node:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in _BINARY_PRECEDENCE:
            op = self.tok
            prec = _BINARY_PRECEDENCE[op.text]
            if prec < min_prec:
                break
            self.advance()
            # ^ is right-associative: its right side may hold another ^
            right = self.binary(prec if op.text == "^" else prec + 1)
            left = _Binary(op.text, left, right, op.pos)
        return left

    def unary(self) -> _Node:
        tok = self.tok
        if tok.kind == "op" and tok.text in ("-", "+"):
            self.advance()
            return _Unary(tok.text, self.binary(_SIGN_PRECEDENCE + 1), tok.pos)
        return self.primary()

    def primary(self) -> _Node:
        tok = self.advance()
        if tok.kind == "num":
            return _Num(float(tok.text), tok.pos)
        if tok.kind == "name":
            if self.tok.kind == "op" and self.tok.text == "(":
                return self.call(tok)
            if tok.text in _CONSTANTS:
                return _Num(_CONSTANTS[tok.text], tok.pos)
            if tok.text in _FUNCTIONS:
                raise self.errors.at(f"function {tok.text!r} needs '(' and its arguments", tok.pos)
            if tok.text not in self.variables:
                self.variables.append(tok.text)
            return _Var(tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            node = self.ternary()
            self.expect(")")
            return node
        raise self.unexpected(tok)

    def call(self, name: _Token) -> _Node:
        spec = _FUNCTIONS.get(name.text)
        if spec is None:
            raise self.errors.at(
                f"unknown function {name.text!r} (known: {', '.join(FUNCTION_NAMES)})", name.pos
            )
        self.expect("(")
        args: list[_Node] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            args.append(self.ternary())
            while self.tok.kind == "op" and self.tok.text == ",":
                self.advance()
                args.append(self.ternary())
        self.expect(")")
        if spec.arity is None and not args:
            raise self.errors.at(f"{name.text}() needs at least one argument", name.pos)
        if spec.arity is not None and len(args) != spec.arity:
            raise self.errors.at(
                f"{name.text}() takes {spec.arity} argument{'s' if spec.arity != 1 else ''}, "
                f"got {len(args)}",
                name.pos,
            )
        return _Call(name.text, args, name.pos)


# ---------------------------------------------------------------------------------------------
# public API


class ExprProgram:
    """A compiled expression: its variables and a vectorised :meth:`evaluate`."""

    def __init__(self, expression: str, root: _Node, variables: tuple[str, ...], context: str):
        self.expression = expression
        self.variables = variables
        self._root = root
        self._errors = _Errors(expression, context)

    def __repr__(self) -> str:
        return f"ExprProgram({self.expression!r})"

    def _run(
        self,
        columns: Mapping[str, ExprColumn],
        num_rows: int | None,
        rng: np.random.Generator | None,
        separator: str,
    ) -> _Value:
        env_cols: dict[str, _Value] = {}
        for name in self.variables:
            if name not in columns:
                have = ", ".join(sorted(columns)) or "none"
                raise DataError(
                    f"{self._errors.context} expression {self.expression!r}: no input for "
                    f"variable {name!r} (inputs: {have})"
                )
            env_cols[name] = _column(name, columns[name], self._errors, separator)
        sizes = {
            name: (c.num_rows if isinstance(c, RaggedColumn) else len(c))
            for name, c in env_cols.items()
        }
        if num_rows is None:
            if not sizes:
                raise DataError(
                    f"{self._errors.context} expression {self.expression!r} reads no "
                    "variable: pass num_rows"
                )
            num_rows = next(iter(sizes.values()))
        bad = {k: v for k, v in sizes.items() if v != num_rows}
        if bad:
            raise DataError(
                f"{self._errors.context} expression {self.expression!r}: inputs have "
                f"different row counts ({', '.join(f'{k}={v}' for k, v in sizes.items())})"
            )
        env = _Env(env_cols, num_rows, rng or np.random.default_rng(), self._errors)
        with np.errstate(all="ignore"):
            out = self._root.eval(env)
        if isinstance(out, RaggedColumn):
            return out
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (num_rows,)).copy()

    def evaluate(
        self,
        columns: Mapping[str, ExprColumn],
        *,
        num_rows: int | None = None,
        rng: np.random.Generator | None = None,
        separator: str = DEFAULT_SEPARATOR,
    ) -> np.ndarray:
        """One float64 value a row; raises DataError if the result is a vector per row.

        ``columns`` maps each variable to a 1-d numeric array (a value a row), a 2-d array
        (a vector a row), a :class:`RaggedColumn`, or an arrow array: numbers, lists of
        numbers, or number strings (``separator``-joined in any row: a vector per row; a
        null or empty value is ``nan``, a null list empty). ``num_rows`` is needed only when
        the expression reads no variable; ``rng`` drives ``rnd()``.
        """
        out = self._run(columns, num_rows, rng, separator)
        if isinstance(out, RaggedColumn):
            raise DataError(
                f"{self._errors.context} expression {self.expression!r} gives a vector per "
                "row (it combines multi-value inputs without reducing them); use value_dim 0 "
                "or a reduce_* function"
            )
        return out

    def evaluate_multi(
        self,
        columns: Mapping[str, ExprColumn],
        *,
        num_rows: int | None = None,
        rng: np.random.Generator | None = None,
        separator: str = DEFAULT_SEPARATOR,
    ) -> RaggedColumn:
        """The result as a :class:`RaggedColumn` (one value a row unless inputs are vectors)."""
        out = self._run(columns, num_rows, rng, separator)
        if isinstance(out, RaggedColumn):
            return out
        return RaggedColumn(np.arange(len(out) + 1, dtype=np.int64), out)


def compile_expression(expression: str, *, context: str = "expr_feature") -> ExprProgram:
    """Parse ``expression`` into an :class:`ExprProgram`; ConfigError (one line) if invalid.

    ``context`` starts every error message, e.g. ``"feature_configs[3] expr_feature"``.
    """
    errors = _Errors(expression, context)
    if not expression.strip():
        raise errors.plain("is empty")
    parser = _Parser(_tokenize(expression, errors), errors)
    try:
        root = parser.parse()
    except RecursionError:
        raise errors.plain("is nested too deeply") from None
    return ExprProgram(expression, root, tuple(parser.variables), context)


__all__ = [
    "CONSTANT_NAMES",
    "DEFAULT_SEPARATOR",
    "EARTH_RADIUS_KM",
    "FUNCTION_NAMES",
    "ExprProgram",
    "RaggedColumn",
    "compile_expression",
]
