"""expr_feature expressions: upstream's operator table, functions vs numpy, safe refusals."""

import math

import numpy as np
import pyarrow as pa
import pytest

from tzrec.core.errors import ConfigError, DataError
from tzrec.data.fg.expr import FUNCTION_NAMES, RaggedColumn, compile_expression

X = np.array([-2.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.7])
P = np.array([0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.6])  # in (0, 1): valid for asin/acos/atanh
G = np.array([1.5, 2.0, 3.0, 4.5, 1.1, 7.0, 9.0])  # > 1: valid for acosh


def ev(expression, **cols):
    return compile_expression(expression).evaluate(cols, num_rows=None if cols else len(X))


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("12 / 3 / 2", 2.0),
        ("2 ^ 3 ^ 2", 512.0),  # ^ right-associative
        ("-2 ^ 2", -4.0),  # ^ binds tighter than a sign
        ("2 ^ -1", 0.5),
        ("-3 * -2", 6.0),
        ("2 * 3 ^ 2", 18.0),
        ("1 + 2 > 2", 1.0),  # + before comparison
        ("1 < 2 == 1", 1.0),  # comparisons share one level, left to right
        ("0 || 1 && 0", 0.0),  # && before ||
        ("1 || 0 && 0", 1.0),
        ("6 | 3 & 1", 7.0),  # & (4) before | (3): 6 | (3 & 1)
        ("5 & 3", 1.0),
        ("2.9 | 4.2", 6.0),  # bitwise on truncated integers
        ("1 | 0 && 0", 0.0),  # | (3) before && (2): (1 | 0) && 0
        ("3 > 2 ? 10 : 20", 10.0),
        ("0 ? 1 : 0 ? 2 : 3", 3.0),  # ?: nests to the right
        ("1 ? 0 ? 4 : 5 : 6", 5.0),
        ("_pi", math.pi),
        ("_e", math.e),
        (".5e1 + 1.", 6.0),
    ],
)
def test_operator_precedence_matches_upstreams_table(expression, expected):
    assert ev(expression) == pytest.approx(np.full(len(X), expected))


def test_comparison_and_logic_give_one_or_zero_per_row():
    a, b = np.array([1, 2, 3, 0]), np.array([1, 3, 2, 0])
    p = compile_expression("a == b ? 1 : 0")
    assert p.variables == ("a", "b")
    np.testing.assert_array_equal(p.evaluate({"a": a, "b": b}), [1, 0, 0, 1])
    cols = {"a": a, "b": b}
    for op, fn in [("<", np.less), ("<=", np.less_equal), (">", np.greater), ("!=", np.not_equal)]:
        got = compile_expression(f"a {op} b").evaluate(cols)
        np.testing.assert_array_equal(got, fn(a, b).astype(float))
    got = compile_expression("a && b").evaluate(cols)
    np.testing.assert_array_equal(got, [1, 1, 1, 0])
    got = compile_expression("a || b").evaluate(cols)
    np.testing.assert_array_equal(got, [1, 1, 1, 0])


def _round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


