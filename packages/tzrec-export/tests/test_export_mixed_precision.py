"""``export_config.mixed_precision``: the dense part exported under torch.autocast.

The artefact is checked against the eager module under the same autocast (tight
``PARITY_ATOL``); against float32 it is only close (bfloat16 keeps 8 mantissa bits).
"""

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.build import build_dataset, build_model
from tzrec.core.build import create_features as build_features
from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.export.artifact import load_exported
from tzrec.export.exporter import PARITY_ATOL, export_mixed_precision, write_artefact
from tzrec.export.wrappers import AutocastDense, export_modules
from tzrec.models.inference import inputs_from_batch

CONFIG = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 16 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 20 embedding_dim: 8 } }
feature_configs { raw_feature { feature_name: "price" } }
model_config {
  feature_groups { group_name: "all" feature_names: ["user_id", "price"] group_type: DEEP }
  multi_tower { towers { input: "all" mlp { hidden_units: [16, 8] } } final { hidden_units: [4] } }
  losses { binary_cross_entropy {} }
}
"""

#: bfloat16 vs float32 on this small MLP: a loose bound on logits/probs (2**-8 relative per
#: op, a few ops deep, values O(1))
BF16_VS_FP32_ATOL = 5e-2


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mp")
    config = parse_pipeline_config(CONFIG)
    rows = {
        "user_id": list(range(16)),
        "price": [0.1 * i for i in range(16)],
        "clk": [i % 2 for i in range(16)],
    }
    pq.write_table(pa.table(rows), tmp / "d.parquet")
    ds = build_dataset(config, build_features(config), str(tmp / "d.parquet"), "eval")
    torch.manual_seed(0)
    model = build_model(config, ds.features)
    model.eval()
    model.set_is_inference(True)
    return config, model, next(iter(ds.make_dataloader()))


def _export(model_and_batch, tmp_path, precision, aot):
    config, model, batch = model_and_batch
    (module,) = export_modules(model)
    (fp32,) = export_modules(model)
    module.set_mixed_precision(precision)
    inputs = inputs_from_batch(batch, module.features)
    out = tmp_path / "out"
    out.mkdir()
    write_artefact(module, config, inputs, out, aot, tmp_path / "ckpt")
    meta = json.loads((out / "model_meta.json").read_text())
    return meta, load_exported(out), module, fp32, inputs


@pytest.mark.parametrize("aot", [False, True])
def test_bf16_export_matches_autocast_eager_and_is_close_to_fp32(model_and_batch, tmp_path, aot):
    meta, loaded, served, fp32, inputs = _export(model_and_batch, tmp_path, "BF16", aot)
    assert isinstance(served.dense, AutocastDense) and served.dense.dtype == torch.bfloat16
    assert meta["mixed_precision"] == "BF16"
    with torch.no_grad():
        exported, eager, full = loaded(inputs), served(inputs), fp32(inputs)
    assert exported["probs"].dtype == torch.float32
    # tight: the artefact computes as the eager module under the same autocast (here
    # within PARITY_ATOL; the check allows PARITY_ATOL + one bfloat16 epsilon * |eager|)
    assert meta["parity_max_abs_diff"] <= PARITY_ATOL
    assert meta["parity_rtol"] == 2**-7
    torch.testing.assert_close(exported["logits"], eager["logits"], atol=PARITY_ATOL, rtol=0)
    # loose: bfloat16 differs from float32, but not by much
    off = float((exported["logits"] - full["logits"]).abs().max())
    assert 0 < off <= BF16_VS_FP32_ATOL
    assert meta["mixed_precision_fp32_max_abs_diff"] == pytest.approx(
        max(float((eager[k] - full[k]).abs().max()) for k in full), abs=1e-7
    )


def test_no_mixed_precision_records_an_empty_value(model_and_batch, tmp_path):
    meta, loaded, served, fp32, inputs = _export(model_and_batch, tmp_path, "", False)
    assert meta["mixed_precision"] == "" and "mixed_precision_fp32_max_abs_diff" not in meta
    assert meta["parity_rtol"] == 0.0
    assert not isinstance(served.dense, AutocastDense)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), fp32(inputs), atol=PARITY_ATOL, rtol=0)


def test_export_precision_comes_from_export_config_and_warns_on_mismatch(caplog):
    config = parse_pipeline_config(CONFIG)
    config.train_config.mixed_precision = "BF16"
    with caplog.at_level(logging.WARNING):
        assert export_mixed_precision(config) == ""
    assert "export_config.mixed_precision='' differs from train_config" in caplog.text
    config.export_config.mixed_precision = "bf16"
    assert export_mixed_precision(config) == "BF16"
    config.export_config.mixed_precision = "INT8"
    with pytest.raises(ConfigError, match=r"^export_config.mixed_precision: expected BF16"):
        export_mixed_precision(config)


def test_parity_allows_one_epsilon_of_each_outputs_scale_and_no_more():
    from tzrec.export.exporter import _max_excess

    eager = {"logits": torch.tensor([0.1, 4.0, -6.0]), "probs": torch.tensor([0.2, 0.9])}
    eps = 2**-7
    # logits' scale is 6: any logit may move by 6 eps; probs' scale is 1: by eps
    ulp = {
        "logits": eager["logits"] + torch.tensor([6 * eps, -6 * eps, 0.0]),
        "probs": eager["probs"] + torch.tensor([-eps, 0.0]),
    }
    assert _max_excess(eager, ulp, eps) <= PARITY_ATOL
    assert _max_excess(eager, ulp, 0.0) > PARITY_ATOL  # float32: no rtol
    off = {"logits": eager["logits"], "probs": eager["probs"] + torch.tensor([3 * eps, 0.0])}
    assert _max_excess(eager, off, eps) == pytest.approx(2 * eps)
