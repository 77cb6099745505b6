"""The subcommands tzrec-core itself provides: ``plugins``, ``train``, ``eval``, ``run``.

``export`` and ``predict`` come from tzrec-export through the same hook; core reaches the
exporter of ``tzrec run`` only through the ``exporters`` registry.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
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
    """The config's model name and the class an installed plugin registers for it."""
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
            default=None,
            help="where a built-in example writes its data, config and model",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Resolve the config (or make the example), check the exporter, then train."""
        if not args.pipeline_config_path:
            examples = plugins.get_plugin_manager().registry("examples")
            if args.example not in examples:
                installed = ", ".join(sorted(examples)) or "none"
                raise PluginError(
                    f"no --pipeline_config_path given and no installed plugin provides "
                    f"the built-in example '{args.example}' (installed examples: "
                    f"{installed})"
                )
            work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="tzrec_run_"))
            print(f"tzrec run: built-in example '{args.example}' in {work_dir}")
            args.pipeline_config_path = str(examples[args.example].load()(work_dir))
            print(f"tzrec run: pipeline config {args.pipeline_config_path}")
        config = load_for_command(args)
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
        return 0


def _is_rank_zero() -> bool:
    from tzrec.core.engine.ranks import is_rank_zero  # lazy: keeps `tzrec --help` fast

    return is_rank_zero()


def _metrics_line(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items()) or "(no metrics configured)"


def _train(config: pipeline_pb2.EasyRecConfig, args: argparse.Namespace) -> dict:
    from tzrec.core.engine.loop import train_and_evaluate

    return train_and_evaluate(
        config,
        continue_train=args.continue_train,
        fine_tune_checkpoint=args.fine_tune_checkpoint,
        ignore_restore_optimizer=args.ignore_restore_optimizer,
    )


def _print_train_result(result: dict) -> None:
    if not _is_rank_zero():
        return
    data = result.get("data") or {}
    skipped = data.get("rows_skipped", 0)
    print(
        f"tzrec train: {result['global_step']} steps ({result['steps_per_second']:.1f} steps/s), "
        f"checkpoint {result['checkpoint']}" + (f", {skipped} bad rows skipped" if skipped else "")
    )
    print(f"tzrec train: eval {_metrics_line(result['metrics'])}")
    print(f"tzrec train: metrics log {Path(result['model_dir']) / 'train_eval_result.txt'}")