UNARY = {
    "sin": (np.sin, X),
    "cos": (np.cos, X),
    "tan": (np.tan, X),
    "asin": (np.arcsin, P),
    "acos": (np.arccos, P),
    "atan": (np.arctan, X),
    "sinh": (np.sinh, X),
    "cosh": (np.cosh, X),
    "tanh": (np.tanh, X),
    "asinh": (np.arcsinh, X),
    "acosh": (np.arccosh, G),
    "atanh": (np.arctanh, P),
    "log2": (np.log2, G),
    "log10": (np.log10, G),
    "log": (np.log, G),
    "ln": (np.log, G),
    "exp": (np.exp, X),
    "sqrt": (np.sqrt, G),
    "sign": (np.sign, X),
    "abs": (np.abs, X),
    "rint": (np.rint, X),
    "floor": (np.floor, X),
    "ceil": (np.ceil, X),
    "trunc": (np.trunc, X),
    "round": (_round_half_away, X),
    "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), X),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function_matches_numpy(name):
    fn, x = UNARY[name]
    np.testing.assert_allclose(ev(f"{name}(x)", x=x), fn(x), rtol=1e-12)


def test_rounding_conventions():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    np.testing.assert_array_equal(ev("round(x)", x=x), [-3, -2, -1, 1, 2, 3])
    np.testing.assert_array_equal(ev("rint(x)", x=x), [-2, -2, -0.0, 0, 2, 2])
    assert ev("roundp(3.14159, 2)")[0] == pytest.approx(3.14)
    assert ev("roundp(2.675, 1)")[0] == pytest.approx(2.7)
    assert ev("mod(7, 3)")[0] == 1.0
    assert ev("mod(-7, 3)")[0] == -1.0  # C fmod: the sign of the dividend


def test_isnan_and_binary_functions():
    x = np.array([1.0, np.nan, 3.0, 0.0, 2.0, 5.0, 6.0])
    np.testing.assert_array_equal(ev("isnan(x)", x=x), np.isnan(x).astype(float))
    y = X[::-1].copy()
    np.testing.assert_allclose(ev("min(x, y, 0)", x=X, y=y), np.minimum(np.minimum(X, y), 0))
    np.testing.assert_allclose(ev("max(x, y)", x=X, y=y), np.maximum(X, y))
    np.testing.assert_allclose(ev("sum(x, y, 1)", x=X, y=y), X + y + 1)
    np.testing.assert_allclose(ev("avg(x, y, 1)", x=X, y=y), (X + y + 1) / 3)
    np.testing.assert_allclose(ev("x ^ 2 - x / 3", x=X), X**2 - X / 3)


def test_gps_distances_agree_with_a_known_distance():
    # Beijing (116.4074, 39.9042) to Shanghai (121.4737, 31.2304): about 1067 km great circle
    args = "116.4074, 39.9042, 121.4737, 31.2304"
    hav = ev(f"haversine({args})")[0]
    sph = ev(f"sphere_dist({args})")[0]
    assert hav == pytest.approx(1067.3, abs=1.0)
    assert sph == pytest.approx(hav, rel=1e-9)
    assert ev("haversine(1, 2, 1, 2)")[0] == 0.0


def test_division_by_zero_is_ieee():
    got = compile_expression("a / b").evaluate({"a": np.array([1.0, -1.0, 0.0]), "b": np.zeros(3)})
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])
    # the branch not taken may divide by zero without a warning or error
    got = compile_expression("b == 0 ? 0 : a / b").evaluate({"a": np.ones(2), "b": np.zeros(2)})
    np.testing.assert_array_equal(got, [0.0, 0.0])


