"""tzrec-tdm's plugin: TDM (model, tree sampler, tree tools) by config oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_MODELS: dict[str, str] = {"tdm": "tzrec.tdm.model:TDM"}

_SAMPLERS: dict[str, str] = {"tdm_sampler": "tzrec.tdm.sampler:TDMSampler"}

_COMMANDS: dict[str, str] = {
    "tdm-init-tree": "tzrec.tdm.commands:InitTreeCommand",
    "tdm-cluster-tree": "tzrec.tdm.commands:ClusterTreeCommand",
    "tdm-retrieval": "tzrec.tdm.commands:RetrievalCommand",
}


@hookimpl
def register_models(register: Register) -> None:
    """Models by ``ModelConfig`` oneof name (:data:`_MODELS`)."""
    for name, target in _MODELS.items():
        register(name, target)


@hookimpl
def register_samplers(register: Register) -> None:
    """Samplers by ``DataConfig`` sampler oneof name (:data:`_SAMPLERS`)."""
    for name, target in _SAMPLERS.items():
        register(name, target)


@hookimpl
def register_commands(register: Register) -> None:
    """The tree tools and retrieval (:data:`_COMMANDS`)."""
    for name, target in _COMMANDS.items():
        register(name, target)


#: Config fields tzrec-tdm reads and honours. Add a field here in the commit that implements
#: it; a set field that no package declares is refused at validation.
SUPPORTED_FIELDS: tuple[str, ...] = (
    "ModelConfig.tdm",
    "TDM.multiwindow_din",
    "TDM.final",
    "MultiWindowDINTower.windows_len",
    "MultiWindowDINTower.attn_mlp",
    "DataConfig.tdm_sampler",
    "TDMSampler.item_input_path",
    "TDMSampler.edge_input_path",
    "TDMSampler.predict_edge_input_path",
    "TDMSampler.attr_fields",
    "TDMSampler.item_id_field",
    "TDMSampler.layer_num_sample",
    "TDMSampler.attr_delimiter",
    "TDMSampler.field_delimiter",
    "TDMSampler.remain_ratio",
    "TDMSampler.probability_type",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The fields of :data:`SUPPORTED_FIELDS`."""
    declare(*SUPPORTED_FIELDS)
