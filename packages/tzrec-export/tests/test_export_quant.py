"""Export with quantised tables (QUANT_EMB / QUANT_EC_EMB): stated bound, meta, FP32 exact."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.build import build_dataset, build_model
from tzrec.core.build import create_features as build_features
from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.export.artifact import load_exported
from tzrec.export.exporter import PARITY_ATOL, write_artefact
from tzrec.export.quant import check_quantized_lookups
from tzrec.export.wrappers import export_modules
from tzrec.models.inference import InferenceEmbeddingGroup, inputs_from_batch

# user_id_emb: pooled only (QUANT_EMB); item_emb / cate_emb: read per sequence item too
# (QUANT_EC_EMB), as upstream's EmbeddingCollection tables
DIN = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 6 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 20 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 30 embedding_dim: 8
                               embedding_name: "item_emb" } }
feature_configs { id_feature { feature_name: "cate_id" num_buckets: 10 embedding_dim: 4
                               embedding_name: "cate_emb" } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq" sequence_length: 5 sequence_delim: ";"
    features { id_feature { feature_name: "item_id" num_buckets: 30 embedding_dim: 8
                            embedding_name: "item_emb" } }
    features { id_feature { feature_name: "cate_id" num_buckets: 10 embedding_dim: 4
                            embedding_name: "cate_emb" } }
  }
}
model_config {
  feature_groups { group_name: "deep" feature_names: ["user_id", "item_id"] group_type: DEEP }
  feature_groups {
    group_name: "seq" group_type: SEQUENCE
    feature_names: ["item_id", "cate_id", "click_seq__item_id", "click_seq__cate_id"]
  }
  multi_tower_din {
    towers { input: "deep" mlp { hidden_units: [8] } }
    din_towers { input: "seq" attn_mlp { hidden_units: [8] } }
    final { hidden_units: [4] }
  }
  metrics { auc {} }
  losses { binary_cross_entropy {} }
}
"""


