"""tzrec-rank's plugin: classic ranking models by ``ModelConfig`` oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

#: Feature-interaction models (FM, cross, CIN, dot interactions).
_INTERACTION_MODELS: dict[str, str] = {
    "wide_and_deep": "tzrec.rank.wide_and_deep:WideAndDeep",
    "deepfm": "tzrec.rank.deepfm:DeepFM",
    "dcn_v1": "tzrec.rank.dcn:DCNV1",
    "dcn_v2": "tzrec.rank.dcn:DCNV2",
    "dlrm": "tzrec.rank.dlrm:DLRM",
    "xdeepfm": "tzrec.rank.xdeepfm:xDeepFM",
}

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
_INTERACTION_FIELDS: tuple[str, ...] = (
    "ModelConfig.wide_and_deep",
    "ModelConfig.deepfm",
    "ModelConfig.dcn_v1",
    "ModelConfig.dcn_v2",
    "ModelConfig.dlrm",
    "ModelConfig.xdeepfm",
    # wide_init_fn is refused (no table init functions yet)
    "WideAndDeep.deep",
    "WideAndDeep.final",
    "WideAndDeep.wide_embedding_dim>0",
    "DeepFM.deep",
    "DeepFM.final",
    "DeepFM.wide_embedding_dim>0",
    "DCNV1.cross",
    "DCNV1.deep",
    "DCNV1.final",
    "Cross.cross_num",
    "DCNV2.backbone",
    "DCNV2.cross",
    "DCNV2.deep",
    "DCNV2.final",
    "CrossV2.cross_num",
    "CrossV2.low_rank>0",
    "DLRM.dense_mlp",
    "DLRM.arch_with_sparse",
    "DLRM.final",
    "xDeepFM.cin",
    "xDeepFM.deep",
    "xDeepFM.final",
    "xDeepFM.wide_embedding_dim>0",
    "CIN.cin_layer_size>0",
)
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
