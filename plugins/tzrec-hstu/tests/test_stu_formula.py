"""STULayer pinned against a float64 reference written from the HSTU formula.

Reference (TorchEasyRec / generative-recommenders STULayer), per row of length n::

    u, v, q, k = split(LN(x) W + b); u = SiLU(u)
    a_h = (SiLU(alpha q_h k_hᵀ) / scaling_seqlen * mask) v_h
    y = dropout(concat[u, a, u * norm(a)]);  out = x + y W_o

with eps 1e-6 for both norms and the id-based mask of ``ref_mask``.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tzrec.core.errors import ConfigError
from tzrec.hstu.stu import STULayer, STUStack, load_upstream_hstu, upstream_key_map
from tzrec.kernels import hstu_attention_mask
from tzrec.protos import module_pb2

EXAMPLE = Path(__file__).resolve().parents[3] / "docs/examples/hstu_match_kuairand.config"


def stu_config(**kw) -> module_pb2.STU:
    cfg = module_pb2.STU(
        embedding_dim=6, num_heads=2, hidden_dim=3, attention_dim=4, output_dropout_ratio=0.0
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def ref_mask(n: int, t: int, c: int, m: int, causal: bool) -> torch.Tensor:
    """Visibility written out position by position from upstream's id rule."""
    shift = max(c - 1, 0)
    target_id = n - t - shift

    def pid(p):
        return min(max(p - shift, 0), target_id)

    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            d = pid(i) - pid(j)
            if not causal:
                d = abs(d)
            ok = (i == j or d > 0) and (m <= 0 or d <= m)
            if c > 0 and pid(i) == 0 and pid(j) < target_id:
                ok = True
            mask[i, j] = ok
    return mask


def ref_layer(layer, x, lengths, divisor, c, targets, dropout_seed=None):
    """The formula, row by row, on the layer's parameters (any dtype)."""
    p = dict(layer.named_parameters())
    heads, hidden, adim = layer.num_heads, layer.hidden_dim, layer.attention_dim
    normed = F.layer_norm(x, (x.shape[1],), p["input_norm_weight"], p["input_norm_bias"], 1e-6)
    uvqk = normed @ p["uvqk_weight"] + p["uvqk_bias"]
    u = F.silu(uvqk[:, : heads * hidden])
    v = uvqk[:, heads * hidden : 2 * heads * hidden]
    q = uvqk[:, 2 * heads * hidden : 2 * heads * hidden + heads * adim]
    k = uvqk[:, 2 * heads * hidden + heads * adim :]
    rows, start = [], 0
    for b, n in enumerate(lengths):
        t = int(targets[b]) if targets is not None else 0
        mask = ref_mask(n, t, c, layer.max_attn_len, causal=True).to(x.dtype)
        out = []
        for h in range(heads):
            qh = q[start : start + n, h * adim : (h + 1) * adim]
            kh = k[start : start + n, h * adim : (h + 1) * adim]
            vh = v[start : start + n, h * hidden : (h + 1) * hidden]
            w = F.silu(layer.alpha * qh @ kh.T) / divisor * mask
            out.append(w @ vh)
        rows.append(torch.cat(out, dim=1) if out else x.new_zeros(n, 0))
        start += n
    attn = torch.cat(rows, dim=0)
    if layer.use_group_norm:
        a = attn.reshape(-1, heads, hidden)
        mu = a.mean(-1, keepdim=True)
        var = a.var(-1, unbiased=False, keepdim=True)
        a = (a - mu) / torch.sqrt(var + 1e-6)
        a = a * p["output_norm_weight"][:, None] + p["output_norm_bias"][:, None]
        norm_a = a.reshape(attn.shape)
    else:
        norm_a = F.layer_norm(
            attn, (attn.shape[1],), p["output_norm_weight"], p["output_norm_bias"], 1e-6
        )
    y = torch.cat([u, attn, u * norm_a], dim=1)
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
        y = F.dropout(y, p=layer.output_dropout_ratio, training=True)
    return x + y @ p["output_weight"]


def offsets_of(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)


def _randomize(layer):
    torch.manual_seed(3)
    with torch.no_grad():
        for prm in layer.parameters():
            prm.copy_(torch.randn_like(prm) * 0.5 + (1.0 if prm.dim() == 1 else 0.0))


