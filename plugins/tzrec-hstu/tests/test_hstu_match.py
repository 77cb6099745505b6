"""HSTUMatch: towers, last-position gather, candidate scoring, config errors, the example."""

from pathlib import Path

import pyarrow as pa
import pytest
import torch

from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config, parse_pipeline_config
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.hstu import examples
from tzrec.hstu.hstu_match import MASKED_SIMILARITY, candidate_similarity, gather_last
from tzrec.kernels import jagged_reverse_index
from tzrec.protos import model_pb2, simi_pb2


def reverse_jagged_rows(lengths):
    """The kernels op on lengths (what the models call when histories are newest-first)."""
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    return jagged_reverse_index(offsets, int(lengths.sum()))


EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "docs/examples/hstu_match_kuairand.config"


def load_config(paths, edit=None):
    config = load_pipeline_config(str(EXAMPLE_CONFIG))
    config.train_input_path = paths["train"]
    config.data_config.negative_sampler.input_path = paths["items"]
    config.data_config.batch_size = 16
    config.data_config.negative_sampler.num_sample = 16 * 7  # 7 negatives per row
    if edit is not None:
        edit(config)
    return config


def model_and_batch(paths, edit=None):
    config = load_config(paths, edit)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, paths["train"], mode="train")
    batch = next(iter(ds))
    torch.manual_seed(0)
    return build_model(config, ds.features), batch


def test_gather_last_reads_each_rows_last_item_and_defaults_empty_rows():
    values = torch.arange(10.0).reshape(5, 2)
    default = torch.tensor([-1.0, -2.0])
    out = gather_last(values, torch.tensor([0, 2, 2, 5]), default)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [-1.0, -2.0], [8.0, 9.0]]))
    empty = gather_last(values[:0], torch.tensor([0, 0]), default)
    torch.testing.assert_close(empty, default.unsqueeze(0))


def test_reverse_jagged_rows_reverses_each_row_in_place():
    index = reverse_jagged_rows(torch.tensor([3, 0, 2]))
    assert index.tolist() == [2, 1, 0, 4, 3]


def test_newest_first_histories_match_oldest_first_ones(small_data):
    model, batch = model_and_batch(small_data)
    grouped = model.embedding_group(batch)
    model.eval()
    expected = model.user_tower(grouped)
    lengths = grouped["uih.sequence_length"]
    index = reverse_jagged_rows(lengths)
    flipped = dict(grouped)
    for g in ("uih", "uih_action", "uih_watchtime", "uih_timestamp"):
        flipped[f"{g}.sequence"] = grouped[f"{g}.sequence"].index_select(0, index)
    model.user_tower.encoder.ascending = False
    torch.testing.assert_close(model.user_tower(flipped), expected)


def test_candidate_similarity_is_upstreams_per_positive_layout():
    # two rows: user 0 has positives p0, p1; user 1 has p2, then the batch's negatives
    # (simple n0, n1, then one hard h0 that belongs to query 2)
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    sim = candidate_similarity(
        users,
        items,
        candidate_lengths=torch.tensor([2, 4]),
        pos_lengths=torch.tensor([2, 1]),
        hard_neg_indices=torch.tensor([[2, 0]]),
    )
    m = MASKED_SIMILARITY
    expected = torch.tensor([[1.0, 1.0, 2.0, m], [3.0, 1.0, 2.0, m], [6.0, 1.0, 0.0, 3.0]])
    torch.testing.assert_close(sim, expected)
    # without hard negatives: (Q, 1 + M) against the shared simple negatives
    sim = candidate_similarity(users, items[:5], torch.tensor([2, 3]), torch.tensor([2, 1]))
    torch.testing.assert_close(sim, expected[:, :3])
    # no sampler: every candidate is a positive query of its row
    sim = candidate_similarity(users, items[:3], torch.tensor([2, 1]))
    torch.testing.assert_close(sim, torch.tensor([[1.0], [3.0], [6.0]]))


def test_in_batch_negatives_need_one_positive_per_row():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]])
    sim = candidate_similarity(
        users, items, torch.tensor([1, 2]), torch.tensor([1, 1]), in_batch_negative=True
    )
    torch.testing.assert_close(sim, torch.tensor([[1.0, 3.0], [2.0, 4.0]]))
    with pytest.raises(DataError, match="in_batch_negative with multi-positive rows"):
        candidate_similarity(
            users, items, torch.tensor([2, 1]), torch.tensor([2, 1]), in_batch_negative=True
        )


def test_rows_without_a_positive_or_mismatched_rows_are_refused():
    with pytest.raises(DataError, match="at least one positive"):
        candidate_similarity(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([3, 0]))
    with pytest.raises(ConfigError, match="candidate group has 3 rows"):
        candidate_similarity(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([1, 1, 1]))


