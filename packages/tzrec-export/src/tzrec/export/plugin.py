"""tzrec-export's plugin: the ``export`` and ``predict`` commands and the exporter."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_COMMANDS = "tzrec.export.commands"


@hookimpl
def register_commands(register: Register) -> None:
    """``tzrec export``, ``predict``, ``eval-retrieval``, ``hitrate``, ``create-faiss-index``."""
    register("export", f"{_COMMANDS}:ExportCommand")
    register("predict", f"{_COMMANDS}:PredictCommand")
    register("eval-retrieval", f"{_COMMANDS}:EvalRetrievalCommand")
    register("hitrate", f"{_COMMANDS}:HitrateCommand")
    register("create-faiss-index", f"{_COMMANDS}:CreateFaissIndexCommand")


@hookimpl
def register_exporters(register: Register) -> None:
    """The exporter ``tzrec run`` calls after training."""
    register("default", f"{_COMMANDS}:export_model")


@hookimpl
def register_evaluators(register: Register) -> None:
    """``retrieval``: the full-corpus HitRate@K ``tzrec run`` prints beside sampled recall."""
    register("retrieval", "tzrec.export.retrieval:evaluate_full_corpus")


#: Config fields tzrec-export reads and honours. Add a field here in the commit that
#: implements it; a set field that no package declares is refused at validation.
SUPPORTED_FIELDS = (
    "EasyRecConfig.export_config",
    "ExportConfig.exporter_type",
    "ExportConfig.best_exporter_metric",
    "ExportConfig.metric_larger_is_better",
    # the dense part under torch.autocast (BF16/FP16), checked against eager under it
    "ExportConfig.mixed_precision",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """Export fields (:data:`SUPPORTED_FIELDS`)."""
    declare(*SUPPORTED_FIELDS)
