"""The subcommands tzrec-core itself provides: ``plugins``, ``train``, ``eval``, ``run``.

``export`` and ``predict`` come from tzrec-export through the same hook; core reaches the
exporter of ``tzrec run`` only through the ``exporters`` registry.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tzrec.core import plugins
from tzrec.core.commands import (
    Command,
    add_pipeline_config_arg,
    parse_edit_config_json,
)
from tzrec.core.config import (
    load_pipeline_config,
    validate_pipeline_config,
    which_oneof,
)
from tzrec.core.errors import PluginError
from tzrec.protos import pipeline_pb2

logger = logging.getLogger(__name__)


class PluginsCommand(Command):
    """``tzrec plugins``: what is installed and what each plugin registers."""

    help = "list installed plugins and what they register"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add ``--json`` and ``--proto-path``."""
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument(
            "--proto-path",
            action="store_true",
            help="print the protoc include directory holding tzrec/protos/*.proto",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Print the plugin table (or JSON, or the proto include path)."""
        if args.proto_path:
            from tzrec.core.schema import proto_include_dir

            print(proto_include_dir())
            return 0
        rows = plugins.get_plugin_manager().describe()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            print(f"{row['name']} ({row['distribution']} {row['version']})")
            for kind, names in row["registers"].items():
                print(f"  {kind}: {', '.join(names)}")
        return 0


def resolve_model(config: pipeline_pb2.EasyRecConfig) -> tuple[str, object]:
    """The config's model name and the class an installed plugin registers for it.

    A model no installed plugin provides is reported before ``tzrec.core.build`` (torch) is
    imported, like every other config error.
    """
    from tzrec.core.config import provided_by

    mc = config.model_config
    chosen = which_oneof(mc, "model")
    if chosen is not None and chosen[0] not in plugins.get_plugin_manager().registry("models"):
        plugins.get("models", chosen[0], provided_by(mc, chosen[0]))  # raises PluginError
    from tzrec.core.build import model_class

    return model_class(config)


def load_for_command(
    args: argparse.Namespace, require_input_paths: bool = True
) -> pipeline_pb2.EasyRecConfig:
    """Load, edit, override from flags and validate the pipeline config of a command."""
    config = load_pipeline_config(
        args.pipeline_config_path, edits=parse_edit_config_json(args.edit_config_json)
    )
    for flag in ("model_dir", "train_input_path", "eval_input_path"):
        value = getattr(args, flag, None)
        if value:
            setattr(config, flag, value)
    validate_pipeline_config(
        config,
        args.pipeline_config_path,
        require_input_paths=require_input_paths,
        allow_unsupported_fields=getattr(args, "allow_unsupported_fields", False) or None,
    )
    return config


def _add_train_args(parser: argparse.ArgumentParser, required: bool) -> None:
    add_pipeline_config_arg(parser, required=required)
    parser.add_argument("--model_dir", default=None, help="overrides model_dir")
    parser.add_argument("--train_input_path", default=None, help="training data")
    parser.add_argument("--eval_input_path", default=None, help="evaluation data")
    parser.add_argument(
        "--continue_train",
        action="store_true",
        help="resume model, optimizer and data position from the latest checkpoint",
    )
    parser.add_argument(
        "--fine_tune_checkpoint", default=None, help="initialise from this checkpoint"
    )
    parser.add_argument(
        "--ignore_restore_optimizer",
        action="store_true",
        help="with --continue_train, restore the model but not the optimizer",
    )


class TrainCommand(Command):
    """``tzrec train``: train (with evaluation during training) from a pipeline config."""

    help = "train a model from a pipeline config"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """TorchEasyRec ``train_eval`` flags."""
        _add_train_args(parser, required=True)

    def run(self, args: argparse.Namespace) -> int:
        """Validate the config and resolve its model, then train and evaluate."""
        config = load_for_command(args)
        resolve_model(config)
        result = _train(config, args)
        _print_train_result(result)
        return 0


class EvalCommand(Command):
    """``tzrec eval``: evaluate a checkpoint on the eval input."""

    help = "evaluate a trained model"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """TorchEasyRec ``eval`` flags."""
        add_pipeline_config_arg(parser, required=True)
        parser.add_argument("--checkpoint_path", default=None, help="default: latest")
        parser.add_argument("--eval_input_path", default=None, help="evaluation data")
        parser.add_argument(
            "--eval_result_filename",
            default="eval_result.txt",
            help="metrics file written into model_dir",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Evaluate a checkpoint and append the metrics to ``eval_result_filename``."""
        config = load_for_command(args)
        resolve_model(config)
        from tzrec.core.engine.loop import evaluate  # after the config checks: torch

        result = evaluate(config, args.checkpoint_path, args.eval_result_filename)
        if _is_rank_zero():
            print(
                f"tzrec eval: {result['checkpoint']} (step {result['global_step']}): "
                f"{_metrics_line(result['metrics'])}"
            )
        return 0


class RunCommand(Command):
    """``tzrec run``: train, evaluate and export in one go (default: built-in example)."""

    help = "train, evaluate and export in one go (no config: run the built-in example)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Train flags plus export and example options."""
        _add_train_args(parser, required=False)
        parser.add_argument("--export_dir", default=None, help="default: <model_dir>/export")
        parser.add_argument(
            "--example",
            default="default",
            help="built-in example to run when no --pipeline_config_path is given",
        )
        parser.add_argument(
            "--work_dir",
            default=DEFAULT_WORK_DIR,
            help="where a built-in example writes its data, config and model (default: "
            f"./{DEFAULT_WORK_DIR}; a later run there continues from its checkpoints)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Resolve the config (or make the example), check the exporter, then train."""
        from_example = not args.pipeline_config_path
        if from_example:
            examples = plugins.get_plugin_manager().registry("examples")
            if args.example not in examples:
                installed = ", ".join(sorted(examples)) or "none"
                raise PluginError(
                    f"no --pipeline_config_path given and no installed plugin provides "
                    f"the built-in example '{args.example}' (installed examples: "
                    f"{installed})"
                )
            work_dir = Path(args.work_dir).resolve()
            print(f"tzrec run: built-in example '{args.example}' in {work_dir}")
            args.pipeline_config_path = str(examples[args.example].load()(work_dir))
            print(f"tzrec run: pipeline config {args.pipeline_config_path}")
        config = load_for_command(args)
        if from_example and not config.train_config.HasField("log_step_count_steps"):
            # a short example run: TensorBoard gets a loss point every few steps, not 1 per run
            config.train_config.log_step_count_steps = EXAMPLE_LOG_STEPS
        if from_example and not args.continue_train and _has_checkpoints(config.model_dir):
            args.continue_train = True
            print(
                f"tzrec run: {config.model_dir} holds checkpoints of an earlier run: continuing "
                "from them (delete the directory or pass another --work_dir to start afresh)"
            )
        name, model_cls = resolve_model(config)
        exporters = plugins.get_plugin_manager().registry("exporters")
        if "default" not in exporters:
            raise PluginError(
                "tzrec run exports the trained model but no exporter is installed: "
                "pip install tzrec-export"
            )
        contract = getattr(model_cls, "export_contract_error", None)
        reason = contract() if callable(contract) else None
        if reason:
            raise PluginError(
                f"tzrec run exports the trained model, but model '{name}' cannot be exported: "
                f"{reason}; use tzrec train, or implement the export contract "
                "(docs/plugins.md)"
            )
        result = _train(config, args)
        _print_train_result(result)
        export_dir = args.export_dir or str(Path(config.model_dir) / "export")
        exporters["default"].load()(config, config.model_dir, export_dir)
        if _is_rank_zero():
            print(f"tzrec run: exported to {export_dir}")
            result["full_corpus"] = _full_corpus(config, result, export_dir)
            print(run_summary(config, result, export_dir))
        return 0


def _is_rank_zero() -> bool:
    from tzrec.core.engine.ranks import is_rank_zero  # lazy: keeps `tzrec --help` fast

    return is_rank_zero()


def _metrics_line(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items()) or "(no metrics configured)"


DEFAULT_WORK_DIR = "tzrec_run"
#: ``train_config.log_step_count_steps`` of a built-in example that does not set it.
EXAMPLE_LOG_STEPS = 10


def _has_checkpoints(model_dir: str) -> bool:
    return bool(model_dir) and any(Path(model_dir).glob("model.ckpt-*"))


def sampled_candidates(config: pipeline_pb2.EasyRecConfig) -> int | None:
    """How many candidates a match model's eval recall@K ranks per request, if known.

    The positive plus the negative sampler's eval negatives: ``num_eval_sample`` (else
    ``num_sample``) shared by the batch (a candidate-sequence ``item_id_field`` too, as
    upstream's HSTUMatch scores them; hard negatives come on top); ``batch_size`` with
    in-batch negatives only. None when the layout is not one of these.
    """
    dc = config.data_config
    chosen = which_oneof(dc, "sampler")
    model = which_oneof(config.model_config, "model")
    in_batch = bool(model and getattr(model[1], "in_batch_negative", False))
    if chosen is None:
        return int(dc.batch_size) if in_batch else None
    if in_batch:
        return None
    sampler = chosen[1]
    n = int(getattr(sampler, "num_eval_sample", 0) or getattr(sampler, "num_sample", 0))
    return 1 + n if n else None


def describe_metric(name: str, value: float, candidates: int | None) -> str:
    """``recall@5 0.8812`` with what it is measured over and its random baseline."""
    line = f"{name} {value:.4f}"
    if name.startswith("recall@") and name[7:].isdigit():
        k = int(name[7:])
        if candidates:
            return (
                f"{line}  (sampled: the positive among {candidates} candidates per request, "
                f"not the full corpus; random {min(k, candidates) / candidates:.4f})"
            )
        return f"{line}  (sampled: the positive among the sampler's candidates)"
    return line


def _last_recorded_metrics(model_dir: str, step: int) -> dict[str, float]:
    """The eval metrics ``train_eval_result.txt`` holds for ``step`` (empty if none)."""
    path = Path(model_dir) / "train_eval_result.txt"
    if not path.is_file():
        return {}
    found: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("global_step") == step:
            found = {k: v for k, v in record.items() if k != "global_step"}
    return found


def _full_corpus(config: pipeline_pb2.EasyRecConfig, result: dict, export_dir: str) -> dict | None:
    """The installed ``retrieval`` evaluator's result for the recall@K values (or None)."""
    evaluators = plugins.get_plugin_manager().registry("evaluators")
    metrics = result.get("metrics") or {}
    ks = [int(k[7:]) for k in metrics if k.startswith("recall@") and k[7:].isdigit()]
    if "retrieval" not in evaluators or not ks:
        return None
    return evaluators["retrieval"].load()(config, export_dir, ks)


def run_summary(config: pipeline_pb2.EasyRecConfig, result: dict, export_dir: str) -> str:
    """The closing table of ``tzrec run``: data, steps, throughput, metrics and paths."""
    model_dir = Path(result["model_dir"])
    data = result.get("data") or {}
    trained = result.get("steps_trained")
    metrics = result.get("metrics") or _last_recorded_metrics(str(model_dir), result["global_step"])
    rows: list[tuple[str, str]] = [
        ("train data", f"{config.train_input_path} ({data.get('rows_read', '?')} rows read)"),
        ("eval data", config.eval_input_path or "(none)"),
    ]
    if trained:
        steady = result.get("steady_steps_per_second")
        speed = f"{result['steps_per_second']:.1f} steps/s" + (
            f" (steady {steady:.1f})" if steady else ""
        )
        rows.append(("steps", f"{result['global_step']} ({trained} this run, {speed})"))
    else:
        rows.append(("steps", f"{result['global_step']} (already trained: nothing to do)"))
    candidates = sampled_candidates(config)
    for i, (name, value) in enumerate(metrics.items()):
        rows.append(("metrics" if i == 0 else "", describe_metric(name, value, candidates)))
    if not metrics:
        rows.append(("metrics", "(none: no eval_input_path or no metrics configured)"))
    full = result.get("full_corpus")
    for name, value in (full or {}).get("metrics", {}).items():
        baseline = full["baselines"][name]
        rows.append(("", f"{name} {value:.4f}  ({full['about']}; random {baseline:.4f})"))
    rows += [
        ("model_dir", str(model_dir)),
        ("checkpoint", result["checkpoint"]),
        ("export", export_dir),
        ("metrics log", str(model_dir / "train_eval_result.txt")),
        ("curve", str(model_dir / "training_curve.png")),
        ("tensorboard", f"tensorboard --logdir {model_dir}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "tzrec run: summary\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _latest_checkpoint_step(model_dir: str) -> int:
    """The step of the newest ``model.ckpt-<step>`` in ``model_dir`` (0 if none)."""
    steps = [
        int(p.name.rsplit("-", 1)[1])
        for p in Path(model_dir).glob("model.ckpt-*")
        if p.name.rsplit("-", 1)[1].isdigit()
    ]
    return max(steps, default=0)


def _train(config: pipeline_pb2.EasyRecConfig, args: argparse.Namespace) -> dict:
    """Train and evaluate; the result also says how many steps this run trained."""
    from tzrec.core.engine.loop import train_and_evaluate

    start = _latest_checkpoint_step(config.model_dir) if args.continue_train else 0
    result = train_and_evaluate(
        config,
        continue_train=args.continue_train,
        fine_tune_checkpoint=args.fine_tune_checkpoint,
        ignore_restore_optimizer=args.ignore_restore_optimizer,
    )
    result.setdefault("steps_trained", max(result["global_step"] - start, 0))
    return result


def _print_train_result(result: dict) -> None:
    if not _is_rank_zero():
        return
    data = result.get("data") or {}
    skipped = data.get("rows_skipped", 0)
    trained = result["steps_trained"]
    if trained:
        print(
            f"tzrec train: {result['global_step']} steps "
            f"({result['steps_per_second']:.1f} steps/s), checkpoint {result['checkpoint']}"
            + (f", {skipped} bad rows skipped" if skipped else "")
        )
    else:
        print(
            f"tzrec train: already trained to step {result['global_step']}, nothing to train "
            f"(checkpoint {result['checkpoint']})"
        )
    metrics = result["metrics"]
    if not metrics and not trained:
        metrics = _last_recorded_metrics(result["model_dir"], result["global_step"])
        result["metrics"] = metrics
        if metrics:
            print(f"tzrec train: eval at step {result['global_step']} {_metrics_line(metrics)}")
        else:
            print(f"tzrec train: no eval result recorded for step {result['global_step']}")
    else:
        print(f"tzrec train: eval {_metrics_line(metrics)}")
    print(f"tzrec train: metrics log {Path(result['model_dir']) / 'train_eval_result.txt'}")