def test_multi_positive_rows_train_with_shared_negatives(small_data, tmp_path):
    import pyarrow.parquet as pq

    table = pq.read_table(small_data["train"])
    cands = table.column("cand_seq__video_id").to_pylist()
    hist = table.column("uih_seq__video_id").to_pylist()
    # rows get 1, 2 or 3 positives (the next item plus up to two history items)
    multi = [
        "|".join([c, *(h.split("|")[: i % 3] if h else [])])
        for i, (c, h) in enumerate(zip(cands, hist, strict=True))
    ]
    path = tmp_path / "multi.parquet"
    pq.write_table(
        table.set_column(
            table.column_names.index("cand_seq__video_id"), "cand_seq__video_id", pa.array(multi)
        ),
        path,
    )
    model, batch = model_and_batch({**small_data, "train": str(path)})
    pos = batch.additional_infos["cand_pos_lengths"]
    assert set(pos.tolist()) > {1}
    q = int(pos.sum())
    pred = model.predict(batch)
    assert pred["similarity"].shape == (q, 1 + 16 * 7)
    assert pred["item_emb"].shape == (q + 16 * 7, 16)
    loss = model.loss(pred, batch)["softmax_cross_entropy"]
    assert torch.isfinite(loss)
    loss.backward()
    model.update_metric(pred, batch)
    assert set(model.compute_metric()) == {"recall@1", "recall@5"}


def test_forward_loss_backward_on_example_data(small_data):
    model, batch = model_and_batch(small_data)
    pred = model.predict(batch)
    # one positive per row, 16 * 7 shared negatives
    assert pred["similarity"].shape == (batch.batch_size, 1 + 16 * 7)
    assert pred["user_emb"].shape == (batch.batch_size, 16)
    assert pred["item_emb"].shape == (batch.batch_size + 16 * 7, 16)
    # COSINE: both towers are unit-norm
    torch.testing.assert_close(pred["item_emb"].norm(dim=1), torch.ones(batch.batch_size + 16 * 7))
    loss = model.loss(pred, batch)["softmax_cross_entropy"]
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.user_tower.encoder.stu.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.update_metric(pred, batch)
    assert set(model.compute_metric()) == {"recall@1", "recall@5"}


def test_zero_length_history_gives_finite_embedding(small_data):
    model, batch = model_and_batch(small_data)
    grouped = model.embedding_group(batch)
    lengths = grouped["uih.sequence_length"]
    assert (lengths == 0).any(), "the small data set plants empty histories"
    user = model.user_tower(grouped)
    assert torch.isfinite(user).all()

    # without contextual tokens an empty row has no positions: the learned default is used
    def no_contextual(config):
        groups = config.model_config.feature_groups
        keep = [g for g in groups if g.group_name != "contextual"]
        del groups[:]
        groups.extend(keep)

    model, batch = model_and_batch(small_data, no_contextual)
    grouped = model.embedding_group(batch)
    user = model.user_tower(grouped)
    empty = grouped["uih.sequence_length"] == 0
    assert torch.isfinite(user).all()
    torch.testing.assert_close(user[empty], model.user_tower.empty_history.expand_as(user[empty]))


def test_inner_product_does_not_normalise_items(small_data):
    def inner(config):
        config.model_config.hstu_match.similarity = simi_pb2.INNER_PRODUCT

    model, batch = model_and_batch(small_data, inner)
    item = model.predict(batch)["item_emb"]
    assert not torch.allclose(item.norm(dim=1), torch.ones(item.shape[0]))


def test_action_encoder_without_uih_action_group_is_a_config_error(small_data):
    def drop_action(config):
        groups = config.model_config.feature_groups
        keep = [g for g in groups if g.group_name != "uih_action"]
        del groups[:]
        groups.extend(keep)

    with pytest.raises(ConfigError, match="uih_action"):
        model_and_batch(small_data, drop_action)


def test_time_encoding_without_uih_timestamp_group_is_a_config_error(small_data):
    def drop_ts(config):
        groups = config.model_config.feature_groups
        keep = [g for g in groups if g.group_name != "uih_timestamp"]
        del groups[:]
        groups.extend(keep)

    with pytest.raises(ConfigError, match="uih_timestamp"):
        model_and_batch(small_data, drop_ts)


def test_mismatched_tower_widths_are_a_config_error(small_data):
    def wide_items(config):
        config.model_config.hstu_match.item_tower.mlp.hidden_units[:] = [32]

    with pytest.raises(ConfigError, match="output_dim"):
        model_and_batch(small_data, wide_items)


def test_inference_view_returns_user_embeddings_only(small_data):
    model, batch = model_and_batch(small_data)
    model.set_is_inference(True)
    model.eval()
    pred = model.predict(batch)
    assert set(pred) == {"user_emb"}
    assert pred["user_emb"].shape == (batch.batch_size, model.user_tower.embedding_dim)


