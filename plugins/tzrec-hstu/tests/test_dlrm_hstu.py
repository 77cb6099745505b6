"""DlrmHSTU: candidate masking, task labels, preprocessor/postprocessor, config errors."""

import math
from pathlib import Path

import pytest
import torch

from tzrec.core import plugins
from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.hstu.dlrm_hstu import candidate_positions
from tzrec.hstu.postprocessors import TimestampLayerNormPostprocessor
from tzrec.hstu.preprocessors import (
    CANDIDATE,
    CANDIDATE_TIMESTAMP,
    CONTEXTUAL,
    UIH,
    UIH_ACTION,
    UIH_TIMESTAMP,
    ContextualPreprocessor,
)
from tzrec.kernels import jagged_reverse_index
from tzrec.protos import module_pb2

CONFIG = Path(__file__).resolve().parents[3] / "docs/examples/dlrm_hstu_kuairand.config"


@pytest.fixture(scope="session")
def rank_data(tmp_path_factory):
    """A few hundred synthetic ranking rows (some empty histories)."""
    from tzrec.hstu.synthetic import write_dlrm_hstu_data

    return write_dlrm_hstu_data(
        tmp_path_factory.mktemp("dlrm") / "data",
        num_rows=96,
        num_eval_rows=32,
        max_history=6,
        max_candidates=4,
        empty_fraction=0.2,
    )


def model_and_batch(paths, edit=None, batch_size=16):
    config = load_pipeline_config(str(CONFIG))
    config.data_config.batch_size = batch_size
    if edit is not None:
        edit(config)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, paths["train"], mode="train")
    batch = next(iter(ds))
    torch.manual_seed(0)
    return build_model(config, ds.features), batch


def test_plugin_registers_dlrm_hstu_and_its_modules():
    assert plugins.get("models", "dlrm_hstu").__name__ == "DlrmHSTU"
    assert plugins.get("input_preprocessors", "contextual_preprocessor") is ContextualPreprocessor
    post = plugins.get("output_postprocessors", "timestamp_layernorm_postprocessor")
    assert post is TimestampLayerNormPostprocessor


def test_one_prediction_per_candidate_and_finite_losses(rank_data):
    model, batch = model_and_batch(rank_data)
    pred = model.predict(batch)
    total = int(model._candidate_counts(batch).sum())
    assert pred["logits_is_click"].shape == (total,)
    assert pred["probs_is_like"].shape == (total, 2)
    assert pred["probs1_is_like"].shape == (total,)
    assert pred["y_watchtime"].shape == (total,)
    losses = model.loss(pred, batch)
    assert set(losses) == {
        "binary_cross_entropy_is_click",
        "jrc_loss_is_like",
        "binary_cross_entropy_is_follow",
        "l2_loss_watchtime",
    }
    total_loss = sum(losses.values())
    assert torch.isfinite(total_loss)
    total_loss.backward()
    assert all(
        torch.isfinite(p.grad).all() for p in model.encoder.stu.parameters() if p.grad is not None
    )
    model.update_metric(pred, batch)
    assert set(model.compute_metric()) == {
        "auc_is_click",
        "grouped_auc_is_like",
        "auc_is_follow",
        "mean_absolute_error_watchtime",
    }


def test_predict_is_dense_forward_of_the_embedding_group(rank_data):
    model, batch = model_and_batch(rank_data)
    model.eval()
    expected = model.predict(batch)
    got = model.dense_forward(model.embedding_group(batch))
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])
    model.set_is_inference(True)
    inferred = model.dense_forward(model.embedding_group(batch))
    torch.testing.assert_close(inferred["probs_is_click"], expected["probs_is_click"])


