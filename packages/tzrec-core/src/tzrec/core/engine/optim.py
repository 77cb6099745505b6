"""Optimizers and learning-rate schedules from ``DenseOptimizer`` / ``SparseOptimizer`` configs.

Dense parameters get ordinary ``torch.optim`` optimizers (optionally several, by parameter
name regex, from ``part_optimizers``). Embedding tables get fbgemm's fused optimizers: either
through :func:`sparse_optimizer_class_and_kwargs` (for
``torch.distributed.optim._apply_optimizer_in_backward`` before torchrec sharding) or
through :func:`sparse_fused_params` (an ``EmbeddingBagCollectionSharder(fused_params=...)``
or a table-batched embedding module). Schedules are per-step (or per-epoch with
``by_epoch``) ``torch.optim.lr_scheduler.LRScheduler`` subclasses.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from google.protobuf.message import Message
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from tzrec.core.errors import ConfigError
from tzrec.protos import optimizer_pb2, train_pb2

logger = logging.getLogger(__name__)

__all__ = [
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestartsLR",
    "ExponentialDecayLR",
    "ManualStepLR",
    "ScheduleLR",
    "build_dense_optimizer",
    "build_dense_optimizers",
    "build_lr_scheduler",
    "clip_gradients",
    "dense_optimizer_class_and_kwargs",
    "gradient_clipping_kwargs",
    "group_params_by_regex",
    "sparse_fused_params",
    "sparse_optimizer_class_and_kwargs",
]


def _chosen(config: Message, oneof: str, where: str) -> tuple[str, Message]:
    name = config.WhichOneof(oneof)
    if name is None:
        choices = ", ".join(f.name for f in config.DESCRIPTOR.oneofs_by_name[oneof].fields)
        raise ConfigError(f"{where}: sets no {oneof}; expected one of {choices}")
    return name, getattr(config, name)


# -- dense ---------------------------------------------------------------------------------

_DENSE: dict[str, type[Optimizer]] = {
    "sgd_optimizer": torch.optim.SGD,
    "adagrad_optimizer": torch.optim.Adagrad,
    "adam_optimizer": torch.optim.Adam,
    "adamw_optimizer": torch.optim.AdamW,
    "adadelta_optimizer": torch.optim.Adadelta,
    "rmsprop_optimizer": torch.optim.RMSprop,
}


def dense_optimizer_class_and_kwargs(
    config: optimizer_pb2.DenseOptimizer | optimizer_pb2.PartOptimizer,
    where: str = "train_config.dense_optimizer",
) -> tuple[type[Optimizer], dict[str, Any]]:
    """The ``torch.optim`` class and constructor kwargs a dense optimizer config names.

    Raises:
        ConfigError: no optimizer is set, or a value is out of range.
    """
    name, sub = _chosen(config, "optimizer", where)
    kwargs: dict[str, Any] = {f.name: getattr(sub, f.name) for f in sub.DESCRIPTOR.fields}
    if kwargs["lr"] < 0:
        raise ConfigError(f"{where}.{name}.lr: must be >= 0, got {kwargs['lr']}")
    if "beta1" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
    if (
        name == "sgd_optimizer"
        and kwargs["nesterov"]
        and (kwargs["momentum"] <= 0 or kwargs["dampening"] != 0)
    ):
        raise ConfigError(f"{where}.{name}: nesterov needs momentum > 0 and dampening 0")
    if not kwargs.get("fused", True):
        kwargs.pop("fused")  # torch picks its default implementation
    return _DENSE[name], kwargs


def build_dense_optimizer(
    config: optimizer_pb2.DenseOptimizer | optimizer_pb2.PartOptimizer,
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
    where: str = "train_config.dense_optimizer",
) -> Optimizer:
    """Construct the dense optimizer a config names over ``params``."""
    cls, kwargs = dense_optimizer_class_and_kwargs(config, where)
    return cls(params, **kwargs)


def group_params_by_regex(
    named_params: Mapping[str, nn.Parameter], patterns: list[str]
) -> tuple[dict[str, nn.Parameter], list[dict[str, nn.Parameter]]]:
    """Split parameters by the first pattern whose ``re.fullmatch`` accepts the name.

    Returns:
        The parameters no pattern matches, and one dict per pattern.
    """
    compiled = [re.compile(p) for p in patterns]
    remaining: dict[str, nn.Parameter] = {}
    parts: list[dict[str, nn.Parameter]] = [{} for _ in patterns]
    for name, param in named_params.items():
        for i, regex in enumerate(compiled):
            if regex.fullmatch(name):
                parts[i][name] = param
                break
        else:
            remaining[name] = param
    return remaining, parts


def build_dense_optimizers(
    config: optimizer_pb2.DenseOptimizer,
    named_params: Mapping[str, nn.Parameter],
    where: str = "train_config.dense_optimizer",
) -> list[tuple[str, Optimizer, LRScheduler]]:
    """The main dense optimizer plus one per ``part_optimizers`` entry, with schedules.

    Parameters matching a part's ``regex_pattern`` go to that part (first match wins); a
    part without a ``learning_rate`` uses the main schedule. Optimizers with no parameters
    are left out.

    Returns:
        ``(label, optimizer, scheduler)`` tuples: ``"dense"`` then ``"part<i>"``.
    """
    patterns = [p.regex_pattern for p in config.part_optimizers]
    remaining, parts = group_params_by_regex(
        {k: v for k, v in named_params.items() if v.requires_grad}, patterns
    )
    out: list[tuple[str, Optimizer, LRScheduler]] = []
    if remaining:
        opt = build_dense_optimizer(config, list(remaining.values()), where)
        out.append(("dense", opt, build_lr_scheduler(opt, config, where)))
    for i, (part_cfg, params) in enumerate(zip(config.part_optimizers, parts, strict=True)):
        part_where = f"{where}.part_optimizers[{i}]"
        if not params:
            logger.warning("%s: regex %r matches no parameter", part_where, part_cfg.regex_pattern)
            continue
        logger.info("%s: %s", part_where, ", ".join(params))
        opt = build_dense_optimizer(part_cfg, list(params.values()), part_where)
        lr_cfg = part_cfg if part_cfg.WhichOneof("learning_rate") else config
        out.append((f"part{i}", opt, build_lr_scheduler(opt, lr_cfg, part_where)))
    return out


# -- sparse (fused into embedding tables) --------------------------------------------------

_SPARSE_FIELDS_RENAMED = {"lr": "learning_rate"}


def _sparse_kwargs(config: optimizer_pb2.SparseOptimizer, where: str) -> tuple[str, dict]:
    name, sub = _chosen(config, "optimizer", where)
    kwargs: dict[str, Any] = {f.name: getattr(sub, f.name) for f in sub.DESCRIPTOR.fields}
    if name in ("adadelta_optimizer", "rmsprop_optimizer"):
        raise ConfigError(
            f"{where}.{name}: not available for embedding tables in the public torchrec / "
            "fbgemm-gpu releases; use adagrad_optimizer, rowwise_adagrad_optimizer or "
            "adam_optimizer"
        )
    if "weight_decay_mode" in kwargs:
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode

        mode = optimizer_pb2.WeightDecayMode.Name(kwargs["weight_decay_mode"])
        kwargs["weight_decay_mode"] = WeightDecayMode[mode]
    init_acc = kwargs.pop("initial_accumulator_value", 0.0)
    if init_acc:
        logger.warning(
            "%s.%s.initial_accumulator_value=%s is ignored: fbgemm starts accumulators at 0",
            where,
            name,
            init_acc,
        )
    return name, kwargs


def sparse_optimizer_class_and_kwargs(
    config: optimizer_pb2.SparseOptimizer,
    where: str = "train_config.sparse_optimizer",
) -> tuple[type[Optimizer], dict[str, Any]]:
    """The torchrec fused-optimizer class and kwargs for ``_apply_optimizer_in_backward``.

    The classes are torchrec placeholders (``torchrec.optim.SGD``, ``Adagrad``,
    ``RowWiseAdagrad``, ...) that sharding turns into fbgemm fused kernels; kwargs use
    ``lr`` plus fbgemm argument names (``beta1``, ``weight_decay``, ``max_gradient``...).
    """
    from torchrec.optim import optimizers, rowwise_adagrad

    classes: dict[str, type[Optimizer]] = {
        "sgd_optimizer": optimizers.SGD,
        "adagrad_optimizer": optimizers.Adagrad,
        "adam_optimizer": optimizers.Adam,
        "lars_sgd_optimizer": optimizers.LarsSGD,
        "lamb_optimizer": optimizers.LAMB,
        "partial_rowwise_lamb_optimizer": optimizers.PartialRowWiseLAMB,
        "partial_rowwise_adam_optimizer": optimizers.PartialRowWiseAdam,
        "rowwise_adagrad_optimizer": rowwise_adagrad.RowWiseAdagrad,
    }
    name, kwargs = _sparse_kwargs(config, where)
    return classes[name], kwargs


def sparse_fused_params(
    config: optimizer_pb2.SparseOptimizer,
    where: str = "train_config.sparse_optimizer",
) -> dict[str, Any]:
    """The fbgemm fused-optimizer params: ``{"optimizer": EmbOptimType, "learning_rate": ...}``.

    For ``EmbeddingBagCollectionSharder(fused_params=...)`` or fbgemm's
    ``SplitTableBatchedEmbeddingBagsCodegen(**params)``.
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    types = {
        "sgd_optimizer": EmbOptimType.EXACT_SGD,
        "adagrad_optimizer": EmbOptimType.EXACT_ADAGRAD,
        "adam_optimizer": EmbOptimType.ADAM,
        "lars_sgd_optimizer": EmbOptimType.LARS_SGD,
        "lamb_optimizer": EmbOptimType.LAMB,
        "partial_rowwise_lamb_optimizer": EmbOptimType.PARTIAL_ROWWISE_LAMB,
        "partial_rowwise_adam_optimizer": EmbOptimType.PARTIAL_ROWWISE_ADAM,
        "rowwise_adagrad_optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    }
    name, kwargs = _sparse_kwargs(config, where)
    params = {_SPARSE_FIELDS_RENAMED.get(k, k): v for k, v in kwargs.items()}
    params["optimizer"] = types[name]
    return params


# -- learning-rate schedules ---------------------------------------------------------------


class ScheduleLR(LRScheduler):
    """Base of the config-driven schedules: ``lr = f(base_lr, step)``.

    ``step()`` is called once per training step (or per epoch when :attr:`by_epoch`). A
    parameter group whose base learning rate is 0 stays at 0 (frozen).

    Args:
        optimizer: the optimizer whose groups' ``lr`` is set.
        by_epoch: the caller steps this schedule per epoch instead of per step.
    """

    def __init__(self, optimizer: Optimizer, by_epoch: bool = False) -> None:
        self._by_epoch = by_epoch
        super().__init__(optimizer)

    @property
    def by_epoch(self) -> bool:
        """Whether ``step()`` is meant to be called per epoch."""
        return self._by_epoch

    def lr_at(self, base_lr: float, step: int) -> float:
        """The learning rate at ``step`` for a group starting at ``base_lr``."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # noqa: D102
        step = max(int(self.last_epoch), 0)
        return [0.0 if b == 0 else self.lr_at(b, step) for b in self.base_lrs]


def _warmup(base_lr: float, start: float, size: int, step: int) -> float:
    return start + (base_lr - start) * step / size


class ConstantLR(ScheduleLR):
    """The optimizer's learning rate, unchanged."""

    def lr_at(self, base_lr: float, step: int) -> float:  # noqa: D102
        return base_lr


class ExponentialDecayLR(ScheduleLR):
    """Linear warmup, then ``base_lr * decay_factor ** ((step - warmup) / decay_size)``.

    The exponent is floored when ``staircase``; the result never drops below
    ``min_learning_rate``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        decay_size: int,
        decay_factor: float = 0.95,
        staircase: bool = True,
        warmup_learning_rate: float = 0.0,
        warmup_size: int = 0,
        min_learning_rate: float = 0.0,
        by_epoch: bool = False,
    ) -> None:
        if decay_size <= 0:
            raise ConfigError(
                f"exponential_decay_learning_rate.decay_size: must be > 0, got {decay_size}"
            )
        self.decay_size, self.decay_factor, self.staircase = decay_size, decay_factor, staircase
        self.warmup_learning_rate, self.warmup_size = warmup_learning_rate, warmup_size
        self.min_learning_rate = min_learning_rate
        super().__init__(optimizer, by_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:  # noqa: D102
        if step < self.warmup_size:
            return _warmup(base_lr, self.warmup_learning_rate, self.warmup_size, step)
        p = (step - self.warmup_size) / self.decay_size
        if self.staircase:
            p = math.floor(p)
        return max(base_lr * self.decay_factor**p, self.min_learning_rate)


class ManualStepLR(ScheduleLR):
    """``learning_rates[i]`` once ``step`` passes ``schedule_sizes[i]``; ``base_lr`` before.

    With ``warmup`` the rate moves linearly from ``base_lr`` to ``learning_rates[0]`` over
    the first ``schedule_sizes[0]`` steps.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule_sizes: list[int],
        learning_rates: list[float],
        warmup: bool = False,
        by_epoch: bool = False,
    ) -> None:
        if len(schedule_sizes) != len(learning_rates) or not schedule_sizes:
            raise ConfigError(
                "manual_step_learning_rate: schedule_sizes and learning_rates must be "
                f"non-empty and of equal length, got {len(schedule_sizes)} and "
                f"{len(learning_rates)}"
            )
        if list(schedule_sizes) != sorted(schedule_sizes):
            raise ConfigError("manual_step_learning_rate.schedule_sizes: must be increasing")
        self.schedule_sizes = list(schedule_sizes)
        self.learning_rates = list(learning_rates)
        self.warmup = warmup
        super().__init__(optimizer, by_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:  # noqa: D102
        idx = bisect.bisect_left(self.schedule_sizes, step)
        if idx > 0:
            return self.learning_rates[idx - 1]
        if self.warmup and self.schedule_sizes[0] > 0:
            return _warmup(self.learning_rates[0], base_lr, self.schedule_sizes[0], step)
        return base_lr


class CosineAnnealingLR(ScheduleLR):
    """Linear warmup, then a half cosine from base_lr to min_learning_rate over T_max."""

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        min_learning_rate: float = 0.0,
        warmup_learning_rate: float = 0.0,
        warmup_size: int = 0,
        by_epoch: bool = False,
    ) -> None:
        if T_max <= 0:
            raise ConfigError(f"cosine_annealing_learning_rate.T_max: must be > 0, got {T_max}")
        self.T_max, self.min_learning_rate = T_max, min_learning_rate
        self.warmup_learning_rate, self.warmup_size = warmup_learning_rate, warmup_size
        super().__init__(optimizer, by_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:  # noqa: D102
        if step < self.warmup_size:
            return _warmup(base_lr, self.warmup_learning_rate, self.warmup_size, step)
        t = min(step - self.warmup_size, self.T_max)
        scale = 0.5 * (1 + math.cos(math.pi * t / self.T_max))
        return self.min_learning_rate + (base_lr - self.min_learning_rate) * scale


class CosineAnnealingWarmRestartsLR(ScheduleLR):
    """Linear warmup, then cosine periods of ``T_0``, ``T_0 * T_mult``, ... restarting at base."""

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        min_learning_rate: float = 0.0,
        warmup_learning_rate: float = 0.0,
        warmup_size: int = 0,
        by_epoch: bool = False,
    ) -> None:
        if T_0 <= 0 or T_mult < 1:
            raise ConfigError(
                "cosine_annealing_warm_restarts_learning_rate: T_0 must be > 0 and T_mult "
                f">= 1, got T_0={T_0}, T_mult={T_mult}"
            )
        self.T_0, self.T_mult, self.min_learning_rate = T_0, T_mult, min_learning_rate
        self.warmup_learning_rate, self.warmup_size = warmup_learning_rate, warmup_size
        super().__init__(optimizer, by_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:  # noqa: D102
        if step < self.warmup_size:
            return _warmup(base_lr, self.warmup_learning_rate, self.warmup_size, step)
        t_cur, t_i = step - self.warmup_size, self.T_0
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.T_mult
        scale = 0.5 * (1 + math.cos(math.pi * t_cur / t_i))
        return self.min_learning_rate + (base_lr - self.min_learning_rate) * scale


_SCHEDULES: dict[str, type[ScheduleLR]] = {
    "constant_learning_rate": ConstantLR,
    "exponential_decay_learning_rate": ExponentialDecayLR,
    "manual_step_learning_rate": ManualStepLR,
    "cosine_annealing_learning_rate": CosineAnnealingLR,
    "cosine_annealing_warm_restarts_learning_rate": CosineAnnealingWarmRestartsLR,
}


def build_lr_scheduler(
    optimizer: Optimizer,
    config: optimizer_pb2.DenseOptimizer
    | optimizer_pb2.SparseOptimizer
    | optimizer_pb2.PartOptimizer,
    where: str = "train_config.dense_optimizer",
) -> ScheduleLR:
    """The schedule a config's ``learning_rate`` oneof names (constant when unset)."""
    name = config.WhichOneof("learning_rate")
    if name is None:
        return ConstantLR(optimizer)
    sub = getattr(config, name)
    kwargs: dict[str, Any] = {}
    for field in sub.DESCRIPTOR.fields:
        value = getattr(sub, field.name)
        kwargs[field.name] = list(value) if field.is_repeated else value
    if name in ("exponential_decay_learning_rate", "cosine_annealing_learning_rate") and not (
        sub.HasField("decay_size" if "decay" in name else "T_max")
    ):
        missing = "decay_size" if "decay" in name else "T_max"
        raise ConfigError(f"{where}.{name}.{missing}: required")
    try:
        return _SCHEDULES[name](optimizer, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}") from None


# -- gradient clipping ---------------------------------------------------------------------


def _clipping_type(config: train_pb2.GradClipping, where: str) -> str:
    kind = config.clipping_type.strip().lower()
    if kind not in ("none", "norm", "value"):
        raise ConfigError(f"{where}.clipping_type: expected none, norm or value, got {kind!r}")
    return kind


def gradient_clipping_kwargs(
    config: train_pb2.GradClipping, where: str = "train_config.grad_clipping"
) -> dict[str, Any] | None:
    """Keyword arguments for torchrec's ``GradientClippingOptimizer`` (None: no clipping)."""
    from torchrec.optim.clipping import GradientClipping

    kind = _clipping_type(config, where)
    if kind == "none":
        return None
    return {
        "clipping": GradientClipping(kind),
        "max_gradient": config.max_gradient,
        "norm_type": config.norm_type,
        "enable_global_grad_clip": config.enable_global_grad_clip,
    }


def clip_gradients(
    parameters: Iterable[nn.Parameter],
    config: train_pb2.GradClipping,
    where: str = "train_config.grad_clipping",
) -> torch.Tensor | None:
    """Clip the gradients of local (unsharded) parameters in place as the config says.

    Returns:
        The total gradient norm before clipping for ``norm``; None otherwise.
    """
    kind = _clipping_type(config, where)
    params = [p for p in parameters if p.grad is not None]
    if kind == "none" or not params:
        return None
    if kind == "value":
        torch.nn.utils.clip_grad_value_(params, config.max_gradient)
        return None
    return torch.nn.utils.clip_grad_norm_(params, config.max_gradient, config.norm_type)
