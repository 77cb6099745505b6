import pytest
import torch
from google.protobuf import text_format

from tzrec.core.errors import ConfigError
from tzrec.models.modules.sequence import (
    DINEncoder,
    MultiWindowDINEncoder,
    PoolingEncoder,
    SelfAttentionEncoder,
    SimpleAttention,
    create_sequence_encoder,
)
from tzrec.protos import seq_encoder_pb2

B, L, D = 4, 6, 8


pytestmark = pytest.mark.usefixtures("only_models_plugin")


def _cfg(text: str) -> seq_encoder_pb2.SeqEncoderConfig:
    return text_format.Parse(text, seq_encoder_pb2.SeqEncoderConfig())


CONFIGS = {
    "din_encoder": 'din_encoder { input: "g" attn_mlp { hidden_units: [8, 4] } }',
    "simple_attention": 'simple_attention { input: "g" }',
    "pooling_encoder": 'pooling_encoder { input: "g" pooling_type: "mean" }',
    "multi_window_din_encoder": (
        'multi_window_din_encoder { input: "g" attn_mlp { hidden_units: [4] } '
        "windows_len: [1, 2, 3] }"
    ),
    "self_attention_encoder": (
        'self_attention_encoder { input: "g" multihead_attn_dim: 8 num_heads: 2 }'
    ),
}
EXPECTED_DIM = {
    "din_encoder": D,
    "simple_attention": D,
    "pooling_encoder": D,
    "multi_window_din_encoder": D * 4,
    "self_attention_encoder": 8,
}


