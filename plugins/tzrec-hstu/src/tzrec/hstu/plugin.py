"""tzrec-hstu's plugin: HSTU models, preprocessors, postprocessors and the default example."""

from tzrec.core.hookspecs import Declare, Register, hookimpl, hookspec


class HOOKSPECS:  # noqa: N801 -- the attribute name tzrec's plugin manager looks for
    """Hooks tzrec-hstu defines (added with pluggy ``add_hookspecs``): its two registries.

    Another plugin can add preprocessors or postprocessors by implementing these hooks.
    """

    @staticmethod
    @hookspec
    def register_input_preprocessors(register: Register) -> None:
        """Register generative-model input preprocessors by ``GRInputPreprocessor`` oneof name.

        ``obj`` is a ``torch.nn.Module`` subclass built from its config message.
        """

    @staticmethod
    @hookspec
    def register_output_postprocessors(register: Register) -> None:
        """Register output postprocessors by ``GROutputPostprocessor`` oneof name.

        ``obj`` is a ``torch.nn.Module`` subclass built from its config message.
        """


@hookimpl
def register_models(register: Register) -> None:
    """``hstu_match`` (retrieval), ``dlrm_hstu`` and ``ultra_hstu`` (multi-task ranking)."""
    register("hstu_match", "tzrec.hstu.hstu_match:HSTUMatch")
    register("dlrm_hstu", "tzrec.hstu.dlrm_hstu:DlrmHSTU")
    register("ultra_hstu", "tzrec.hstu.ultra_hstu:UltraHSTU")


@hookimpl
def register_input_preprocessors(register: Register) -> None:
    """``uih_preprocessor`` (retrieval) and ``contextual_preprocessor`` (ranking)."""
    register("uih_preprocessor", "tzrec.hstu.preprocessors:UIHPreprocessor")
    register("contextual_preprocessor", "tzrec.hstu.preprocessors:ContextualPreprocessor")


@hookimpl
def register_output_postprocessors(register: Register) -> None:
    """``l2norm_``, ``layernorm_`` and ``timestamp_layernorm_postprocessor``."""
    register("l2norm_postprocessor", "tzrec.hstu.postprocessors:L2NormPostprocessor")
    register("layernorm_postprocessor", "tzrec.hstu.postprocessors:LayerNormPostprocessor")
    register(
        "timestamp_layernorm_postprocessor",
        "tzrec.hstu.postprocessors:TimestampLayerNormPostprocessor",
    )


@hookimpl
def register_examples(register: Register) -> None:
    """``default``: HSTUMatch on synthetic KuaiRand-shaped data (what a bare ``tzrec run`` runs)."""
    register("default", "tzrec.hstu.examples:make")


