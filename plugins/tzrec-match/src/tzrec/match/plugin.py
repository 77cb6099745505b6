"""tzrec-match's plugin: match (retrieval) models by config oneof name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_MODELS: dict[str, str] = {
    "dssm_v2": "tzrec.match.dssm_v2:DSSMV2",
    "dat": "tzrec.match.dat:DAT",
    "mind": "tzrec.match.mind:MIND",
}


@hookimpl
def register_models(register: Register) -> None:
    """Models by ``ModelConfig`` oneof name (:data:`_MODELS`)."""
    for name, target in _MODELS.items():
        register(name, target)


#: Config fields tzrec-match reads and honours. Add a field here in the commit that implements
#: it; a set field that no package declares is refused at validation.
SUPPORTED_FIELDS: tuple[str, ...] = (
    "ModelConfig.dssm_v2",
    "ModelConfig.dat",
    "ModelConfig.mind",
    # DSSMv2 (tzrec.match.dssm_v2): towers over one shared embedding group
    "DSSMV2.user_tower",
    "DSSMV2.item_tower",
    "DSSMV2.output_dim",
    "DSSMV2.similarity",
    "DSSMV2.temperature",
    "DSSMV2.in_batch_negative",
    # DAT (tzrec.match.dat): augmented vectors and the AMM losses
    "DAT.user_tower",
    "DAT.item_tower",
    "DAT.output_dim",
    "DAT.similarity",
    "DAT.temperature",
    "DAT.in_batch_negative",
    "DAT.amm_i_weight",
    "DAT.amm_u_weight",
    "DATTower.input",
    "DATTower.augment_input",
    "DATTower.mlp",
    # MIND (tzrec.match.mind, tzrec.models.modules.capsule)
    "MIND.user_tower",
    "MIND.item_tower",
    "MIND.simi_pow",
    "MIND.similarity",
    "MIND.in_batch_negative",
    "MIND.temperature",
    "MIND.output_dim",
    "MINDUserTower.input",
    "MINDUserTower.history_input",
    "MINDUserTower.user_mlp",
    "MINDUserTower.hist_seq_mlp",
    "MINDUserTower.user_seq_combine",
    "MINDUserTower.capsule_config",
    "MINDUserTower.concat_mlp",
    "B2ICapsule.max_k>0",
    "B2ICapsule.max_seq_len>0",
    "B2ICapsule.high_dim>0",
    "B2ICapsule.num_iters>0",
    "B2ICapsule.routing_logits_scale",
    "B2ICapsule.routing_logits_stddev",
    "B2ICapsule.squash_pow",
    "B2ICapsule.const_caps_num",
    "B2ICapsule.routing_init_method",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The fields of :data:`SUPPORTED_FIELDS`."""
    declare(*SUPPORTED_FIELDS)
