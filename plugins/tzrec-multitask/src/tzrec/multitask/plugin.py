"""tzrec-multitask's plugin: multi-task ranking models by config oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_MODELS: dict[str, str] = {}


@hookimpl
def register_models(register: Register) -> None:
    """Models by ``ModelConfig`` oneof name (:data:`_MODELS`)."""
    for name, target in _MODELS.items():
        register(name, target)


#: Config fields tzrec-multitask reads and honours. Add a field here in the commit that implements
#: it; a set field that no package declares is refused at validation.
SUPPORTED_FIELDS: tuple[str, ...] = ()


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The fields of :data:`SUPPORTED_FIELDS`."""
    declare(*SUPPORTED_FIELDS)
