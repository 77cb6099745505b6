import logging
import math

import pytest
import torch
from google.protobuf import text_format
from torch import nn

from tzrec.core.engine import optim
from tzrec.core.errors import ConfigError
from tzrec.protos import optimizer_pb2, train_pb2


def _dense(text: str) -> optimizer_pb2.DenseOptimizer:
    return text_format.Parse(text, optimizer_pb2.DenseOptimizer())


def _sparse(text: str) -> optimizer_pb2.SparseOptimizer:
    return text_format.Parse(text, optimizer_pb2.SparseOptimizer())


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize(
    "text,cls",
    [
        ("sgd_optimizer { lr: 0.1 momentum: 0.5 }", torch.optim.SGD),
        ("adagrad_optimizer { lr: 0.1 }", torch.optim.Adagrad),
        ("adam_optimizer { lr: 0.1 beta1: 0.8 beta2: 0.9 }", torch.optim.Adam),
        ("adamw_optimizer { lr: 0.1 weight_decay: 0.01 }", torch.optim.AdamW),
        ("adadelta_optimizer { lr: 0.1 }", torch.optim.Adadelta),
        ("rmsprop_optimizer { lr: 0.1 }", torch.optim.RMSprop),
    ],
)
def test_dense_optimizer_types_and_hyperparameters(text, cls):
    opt = optim.build_dense_optimizer(_dense(text), [nn.Parameter(torch.zeros(2))])
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_adam_betas_and_sgd_momentum_come_from_config():
    cls, kwargs = optim.dense_optimizer_class_and_kwargs(
        _dense("adam_optimizer { lr: 0.1 beta1: 0.8 beta2: 0.9 eps: 1e-6 amsgrad: true }")
    )
    assert cls is torch.optim.Adam
    assert kwargs["betas"] == pytest.approx((0.8, 0.9))
    assert kwargs["amsgrad"] is True and kwargs["eps"] == pytest.approx(1e-6)
    assert "beta1" not in kwargs
    _, sgd = optim.dense_optimizer_class_and_kwargs(_dense("sgd_optimizer { lr: 0.1 }"))
    assert sgd["momentum"] == pytest.approx(0.9)  # proto default, as upstream


def test_missing_dense_optimizer_is_one_line_config_error_naming_the_field():
    with pytest.raises(ConfigError) as e:
        optim.build_dense_optimizer(_dense("constant_learning_rate {}"), [])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("train_config.dense_optimizer: sets no optimizer")
    assert "adam_optimizer" in msg


def test_missing_sparse_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^train_config.sparse_optimizer: sets no optimizer"):
        optim.sparse_fused_params(optimizer_pb2.SparseOptimizer())


def test_negative_lr_is_a_config_error():
    with pytest.raises(ConfigError, match="lr: must be >= 0"):
        optim.build_dense_optimizer(_dense("sgd_optimizer { lr: -1 }"), [])


def test_dense_optimizer_trains_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = optim.build_dense_optimizer(_dense("adam_optimizer { lr: 0.05 }"), model.parameters())
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.1


def test_part_optimizers_split_parameters_by_regex():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    cfg = _dense(
        """
        adam_optimizer { lr: 0.01 }
        exponential_decay_learning_rate { decay_size: 1 decay_factor: 0.5 }
        part_optimizers { sgd_optimizer { lr: 0.5 } regex_pattern: "1\\\\..*" }
        part_optimizers { sgd_optimizer { lr: 0.5 } regex_pattern: "nothing" }
        """
    )
    built = optim.build_dense_optimizers(cfg, dict(model.named_parameters()))
    assert [label for label, _, _ in built] == ["dense", "part0"]
    (_, dense, dense_lr), (_, part, part_lr) = built
    assert type(dense) is torch.optim.Adam and type(part) is torch.optim.SGD
    assert {id(p) for p in part.param_groups[0]["params"]} == {
        id(model[1].weight),
        id(model[1].bias),
    }
    assert len(dense.param_groups[0]["params"]) == 2
    # a part without its own schedule follows the main one
    part.step()
    part_lr.step()
    assert part.param_groups[0]["lr"] == pytest.approx(0.25)