CASES = {
    "plain": ({}, 0, None),
    "group_norm": ({"use_group_norm": True}, 0, None),
    "contextual": ({}, 2, None),
    "targets": ({}, 0, [2, 0, 1]),
    "window": ({"max_attn_len": 2}, 0, None),
    "contextual_window": ({"max_attn_len": 2}, 2, None),
    "contextual_targets_window": ({"max_attn_len": 3}, 1, [1, 0, 2]),
    "alpha": ({"attn_alpha": 0.7}, 0, [1, 1, 1]),
    "scaling_seqlen": ({"scaling_seqlen": 5}, 1, None),
    "contextual_override": ({"contextual_seq_len": 2}, 0, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layer_matches_formula_forward_and_gradients(case):
    kw, c, targets = CASES[case]
    layer = STULayer(stu_config(**kw), scaling_seqlen=9).double()
    _randomize(layer)
    lengths = [7, 3, 5]
    x = torch.randn(sum(lengths), 6, dtype=torch.float64, requires_grad=True)
    nt = torch.tensor(targets) if targets is not None else None
    out = layer(x, offsets_of(lengths), 12, contextual_seq_len=c, num_targets=nt)
    eff_c = kw.get("contextual_seq_len", c)
    divisor = kw.get("scaling_seqlen", 9)
    ref = ref_layer(layer, x, lengths, divisor, eff_c, nt)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    g = torch.randn_like(out)
    params = [x, *layer.parameters()]
    for a, b in zip(
        torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_without_model_default_the_divisor_is_the_calls_max_seq_len():
    layer = STULayer(stu_config()).double()
    _randomize(layer)
    x = torch.randn(4, 6, dtype=torch.float64)
    out = layer(x, offsets_of([4]), 11)
    torch.testing.assert_close(out, ref_layer(layer, x, [4], 11, 0, None))


@pytest.mark.parametrize(
    "n,t,c,m,causal",
    [
        (6, 2, 1, 0, True),
        (7, 0, 2, 2, True),
        (8, 3, 2, 3, True),
        (5, 2, 0, 1, False),
        (6, 1, 2, 0, False),
        (9, 2, 3, 2, False),
        (4, 0, 0, 0, True),
        (3, 2, 3, 1, True),
    ],
)
def test_kernel_mask_equals_the_written_out_rule(n, t, c, m, causal):
    got = hstu_attention_mask(n, num_targets=t, contextual_seq_len=c, max_attn_len=m, causal=causal)
    assert torch.equal(got, ref_mask(n, t, c, m, causal))


def test_output_dropout_is_applied_to_the_concat():
    layer = STULayer(stu_config(output_dropout_ratio=0.4, recompute_y=False)).double()
    _randomize(layer)
    layer.train()
    x = torch.randn(6, 6, dtype=torch.float64)
    torch.manual_seed(11)
    out = layer(x, offsets_of([6]), 6)
    ref = ref_layer(layer, x, [6], 6, 0, None, dropout_seed=11)
    torch.testing.assert_close(out, ref)
    layer.eval()
    torch.testing.assert_close(layer(x, offsets_of([6]), 6), ref_layer(layer, x, [6], 6, 0, None))


def _saved_numel(layer, x, offsets):
    total = [0]

    def pack(t):
        total[0] += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x, offsets, 8)
    return out, total[0]


def test_recompute_flags_save_less_and_give_the_same_numbers():
    torch.manual_seed(0)
    x = torch.randn(8, 6, requires_grad=True)
    offsets = offsets_of([5, 3])
    flags = ("recompute_normed_x", "recompute_uvqk", "recompute_y")
    base = STULayer(stu_config(**dict.fromkeys(flags, False))).train()
    out_base, saved_base = _saved_numel(base, x, offsets)
    grads_base = torch.autograd.grad(out_base.sum(), [x, *base.parameters()])
    for flag in flags:
        layer = STULayer(stu_config(**{f: f == flag for f in flags})).train()
        layer.load_state_dict(base.state_dict())
        out, saved = _saved_numel(layer, x, offsets)
        assert saved < saved_base, flag
        torch.testing.assert_close(out, out_base)
        for a, b in zip(
            torch.autograd.grad(out.sum(), [x, *layer.parameters()]), grads_base, strict=True
        ):
            torch.testing.assert_close(a, b)


def test_parameter_shapes_are_upstreams():
    layer = STULayer(stu_config(use_group_norm=True))
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "input_norm_weight": (6,),
        "input_norm_bias": (6,),
        "uvqk_weight": (6, 2 * (2 * 3 + 2 * 4)),
        "uvqk_bias": (28,),
        "output_norm_weight": (2,),  # one per head with use_group_norm
        "output_norm_bias": (2,),
        "output_weight": (3 * 2 * 3, 6),  # no output bias
    }
    assert tuple(STULayer(stu_config()).output_norm_weight.shape) == (6,)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scaling_seqlen", 0, "scaling_seqlen is 0"),
        ("output_dropout_ratio", 1.0, "output_dropout_ratio"),
    ],
)
def test_unsupported_or_broken_fields_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        STULayer(stu_config(**{field: value}))