def test_candidates_see_the_history_but_not_each_other(rank_data):
    model, batch = model_and_batch(rank_data)
    model.eval()
    grouped = {k: v.detach().clone() for k, v in model.embedding_group(batch).items()}
    counts = grouped["candidate.sequence_length"]
    row = int(torch.nonzero(counts >= 2)[0])
    first = int(counts[:row].sum())
    base = model.dense_forward(grouped)["logits_is_click"]

    changed = dict(grouped)
    changed["candidate.sequence"] = grouped["candidate.sequence"].clone()
    changed["candidate.sequence"][first] += 5.0
    out = model.dense_forward(changed)["logits_is_click"]
    others = torch.ones_like(base, dtype=torch.bool)
    others[first] = False
    torch.testing.assert_close(out[others], base[others])
    assert not torch.isclose(out[first], base[first])

    uih_lengths = grouped["uih.sequence_length"]
    hist_row = int(torch.nonzero((uih_lengths > 0) & (counts > 0))[0])
    changed = dict(grouped)
    changed["uih.sequence"] = grouped["uih.sequence"].clone()
    changed["uih.sequence"][int(uih_lengths[:hist_row].sum())] += 5.0
    out = model.dense_forward(changed)["logits_is_click"]
    cand = slice(int(counts[:hist_row].sum()), int(counts[: hist_row + 1].sum()))
    assert not torch.allclose(out[cand], base[cand])
    other_rows = torch.ones_like(base, dtype=torch.bool)
    other_rows[cand] = False
    torch.testing.assert_close(out[other_rows], base[other_rows])


def test_task_bitmask_turns_the_action_label_into_binary_labels(rank_data):
    model, batch = model_and_batch(rank_data)
    raw = batch.sequence_dense_features["cand_seq__action_weight"].values().to(torch.int64)
    total = raw.numel()
    by_name = {t.name: t for t in model._tasks}
    click = model._label(batch, by_name["is_click"], total)
    like = model._label(batch, by_name["is_like"], total)
    assert click.tolist() == [int(v & 1 > 0) for v in raw.tolist()]
    assert like.tolist() == [int(v & 2 > 0) for v in raw.tolist()]
    watch = model._label(batch, by_name["watchtime"], total)
    assert watch.dtype == torch.float32
    assert watch.max() > 1  # no bitmask: the raw value


def test_zero_length_histories_and_a_single_candidate_per_row(tmp_path):
    from tzrec.hstu.synthetic import write_dlrm_hstu_data

    paths = write_dlrm_hstu_data(
        tmp_path, num_rows=32, num_eval_rows=8, max_candidates=1, empty_fraction=0.5
    )
    model, batch = model_and_batch(paths)
    grouped = model.embedding_group(batch)
    assert (grouped["uih.sequence_length"] == 0).any()
    assert (grouped["candidate.sequence_length"] == 1).all()
    pred = model.predict(batch)
    assert pred["probs_is_click"].shape == (batch.batch_size,)
    assert all(torch.isfinite(v).all() for v in pred.values())
    assert torch.isfinite(sum(model.loss(pred, batch).values()))


def test_descending_histories_match_ascending_ones(rank_data):
    model, batch = model_and_batch(rank_data)
    model.eval()
    grouped = model.embedding_group(batch)
    expected = model.dense_forward(grouped)["logits_is_click"]
    lengths = grouped["uih.sequence_length"]
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    index = jagged_reverse_index(offsets, grouped["uih.sequence"].shape[0])
    flipped = dict(grouped)
    for g in ("uih", "uih_action", "uih_watchtime", "uih_timestamp"):
        flipped[f"{g}.sequence"] = grouped[f"{g}.sequence"].index_select(0, index)
    model.encoder.ascending = False
    torch.testing.assert_close(model.dense_forward(flipped)["logits_is_click"], expected)


def test_candidate_positions_are_the_row_ends():
    # rows: 3 tokens + 2 candidates, 1 token + 0 candidates, 0 + 1
    offsets = torch.tensor([0, 5, 6, 7])
    assert candidate_positions(offsets, torch.tensor([2, 0, 1]), 3).tolist() == [3, 4, 6]