def _inputs(lengths=(6, 3, 0, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "g.query": torch.randn(B, D, generator=g),
        "g.sequence": torch.randn(B, L, D, generator=g),
        "g.sequence_length": torch.tensor(lengths),
    }


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encoder_built_from_registry_has_documented_output_dim(name):
    enc = create_sequence_encoder(_cfg(CONFIGS[name]), {"g.sequence": D, "g.query": D})
    assert enc.input() == "g"
    assert enc.output_dim() == EXPECTED_DIM[name]
    out = enc(_inputs())
    assert out.shape == (B, EXPECTED_DIM[name])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_zero_length_sequence_gives_finite_output_and_gradients(name):
    enc = create_sequence_encoder(_cfg(CONFIGS[name]), {"g.sequence": D, "g.query": D})
    inputs = _inputs(lengths=(0, 0, 0, 0))
    inputs["g.sequence"].requires_grad_(True)
    out = enc(inputs)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(inputs["g.sequence"].grad).all()
    for p in enc.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_values_do_not_change_the_output(name):
    enc = create_sequence_encoder(_cfg(CONFIGS[name]), {"g.sequence": D, "g.query": D}).eval()
    a = _inputs()
    b = {k: v.clone() for k, v in a.items()}
    for row, n in enumerate(b["g.sequence_length"].tolist()):
        b["g.sequence"][row, n:] = 1e3
    torch.testing.assert_close(enc(a), enc(b))


def test_pooling_mean_and_sum_values():
    seq = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    lengths = torch.tensor([2, 0])
    mean = PoolingEncoder(_cfg(CONFIGS["pooling_encoder"]).pooling_encoder, 2)
    sum_cfg = _cfg('pooling_encoder { input: "g" pooling_type: "sum" }').pooling_encoder
    total = PoolingEncoder(sum_cfg, 2)
    torch.testing.assert_close(total.encode(seq, lengths), torch.tensor([[2.0, 4.0], [0, 0]]))
    torch.testing.assert_close(mean.encode(seq, lengths), torch.tensor([[1.0, 2.0], [0, 0]]))


def test_pooling_rejects_unknown_type():
    with pytest.raises(ValueError, match="pooling_type"):
        PoolingEncoder(
            _cfg('pooling_encoder { input: "g" pooling_type: "max" }').pooling_encoder, 2
        )


def test_max_seq_length_truncates():
    cfg = _cfg('pooling_encoder { input: "g" pooling_type: "sum" max_seq_length: 1 }')
    enc = PoolingEncoder(cfg.pooling_encoder, 2)
    seq = torch.ones(1, 3, 2)
    torch.testing.assert_close(enc.encode(seq, torch.tensor([3])), torch.tensor([[1.0, 1.0]]))


def test_simple_attention_matches_manual_softmax():
    enc = SimpleAttention(_cfg(CONFIGS["simple_attention"]).simple_attention, D, D)
    x = _inputs(lengths=(6, 3, 1, 2))
    out = enc(x)
    for row, n in enumerate(x["g.sequence_length"].tolist()):
        s = x["g.sequence"][row, :n]
        w = torch.softmax(s @ x["g.query"][row], dim=0)
        torch.testing.assert_close(out[row], w @ s)


def test_simple_attention_single_item_returns_that_item():
    enc = SimpleAttention(_cfg(CONFIGS["simple_attention"]).simple_attention, D, D)
    x = _inputs(lengths=(1, 1, 1, 1))
    torch.testing.assert_close(enc(x), x["g.sequence"][:, 0])


def test_din_output_is_convex_combination_of_valid_items():
    enc = DINEncoder(_cfg(CONFIGS["din_encoder"]).din_encoder, D, D)
    x = _inputs(lengths=(1, 1, 1, 1))
    torch.testing.assert_close(enc(x), x["g.sequence"][:, 0])


def test_din_pads_a_narrower_query_and_rejects_a_wider_one():
    cfg = _cfg(CONFIGS["din_encoder"]).din_encoder
    enc = DINEncoder(cfg, D, 5)
    x = _inputs()
    x["g.query"] = x["g.query"][:, :5]
    assert enc(x).shape == (B, D)
    with pytest.raises(ValueError, match="query_dim"):
        DINEncoder(cfg, D, D + 1)


def test_multi_window_din_windows_and_query_tail():
    cfg = _cfg(CONFIGS["multi_window_din_encoder"]).multi_window_din_encoder
    enc = MultiWindowDINEncoder(cfg, D, D)
    x = _inputs(lengths=(6, 1, 0, 3))
    out = enc(x).reshape(B, 4, D)
    torch.testing.assert_close(out[:, 3], x["g.query"])
    # row 1 has one item: windows 1 and 2 are empty.
    assert torch.all(out[1, 1:3] == 0)
    # row 2 is empty: every window is zero.
    assert torch.all(out[2, :3] == 0)


def test_multi_window_shorter_sequence_than_windows():
    cfg = _cfg(CONFIGS["multi_window_din_encoder"]).multi_window_din_encoder
    enc = MultiWindowDINEncoder(cfg, D, D)
    x = _inputs(lengths=(2, 2, 0, 1))
    x["g.sequence"] = x["g.sequence"][:, :2]
    assert enc(x).shape == (B, 4 * D)


def test_self_attention_requires_divisible_heads():
    cfg = _cfg('self_attention_encoder { input: "g" multihead_attn_dim: 10 num_heads: 3 }')
    with pytest.raises(ValueError, match="divisible"):
        SelfAttentionEncoder(cfg.self_attention_encoder, D)


def test_create_sequence_encoder_errors():
    with pytest.raises(ConfigError, match="sets no encoder"):
        create_sequence_encoder(seq_encoder_pb2.SeqEncoderConfig(), {})
    with pytest.raises(ConfigError, match="no sequence"):
        create_sequence_encoder(_cfg(CONFIGS["simple_attention"]), {"other.sequence": D})


def test_encode_without_query_is_a_clear_error():
    enc = SimpleAttention(_cfg(CONFIGS["simple_attention"]).simple_attention, D, D)
    with pytest.raises(ValueError, match="query"):
        enc.encode(torch.randn(B, L, D), torch.tensor([1, 2, 3, 4]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encoders_script_and_fx_trace_for_export(name):
    enc = create_sequence_encoder(_cfg(CONFIGS[name]), {"g.sequence": D, "g.query": D}).eval()
    x = _inputs()
    expected = enc(x)
    torch.testing.assert_close(torch.jit.script(enc)(x), expected)
    torch.testing.assert_close(torch.fx.symbolic_trace(enc)(x), expected)
