"""tzrec-hstu's plugin: HSTU models, preprocessors, postprocessors and the default example."""

from tzrec.core.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    """``hstu_match`` (generative retrieval) and ``dlrm_hstu`` (multi-task ranking)."""
    register("hstu_match", "tzrec.hstu.hstu_match:HSTUMatch")
    register("dlrm_hstu", "tzrec.hstu.dlrm_hstu:DlrmHSTU")


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