def test_timestamp_layernorm_postprocessor_adds_cyclic_time_features():
    config = module_pb2.GRTimestampLayerNormPostprocessor(
        time_duration_period_units=[3600, 86400], time_duration_units_per_period=[24, 7]
    )
    post = TimestampLayerNormPostprocessor(config, embedding_dim=4)
    ts = torch.tensor([0, 86400 * 9 + 3600 * 6])  # day 9 (weekday 2), hour 6
    feats = post.time_features(ts)
    hour, day = 2 * math.pi * 6 / 24, 2 * math.pi * 2 / 7
    torch.testing.assert_close(feats[0], torch.tensor([1.0, 0.0, 1.0, 0.0]))
    expected = torch.tensor([math.cos(hour), math.sin(hour), math.cos(day), math.sin(day)])
    torch.testing.assert_close(feats[1], expected)
    x = torch.randn(2, 4)
    y = post(x, ts)
    ref = torch.nn.functional.layer_norm(post.combiner(torch.cat([x, feats], 1)), (4,))
    torch.testing.assert_close(y, ref)
    with pytest.raises(ConfigError, match="needs the tokens' timestamps"):
        post(x)


def test_timestamp_layernorm_postprocessor_lists_must_pair():
    config = module_pb2.GRTimestampLayerNormPostprocessor(
        time_duration_period_units=[3600], time_duration_units_per_period=[24, 7]
    )
    with pytest.raises(ConfigError, match="same length"):
        TimestampLayerNormPostprocessor(config, embedding_dim=4)


def _contextual_config():
    config = module_pb2.GRContextualPreprocessor()
    config.content_encoder.slice_content_encoder.SetInParent()
    config.content_mlp.simple_mlp.hidden_dim = 8
    enc = config.action_encoder.simple_action_encoder
    enc.action_embedding_dim = 2
    enc.action_weights.extend([1, 2])
    config.action_mlp.simple_mlp.hidden_dim = 8
    return config


def test_contextual_preprocessor_builds_contextual_history_candidate_rows():
    dims = {UIH: 6, CANDIDATE: 8, CONTEXTUAL: 10, UIH_ACTION: 1}
    dims.update({UIH_TIMESTAMP: 1, CANDIDATE_TIMESTAMP: 1})
    pre = ContextualPreprocessor(
        _contextual_config(), 4, dims, num_contextual=2, max_uih_len=5, max_candidates=3
    )
    uih_lengths, cand_lengths = torch.tensor([2, 0, 3]), torch.tensor([1, 2, 1])
    inputs = {
        UIH: torch.randn(5, 6),
        CANDIDATE: torch.randn(4, 8),
        CONTEXTUAL: torch.randn(3, 10),
        UIH_ACTION: torch.tensor([1, 2, 3, 0, 1]),
        UIH_TIMESTAMP: torch.tensor([10, 11, 20, 21, 22]),
        CANDIDATE_TIMESTAMP: torch.tensor([12, 30, 30, 23]),
    }
    seq = pre(inputs, uih_lengths, cand_lengths)
    assert seq.values.shape == (6 + 5 + 4, 4)
    assert seq.offsets.tolist() == [0, 5, 9, 15]
    assert seq.timestamps.tolist() == [0, 0, 10, 11, 12, 0, 0, 30, 30, 0, 0, 20, 21, 22, 23]
    assert seq.num_targets.tolist() == [1, 2, 1]
    assert (seq.contextual_len, seq.max_seq_len) == (2, 10)
    # without candidates (retrieval use): contextual tokens and history only
    seq = pre(inputs, uih_lengths)
    assert seq.offsets.tolist() == [0, 4, 6, 11]
    assert seq.num_targets.tolist() == [0, 0, 0]


def test_contextual_preprocessor_without_content_mlp_is_a_config_error():
    config = _contextual_config()
    config.ClearField("content_mlp")
    with pytest.raises(ConfigError, match=r"^contextual_preprocessor.content_mlp is required$"):
        ContextualPreprocessor(config, 4, {UIH: 4, CANDIDATE: 4, UIH_ACTION: 1})


