"""Training steps: gradient accumulation (N x b == one batch of N*b for SGD), BF16/FP16 autocast
and loss scaling that reaches the fused embedding tables."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core import build
from tzrec.core.config import parse_pipeline_config
from tzrec.core.engine.distributed import init_distributed, seed_everything
from tzrec.core.engine.engine import Engine, autocast_dtype, grad_scaler
from tzrec.core.errors import ConfigError
from tzrec.protos import train_pb2

CONFIG = """
train_input_path: "{data}"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ sgd_optimizer {{ lr: 0.05 }} constant_learning_rate {{}} }}
  dense_optimizer {{ sgd_optimizer {{ lr: 0.05 }} constant_learning_rate {{}} }}
  gradient_accumulation_steps: {n}
}}
data_config {{
  batch_size: {batch}
  dataset_type: ParquetDataset
  label_fields: "clk"
  num_workers: 0
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 20 embedding_dim: 4 }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: ["user_id"] group_type: DEEP }}
  multi_tower {{ towers {{ input: "all" mlp {{ hidden_units: [8] }} }} final {{ hidden_units: [4] }} }}
  losses {{ binary_cross_entropy {{}} }}
}}
"""


def _train(tmp_path, n, batch, rows):
    config = parse_pipeline_config(
        CONFIG.format(data=rows, model_dir=tmp_path / f"m{n}", n=n, batch=batch)
    )
    device = init_distributed()
    seed_everything(7)
    ds = build.build_dataset(config, build.create_features(config), rows, "train")
    engine = Engine(config, build.build_model(config, ds.features), device, train=True)
    before = {k: _dense(v).clone() for k, v in engine.dmp.state_dict().items()}
    for i, batch in enumerate(ds.make_dataloader()):
        engine.train_step(batch)
        if i == 0 and n > 1:  # mid-window: dense weights have not moved yet
            after_one = {k: _dense(v) for k, v in engine.dmp.state_dict().items()}
            moved = [k for k in before if not torch.equal(before[k], after_one[k])]
            assert moved and all("ebc" in k or "embedding" in k for k in moved), moved
    return before, {k: _dense(v).clone() for k, v in engine.dmp.state_dict().items()}


def _dense(t):
    if hasattr(t, "local_shards"):
        return t.local_shards()[0].tensor.detach()
    return t.detach()


def test_four_batches_of_8_accumulate_to_one_batch_of_32(tmp_path):
    rng = np.random.default_rng(3)
    users = rng.integers(0, 20, 32)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"user_id": users, "clk": (users % 2).astype(np.int64)}), path)
    start_a, big = _train(tmp_path, 1, 32, str(path))
    start_b, small = _train(tmp_path, 4, 8, str(path))
    for k in start_a:
        torch.testing.assert_close(start_a[k], start_b[k])  # same initial weights
    changed = 0
    for k in big:
        delta = (big[k] - start_a[k]).abs().max().item()
        changed += delta > 1e-6
        # embedding rows move with 1/4 of the gradient per batch: equal up to O(lr^2)
        torch.testing.assert_close(small[k], big[k], atol=2e-4, rtol=0)
    assert changed >= 4


def _losses(tmp_path, rows, name, precision=""):
    config = parse_pipeline_config(
        CONFIG.format(data=rows, model_dir=tmp_path / name, n=1, batch=8)
    )
    if precision:
        config.train_config.mixed_precision = precision
    device = init_distributed()
    seed_everything(7)
    ds = build.build_dataset(config, build.create_features(config), rows, "train")
    engine = Engine(config, build.build_model(config, ds.features), device, train=True)
    losses = [engine.train_step(b)["binary_cross_entropy"] for b in ds.make_dataloader()]
    metrics = engine.evaluate(ds.make_dataloader())
    return losses, engine, metrics


def test_bf16_autocast_trains_close_to_fp32(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    users = rng.integers(0, 20, 64)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"user_id": users, "clk": (users % 2).astype(np.int64)}), path)
    dtypes = []
    real_linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        out = real_linear(x, w, b)
        dtypes.append(out.dtype)
        return out

    fp32, _, _ = _losses(tmp_path, str(path), "fp32")
    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    bf16, engine, metrics = _losses(tmp_path, str(path), "bf16", "BF16")
    assert engine.autocast_dtype == torch.bfloat16
    assert torch.bfloat16 in dtypes  # the dense layers really ran in bfloat16
    assert bf16 != fp32  # not silently full precision
    np.testing.assert_allclose(bf16, fp32, rtol=0.03, atol=0.01)
    assert metrics == {}  # no metric configured; evaluation ran under autocast


def _weights(engine):
    return {k: _dense(v).clone() for k, v in engine.dmp.state_dict().items()}


def _scaled_run(tmp_path, rows, name, precision="", init_scale=0.0, steps=None):
    config = parse_pipeline_config(
        CONFIG.format(data=rows, model_dir=tmp_path / name, n=1, batch=8)
    )
    config.train_config.mixed_precision = precision
    if init_scale:
        config.train_config.grad_scaler.init_scale = init_scale
    device = init_distributed()
    seed_everything(7)
    ds = build.build_dataset(config, build.create_features(config), rows, "train")
    engine = Engine(config, build.build_model(config, ds.features), device, train=True)
    before = _weights(engine)
    batches = list(ds.make_dataloader())[:steps]
    losses = [engine.train_step(b)["binary_cross_entropy"] for b in batches]
    return losses, before, _weights(engine), engine


@pytest.fixture
def clicks(tmp_path):
    rng = np.random.default_rng(4)
    users = rng.integers(0, 20, 64)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"user_id": users, "clk": (users % 2).astype(np.int64)}), path)
    return str(path)


def test_grad_scaler_reaches_the_fused_tables_unscaled(tmp_path, clicks):
    # a power-of-two scale is exact in float32: scaled training must equal unscaled training
    # bit for bit, tables included (without the unscale hook the fused SGD would move the
    # embedding rows 1024x too far)
    plain, start, end_plain, _ = _scaled_run(tmp_path, clicks, "plain")
    scaled, start_s, end_scaled, engine = _scaled_run(tmp_path, clicks, "scaled", "", 1024.0)
    assert engine.scaler is not None and engine.scaler.get_scale() == 1024.0
    assert scaled == plain
    tables = [k for k in end_plain if "embedding" in k or "ebc" in k]
    assert tables
    for k in end_plain:
        torch.testing.assert_close(start_s[k], start[k], rtol=0, atol=0)
        torch.testing.assert_close(end_scaled[k], end_plain[k], rtol=0, atol=0)
    assert any(not torch.equal(start[k], end_plain[k]) for k in tables)  # the tables trained


def test_fp16_autocast_with_loss_scaling_trains_close_to_fp32(tmp_path, clicks, monkeypatch):
    dtypes = []
    real_linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        out = real_linear(x, w, b)
        dtypes.append(out.dtype)
        return out

    fp32, _, end32, _ = _scaled_run(tmp_path, clicks, "fp32")
    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    fp16, _, end16, engine = _scaled_run(tmp_path, clicks, "fp16", "FP16", 65536.0)
    assert engine.autocast_dtype == torch.float16
    assert torch.float16 in dtypes  # the dense layers really ran in half precision
    assert fp16 != fp32  # not silently full precision
    np.testing.assert_allclose(fp16, fp32, rtol=0.03, atol=0.01)
    for k in end32:  # every weight, tables included, lands where float32 training puts it
        torch.testing.assert_close(end16[k], end32[k], rtol=0.02, atol=2e-3)


def test_an_overflowing_fp16_step_changes_nothing_and_halves_the_scale(tmp_path, clicks):
    # 2^30 overflows float16 (max 65504) in backward: the scaler skips the dense step and the
    # fused tables get zeros for their non-finite gradients, so no weight moves
    _, start, end, engine = _scaled_run(tmp_path, clicks, "overflow", "FP16", 2.0**30, steps=1)
    assert any("ebc" in k for k in start)
    for k in start:
        torch.testing.assert_close(end[k], start[k], rtol=0, atol=0)
    assert engine.scaler.get_scale() == 2.0**29


def test_unscale_hook_divides_and_zeroes_non_finite():
    from tzrec.core import amp

    x = torch.ones(3, requires_grad=True)
    with amp.sparse_gradient_scale(4.0):
        y = x * 1.0
        amp.unscale_sparse_gradients([y])
    y.backward(torch.tensor([8.0, float("inf"), float("nan")]))
    assert x.grad.tolist() == [2.0, 0.0, 0.0]
    z = torch.ones(2, requires_grad=True)
    w = z * 1.0
    amp.unscale_sparse_gradients([w])  # outside the block: no hook
    w.backward(torch.tensor([8.0, 8.0]))
    assert z.grad.tolist() == [8.0, 8.0]


def test_scaler_state_is_checkpointed_and_restored(tmp_path, clicks):
    from tzrec.core.engine import checkpoint as ckpt
    from tzrec.core.engine.engine import TrainState

    _, _, _, engine = _scaled_run(tmp_path, clicks, "ck", "FP16", 512.0)
    engine.scaler.update(new_scale=256.0)
    store = ckpt.CheckpointStore(tmp_path / "ck")
    path = engine.save(store, TrainState(global_step=8))
    engine.scaler.update(new_scale=2.0)
    engine.restore(path)
    assert engine.scaler.get_scale() == 256.0


@pytest.mark.parametrize(
    ("precision", "init_scale", "message"),
    [
        ("INT4", 0.0, "mixed_precision: expected BF16 or FP16, got 'INT4'"),
        ("FP16", -1.0, "grad_scaler: expected init_scale > 0"),
    ],
)
def test_bad_precision_settings_are_one_line(precision, init_scale, message):
    tc = train_pb2.TrainConfig(mixed_precision=precision)
    if init_scale:
        tc.grad_scaler.init_scale = init_scale
    with pytest.raises(ConfigError, match=message):
        autocast_dtype(tc)
        grad_scaler(tc, torch.device("cpu"))


def test_precisions_map_to_autocast_dtypes():
    assert autocast_dtype(train_pb2.TrainConfig(mixed_precision="FP16")) == torch.float16
    assert autocast_dtype(train_pb2.TrainConfig(mixed_precision="bf16")) == torch.bfloat16
    assert autocast_dtype(train_pb2.TrainConfig()) is None
