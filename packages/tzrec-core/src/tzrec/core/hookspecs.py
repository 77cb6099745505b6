"""The whole plugin contract of tzrec: one hook per kind of thing a plugin can add.

Every hook receives a ``register(name, obj)`` callback. ``name`` is the name a pipeline
config uses for the thing (for models, samplers, preprocessors, postprocessors and sequence
encoders: the field name inside the config's ``oneof``, e.g. ``hstu_match``), so resolving a
config to an implementation is one lookup. ``obj`` is the implementation itself or a lazy
reference ``"package.module:Attribute"`` that tzrec imports only when the name is used, which
keeps ``tzrec plugins`` and ``--help`` fast.

A plugin is a module with functions decorated by :data:`hookimpl` and is found through the
``tzrec`` entry-point group (``[project.entry-points.tzrec] my_plugin = "my_pkg.plugin"``).
Hooks that only matter to one plugin's family live in that plugin: its module exposes
``HOOKSPECS`` (a class of :data:`hookspec` functions) and tzrec adds them with pluggy's
``add_hookspecs`` -- tzrec-hstu defines ``register_input_preprocessors`` and
``register_output_postprocessors`` that way.
"""

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("tzrec")
hookimpl = pluggy.HookimplMarker("tzrec")

Register = Callable[[str, Any], None]


@hookspec
def register_models(register: Register) -> None:
    """Register model classes by their ``ModelConfig`` oneof name (``dssm``, ``hstu_match``).

    ``obj`` is a ``torch.nn.Module`` subclass constructed as
    ``cls(model_config, features, labels, sample_weights=...)``.
    """


@hookspec
def register_samplers(register: Register) -> None:
    """Register negative samplers by their ``DataConfig`` sampler oneof name.

    ``obj`` is a class constructed as ``cls(sampler_config, input_fields, batch_size,
    is_training=True, multival_sep=<data_config.fg_encoded_multival_sep>, seed=0)``
    where ``input_fields`` are the ``pyarrow.Field`` s of the input;
    ``get(inputs, num_sample=None, exact=False)`` returns the sampled items' attribute
    columns as ``dict[str, pyarrow.Array]``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset readers by their ``DatasetType`` enum name (``ParquetDataset``).

    ``obj`` is an iterable dataset class constructed as ``cls(data_config, features,
    input_path, mode="train"|"eval"|"predict", reserved_columns=None, on_bad_row=None,
    rank=None, world_size=None, batch_size=None, seed=0)`` yielding ``tzrec.data.Batch``.
    """


@hookspec
def register_sequence_encoders(register: Register) -> None:
    """Register sequence encoders by their ``SeqEncoderConfig`` oneof name (``din_encoder``).

    ``obj`` is a ``torch.nn.Module`` subclass constructed from its config message.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register losses by their ``LossConfig`` oneof name (``softmax_cross_entropy``).

    ``obj`` is a callable or module class built from the loss config message.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics by their ``MetricConfig`` oneof name (``recall_at_k``, ``auc``).

    ``obj`` is a metric class built from the metric config message.
    """


@hookspec
def register_exporters(register: Register) -> None:
    """Register model exporters by model kind (``match``, ``rank``) or ``default``.

    ``obj`` is a callable ``export(pipeline_config, model_dir, export_dir, **options)``
    used by ``tzrec export`` and by the export step of ``tzrec run``.
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluations of an exported model that ``tzrec run`` adds to its summary.

    ``obj`` is a callable ``evaluate(pipeline_config, export_dir, top_k: list[int])`` that
    returns ``{"metrics": {name: value}, "baselines": {name: random value}, "about": str}``,
    or None when the config gives it nothing to evaluate (``retrieval``: full-corpus
    HitRate@K of a match model's towers over the item table, from tzrec-export).
    """


@hookspec
def register_examples(register: Register) -> None:
    """Register runnable built-in examples; ``default`` is what a bare ``tzrec run`` runs.

    ``obj`` is a callable ``make(work_dir: pathlib.Path) -> pathlib.Path`` that writes the
    example's data and pipeline config under ``work_dir`` and returns the config's path.
    """


@hookspec
def register_commands(register: Register) -> None:
    """Register ``tzrec`` subcommands by name.

    ``obj`` is a :class:`tzrec.core.commands.Command` subclass or instance (or a lazy
    reference to one): it has a ``help`` line, ``add_arguments(parser)`` and
    ``run(args) -> int``.
    """


#: ``declare(*names)``: names of config fields a plugin honours (see register_supported_fields).
Declare = Callable[..., None]


@hookspec
def register_supported_fields(declare: Declare) -> None:
    """Declare the pipeline-config fields this plugin reads and honours.

    ``declare("TrainConfig.num_steps", "DataConfig.batch_size>0", ...)``: each name is
    ``<Message>.<field>`` (package ``tzrec.protos`` implied, else the full proto name, e.g.
    an extension ``my_pkg.my_model`` or ``my_pkg.MyModelConfig.hidden_units``);
    ``<Message>.*`` declares every field of a message whose fields the code reads generically;
    a ``>0`` suffix also requires a set value (each element, if repeated) to be positive.
    A set field that no installed plugin declares is refused when a config is validated
    (``--allow_unsupported_fields`` makes that a warning), so declare a field in the same
    commit that implements it, and never one that is parsed but not read.
    """