def test_slice_content_encoder_needs_a_candidate_at_least_as_wide():
    with pytest.raises(ConfigError, match="slice_content_encoder"):
        ContextualPreprocessor(_contextual_config(), 4, {UIH: 8, CANDIDATE: 4, UIH_ACTION: 1})


def _drop_losses(config):
    del config.model_config.dlrm_hstu.fusion_mtl_tower.task_configs[0].losses[:]


def _jrc_one_class(config):
    config.model_config.dlrm_hstu.fusion_mtl_tower.task_configs[1].num_class = 1


def _unknown_label(config):
    config.model_config.dlrm_hstu.fusion_mtl_tower.task_configs[0].label_name = "clicked"


def _uih_preprocessor(config):
    pre = config.model_config.dlrm_hstu.hstu.input_preprocessor
    pre.uih_preprocessor.SetInParent()


def _no_candidate_group(config):
    groups = config.model_config.feature_groups
    keep = [g for g in groups if g.group_name != "candidate"]
    del groups[:]
    groups.extend(keep)


def _no_tasks(config):
    del config.model_config.dlrm_hstu.fusion_mtl_tower.task_configs[:]


def _variational_dropout(config):
    config.model_config.variational_dropout.regularization_lambda = 0.01


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_drop_losses, "task_configs[0].losses"),
        (_jrc_one_class, "task_configs[1].num_class must be 2 for jrc_loss"),
        (_unknown_label, "task_configs[0].label_name 'clicked'"),
        (_uih_preprocessor, "input_preprocessor: uih_preprocessor does not append candidates"),
        (_no_candidate_group, "feature group named 'candidate'"),
        (_no_tasks, "fusion_mtl_tower.task_configs"),
        (_variational_dropout, "model_config.variational_dropout: not supported by DlrmHSTU"),
    ],
)
def test_bad_config_is_a_one_line_config_error(rank_data, edit, field):
    with pytest.raises(ConfigError) as info:
        model_and_batch(rank_data, edit)
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_rows_longer_than_max_seq_len_are_a_data_error(rank_data):
    def short(config):
        config.model_config.dlrm_hstu.max_seq_len = 7

    model, batch = model_and_batch(rank_data, short)
    with pytest.raises(DataError, match="max_seq_len is 7"):
        model.predict(batch)


def test_inference_dense_forward_exports_with_dynamic_shapes(rank_data):
    """The export contract: torch.export traces dense_forward, batch/sequence sizes dynamic."""
    from torch.export import Dim

    model, batch = model_and_batch(rank_data)
    model.eval()
    model.set_is_inference(True)
    grouped = model.embedding_group(batch)

    class Dense(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, grouped):
            return self.inner.dense_forward(grouped)

    rows, uih, cand = Dim("rows", min=2), Dim("uih", min=2), Dim("cand", min=2)
    dims = {}
    for key in grouped:
        if key.endswith(".sequence"):
            dims[key] = {0: cand if key.startswith("candidate") else uih}
        else:
            dims[key] = {0: rows}
    program = torch.export.export(
        Dense(model), (grouped,), dynamic_shapes={"grouped": dims}, strict=False
    )
    got = program.module()(grouped)
    torch.testing.assert_close(
        got["probs_is_click"], model.dense_forward(grouped)["probs_is_click"]
    )


def test_dlrm_runs_the_shared_encoder_and_checks_lengths_with_data_error(rank_data):
    from tzrec.hstu.pipeline import HSTUEncoder

    model, batch = model_and_batch(rank_data)
    assert isinstance(model.encoder, HSTUEncoder)
    assert model.encoder.stu.layers[0].scaling_seqlen == model.max_seq_len
    grouped = dict(model.embedding_group(batch))
    lengths = grouped["uih_timestamp.sequence_length"].clone()
    lengths[0] += 1
    grouped["uih_timestamp.sequence_length"] = lengths
    with pytest.raises(DataError, match="'uih_timestamp' and 'uih' have different sequence"):
        model.dense_forward(grouped)
