"""``tzrec export`` / ``tzrec predict`` with TorchEasyRec's flags.

The export and predict engines land with the Export issue; until then both commands check
their inputs and say clearly that the engine is not built yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tzrec.core.commands import Command, add_pipeline_config_arg
from tzrec.core.errors import ConfigError, NotBuiltError

EXPORT_PENDING = (
    "the export engine is not built yet (it lands with the 'Export, predict and "
    "retrieval evaluation' issue)"
)


def export_model(pipeline_config: Any, model_dir: str, export_dir: str, **_: Any) -> None:
    """Export a trained model to ``export_dir`` (the ``default`` exporter)."""
    raise NotBuiltError(EXPORT_PENDING)


class ExportCommand(Command):
    """``tzrec export``: write TorchScript/AOT artefacts for serving."""

    help = "export a trained model for serving"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """TorchEasyRec ``export`` flags."""
        add_pipeline_config_arg(parser, required=True)
        parser.add_argument("--checkpoint_path", default=None, help="default: latest")
        parser.add_argument("--export_dir", required=True, help="output directory")
        parser.add_argument("--asset_files", default=None, help="files to copy along")
        parser.add_argument(
            "--item_input_path",
            default=None,
            help="one-row-per-item input for exporting a match model's item tower",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing export_dir"
        )

    def run(self, args: argparse.Namespace) -> int:
        """Check the destination, then export."""
        if Path(args.export_dir).exists() and not args.overwrite:
            raise ConfigError(
                f"--export_dir {args.export_dir} already exists; pass --overwrite to replace it"
            )
        raise NotBuiltError(EXPORT_PENDING)


class PredictCommand(Command):
    """``tzrec predict``: batch prediction with an exported model."""

    help = "batch-predict with an exported model"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """TorchEasyRec ``predict`` flags."""
        parser.add_argument(
            "--scripted_model_path", default=None, help="exported model directory to serve"
        )
        add_pipeline_config_arg(parser, required=False)
        parser.add_argument(
            "--checkpoint_path", default=None, help="predict from a checkpoint instead"
        )
        parser.add_argument("--predict_input_path", required=True, help="parquet/csv input")
        parser.add_argument("--predict_output_path", required=True, help="parquet output")
        parser.add_argument(
            "--reserved_columns", default=None, help="input columns copied to the output"
        )
        parser.add_argument("--output_columns", default=None, help="model outputs to write")
        parser.add_argument("--batch_size", type=int, default=None, help="rows per batch")
        parser.add_argument("--predict_threads", type=int, default=None, help="reader workers")
        parser.add_argument("--is_profiling", action="store_true", help="profile prediction")
        parser.add_argument("--debug_level", type=int, default=0, help="extra debug output")
        parser.add_argument(
            "--dataset_type", default=None, help="override data_config.dataset_type"
        )
        parser.add_argument("--writer_type", default=None, help="output writer")
        parser.add_argument(
            "--predict_steps", type=int, default=None, help="stop after this many batches"
        )

    def run(self, args: argparse.Namespace) -> int:
        """Predict."""
        raise NotBuiltError(EXPORT_PENDING.replace("export engine", "predict engine"))