def test_alpha_defaults_to_inverse_sqrt_attention_dim():
    assert STULayer(stu_config()).alpha == pytest.approx(1 / math.sqrt(4))
    assert STULayer(stu_config(attn_alpha=0.25)).alpha == pytest.approx(0.25)


def test_upstream_state_dict_loads_by_the_documented_rename():
    torch.manual_seed(5)
    stack = STUStack(stu_config(), num_layers=2)
    upstream = {}
    for i in range(2):
        for name, up in (
            ("input_norm_weight", "_input_norm_weight"),
            ("input_norm_bias", "_input_norm_bias"),
            ("uvqk_weight", "_uvqk_weight"),
            ("uvqk_bias", "_uvqk_beta"),
            ("output_norm_weight", "_output_norm_weight"),
            ("output_norm_bias", "_output_norm_bias"),
            ("output_weight", "_output_weight"),
        ):
            shape = getattr(stack.layers[i], name).shape
            upstream[f"user_tower._hstu_encoder._stu_module._stu_layers.{i}.{up}"] = torch.randn(
                shape
            )
    upstream["user_tower._hstu_encoder._input_preprocessor._content_mlp.0.weight"] = torch.randn(3)
    holder = torch.nn.Module()
    holder.stu = stack
    loaded = load_upstream_hstu(holder, upstream)
    assert len(loaded) == 14
    key = "user_tower._hstu_encoder._stu_module._stu_layers.1._uvqk_beta"
    assert upstream_key_map(upstream)[key] == "stu.layers.1.uvqk_bias"
    torch.testing.assert_close(stack.layers[1].uvqk_bias, upstream[key])
    torch.testing.assert_close(
        stack.layers[0].output_weight,
        upstream["user_tower._hstu_encoder._stu_module._stu_layers.0._output_weight"],
    )


def test_upstream_loader_refuses_layer_and_shape_mismatches():
    holder = torch.nn.Module()
    holder.stu = STUStack(stu_config(), num_layers=2)
    with pytest.raises(ConfigError, match="no TorchEasyRec STU weights"):
        load_upstream_hstu(holder, {"a.b": torch.zeros(1)})
    one = {
        f"_stu_module._stu_layers.0.{k}": torch.zeros(1)
        for k in (
            "_uvqk_weight",
            "_uvqk_beta",
            "_input_norm_weight",
            "_input_norm_bias",
            "_output_norm_weight",
            "_output_norm_bias",
            "_output_weight",
        )
    }
    with pytest.raises(ConfigError, match="STU layers differ"):
        load_upstream_hstu(holder, one)
    holder.stu = STUStack(stu_config(), num_layers=1)
    with pytest.raises(ConfigError, match="has shape"):
        load_upstream_hstu(holder, one)


def test_every_stu_field_is_declared_to_the_config_check():
    from tzrec.core.config import load_pipeline_config
    from tzrec.core.support import check_supported_fields

    config = load_pipeline_config(str(EXAMPLE))
    stu = config.model_config.hstu_match.user_tower.hstu.stu
    stu.scaling_seqlen = 20
    stu.contextual_seq_len = 1
    stu.recompute_normed_x = stu.recompute_uvqk = stu.recompute_y = False
    stu.sort_by_length = False
    stu.sla_k1 = 0
    stu.sla_k2 = 0
    assert check_supported_fields(config, allow_unsupported=False) == []
