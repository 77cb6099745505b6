"""tzrec-data's plugin: dataset readers and negative samplers by config name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl


@hookimpl
def register_datasets(register: Register) -> None:
    """Readers by ``DatasetType`` name."""
    register("ParquetDataset", "tzrec.data.readers.parquet:ParquetDataset")
    register("CsvDataset", "tzrec.data.readers.csv:CsvDataset")


@hookimpl
def register_samplers(register: Register) -> None:
    """Negative samplers by ``DataConfig`` sampler oneof name."""
    register("negative_sampler", "tzrec.data.samplers.negative:NegativeSampler")
    register("negative_sampler_v2", "tzrec.data.samplers.negative:NegativeSamplerV2")
    register("hard_negative_sampler", "tzrec.data.samplers.negative:HardNegativeSampler")
    register("hard_negative_sampler_v2", "tzrec.data.samplers.negative:HardNegativeSamplerV2")


@hookimpl
def register_commands(register: Register) -> None:
    """``tzrec synth-data`` (data of a config's columns), ``tzrec create-fg-json`` (fg.json)."""
    register("synth-data", "tzrec.data.synth_command:SynthDataCommand")
    register("create-fg-json", "tzrec.data.fg.fg_json_command:CreateFgJsonCommand")


#: Config fields tzrec-data reads and honours (readers, features, samplers). Add a field here
#: in the commit that implements it; a set field that no package declares is refused.
SUPPORTED_FIELDS = (
    "DataConfig.batch_size>0",
    "DataConfig.eval_batch_size>0",
    "DataConfig.dataset_type",
    "DataConfig.label_fields",
    "DataConfig.sample_weight_fields",
    "DataConfig.num_workers",
    "DataConfig.pin_memory",
    "DataConfig.in_order",
    "DataConfig.drop_remainder",
    "DataConfig.shuffle",
    "DataConfig.shuffle_buffer_size>0",
    "DataConfig.input_fields",
    "DataConfig.delimiter",
    "DataConfig.with_header",
    "DataConfig.fg_encoded_multival_sep",
    # one row count for every data group: already so without appended negatives (refused
    # with them), see readers.base.check_force_base_data_group
    "DataConfig.force_base_data_group",
    # fg settings: mapped onto column reading (FG_NONE) with a warning, as documented
    "DataConfig.fg_encoded",
    "DataConfig.fg_mode",
    "DataConfig.negative_sampler",
    "DataConfig.negative_sampler_v2",
    "DataConfig.hard_negative_sampler",
    "DataConfig.hard_negative_sampler_v2",
    "Field.input_name",
    "Field.input_type",
    "NegativeSampler.input_path",
    "NegativeSampler.num_sample>0",
    "NegativeSampler.num_eval_sample>0",
    "NegativeSampler.attr_fields",
    "NegativeSampler.item_id_field",
    "NegativeSampler.attr_delimiter",
    "NegativeSampler.field_delimiter",
    "NegativeSampler.item_id_delim",
    "NegativeSamplerV2.user_input_path",
    "NegativeSamplerV2.item_input_path",
    "NegativeSamplerV2.pos_edge_input_path",
    "NegativeSamplerV2.num_sample>0",
    "NegativeSamplerV2.num_eval_sample>0",
    "NegativeSamplerV2.attr_fields",
    "NegativeSamplerV2.item_id_field",
    "NegativeSamplerV2.user_id_field",
    "NegativeSamplerV2.attr_delimiter",
    "NegativeSamplerV2.field_delimiter",
    "HardNegativeSampler.user_input_path",
    "HardNegativeSampler.item_input_path",
    "HardNegativeSampler.hard_neg_edge_input_path",
    "HardNegativeSampler.num_sample>0",
    "HardNegativeSampler.num_hard_sample>0",
    "HardNegativeSampler.num_eval_sample>0",
    "HardNegativeSampler.attr_fields",
    "HardNegativeSampler.item_id_field",
    "HardNegativeSampler.user_id_field",
    "HardNegativeSampler.attr_delimiter",
    "HardNegativeSampler.field_delimiter",
    "HardNegativeSamplerV2.user_input_path",
    "HardNegativeSamplerV2.item_input_path",
    "HardNegativeSamplerV2.pos_edge_input_path",
    "HardNegativeSamplerV2.hard_neg_edge_input_path",
    "HardNegativeSamplerV2.num_sample>0",
    "HardNegativeSamplerV2.num_hard_sample>0",
    "HardNegativeSamplerV2.num_eval_sample>0",
    "HardNegativeSamplerV2.attr_fields",
    "HardNegativeSamplerV2.item_id_field",
    "HardNegativeSamplerV2.user_id_field",
    "HardNegativeSamplerV2.attr_delimiter",
    "HardNegativeSamplerV2.field_delimiter",
    # features
    "FeatureConfig.id_feature",
    "FeatureConfig.raw_feature",
    "FeatureConfig.sequence_feature",
    "FeatureConfig.sequence_id_feature",
    "FeatureConfig.sequence_raw_feature",
    "IdFeature.feature_name",
    "IdFeature.expression",
    "IdFeature.embedding_name",
    "IdFeature.embedding_dim>0",
    "IdFeature.hash_bucket_size>0",
    "IdFeature.num_buckets>0",
    "IdFeature.vocab_list",
    "IdFeature.vocab_dict",
    "IdFeature.value_dim",
    "IdFeature.pooling",
    "IdFeature.default_value",
    "IdFeature.fg_encoded_default_value",
    "IdFeature.default_bucketize_value",
    "IdFeature.weighted",
    "IdFeature.separator",
    "IdFeature.sequence_length>0",
    "IdFeature.sequence_delim",
    "RawFeature.feature_name",
    "RawFeature.expression",
    "RawFeature.embedding_name",
    "RawFeature.embedding_dim>0",
    "RawFeature.boundaries",
    "RawFeature.value_dim",
    "RawFeature.normalizer",
    "RawFeature.separator",
    "RawFeature.pooling",
    "RawFeature.default_value",
    "RawFeature.fg_encoded_default_value",
    "RawFeature.sequence_length>0",
    "RawFeature.sequence_delim",
    "SequenceFeature.sequence_name",
    "SequenceFeature.sequence_length>0",
    "SequenceFeature.sequence_delim",
    "SequenceFeature.features",
    "SeqFeatureConfig.id_feature",
    "SeqFeatureConfig.raw_feature",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """Reader, feature and sampler fields (:data:`SUPPORTED_FIELDS`)."""
    declare(*SUPPORTED_FIELDS)
