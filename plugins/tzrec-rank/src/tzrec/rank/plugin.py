"""tzrec-rank's plugin: classic ranking models by ``ModelConfig`` oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

#: Feature-interaction models (FM, cross, CIN, dot interactions).
_INTERACTION_MODELS: dict[str, str] = {}

#: Gated / layered models (mask blocks, WuKong layers, light-heavy co-training).
_GATED_MODELS: dict[str, str] = {
    "mask_net": "tzrec.rank.mask_net:MaskNet",
    "wukong": "tzrec.rank.wukong:WuKong",
    "rocket_launching": "tzrec.rank.rocket_launching:RocketLaunching",
}


@hookimpl
def register_models(register: Register) -> None:
    """Every model of this distribution (:data:`_INTERACTION_MODELS`, :data:`_GATED_MODELS`)."""
    for name, target in {**_INTERACTION_MODELS, **_GATED_MODELS}.items():
        register(name, target)


#: Config fields tzrec-rank reads and honours, per model family. Add a field in the commit
#: that implements it; a set field that no package declares is refused at validation.
_INTERACTION_FIELDS: tuple[str, ...] = ()
_GATED_FIELDS: tuple[str, ...] = (
    "ModelConfig.mask_net",
    "ModelConfig.wukong",
    "ModelConfig.rocket_launching",
    "MaskNet.mask_net_module",
    "MaskNetModule.n_mask_blocks>0",
    "MaskNetModule.mask_block",
    "MaskNetModule.top_mlp",
    "MaskNetModule.use_parallel",
    "MaskBlock.reduction_ratio",
    "MaskBlock.aggregation_dim>0",
    "MaskBlock.hidden_dim>0",
    "WuKong.dense_mlp",
    "WuKong.wukong_layers",
    "WuKong.final",
    "WuKongLayer.lcb_feature_num>0",
    "WuKongLayer.fmb_feature_num>0",
    "WuKongLayer.compressed_feature_num>0",
    "WuKongLayer.feature_num_mlp",
    "RocketLaunching.share_mlp",
    "RocketLaunching.booster_mlp",
    "RocketLaunching.light_mlp",
    "RocketLaunching.feature_based_distillation",
    "RocketLaunching.feature_distillation_function",
)
SUPPORTED_FIELDS = _INTERACTION_FIELDS + _GATED_FIELDS


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The fields of :data:`SUPPORTED_FIELDS`."""
    declare(*SUPPORTED_FIELDS)