def test_constant_schedule_is_default():
    opt = _opt(0.3)
    sched = optim.build_lr_scheduler(opt, _dense("sgd_optimizer { lr: 0.3 }"))
    assert isinstance(sched, optim.ConstantLR)
    assert _lrs(sched, 3) == pytest.approx([0.3, 0.3, 0.3])


def test_exponential_decay_with_warmup_staircase_and_floor():
    cfg = _dense(
        "sgd_optimizer { lr: 1.0 } exponential_decay_learning_rate { decay_size: 2 "
        "decay_factor: 0.5 warmup_size: 2 warmup_learning_rate: 0.0 min_learning_rate: 0.2 }"
    )
    sched = optim.build_lr_scheduler(_opt(), cfg)
    assert _lrs(sched, 9) == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2])
    assert sched.by_epoch is False


def test_exponential_decay_smooth():
    cfg = _dense(
        "sgd_optimizer { lr: 1.0 } exponential_decay_learning_rate { decay_size: 2 "
        "decay_factor: 0.5 staircase: false }"
    )
    assert _lrs(optim.build_lr_scheduler(_opt(), cfg), 3) == pytest.approx([1.0, 0.5**0.5, 0.5])


def test_exponential_decay_without_decay_size_names_the_field():
    cfg = _dense("sgd_optimizer { lr: 1.0 } exponential_decay_learning_rate { }")
    with pytest.raises(ConfigError, match="exponential_decay_learning_rate.decay_size"):
        optim.build_lr_scheduler(_opt(), cfg)


def test_manual_step_schedule_with_and_without_warmup():
    text = (
        "sgd_optimizer { lr: 1.0 } manual_step_learning_rate { schedule_sizes: [2, 4] "
        "learning_rates: [0.5, 0.1] %s }"
    )
    plain = optim.build_lr_scheduler(_opt(), _dense(text % ""))
    assert _lrs(plain, 6) == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.1])
    warm = optim.build_lr_scheduler(_opt(), _dense(text % "warmup: true"))
    assert _lrs(warm, 4) == pytest.approx([1.0, 0.75, 0.5, 0.5])


def test_manual_step_mismatched_lists_is_a_config_error():
    cfg = _dense(
        "sgd_optimizer { lr: 1.0 } manual_step_learning_rate { schedule_sizes: [2] "
        "learning_rates: [0.5, 0.1] }"
    )
    with pytest.raises(ConfigError, match="equal length"):
        optim.build_lr_scheduler(_opt(), cfg)


def test_cosine_annealing_and_warm_restarts():
    cos = _dense(
        "sgd_optimizer { lr: 1.0 } cosine_annealing_learning_rate { T_max: 4 "
        "min_learning_rate: 0.0 }"
    )
    expected = [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(5)] + [0.0]
    assert _lrs(optim.build_lr_scheduler(_opt(), cos), 6) == pytest.approx(expected, abs=1e-7)
    restart = _dense(
        "sgd_optimizer { lr: 1.0 } cosine_annealing_warm_restarts_learning_rate { T_0: 2 "
        "T_mult: 2 }"
    )
    got = _lrs(optim.build_lr_scheduler(_opt(), restart), 7)
    assert got == pytest.approx(
        [
            1.0,
            0.5,
            1.0,
            0.5 * (1 + math.cos(math.pi / 4)),
            0.5,
            0.5 * (1 + math.cos(3 * math.pi / 4)),
            1.0,
        ]
    )


def test_zero_base_lr_stays_frozen():
    cfg = _dense(
        "sgd_optimizer { lr: 1.0 } manual_step_learning_rate { schedule_sizes: [1] "
        "learning_rates: [0.5] }"
    )
    sched = optim.build_lr_scheduler(_opt(0.0), cfg)
    assert _lrs(sched, 3) == [0.0, 0.0, 0.0]


