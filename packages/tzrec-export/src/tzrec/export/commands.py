"""``tzrec export`` / ``tzrec predict`` / ``tzrec eval-retrieval`` with TorchEasyRec's flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tzrec.core.commands import Command, add_pipeline_config_arg
from tzrec.core.errors import ConfigError


def export_model(pipeline_config: Any, model_dir: str, export_dir: str, **kwargs: Any) -> None:
    """The ``default`` exporter (what ``tzrec run`` calls after training; replaces)."""
    from tzrec.export.exporter import export_model as _export

    kwargs.setdefault("overwrite", True)
    _export(pipeline_config, model_dir, export_dir, **kwargs)


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
        parser.add_argument(
            "--aot",
            action="store_true",
            help="torch.export the dense part (scripted_sparse_model.pt + aot_dense_model.pt2)"
            " instead of one TorchScript scripted_model.pt; also ENABLE_AOT=1",
        )
        parser.add_argument("--model_dir", default=None, help="overrides model_dir")

    def run(self, args: argparse.Namespace) -> int:
        """Check the destination, load the checkpoint, export and check each artefact."""
        import os

        from tzrec.core.builtin_commands import load_for_command

        if Path(args.export_dir).exists() and not args.overwrite:
            raise ConfigError(
                f"--export_dir {args.export_dir} already exists; pass --overwrite to replace it"
            )
        config = load_for_command(args, require_input_paths=False)
        from tzrec.export.exporter import export_model as _export

        aot = args.aot or os.environ.get("ENABLE_AOT", "0").lower() in ("1", "true")
        dirs = _export(
            config,
            None,
            args.export_dir,
            checkpoint_path=args.checkpoint_path,
            item_input_path=args.item_input_path,
            aot=aot,
            overwrite=args.overwrite,
            asset_files=args.asset_files,
        )
        for d in dirs:
            print(f"tzrec export: {d}")
        return 0


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
            "--checkpoint_path",
            default=None,
            help="predict from a checkpoint (with --pipeline_config_path; default: latest)",
        )
        parser.add_argument(
            "--tower",
            default=None,
            help="with a checkpoint of a match model: user_tower or item_tower",
        )
        parser.add_argument("--predict_input_path", required=True, help="parquet/csv input")
        parser.add_argument(
            "--predict_output_path",
            required=True,
            help="a directory of part-N.parquet files, or one file when it ends in .parquet",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing predict output"
        )
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
        """Predict with an exported model, writing parquet."""
        from tzrec.export.predict import check_output, predict

        # before any input is read (a checkpoint's module reads sample rows)
        check_output(args.predict_output_path, args.overwrite, "--predict_output_path")
        model: Any = args.scripted_model_path
        if not model:
            if not (args.checkpoint_path or args.pipeline_config_path):
                raise ConfigError(
                    "give --scripted_model_path (an exported model directory; a match "
                    "model's tower sub-directory) or --pipeline_config_path [--checkpoint_path]"
                )
            from tzrec.core.builtin_commands import load_for_command
            from tzrec.export.exporter import load_checkpoint_for_predict

            if not args.pipeline_config_path:
                raise ConfigError("--checkpoint_path needs --pipeline_config_path")
            config = load_for_command(args, require_input_paths=False)
            model = load_checkpoint_for_predict(config, args.checkpoint_path, args.tower)
        if args.writer_type and args.writer_type.lower() not in ("parquet", "parquetwriter"):
            raise ConfigError(
                f"--writer_type {args.writer_type}: tzrec predict writes parquet only "
                "(ParquetWriter)"
            )
        if args.is_profiling or args.debug_level:
            import logging

            logging.getLogger(__name__).warning(
                "--is_profiling / --debug_level are accepted for TorchEasyRec compatibility "
                "and ignored"
            )
        stats = predict(
            model,
            args.predict_input_path,
            args.predict_output_path,
            reserved_columns=_split(args.reserved_columns),
            output_columns=_split(args.output_columns),
            batch_size=args.batch_size,
            num_workers=args.predict_threads,
            dataset_type=args.dataset_type,
            max_steps=args.predict_steps,
            overwrite=args.overwrite,
        )
        nonfinite = ""
        if stats["rows_nonfinite"]:
            cols = ", ".join(f"{c} {n}" for c, n in stats["nonfinite_by_column"].items())
            nonfinite = f", {stats['rows_nonfinite']} with NaN/inf outputs ({cols})"
        print(
            f"tzrec predict: {stats['rows_in']} rows in, {stats['rows_out']} rows out "
            f"({stats['rows_skipped']} skipped{nonfinite}) -> {args.predict_output_path}"
        )
        return 0


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


class EvalRetrievalCommand(Command):
    """``tzrec eval-retrieval``: HitRate/Recall@K of exported towers with a faiss index."""

    help = "evaluate exported user/item towers by nearest-neighbour retrieval (faiss)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Where the towers and tables are, the ground truth and the index."""
        parser.add_argument(
            "--export_dir", required=True, help="a match model export (user_tower/, item_tower/)"
        )
        parser.add_argument(
            "--item_input_path", required=True, help="one row per item (parquet/csv)"
        )
        parser.add_argument(
            "--eval_input_path", required=True, help="one row per user request (parquet/csv)"
        )
        parser.add_argument(
            "--item_id_field", required=True, help="item id column of the item table"
        )
        parser.add_argument(
            "--gt_field",
            required=True,
            help="ground-truth item id(s) column of the eval table (id, list, or delimited string)",
        )
        parser.add_argument(
            "--gt_delim", default=None, help="delimiter of a string gt column (default: any of ;,|)"
        )
        parser.add_argument(
            "--gt_first_only",
            action="store_true",
            help="only the first id of a gt sequence is the target (e.g. a candidate sequence)",
        )
        parser.add_argument("--top_k", default="1,5,10,50", help="comma-separated K values")
        parser.add_argument(
            "--index_type", default="flat", choices=["flat", "ivf"], help="faiss index"
        )
        parser.add_argument("--nlist", type=int, default=0, help="IVF lists (default: ~sqrt(n))")
        parser.add_argument("--nprobe", type=int, default=8, help="IVF lists searched")
        parser.add_argument("--batch_size", type=int, default=1024, help="rows per batch")
        parser.add_argument("--output_path", default=None, help="write the metrics as JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Embed items and users, search, report."""
        from tzrec.export.retrieval import evaluate_retrieval

        try:
            ks = sorted({int(k) for k in args.top_k.split(",") if k.strip()})
        except ValueError:
            raise ConfigError(
                f"--top_k: expected comma-separated integers, got {args.top_k!r}"
            ) from None
        if not ks or ks[0] <= 0:
            raise ConfigError(f"--top_k: K values must be positive, got {args.top_k!r}")
        result = evaluate_retrieval(
            args.export_dir,
            args.item_input_path,
            args.eval_input_path,
            args.item_id_field,
            args.gt_field,
            ks,
            index_type=args.index_type,
            nlist=args.nlist,
            nprobe=args.nprobe,
            batch_size=args.batch_size,
            gt_delim=args.gt_delim,
            gt_first_only=args.gt_first_only,
            output_path=args.output_path,
        )
        metrics = " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
        print(
            f"tzrec eval-retrieval: {result['users']} users, {result['items']} items, "
            f"{result['index']} index: {metrics}"
        )
        return 0
