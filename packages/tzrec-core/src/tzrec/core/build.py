"""Config → features, dataset, model, optimizers: the factory every command uses.

Core names no concrete reader or model: the dataset class comes from the ``datasets``
registry (by ``data_config.dataset_type``), the model class from the ``models`` registry
(by the config's model oneof). This module is the one place that checks a model is
configured and that training has both optimizers.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from tzrec.core import plugins
from tzrec.core.config import provided_by, which_oneof
from tzrec.core.errors import ConfigError, PluginError
from tzrec.protos import data_pb2, pipeline_pb2, train_pb2

logger = logging.getLogger(__name__)


def dataset_class(config: pipeline_pb2.EasyRecConfig) -> Any:
    """The registered reader class for ``data_config.dataset_type``.

    Raises:
        ConfigError: an upstream dataset type no installed plugin reads (``OdpsDataset``,
            ``KafkaDataset``, ...): one line naming the readers and the switch to them.
    """
    name = data_pb2.DatasetType.Name(config.data_config.dataset_type)
    try:
        return plugins.get("datasets", name)
    except PluginError as e:
        raise ConfigError(
            f"data_config.dataset_type {name}: {e}; write the data as parquet or csv files "
            "and point the config at them, e.g. --edit_config_json "
            '\'{"data_config.dataset_type": "ParquetDataset"}\' with parquet input paths'
        ) from None


def create_features(config: pipeline_pb2.EasyRecConfig) -> list[Any]:
    """The features of ``feature_configs``, as the configured reader class resolves them."""
    return dataset_class(config).create_features(config.feature_configs, config.data_config)


def build_dataset(
    config: pipeline_pb2.EasyRecConfig,
    features: list[Any],
    input_path: str,
    mode: str,
    **kwargs: Any,
) -> Any:
    """A dataset of the configured type over ``input_path`` (``mode``: train/eval/predict)."""
    if not input_path:
        raise ConfigError(f"no input path for {mode}: set the {mode}_input_path field or flag")
    return dataset_class(config)(config.data_config, features, input_path, mode=mode, **kwargs)


def model_class(config: pipeline_pb2.EasyRecConfig) -> tuple[str, Any]:
    """The config's model name and the class an installed plugin registers for it.

    Raises:
        ConfigError: ``model_config`` sets no model.
        PluginError: no installed plugin provides it.
    """
    mc = config.model_config
    chosen = which_oneof(mc, "model")
    if chosen is None:
        raise ConfigError("model_config sets no model")
    name = chosen[0]
    return name, plugins.get("models", name, provided_by(mc, name))


def build_model(config: pipeline_pb2.EasyRecConfig, features: list[Any]) -> nn.Module:
    """The configured model over ``features`` (from a dataset or :func:`create_features`)."""
    _, cls = model_class(config)
    return cls(
        config.model_config,
        features,
        list(config.data_config.label_fields),
        sample_weights=list(config.data_config.sample_weight_fields),
    )


def check_optimizers(tc: train_pb2.TrainConfig) -> None:
    """Training needs a sparse (embedding) and a dense optimizer: refuse in one line."""
    if not tc.HasField("sparse_optimizer") or which_oneof(tc.sparse_optimizer, "optimizer") is None:
        raise ConfigError("train_config.sparse_optimizer: set an optimizer for embeddings")
    if not tc.HasField("dense_optimizer") or which_oneof(tc.dense_optimizer, "optimizer") is None:
        raise ConfigError("train_config.dense_optimizer: set an optimizer for dense weights")


def embedding_modules(module: nn.Module) -> list[nn.Module]:
    """The torchrec embedding collections inside ``module`` (what is sharded)."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    return [
        m for m in module.modules() if isinstance(m, EmbeddingBagCollection | EmbeddingCollection)
    ]


def apply_sparse_optimizer(tc: train_pb2.TrainConfig, module: nn.Module) -> None:
    """Attach ``train_config.sparse_optimizer`` to the embedding tables (fused in backward).

    Call it before sharding: the sharded tables then update inside backward.
    """
    import torch
    from torch.distributed.optim import _apply_optimizer_in_backward

    from tzrec.core.engine.optim import sparse_optimizer_class_and_kwargs

    sparse_cls, sparse_kwargs = sparse_optimizer_class_and_kwargs(tc.sparse_optimizer)
    sparse_schedule = tc.sparse_optimizer.WhichOneof("learning_rate")
    if sparse_schedule not in (None, "constant_learning_rate"):
        logger.warning(
            "train_config.sparse_optimizer.%s is not applied yet: embedding tables "
            "train with the constant lr %s",
            sparse_schedule,
            sparse_kwargs.get("lr"),
        )
    trainable, frozen = sparse_parameters(module)
    if trainable:
        _apply_optimizer_in_backward(sparse_cls, trainable, sparse_kwargs)
    if frozen:
        # as upstream: fused SGD with lr 0 keeps frozen tables bit-identical
        _apply_optimizer_in_backward(torch.optim.SGD, frozen, {"lr": 0.0})


def sparse_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The embedding tables' weights as (trainable, frozen).

    A table is frozen when its torchrec config carries ``trainable=False`` (set by
    tzrec-models from the features' ``trainable``).
    """
    trainable: list[nn.Parameter] = []
    frozen: list[nn.Parameter] = []
    for emb in embedding_modules(module):
        configs = (
            emb.embedding_bag_configs()
            if hasattr(emb, "embedding_bag_configs")
            else emb.embedding_configs()
        )
        suffixes = tuple(f".{c.name}.weight" for c in configs if not getattr(c, "trainable", True))
        for name, param in emb.named_parameters():
            (frozen if suffixes and f".{name}".endswith(suffixes) else trainable).append(param)
    return trainable, frozen


def build_optimizer(tc: train_pb2.TrainConfig, sharded: Any) -> tuple[Any, list[Any]]:
    """The combined (fused sparse + dense) optimizer of a sharded module and its schedules.

    ``sharded`` is the ``DistributedModelParallel`` after :func:`apply_sparse_optimizer`.
    """
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from tzrec.core.engine.optim import build_lr_scheduler, dense_optimizer_class_and_kwargs

    dense_cls, dense_kwargs = dense_optimizer_class_and_kwargs(tc.dense_optimizer)
    dense_params = dict(in_backward_optimizer_filter(sharded.named_parameters()))
    dense = KeyedOptimizerWrapper(dense_params, lambda ps: dense_cls(ps, **dense_kwargs))
    optimizer = CombinedOptimizer([sharded.fused_optimizer, dense])
    return optimizer, [build_lr_scheduler(dense, tc.dense_optimizer)]


__all__ = [
    "apply_sparse_optimizer",
    "build_dataset",
    "build_model",
    "build_optimizer",
    "check_optimizers",
    "create_features",
    "dataset_class",
    "embedding_modules",
    "model_class",
    "sparse_parameters",
]