def test_scheduler_state_round_trips():
    cfg = _dense(
        "sgd_optimizer { lr: 1.0 } exponential_decay_learning_rate { decay_size: 1 "
        "decay_factor: 0.5 }"
    )
    a = optim.build_lr_scheduler(_opt(), cfg)
    _lrs(a, 3)
    b_opt = _opt()
    b = optim.build_lr_scheduler(b_opt, cfg)
    b.load_state_dict(a.state_dict())
    b_opt.step()
    b.step()
    assert b_opt.param_groups[0]["lr"] == pytest.approx(0.5**4)


@pytest.mark.parametrize(
    "text,emb_type",
    [
        ("sgd_optimizer { lr: 0.1 }", "EXACT_SGD"),
        ("adagrad_optimizer { lr: 0.1 }", "EXACT_ADAGRAD"),
        ("adam_optimizer { lr: 0.1 beta1: 0.8 }", "ADAM"),
        (
            "rowwise_adagrad_optimizer { lr: 0.1 weight_decay_mode: DECOUPLE }",
            "EXACT_ROWWISE_ADAGRAD",
        ),
        ("lamb_optimizer { lr: 0.1 }", "LAMB"),
        ("lars_sgd_optimizer { lr: 0.1 }", "LARS_SGD"),
        ("partial_rowwise_adam_optimizer { lr: 0.1 }", "PARTIAL_ROWWISE_ADAM"),
        ("partial_rowwise_lamb_optimizer { lr: 0.1 }", "PARTIAL_ROWWISE_LAMB"),
    ],
)
def test_sparse_fused_params(text, emb_type):
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.utils import optimizer_type_to_emb_opt_type

    params = optim.sparse_fused_params(_sparse(text))
    assert params["optimizer"] is EmbOptimType[emb_type]
    assert params["learning_rate"] == pytest.approx(0.1)
    assert "lr" not in params
    cls, kwargs = optim.sparse_optimizer_class_and_kwargs(_sparse(text))
    assert optimizer_type_to_emb_opt_type(cls) is EmbOptimType[emb_type]
    assert kwargs["lr"] == pytest.approx(0.1)


def test_sparse_weight_decay_mode_becomes_fbgemm_enum():
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode

    params = optim.sparse_fused_params(
        _sparse("rowwise_adagrad_optimizer { lr: 0.1 weight_decay: 0.01 weight_decay_mode: L2 }")
    )
    assert params["weight_decay_mode"] is WeightDecayMode.L2
    assert params["weight_decay"] == pytest.approx(0.01)


def test_unavailable_sparse_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="rmsprop_optimizer: not available"):
        optim.sparse_fused_params(_sparse("rmsprop_optimizer { lr: 0.1 }"))


def test_adagrad_initial_accumulator_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        params = optim.sparse_fused_params(
            _sparse("adagrad_optimizer { lr: 0.1 initial_accumulator_value: 0.1 }")
        )
    assert "initial_accumulator_value" not in params
    assert "initial_accumulator_value" in caplog.text


# fbgemm's CPU kernels cover the SGD and Adagrad families; Adam/LAMB/LARS need a GPU.
@pytest.mark.parametrize(
    "text",
    [
        "sgd_optimizer { lr: 0.5 }",
        "adagrad_optimizer { lr: 0.5 }",
        "rowwise_adagrad_optimizer { lr: 0.5 }",
    ],
)
def test_fused_params_train_an_fbgemm_embedding_table_on_cpu(text):
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    emb = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(20, 4, EmbeddingLocation.HOST, ComputeDevice.CPU)],
        **optim.sparse_fused_params(_sparse(text)),
    )
    indices = torch.tensor([1, 2, 3, 4, 5])
    offsets = torch.tensor([0, 2, 5])
    target = torch.ones(2, 4)
    losses = []
    for _ in range(10):
        out = emb(indices, offsets)
        loss = ((out - target) ** 2).mean()
        loss.backward()  # the fused optimizer updates the table in backward
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5