@pytest.fixture(scope="module")
def din(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quant")
    config = parse_pipeline_config(DIN)
    rows = {
        "user_id": [1, 2, 3, 4, 5, 6],
        "item_id": [1, 2, 3, 4, 5, 6],
        "cate_id": [1, 2, 3, 1, 2, 3],
        "click_seq__item_id": ["1;2", "", "3;4;5;6;7", "8", "9;10;11", "12"],
        "click_seq__cate_id": ["1;2", "", "3;4;5;6;7", "8", "9;1;2", "3"],
        "clk": [0, 1, 0, 1, 1, 0],
    }
    pq.write_table(pa.table(rows), tmp / "d.parquet")
    ds = build_dataset(config, build_features(config), str(tmp / "d.parquet"), "eval")
    torch.manual_seed(0)
    model = build_model(config, ds.features)
    model.eval()
    model.set_is_inference(True)
    return config, model, next(iter(ds.make_dataloader()))


def export(din, tmp_path, quant, aot=False):
    """Write the artefact of ``quant`` storage; return (meta, loaded, served, FP32 twin, inputs)."""
    config, model, batch = din
    (module,) = export_modules(model, quant)
    (reference,) = export_modules(model)
    inputs = inputs_from_batch(batch, module.features)
    out = tmp_path / "out"
    out.mkdir()
    write_artefact(module, config, inputs, out, aot, tmp_path / "ckpt", None, reference)
    meta = json.loads((out / "model_meta.json").read_text())
    return meta, load_exported(out), module, reference, inputs


@pytest.mark.parametrize(
    "quant,aot",
    [(("INT8", "FP32"), False), (("FP16", "FP16"), False), (("INT8", "INT8"), True)],
)
def test_quantised_export_stays_within_the_stated_bound_and_says_so(din, tmp_path, quant, aot):
    """INT8: each looked-up value within half its row's step ``(max - min) / 255 / 2``; FP16:
    within ``2**-11`` of its magnitude. The artefact equals its own eager module exactly."""
    meta, loaded, served, reference, inputs = export(din, tmp_path, quant, aot)
    pooled, sequence = quant
    kinds = {"user_id_emb": pooled, "item_emb": sequence, "cate_emb": sequence}
    assert meta["quant"] == {"QUANT_EMB": pooled, "QUANT_EC_EMB": sequence, "tables": kinds}
    dtype = {"INT8": torch.uint8, "FP16": torch.float16, "FP32": torch.float32}
    for table, kind in kinds.items():
        assert served.sparse.tables[table].dtype == dtype[kind], table
    # our own reference bound, per table: the worst value of any row (1 id per pooled value)
    tables = {
        k: t.detach() for k, t in InferenceEmbeddingGroup.tables_of(din[1].embedding_group).items()
    }

    def bound(table):
        t = tables[table]
        if kinds[table] == "INT8":
            return float((t.max(1).values - t.min(1).values).max()) / 255 / 2
        return 2**-11 * float(t.abs().max()) if kinds[table] == "FP16" else 0.0

    with torch.no_grad():
        got, want = served.sparse(inputs), reference.sparse(inputs)
    deep = (got["deep"] - want["deep"]).abs()
    assert float(deep[:, :4].max()) <= bound("user_id_emb") + 1e-6  # user_id: dims 0..3
    assert float(deep[:, 4:].max()) <= bound("item_emb") + 1e-6
    assert float(deep.max()) > 0  # the quantised storage is what is read
    assert 0 < meta["quant_lookup_max_abs_diff"] <= meta["quant_lookup_max_bound"] + 1e-6
    assert meta["quant_lookup_max_bound"] <= max(bound(t) for t in kinds) + 1e-6
    with torch.no_grad():
        exported = loaded(inputs)
        eager, fp32 = served(inputs), reference(inputs)
    assert meta["parity_max_abs_diff"] <= PARITY_ATOL
    torch.testing.assert_close(exported["probs"], eager["probs"], atol=PARITY_ATOL, rtol=0)
    off = max(float((exported[k] - fp32[k]).abs().max()) for k in fp32)  # logits, probs
    assert meta["quant_output_max_abs_diff"] == pytest.approx(off, abs=PARITY_ATOL)


def test_fp32_export_is_exact_and_records_no_quantisation(din, tmp_path):
    """QUANT_EMB=0: float32 tables, the artefact equals the FP32 model within PARITY_ATOL."""
    meta, loaded, served, reference, inputs = export(din, tmp_path, ("FP32", "FP32"))
    kinds = {"user_id_emb": "FP32", "item_emb": "FP32", "cate_emb": "FP32"}
    assert meta["quant"] == {"QUANT_EMB": "FP32", "QUANT_EC_EMB": "FP32", "tables": kinds}
    assert not any(k.startswith("quant_") for k in meta)
    assert all(t.dtype == torch.float32 for t in served.sparse.tables.values())
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), reference(inputs), atol=PARITY_ATOL, rtol=0)


def test_lookups_past_the_stated_bound_fail_the_export_in_one_line(din, tmp_path):
    """A stored INT8 table that no longer matches its trained one (biases off by a step)."""
    _, model, batch = din
    (module,) = export_modules(model, ("INT8", "FP32"))
    (reference,) = export_modules(model)
    inputs = inputs_from_batch(batch, module.features)
    sparse = module.sparse
    sparse.biases["user_id_emb"] = sparse.biases["user_id_emb"] + sparse.scales["user_id_emb"]
    with pytest.raises(ConfigError, match=r"quantised lookups of the model: 'deep' differs"):
        check_quantized_lookups(sparse, reference.sparse, inputs, "model")
    # within the bound: the untouched tables pass, reporting (diff, bound)
    (fresh,) = export_modules(model, ("INT8", "FP32"))
    diff, bound = check_quantized_lookups(fresh.sparse, reference.sparse, inputs, "model")
    assert 0 < diff <= bound + 1e-6