#: Config fields tzrec-hstu reads and honours. Add a field here in the commit that
#: implements it; a set field that no package declares is refused at validation.
SUPPORTED_FIELDS = (
    "ModelConfig.hstu_match",
    "ModelConfig.dlrm_hstu",
    "ModelConfig.ultra_hstu",
    "ModelConfig.kernel",  # read by the HSTU models only
    "HSTUMatch.user_tower",
    "HSTUMatch.item_tower",
    "HSTUMatch.output_dim",
    "HSTUMatch.similarity",
    "HSTUMatch.temperature",
    "HSTUMatch.in_batch_negative",
    "HSTUMatch.sequence_timestamp_is_ascending",
    "HSTUMatch.all_position_loss",
    "HSTUUserTower.input",
    "HSTUUserTower.hstu",
    "HSTUUserTower.max_seq_len>0",
    "DlrmHSTU.hstu",
    "DlrmHSTU.fusion_mtl_tower",
    "DlrmHSTU.max_seq_len>0",
    "DlrmHSTU.item_embedding_hidden_dim",
    "DlrmHSTU.enable_global_average_loss",
    "DlrmHSTU.sequence_timestamp_is_ascending",
    "DlrmHSTU.concat_contextual_features",
    "UltraHSTU.hstu",
    "UltraHSTU.fusion_mtl_tower",
    "UltraHSTU.max_seq_len>0",
    "UltraHSTU.item_embedding_hidden_dim",
    "UltraHSTU.enable_global_average_loss",
    "UltraHSTU.sequence_timestamp_is_ascending",
    "UltraHSTU.concat_contextual_features",
    "FusionMTLTower.mlp",
    "FusionMTLTower.task_configs",
    "FusionSubTaskConfig.task_name",
    "FusionSubTaskConfig.label_name",
    "FusionSubTaskConfig.task_bitmask",
    "FusionSubTaskConfig.losses",
    "FusionSubTaskConfig.num_class>0",
    "FusionSubTaskConfig.metrics",
    "FusionSubTaskConfig.weight",
    "HSTU.stu",
    "HSTU.input_dropout_ratio",
    "HSTU.attn_num_layers>0",
    "HSTU.positional_encoder",
    "HSTU.input_preprocessor",
    "HSTU.output_postprocessor",
    "HSTU.attn_truncation_split_layer",  # mid-stack truncation (tzrec.hstu.stu.STUStack)
    "HSTU.attn_truncation_tail_len",
    "HSTU.name",  # an ultra_hstu channel; refused elsewhere (tzrec.hstu.pipeline.HSTUEncoder)
    "STU.embedding_dim>0",
    "STU.num_heads>0",
    "STU.hidden_dim>0",
    "STU.attention_dim>0",
    "STU.output_dropout_ratio",
    "STU.max_attn_len",
    "STU.attn_alpha",
    "STU.use_group_norm",
    "STU.contextual_seq_len",
    "STU.scaling_seqlen",
    "STU.recompute_normed_x",
    "STU.recompute_uvqk",
    "STU.recompute_y",
    "STU.sort_by_length",  # a GPU scheduling hint upstream: results are the same either way
    "STU.sla_k1",  # semi-local attention (tzrec.kernels.sla_hstu_mha)
    "STU.sla_k2",
    "GRPositionalEncoder.num_position_buckets>0",
    "GRPositionalEncoder.num_time_buckets",
    "GRPositionalEncoder.use_time_encoding",
    "GRPositionalEncoder.time_bucket_fn",
    "GRPositionalEncoder.time_bucket_increments",
    "GRInputPreprocessor.contextual_preprocessor",
    "GRInputPreprocessor.uih_preprocessor",
    "GRContextualPreprocessor.action_encoder",
    "GRContextualPreprocessor.action_mlp",
    "GRContextualPreprocessor.content_encoder",
    "GRContextualPreprocessor.content_mlp",
    "GRUIHPreprocessor.action_encoder",
    "GRUIHPreprocessor.action_mlp",
    "GRActionEncoder.simple_action_encoder",
    "GRSimpleActionEncoder.action_embedding_dim",
    "GRSimpleActionEncoder.action_weights",
    "GRSimpleActionEncoder.watchtime_to_action_thresholds",
    "GRSimpleActionEncoder.watchtime_to_action_weights",
    "GRSimpleActionEncoder.embedding_init_std",
    "GRContextualizedMLP.simple_mlp",
    "GRSimpleContextualizedMLP.hidden_dim>0",
    "GRContentEncoder.slice_content_encoder",
    "GRContentEncoder.pad_content_encoder",
    "GRContentEncoder.mlp_content_encoder",
    "GRMLPContentEncoder.uih_mlp",
    "GRMLPContentEncoder.target_mlp",
    "GROutputPostprocessor.l2norm_postprocessor",
    "GROutputPostprocessor.layernorm_postprocessor",
    "GROutputPostprocessor.timestamp_layernorm_postprocessor",
    "GRTimestampLayerNormPostprocessor.time_duration_period_units",
    "GRTimestampLayerNormPostprocessor.time_duration_units_per_period",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """HSTU model, STU and pre/postprocessor fields (:data:`SUPPORTED_FIELDS`)."""
    declare(*SUPPORTED_FIELDS)
