"""tzrec-hstu's plugin: HSTU models, preprocessors, postprocessors and the default example."""

from tzrec.core.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    """``hstu_match`` (generative retrieval)."""
    register("hstu_match", "tzrec.hstu.hstu_match:HSTUMatch")


@hookimpl
def register_input_preprocessors(register: Register) -> None:
    """``uih_preprocessor``: user-interaction-history tokens for retrieval."""
    register("uih_preprocessor", "tzrec.hstu.preprocessors:UIHPreprocessor")


@hookimpl
def register_output_postprocessors(register: Register) -> None:
    """``l2norm_postprocessor`` and ``layernorm_postprocessor``."""
    register("l2norm_postprocessor", "tzrec.hstu.postprocessors:L2NormPostprocessor")
    register("layernorm_postprocessor", "tzrec.hstu.postprocessors:LayerNormPostprocessor")


@hookimpl
def register_examples(register: Register) -> None:
    """``default``: HSTUMatch on synthetic KuaiRand-shaped data (what a bare ``tzrec run`` runs)."""
    register("default", "tzrec.hstu.examples:make")