def test_rnd_uses_the_given_generator():
    p = compile_expression("rnd()")
    a = p.evaluate({}, num_rows=5, rng=np.random.default_rng(3))
    b = p.evaluate({}, num_rows=5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 5 and ((a >= 0) & (a < 1)).all()


VEC_A = RaggedColumn(np.array([0, 3, 5, 5]), np.array([1.0, 2.0, 4.0, -1.0, 3.0]))
VEC_B = RaggedColumn(np.array([0, 3, 5, 5]), np.array([2.0, 0.5, 1.0, 2.0, 2.0]))


def _rows(v):
    return [v.values[v.offsets[i] : v.offsets[i + 1]] for i in range(v.num_rows)]


def test_vector_functions_match_numpy_per_row():
    cols = {"a": VEC_A, "b": VEC_B}
    ra, rb = _rows(VEC_A), _rows(VEC_B)
    cases = {
        "len(a)": [len(r) for r in ra],
        "l2_norm(a)": [np.linalg.norm(r) for r in ra],
        "squared_norm(a)": [np.sum(r * r) for r in ra],
        "dot(a, b)": [np.dot(x, y) for x, y in zip(ra, rb, strict=True)],
        "euclid_dist(a, b)": [np.linalg.norm(x - y) for x, y in zip(ra, rb, strict=True)],
        "reduce_sum(a)": [np.sum(r) for r in ra],
        "reduce_prod(a)": [np.prod(r) for r in ra],
        "reduce_mean(a)": [np.mean(r) if len(r) else np.nan for r in ra],
        "reduce_min(a)": [np.min(r) if len(r) else np.nan for r in ra],
        "reduce_max(a)": [np.max(r) if len(r) else np.nan for r in ra],
        # upstream's table: std_dev / variance divide by n, pop_* by n - 1
        "variance(a)": [np.var(r) if len(r) else np.nan for r in ra],
        "std_dev(a)": [np.std(r) if len(r) else np.nan for r in ra],
        "pop_variance(a)": [np.var(r, ddof=1) if len(r) > 1 else np.nan for r in ra],
        "pop_std_dev(a)": [np.std(r, ddof=1) if len(r) > 1 else np.nan for r in ra],
        "reduce_sum(a * 2 + b)": [np.sum(x * 2 + y) for x, y in zip(ra, rb, strict=True)],
    }
    for expression, expected in cases.items():
        got = compile_expression(expression).evaluate(cols)
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=expression)
    corr = compile_expression("corr(a, b)").evaluate(cols)
    np.testing.assert_allclose(corr[0], np.corrcoef(ra[0], rb[0])[0, 1], rtol=1e-12)
    assert np.isnan(corr[2])


def test_vector_inputs_from_arrow_and_2d_arrays():
    lists = pa.array([[1, 2], None, [3]], pa.list_(pa.int64()))
    got = compile_expression("reduce_sum(a) + s").evaluate(
        {"a": lists, "s": pa.array([1.0, None, 2.0])}
    )
    np.testing.assert_array_equal(got[[0, 2]], [4.0, 5.0])
    assert np.isnan(got[1])  # a null scalar is nan
    dense = np.array([[1.0, 2.0], [3.0, 4.0]])
    got = compile_expression("dot(a, a) + len(a)").evaluate({"a": dense})
    np.testing.assert_array_equal(got, [7.0, 27.0])


def test_elementwise_over_vectors_keeps_them_multi_valued():
    out = compile_expression("a * k + 1").evaluate_multi({"a": VEC_A, "k": np.array([1, 2, 3.0])})
    np.testing.assert_array_equal(out.offsets, VEC_A.offsets)
    np.testing.assert_array_equal(out.values, [2, 3, 5, -1, 7])
    with pytest.raises(DataError, match="gives a vector per row"):
        compile_expression("a * 2").evaluate({"a": VEC_A})
    scalar = compile_expression("k + 1").evaluate_multi({"k": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(scalar.offsets, [0, 1, 2])


def test_vectors_of_different_lengths_are_one_line_data_errors():
    other = RaggedColumn(np.array([0, 2, 4, 4]), np.ones(4))
    with pytest.raises(DataError, match=r"dot\(\) at column 1 needs vectors of equal length"):
        compile_expression("dot(a, b)").evaluate({"a": VEC_A, "b": other})
    with pytest.raises(DataError, match="differ in length at row 0"):
        compile_expression("a + b").evaluate_multi({"a": VEC_A, "b": other})


@pytest.mark.parametrize(
    "expression, message",
    [
        ("a + * b", "unexpected '*' at column 5"),
        ("a +", "unexpected end of expression at column 4"),
        ("(a + b", "expected ')' but found end of expression at column 7"),
        ("a b", "unexpected 'b' at column 3"),
        ("a ? b", "expected ':' but found end of expression at column 6"),
        ("foo(a)", "unknown function 'foo'"),
        ("sqrt(a, b)", "sqrt() takes 1 argument, got 2 at column 1"),
        ("dot(a)", "dot() takes 2 arguments, got 1"),
        ("min()", "min() needs at least one argument"),
        ("sqrt + 1", "function 'sqrt' needs '(' and its arguments at column 1"),
        ("a % 2", "'%' is not an operator of the expression language (use mod(a, b)) at column 3"),
        ("!a", "'!' is not an operator"),
        ("a = 1", "'=' is not an operator"),
        ("", "is empty"),
        ("(" * 5000 + "1" + ")" * 5000, "is nested too deeply"),
    ],
)
def test_bad_expressions_are_one_line_config_errors(expression, message):
    with pytest.raises(ConfigError) as err:
        compile_expression(expression)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"expr_feature expression {expression!r}: ")
    assert message in text


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('ls')",
        "__import__(os)",
        "a.__class__",
        "open(x)",
        "exec(a)",
        "[a for a in b]",
        "lambda: 1",
        "a; b",
    ],
)
def test_python_code_is_refused(expression):
    with pytest.raises(ConfigError, match=r"^expr_feature expression .*(unexpected|unknown|not)"):
        compile_expression(expression)


