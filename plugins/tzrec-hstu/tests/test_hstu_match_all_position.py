"""HSTUMatch ``all_position_loss``: pairs, a per-position loss reference, causality, refusals."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.hstu.hstu_match import QUERY_ROW, next_item_pairs
from tzrec.models.layout import sequence_key

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "docs/examples/hstu_match_kuairand.config"
NEG_PER_ROW = 7


def load_config(paths, batch_size=16, all_position=True, dropout=0.0, edit=None):
    config = load_pipeline_config(str(EXAMPLE_CONFIG))
    config.train_input_path = paths["train"]
    config.data_config.negative_sampler.input_path = paths["items"]
    config.data_config.batch_size = batch_size
    config.data_config.negative_sampler.num_sample = batch_size * NEG_PER_ROW
    hstu = config.model_config.hstu_match
    hstu.all_position_loss = all_position
    hstu.user_tower.hstu.input_dropout_ratio = dropout
    hstu.user_tower.hstu.stu.output_dropout_ratio = dropout
    if edit is not None:
        edit(config)
    return config


def build(config, path):
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, path, mode="train")
    return build_model(config, ds.features), ds


def test_next_item_pairs_pair_each_history_token_with_the_next_item():
    # rows: contextual 1 + history 3, contextual 1 + history 0, contextual 1 + history 2
    tokens = torch.arange(8, dtype=torch.float32).reshape(8, 1)
    offsets = torch.tensor([0, 4, 5, 8])
    history = 100 + torch.arange(5, dtype=torch.float32).reshape(5, 1)
    q, t, rows = next_item_pairs(tokens, offsets, 1, history, torch.tensor([3, 0, 2]))
    # row 0: tokens 1, 2 predict items 101, 102; row 2: token 6 predicts item 104
    assert q.reshape(-1).tolist() == [1.0, 2.0, 6.0]
    assert t.reshape(-1).tolist() == [101.0, 102.0, 104.0]
    assert rows.tolist() == [0, 0, 2]


@pytest.fixture(scope="module")
def tiny(small_data):
    torch.manual_seed(0)
    model, ds = build(load_config(small_data), small_data["train"])
    model.train()
    return model, next(iter(ds))


def test_loss_equals_a_per_position_reference(tiny):
    model, batch = tiny
    pred = model.predict(batch)
    loss = model.loss(pred, batch)["softmax_cross_entropy"]
    # reference: one softmax per (row, position) written out with loops
    grouped = model.user_tower.encoder.exact_timestamps(model.embedding_group(batch), batch)
    last, tokens, offsets, ctx = model.user_tower.encode(grouped)
    user = F.normalize(last, dim=-1, eps=1e-6)
    items = model.item_embedding(grouped)
    lengths = batch.additional_infos["cand_pos_lengths"].tolist()
    assert lengths == [1] * batch.batch_size
    cand_len = grouped["candidate.sequence_length"].tolist()
    starts = np.cumsum([0, *cand_len])
    positives = items[starts[:-1]]
    is_pos = torch.zeros(items.shape[0], dtype=torch.bool)
    is_pos[starts[:-1]] = True
    negatives = items[~is_pos]
    uih = grouped[sequence_key("uih")]
    hist = F.normalize(model.item_tower.mlp_only(uih), dim=-1, eps=1e-6)
    uih_len = grouped["uih.sequence_length"].tolist()
    temp = model._temperature
    terms = []

    def ce(q, target):
        logits = torch.cat([(q * target).sum().reshape(1), negatives @ q]) / temp
        return -(logits[0] - torch.logsumexp(logits, 0))

    h0 = 0
    for b in range(batch.batch_size):
        terms.append(ce(user[b], positives[b]))
        for t in range(uih_len[b] - 1):
            q = F.normalize(tokens[int(offsets[b]) + ctx + t], dim=-1, eps=1e-6)
            terms.append(ce(q, hist[h0 + t + 1]))
        h0 += uih_len[b]
    n_pairs = sum(max(n - 1, 0) for n in uih_len)
    assert n_pairs > 0
    assert pred["similarity"].shape[0] == batch.batch_size + n_pairs == len(terms)
    assert pred[QUERY_ROW][: batch.batch_size].tolist() == list(range(batch.batch_size))
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.user_tower.encoder.stu.parameters())


def test_history_tokens_never_see_their_target(tiny):
    model, batch = tiny
    grouped = model.user_tower.encoder.exact_timestamps(model.embedding_group(batch), batch)
    _, tokens, offsets, ctx = model.user_tower.encode(grouped)
    uih_len = grouped["uih.sequence_length"]
    b = int(torch.argmax(uih_len))
    n = int(uih_len[b])
    last_item = int(uih_len[:b].sum()) + n - 1
    edited = dict(grouped)
    uih = grouped[sequence_key("uih")].clone()
    uih[last_item] += 1.0
    edited[sequence_key("uih")] = uih
    _, tokens2, _, _ = model.user_tower.encode(edited)
    row = slice(int(offsets[b]), int(offsets[b]) + ctx + n - 1)
    # tokens before the edited item (the queries that predict it) are unchanged
    torch.testing.assert_close(tokens2[row], tokens[row], rtol=0, atol=1e-6)
    assert (
        tokens2[int(offsets[b]) + ctx + n - 1] - tokens[int(offsets[b]) + ctx + n - 1]
    ).abs().max() > 1e-3


def test_eval_scores_the_last_position_only(tiny):
    model, batch = tiny
    model.eval()
    try:
        sim = model.predict(batch)["similarity"]
    finally:
        model.train()
    assert sim.shape == (batch.batch_size, 1 + batch.batch_size * NEG_PER_ROW)


def test_in_batch_negatives_score_every_query_against_every_target(small_data):
    def in_batch(config):
        config.model_config.hstu_match.in_batch_negative = True

    model, ds = build(load_config(small_data, edit=in_batch), small_data["train"])
    model.train()
    batch = next(iter(ds))
    pred = model.predict(batch)
    p = pred["similarity"].shape[0]
    assert p > batch.batch_size and pred["similarity"].shape == (p, p)
    assert torch.isfinite(model.loss(pred, batch)["softmax_cross_entropy"])


def test_history_wider_than_the_item_tower_is_refused(small_data):
    def wide(config):
        for fc in config.feature_configs:
            if (
                fc.WhichOneof("feature") == "sequence_feature"
                and fc.sequence_feature.sequence_name == "uih_seq"
            ):
                config.model_config.feature_groups[1].feature_names.append("uih_seq__watch_time")

    with pytest.raises(ConfigError, match="all_position_loss: the history group 'uih'"):
        build(load_config(small_data, edit=wide), small_data["train"])


def test_truncation_is_refused(small_data):
    def trunc(config):
        hstu = config.model_config.hstu_match.user_tower.hstu
        hstu.attn_truncation_split_layer = 1
        hstu.attn_truncation_tail_len = 2

    with pytest.raises(ConfigError, match="all_position_loss: not supported with attn_trunc"):
        build(load_config(small_data, edit=trunc), small_data["train"])
