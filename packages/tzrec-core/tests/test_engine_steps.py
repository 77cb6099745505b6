"""Training steps: gradient accumulation (N x b == one batch of N*b for SGD) and BF16 autocast."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core import build
from tzrec.core.config import parse_pipeline_config
from tzrec.core.engine.distributed import init_distributed, seed_everything
from tzrec.core.engine.engine import Engine, autocast_dtype
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


@pytest.mark.parametrize(
    ("precision", "scaler", "message"),
    [
        ("FP16", False, "mixed_precision FP16: not supported"),
        ("INT4", False, "mixed_precision: expected BF16 or FP16, got 'INT4'"),
        ("BF16", True, "grad_scaler: BF16 needs no loss scaling"),
        ("", True, "grad_scaler: only used with mixed_precision FP16"),
    ],
)
def test_unsupported_precision_settings_are_one_line(precision, scaler, message):
    tc = train_pb2.TrainConfig(mixed_precision=precision)
    if scaler:
        tc.grad_scaler.init_scale = 1024
    with pytest.raises(ConfigError, match=message):
        autocast_dtype(tc)
