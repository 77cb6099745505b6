"""tzrec-multitask's plugin: multi-task ranking models by config oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_MODELS: dict[str, str] = {
    "simple_multi_task": "tzrec.multitask.mmoe:SimpleMultiTask",
    "mmoe": "tzrec.multitask.mmoe:MMoE",
    "ple": "tzrec.multitask.mmoe:PLE",
    "dbmtl": "tzrec.multitask.dbmtl:DBMTL",
    "dc2vr": "tzrec.multitask.dbmtl:DC2VR",
    "pepnet": "tzrec.multitask.pepnet:PEPNet",
}


@hookimpl
def register_models(register: Register) -> None:
    """Models by ``ModelConfig`` oneof name (:data:`_MODELS`)."""
    for name, target in _MODELS.items():
        register(name, target)


def _task_fields(message: str) -> tuple[str, ...]:
    """The task-tower fields :class:`~tzrec.models.multi_task.MultiTaskRank` honours."""
    fields = (
        "tower_name",
        "label_name",
        "metrics",
        "train_metrics",
        "losses",
        "num_class>0",
        "mlp",
        "weight",
        "task_space_indicator_label",
        "in_task_space_weight",
        "out_task_space_weight",
    )
    if message != "InterventionTaskTower":
        fields += ("sample_weight_name",)
    return tuple(f"{message}.{f}" for f in fields)


#: Config fields tzrec-multitask reads and honours. Add a field here in the commit that implements
#: it; a set field that no package declares is refused at validation. Not declared (refused):
#: ``ModelConfig.use_pareto_loss_weight`` and the towers' ``pareto_min_loss_weight``.
SUPPORTED_FIELDS: tuple[str, ...] = (
    "ModelConfig.simple_multi_task",
    "ModelConfig.mmoe",
    "ModelConfig.ple",
    "ModelConfig.dbmtl",
    "ModelConfig.dc2vr",
    "ModelConfig.pepnet",
    *_task_fields("TaskTower"),
    *_task_fields("BayesTaskTower"),
    "BayesTaskTower.relation_tower_names",
    "BayesTaskTower.relation_mlp",
    *_task_fields("InterventionTaskTower"),
    "InterventionTaskTower.intervention_tower_names",
    "InterventionTaskTower.low_rank_dim>0",
    "InterventionTaskTower.dropout_ratio",
    "SimpleMultiTask.task_towers",
    "MMoE.expert_mlp",
    "MMoE.gate_mlp",
    "MMoE.num_expert>0",
    "MMoE.task_towers",
    "PLE.extraction_networks",
    "PLE.task_towers",
    "ExtractionNetwork.network_name",
    "ExtractionNetwork.expert_num_per_task>0",
    "ExtractionNetwork.share_num",
    "ExtractionNetwork.task_expert_net",
    "ExtractionNetwork.share_expert_net",
    "DBMTL.mask_net",
    "DBMTL.bottom_mlp",
    "DBMTL.expert_mlp",
    "DBMTL.gate_mlp",
    "DBMTL.num_expert>0",
    "DBMTL.task_towers",
    # DBMTL's mask_net bottom (tzrec.models.modules.mask_net, shared with MaskNet)
    "MaskNetModule.n_mask_blocks>0",
    "MaskNetModule.mask_block",
    "MaskNetModule.top_mlp",
    "MaskNetModule.use_parallel",
    "MaskBlock.reduction_ratio",
    "MaskBlock.aggregation_dim",
    "MaskBlock.hidden_dim>0",
    "DC2VR.bottom_mlp",
    "DC2VR.expert_mlp",
    "DC2VR.gate_mlp",
    "DC2VR.num_expert>0",
    "DC2VR.task_towers",
    "PEPNet.epnet_hidden_unit>0",
    "PEPNet.epnet_gamma",
    "PEPNet.ppnet_hidden_units>0",
    "PEPNet.ppnet_activation",
    "PEPNet.ppnet_dropout_ratio",
    "PEPNet.ppnet_gamma",
    "PEPNet.domain_input_name",
    "PEPNet.task_domain_num>0",
    "PEPNet.task_towers",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The fields of :data:`SUPPORTED_FIELDS`."""
    declare(*SUPPORTED_FIELDS)