def test_sparse_optimizer_in_backward_trains_a_sharded_ebc_on_cpu(tmp_path):
    """The upstream path: optimizer-in-backward + torchrec sharding with fused kernels."""
    import torch.distributed as dist
    from torch.distributed.optim import _apply_optimizer_in_backward
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )

    if dist.is_initialized():  # an earlier in-process training (setup_process) left its group
        dist.destroy_process_group()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name="t", embedding_dim=4, num_embeddings=10, feature_names=["f"]
                )
            ],
            device=torch.device("meta"),
        )
        cls, kwargs = optim.sparse_optimizer_class_and_kwargs(
            _sparse("adagrad_optimizer { lr: 0.5 }")
        )
        _apply_optimizer_in_backward(cls, ebc.parameters(), kwargs)
        sharders = [EmbeddingBagCollectionSharder()]
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=1, compute_device="cpu"),
            constraints={
                "t": ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
            },
        )
        plan = planner.collective_plan(ebc, sharders, dist.GroupMember.WORLD)
        model = DistributedModelParallel(
            ebc, device=torch.device("cpu"), sharders=sharders, plan=plan
        )
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["f"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([2, 2])
        )
        losses = []
        for _ in range(5):
            loss = ((model(kjt).values() - 1.0) ** 2).mean()
            loss.backward()
            losses.append(loss.item())
        assert losses[-1] < losses[0] * 0.1
        # the sparse schedule drives the fused optimizer's lr
        sched = optim.build_lr_scheduler(
            model.fused_optimizer,
            _sparse(
                "adagrad_optimizer { lr: 0.5 } manual_step_learning_rate "
                "{ schedule_sizes: [1] learning_rates: [0.1] }"
            ),
            "train_config.sparse_optimizer",
        )
        sched.step()
        sched.step()
        assert model.fused_optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    finally:
        dist.destroy_process_group()


def _grads(values):
    p = nn.Parameter(torch.zeros(len(values)))
    p.grad = torch.tensor(values)
    return p


def test_clip_gradients_by_norm_and_value():
    p = _grads([3.0, 4.0])
    cfg = text_format.Parse('clipping_type: "norm" max_gradient: 1.0', train_pb2.GradClipping())
    norm = optim.clip_gradients([p], cfg)
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]), rtol=1e-4, atol=1e-5)
    q = _grads([3.0, -0.5])
    cfg = text_format.Parse('clipping_type: "VALUE" max_gradient: 1.0', train_pb2.GradClipping())
    assert optim.clip_gradients([q], cfg) is None
    torch.testing.assert_close(q.grad, torch.tensor([1.0, -0.5]))


def test_clip_none_leaves_gradients_and_bad_type_is_config_error():
    p = _grads([3.0, 4.0])
    assert optim.clip_gradients([p], train_pb2.GradClipping()) is None
    torch.testing.assert_close(p.grad, torch.tensor([3.0, 4.0]))
    bad = text_format.Parse('clipping_type: "l3"', train_pb2.GradClipping())
    with pytest.raises(ConfigError, match="train_config.grad_clipping.clipping_type"):
        optim.clip_gradients([p], bad)
    assert optim.gradient_clipping_kwargs(train_pb2.GradClipping()) is None


def test_gradient_clipping_kwargs_for_torchrec():
    from torchrec.optim.clipping import GradientClipping

    cfg = text_format.Parse('clipping_type: "norm" max_gradient: 2.0', train_pb2.GradClipping())
    kwargs = optim.gradient_clipping_kwargs(cfg)
    assert kwargs["clipping"] is GradientClipping.NORM
    assert kwargs["max_gradient"] == pytest.approx(2.0) and kwargs["norm_type"] == 2.0