def test_every_documented_function_is_known():
    documented = (
        "rnd isnan sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh log2 log10 log "
        "ln exp sqrt sign abs rint floor ceil trunc round roundp mod sigmoid sphere_dist "
        "haversine min max sum avg len l2_norm squared_norm dot euclid_dist corr std_dev "
        "pop_std_dev variance pop_variance reduce_min reduce_max reduce_sum reduce_mean "
        "reduce_prod"
    ).split()
    assert sorted(documented) == list(FUNCTION_NAMES)


def test_missing_and_mistyped_inputs_are_one_line_data_errors():
    p = compile_expression("a + b", context="feature_configs[2] expr_feature")
    with pytest.raises(DataError, match=r"^feature_configs\[2\] expr_feature .*variable 'b'"):
        p.evaluate({"a": np.ones(2)})
    with pytest.raises(DataError, match="different row counts"):
        p.evaluate({"a": np.ones(2), "b": np.ones(3)})
    with pytest.raises(DataError, match="column 'b' is list<item: bool>, expected numbers"):
        p.evaluate({"a": np.ones(1), "b": pa.array([[True]])})
    with pytest.raises(DataError, match="column 'b' is <U1, expected numbers"):
        p.evaluate({"a": np.ones(1), "b": np.array(["x"])})
    with pytest.raises(DataError, match="pass num_rows"):
        compile_expression("1 + 2").evaluate({})


def test_number_strings_and_separated_vectors_from_arrow():
    p = compile_expression("a + 1")
    got = p.evaluate({"a": pa.array(["1.5", " 2", "", None, "-3e1"])})
    np.testing.assert_array_equal(got[[0, 1, 4]], [2.5, 3.0, -29.0])
    assert np.isnan(got[2]) and np.isnan(got[3])  # empty / null: nan
    got = p.evaluate({"a": pa.array(["1", "2"]).dictionary_encode()})
    np.testing.assert_array_equal(got, [2.0, 3.0])
    vec = pa.array(["1\x1d2\x1d3", "4", None, ""])
    got = compile_expression("reduce_sum(v) + len(v)").evaluate({"v": vec})
    np.testing.assert_array_equal(got, [9.0, 5.0, 0.0, 0.0])
    got = compile_expression("dot(v, v)").evaluate({"v": pa.array(["1,2", "3"])}, separator=",")
    np.testing.assert_array_equal(got, [5.0, 9.0])
    lists = pa.array([["1", "2"], ["3"]])
    np.testing.assert_array_equal(
        compile_expression("reduce_max(v)").evaluate({"v": lists}), [2.0, 3.0]
    )
    with pytest.raises(DataError, match=r"column 'a' holds 'x1', expected numbers$"):
        p.evaluate({"a": pa.array(["1", "x1"])})
