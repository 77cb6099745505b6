from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FaissKmeansConfig(_message.Message):
    __slots__ = ("niter", "nredo", "seed", "max_points_per_centroid", "min_points_per_centroid", "spherical", "verbose")
    NITER_FIELD_NUMBER: _ClassVar[int]
    NREDO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_PER_CENTROID_FIELD_NUMBER: _ClassVar[int]
    MIN_POINTS_PER_CENTROID_FIELD_NUMBER: _ClassVar[int]
    SPHERICAL_FIELD_NUMBER: _ClassVar[int]
    VERBOSE_FIELD_NUMBER: _ClassVar[int]
    niter: int
    nredo: int
    seed: int
    max_points_per_centroid: int
    min_points_per_centroid: int
    spherical: bool
    verbose: bool
    def __init__(self, niter: _Optional[int] = ..., nredo: _Optional[int] = ..., seed: _Optional[int] = ..., max_points_per_centroid: _Optional[int] = ..., min_points_per_centroid: _Optional[int] = ..., spherical: _Optional[bool] = ..., verbose: _Optional[bool] = ...) -> None: ...

class SinkhornConfig(_message.Message):
    __slots__ = ("iters", "epsilon", "enabled")
    ITERS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    iters: int
    epsilon: float
    enabled: bool
    def __init__(self, iters: _Optional[int] = ..., epsilon: _Optional[float] = ..., enabled: _Optional[bool] = ...) -> None: ...

class ContrastiveConfig(_message.Message):
    __slots__ = ("pair_feature_group", "pair_flag_feature_group")
    PAIR_FEATURE_GROUP_FIELD_NUMBER: _ClassVar[int]
    PAIR_FLAG_FEATURE_GROUP_FIELD_NUMBER: _ClassVar[int]
    pair_feature_group: str
    pair_flag_feature_group: str
    def __init__(self, pair_feature_group: _Optional[str] = ..., pair_flag_feature_group: _Optional[str] = ...) -> None: ...

class SidCandidateOutputConfig(_message.Message):
    __slots__ = ("enabled", "topk", "strategy")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TOPK_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    topk: int
    strategy: str
    def __init__(self, enabled: _Optional[bool] = ..., topk: _Optional[int] = ..., strategy: _Optional[str] = ...) -> None: ...

class SidRqvae(_message.Message):
    __slots__ = ("embed_dim", "hidden_dims", "codebook", "forward_mode", "normalize_residuals", "distance_type", "rotation_trick", "kmeans_init", "sinkhorn_config", "contrastive_config", "candidate_output_config")
    EMBED_DIM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_DIMS_FIELD_NUMBER: _ClassVar[int]
    CODEBOOK_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MODE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROTATION_TRICK_FIELD_NUMBER: _ClassVar[int]
    KMEANS_INIT_FIELD_NUMBER: _ClassVar[int]
    SINKHORN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTRASTIVE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_OUTPUT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    embed_dim: int
    hidden_dims: _containers.RepeatedScalarFieldContainer[int]
    codebook: _containers.RepeatedScalarFieldContainer[int]
    forward_mode: str
    normalize_residuals: bool
    distance_type: str
    rotation_trick: bool
    kmeans_init: bool
    sinkhorn_config: SinkhornConfig
    contrastive_config: ContrastiveConfig
    candidate_output_config: SidCandidateOutputConfig
    def __init__(self, embed_dim: _Optional[int] = ..., hidden_dims: _Optional[_Iterable[int]] = ..., codebook: _Optional[_Iterable[int]] = ..., forward_mode: _Optional[str] = ..., normalize_residuals: _Optional[bool] = ..., distance_type: _Optional[str] = ..., rotation_trick: _Optional[bool] = ..., kmeans_init: _Optional[bool] = ..., sinkhorn_config: _Optional[_Union[SinkhornConfig, _Mapping]] = ..., contrastive_config: _Optional[_Union[ContrastiveConfig, _Mapping]] = ..., candidate_output_config: _Optional[_Union[SidCandidateOutputConfig, _Mapping]] = ...) -> None: ...

class SidRqkmeans(_message.Message):
    __slots__ = ("codebook", "normalize_residuals", "faiss_kmeans_kwargs", "train_sample_size", "candidate_output_config")
    CODEBOOK_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    FAISS_KMEANS_KWARGS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_OUTPUT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    codebook: _containers.RepeatedScalarFieldContainer[int]
    normalize_residuals: bool
    faiss_kmeans_kwargs: FaissKmeansConfig
    train_sample_size: int
    candidate_output_config: SidCandidateOutputConfig
    def __init__(self, codebook: _Optional[_Iterable[int]] = ..., normalize_residuals: _Optional[bool] = ..., faiss_kmeans_kwargs: _Optional[_Union[FaissKmeansConfig, _Mapping]] = ..., train_sample_size: _Optional[int] = ..., candidate_output_config: _Optional[_Union[SidCandidateOutputConfig, _Mapping]] = ...) -> None: ...
