"""tzrec-rank's plugin: classic ranking models by ``ModelConfig`` oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

#: Feature-interaction models (FM, cross, CIN, dot interactions).
_INTERACTION_MODELS: dict[str, str] = {}

#: Gated / layered models (mask blocks, WuKong layers, light-heavy co-training).
_GATED_MODELS: dict[str, str] = {}


@hookimpl
def register_models(register: Register) -> None:
    """Every model of this distribution (:data:`_INTERACTION_MODELS`, :data:`_GATED_MODELS`)."""
    for name, target in {**_INTERACTION_MODELS, **_GATED_MODELS}.items():
        register(name, target)


#: Config fields tzrec-rank reads and honours, per model family. Add a field in the commit
#: that implements it; a set field that no package declares is refused at validation.
_INTERACTION_FIELDS: tuple[str, ...] = ()
_GATED_FIELDS: tuple[str, ...] = ()
SUPPORTED_FIELDS = _INTERACTION_FIELDS + _GATED_FIELDS


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The fields of :data:`SUPPORTED_FIELDS`."""
    declare(*SUPPORTED_FIELDS)