def test_item_tower_switches_to_a_scalar_view_and_back(small_data):
    model, _ = model_and_batch(small_data)
    tower = model.item_tower
    assert [f.name for f in tower.features] == ["cand_seq__video_id"]
    assert tower.feature_groups[0].feature_names == ["cand_seq__video_id"]
    model.set_is_inference(True)
    assert tower._is_inference
    (scalar,) = tower.features
    assert scalar.name == "video_id"
    assert not scalar.is_sequence and not scalar.is_grouped_sequence
    # the scalar keeps the sequence item's table and its materialised defaults
    (training,) = tower._features
    assert scalar.embedding_name == training.embedding_name
    assert scalar.num_embeddings == training.num_embeddings
    assert scalar.config.value_dim == 1 and scalar.config.default_value == "0"
    group = tower.feature_groups[0]
    assert group.group_name == tower.input and list(group.feature_names) == ["video_id"]
    model.set_is_inference(False)
    assert [f.name for f in tower.features] == ["cand_seq__video_id"]


def test_item_tower_query_view_embeds_each_item_like_the_sequence_view(small_data):
    model, batch = model_and_batch(small_data)
    model.eval()
    grouped = model.embedding_group(batch)
    seq = grouped[f"{model.item_tower.input}.sequence"]
    with torch.no_grad():
        training = model.item_embedding(grouped)
        model.set_is_inference(True)
        # the serving view reads one item per row as "<group>.query"
        query = {f"{model.item_tower.input}.query": seq}
        serving = model.item_embedding(query)
    torch.testing.assert_close(serving, training)
    with pytest.raises(KeyError):
        model.item_tower({f"{model.item_tower.input}.sequence": seq})


def test_packaged_example_config_matches_the_docs_copy():
    assert examples.config_text() == EXAMPLE_CONFIG.read_text(encoding="utf-8")


def test_default_example_writes_data_and_a_runnable_config(tmp_path):
    path = examples.make(tmp_path)
    config = parse_pipeline_config(path.read_text(), str(path))
    assert config.model_config.WhichOneof("model") == "hstu_match"
    for p in (config.train_input_path, config.eval_input_path):
        assert (tmp_path / "data").resolve() in Path(p).parents
    assert config.model_dir == str((tmp_path / "model").resolve())


def test_triton_kernel_config_matches_pytorch(small_data):
    model, batch = model_and_batch(small_data)

    def triton(config):
        config.model_config.kernel = model_pb2.TRITON

    tri_model, _ = model_and_batch(small_data, triton)
    tri_model.load_state_dict(model.state_dict())
    model.eval()
    tri_model.eval()
    with torch.no_grad():
        expected = model.predict(batch)["similarity"]
        got = tri_model.predict(batch)["similarity"]
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)


def test_user_tower_runs_the_shared_encoder_and_checks_lengths_with_data_error(small_data):
    from tzrec.core.errors import DataError
    from tzrec.hstu.pipeline import HSTUEncoder

    model, batch = model_and_batch(small_data)
    assert isinstance(model.user_tower.encoder, HSTUEncoder)
    grouped = dict(model.embedding_group(batch))
    lengths = grouped["uih_action.sequence_length"].clone()
    lengths[0] += 1
    grouped["uih_action.sequence_length"] = lengths
    with pytest.raises(DataError, match="'uih_action' and 'uih' have different sequence lengths"):
        model.user_tower(grouped)


def test_role_group_of_the_wrong_type_is_a_config_error(small_data):
    def deep_action(config):
        for g in config.model_config.feature_groups:
            if g.group_name == "uih_action":
                g.group_type = model_pb2.DEEP

    with pytest.raises(ConfigError, match="'uih_action' must be JAGGED_SEQUENCE for hstu_match"):
        model_and_batch(small_data, deep_action)


def test_upstream_stu_weights_load_into_the_user_tower(small_data):
    from tzrec.hstu.stu import UPSTREAM_RENAMES, load_upstream_hstu

    model, batch = model_and_batch(small_data)
    encoder = model.user_tower.encoder
    back = {v: k for k, v in UPSTREAM_RENAMES.items()}
    upstream = {}
    for name, value in encoder.state_dict().items():
        parts = name.split(".")
        if parts[0] == "stu":  # stu.layers.<i>.<param>
            key = f"_hstu_encoder._stu_module._stu_layers.{parts[2]}.{back[parts[3]]}"
        elif parts[0] == "positional_encoder" and parts[1] == "position_embeddings":
            key = f"_hstu_encoder._positional_encoder.{back[parts[1]]}"
        else:
            continue
        upstream[f"user_tower.{key}"] = torch.randn_like(value)
    loaded = load_upstream_hstu(encoder, upstream)
    assert "positional_encoder.position_embeddings" in loaded
    layer0 = "user_tower._hstu_encoder._stu_module._stu_layers.0._uvqk_beta"
    torch.testing.assert_close(encoder.stu.layers[0].uvqk_bias, upstream[layer0])
    assert torch.isfinite(model.predict(batch)["similarity"]).all()
