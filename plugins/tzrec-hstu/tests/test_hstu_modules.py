"""STU layers, positional encoder, uih_preprocessor and postprocessors."""

import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.hstu.positional import HSTUPositionalEncoder
from tzrec.hstu.postprocessors import L2NormPostprocessor, LayerNormPostprocessor
from tzrec.hstu.preprocessors import SimpleActionEncoder, UIHPreprocessor
from tzrec.hstu.stu import STULayer, STUStack
from tzrec.kernels import Kernel, resolve_kernel
from tzrec.protos import module_pb2


def stu_config(**kw) -> module_pb2.STU:
    cfg = module_pb2.STU(
        embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4, output_dropout_ratio=0.0
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def offsets_of(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)


@pytest.mark.parametrize("use_group_norm", [False, True])
def test_stu_layer_triton_matches_pytorch(use_group_norm):
    assert resolve_kernel(Kernel.TRITON, torch.device("cpu")) == Kernel.TRITON
    torch.manual_seed(0)
    ref = STULayer(stu_config(use_group_norm=use_group_norm), Kernel.PYTORCH).eval()
    tri = STULayer(stu_config(use_group_norm=use_group_norm), Kernel.TRITON).eval()
    tri.load_state_dict(ref.state_dict())
    offsets = offsets_of([3, 0, 5])
    x = torch.randn(8, 8, requires_grad=True)
    out_ref = ref(x, offsets, max_seq_len=6, contextual_seq_len=1)
    out_tri = tri(x, offsets, max_seq_len=6, contextual_seq_len=1)
    torch.testing.assert_close(out_tri, out_ref, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(out_ref)
    grads_ref = torch.autograd.grad(out_ref, [x, *ref.parameters()], g)
    grads_tri = torch.autograd.grad(out_tri, [x, *tri.parameters()], g)
    for a, b in zip(grads_tri, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_stu_is_causal_within_a_row():
    torch.manual_seed(0)
    stack = STUStack(stu_config(), num_layers=2).eval()
    offsets = offsets_of([4])
    x = torch.randn(4, 8)
    out = stack(x, offsets, max_seq_len=4)
    x2 = x.clone()
    x2[3] += 1.0  # changing the last item leaves earlier outputs alone
    out2 = stack(x2, offsets, max_seq_len=4)
    torch.testing.assert_close(out[:3], out2[:3])
    assert not torch.allclose(out[3], out2[3])


def test_stu_stack_keeps_rows_apart_and_handles_empty_rows():
    torch.manual_seed(0)
    stack = STUStack(stu_config(), num_layers=2).eval()
    x = torch.randn(5, 8)
    together = stack(x, offsets_of([2, 0, 3]), max_seq_len=3)
    alone = stack(x[2:], offsets_of([3]), max_seq_len=3)
    torch.testing.assert_close(together[2:], alone)
    assert together.shape == (5, 8) and torch.isfinite(together).all()


def positional_config(**kw) -> module_pb2.GRPositionalEncoder:
    cfg = module_pb2.GRPositionalEncoder(num_position_buckets=8)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_positional_encoder_counts_positions_from_the_newest_item():
    enc = HSTUPositionalEncoder(positional_config(), embedding_dim=4)
    offsets = offsets_of([3, 1])
    out = enc(torch.zeros(4, 4), offsets, torch.zeros(4, dtype=torch.int64))
    pos = enc.position_embeddings
    torch.testing.assert_close(out, torch.stack([pos[2], pos[1], pos[0], pos[0]]))


def test_positional_encoder_time_buckets_use_the_query_time():
    enc = HSTUPositionalEncoder(
        positional_config(use_time_encoding=True, num_time_buckets=16, time_bucket_increments=1),
        embedding_dim=4,
    )
    offsets = offsets_of([2])
    ts = torch.tensor([100, 110])
    seq = torch.zeros(2, 4)
    default = enc(seq, offsets, ts)
    anchored = enc(seq, offsets, ts, query_time=torch.tensor([110 + 63]))
    pos, tse = enc.position_embeddings, enc.timestamp_embeddings
    # default anchor is the last timestamp: dt = 10 -> sqrt bucket 3; dt = 1 -> bucket 1
    torch.testing.assert_close(default, torch.stack([pos[1] + tse[3], pos[0] + tse[1]]))
    # query time 173: dt = 73 -> 8, dt = 63 -> 7
    torch.testing.assert_close(anchored, torch.stack([pos[1] + tse[8], pos[0] + tse[7]]))


def test_positional_encoder_scales_item_embeddings_by_sqrt_dim():
    enc = HSTUPositionalEncoder(positional_config(), embedding_dim=4)
    x = torch.ones(1, 4)
    out = enc(x, offsets_of([1]), torch.zeros(1, dtype=torch.int64))
    torch.testing.assert_close(out, 2.0 * x + enc.position_embeddings[0])


def test_time_encoding_without_time_buckets_is_a_config_error():
    with pytest.raises(ConfigError, match="num_time_buckets"):
        HSTUPositionalEncoder(positional_config(use_time_encoding=True), embedding_dim=4)


def uih_config(actions=True, watchtime=False) -> module_pb2.GRUIHPreprocessor:
    cfg = module_pb2.GRUIHPreprocessor()
    if actions:
        enc = cfg.action_encoder.simple_action_encoder
        enc.action_embedding_dim = 2
        enc.action_weights.extend([1, 2, 4])
        if watchtime:
            enc.watchtime_to_action_thresholds.append(30)
            enc.watchtime_to_action_weights.append(8)
        cfg.action_mlp.simple_mlp.hidden_dim = 8
    return cfg


def test_action_encoder_embeds_each_set_bit():
    enc = SimpleActionEncoder(uih_config(watchtime=True).action_encoder.simple_action_encoder)
    out = enc(torch.tensor([0.0, 5.0, 2.0]), torch.tensor([10.0, 10.0, 45.0]))
    t = enc.table
    zero = torch.zeros(2)
    torch.testing.assert_close(out[0], torch.zeros(8))
    torch.testing.assert_close(out[1], torch.cat([t[0], zero, t[2], zero]))
    torch.testing.assert_close(out[2], torch.cat([zero, t[1], zero, t[3]]))  # 45s >= 30s


def test_uih_preprocessor_prepends_contextual_tokens_and_keeps_empty_rows():
    torch.manual_seed(0)
    dims = {"uih": 6, "contextual": 10, "uih_action": 1, "uih_timestamp": 1}
    pre = UIHPreprocessor(uih_config(), 8, dims, num_contextual=2, max_uih_len=4)
    lengths = torch.tensor([2, 0, 3])
    inputs = {
        "uih": torch.randn(5, 6),
        "uih_action": torch.tensor([[1.0], [3.0], [0.0], [7.0], [2.0]]),
        "uih_timestamp": torch.tensor([[10.0], [20.0], [5.0], [6.0], [7.0]]),
        "contextual": torch.randn(3, 10),
    }
    seq = pre(inputs, lengths)
    assert seq.offsets.tolist() == [0, 4, 6, 11]
    assert seq.values.shape == (11, 8) and torch.isfinite(seq.values).all()
    assert seq.timestamps.tolist() == [0, 0, 10, 20, 0, 0, 0, 0, 5, 6, 7]
    assert seq.contextual_len == 2 and seq.max_seq_len == 6
    # the zero-length row is its two contextual tokens, equal to a lone row's
    alone = pre(
        {k: v[1:2] if k == "contextual" else v[:0] for k, v in inputs.items()}, torch.tensor([0])
    )
    torch.testing.assert_close(alone.values, seq.values[4:6])


def test_uih_preprocessor_without_optional_groups():
    pre = UIHPreprocessor(uih_config(actions=False), 8, {"uih": 8})
    x = torch.randn(3, 8)
    seq = pre({"uih": x}, torch.tensor([0, 3]))
    torch.testing.assert_close(seq.values, x)  # same width: no projection, no tokens
    assert seq.offsets.tolist() == [0, 0, 3] and seq.timestamps.tolist() == [0, 0, 0]


def test_action_encoder_without_uih_action_group_is_a_config_error():
    with pytest.raises(ConfigError, match="uih_action"):
        UIHPreprocessor(uih_config(), 8, {"uih": 8})


def test_watchtime_thresholds_without_uih_watchtime_group_is_a_config_error():
    with pytest.raises(ConfigError, match="uih_watchtime"):
        UIHPreprocessor(uih_config(watchtime=True), 8, {"uih": 8, "uih_action": 1})


def test_l2norm_postprocessor_gives_unit_rows_and_keeps_zero_finite():
    post = L2NormPostprocessor(module_pb2.GRL2NormPostprocessor(), 4)
    out = post(torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8, 0.0, 0.0]))
    torch.testing.assert_close(out[1], torch.zeros(4))


@pytest.mark.parametrize("kernel", [Kernel.PYTORCH, Kernel.TRITON])
def test_layernorm_postprocessor_normalises_rows(kernel):
    post = LayerNormPostprocessor(module_pb2.GRLayerNormPostprocessor(), 4, kernel)
    out = post(torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]]))
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0].var(unbiased=False), torch.tensor(1.0), atol=1e-3, rtol=0)
    assert torch.isfinite(out).all()
