"""``tzrec export`` / ``tzrec predict`` / ``tzrec eval-retrieval`` with TorchEasyRec's flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tzrec.core.commands import Command, add_pipeline_config_arg, positive_int
from tzrec.core.errors import ConfigError

#: faiss indexes of ``tzrec hitrate`` / ``create-faiss-index`` (upstream's, plus exact Flat)
INDEX_TYPES = ("IVFFlatIP", "HNSWFlatIP", "IVFFlatL2", "HNSWFlatL2", "FlatIP", "FlatL2")
#: table formats they read (upstream's local readers; no ODPS)
READER_TYPES = ("ParquetReader", "CsvReader")


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
            "--additional_export_config",
            default=None,
            help="JSON object of extra key/values merged into each model_meta.json",
        )
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
        extra = None
        if args.additional_export_config:
            import json

            try:
                extra = json.loads(args.additional_export_config)
            except ValueError as e:
                raise ConfigError(f"--additional_export_config: not valid JSON ({e})") from None
            if not isinstance(extra, dict):
                raise ConfigError("--additional_export_config: expected a JSON object {...}")
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
            additional_export_config=extra,
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
            help="with a checkpoint of a match model: user or item (user_tower / item_tower)",
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
        parser.add_argument("--batch_size", type=positive_int, default=None, help="rows per batch")
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
        if model:
            checkpoint_only = [
                flag
                for flag, value in (
                    ("--pipeline_config_path", args.pipeline_config_path),
                    ("--checkpoint_path", args.checkpoint_path),
                    ("--tower", args.tower),
                    ("--edit_config_json", args.edit_config_json),
                )
                if value
            ]
            if checkpoint_only:
                raise ConfigError(
                    f"{', '.join(checkpoint_only)}: only for predicting from a checkpoint; "
                    "--scripted_model_path serves the export with its own pipeline.config"
                )
        else:
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
            "--export_dir",
            required=True,
            help="a match model export (user/, item/; the former user_tower/, item_tower/ too)",
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
        parser.add_argument("--batch_size", type=positive_int, default=1024, help="rows per batch")
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


class HitrateCommand(Command):
    """``tzrec hitrate``: upstream's ``tools.hitrate`` over user and item embedding tables."""

    help = "hitrate@K of user embeddings against an item embedding table (faiss)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Upstream ``tzrec.tools.hitrate`` flags."""
        parser.add_argument(
            "--user_gt_input",
            required=True,
            help="user table: request id, ground-truth items, user embedding(s)",
        )
        parser.add_argument(
            "--item_embedding_input", required=True, help="item table: item id, item embedding"
        )
        parser.add_argument(
            "--total_hitrate_output", default=None, help="one-row table with column hitrate"
        )
        parser.add_argument(
            "--hitrate_details_output",
            default=None,
            help="per-request table: id, topk_ids, topk_dists, hitrate, hit_ids",
        )
        parser.add_argument("--batch_size", type=int, default=1024, help="rows per batch")
        parser.add_argument(
            "--index_type", default="IVFFlatIP", choices=INDEX_TYPES, help="faiss index"
        )
        parser.add_argument("--top_k", type=int, default=200, help="candidates per interest")
        parser.add_argument(
            "--topk_across_interests",
            action="store_true",
            help="keep the best top_k over all interests instead of top_k per interest",
        )
        parser.add_argument("--ivf_nlist", type=int, default=1000, help="IVF lists")
        parser.add_argument("--ivf_nprobe", type=int, default=800, help="IVF lists searched")
        parser.add_argument("--item_id_field", default="item_id", help="item id column")
        parser.add_argument(
            "--item_embedding_field", default="item_tower_emb", help="item embedding column"
        )
        parser.add_argument("--request_id_field", default="request_id", help="request id column")
        parser.add_argument(
            "--gt_items_field", default="gt_items", help="ground-truth ids (list or 'a,b,c')"
        )
        parser.add_argument(
            "--user_embedding_field", default="user_tower_emb", help="user embedding column"
        )
        parser.add_argument(
            "--num_interests", type=int, default=1, help="user embeddings per request"
        )
        parser.add_argument(
            "--num_interests_field", default=None, help="valid interests per request (column)"
        )
        parser.add_argument(
            "--reader_type", default=None, choices=READER_TYPES, help="input format"
        )
        parser.add_argument(
            "--writer_type",
            default=None,
            choices=["ParquetWriter"],
            help="output format (parquet only)",
        )
        parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    def run(self, args: argparse.Namespace) -> int:
        """Index the items, search every request, report and write the hitrate."""
        from tzrec.export.hitrate import hitrate

        result = hitrate(
            args.user_gt_input,
            args.item_embedding_input,
            total_hitrate_output=args.total_hitrate_output,
            hitrate_details_output=args.hitrate_details_output,
            batch_size=args.batch_size,
            index_type=args.index_type,
            top_k=args.top_k,
            topk_across_interests=args.topk_across_interests,
            ivf_nlist=args.ivf_nlist,
            ivf_nprobe=args.ivf_nprobe,
            item_id_field=args.item_id_field,
            item_embedding_field=args.item_embedding_field,
            request_id_field=args.request_id_field,
            gt_items_field=args.gt_items_field,
            user_embedding_field=args.user_embedding_field,
            num_interests=args.num_interests,
            num_interests_field=args.num_interests_field,
            reader_type=args.reader_type,
            overwrite=args.overwrite,
        )
        print(
            f"tzrec hitrate: hitrate@{args.top_k}={result['hitrate']:.6f} "
            f"({result['hits']} of {result['gt_items']} ground-truth items, "
            f"{result['requests']} requests, {result['requests_skipped']} without ground "
            f"truth skipped, {result['items']} items, {args.index_type})"
        )
        return 0


class CreateFaissIndexCommand(Command):
    """``tzrec create-faiss-index``: upstream's ``tools.create_faiss_index``."""

    help = "build a faiss index over an item embedding table (faiss_index + id_mapping)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Upstream ``tzrec.tools.create_faiss_index`` flags."""
        parser.add_argument(
            "--embedding_input_path", required=True, help="table of ids and embeddings"
        )
        parser.add_argument("--index_output_dir", required=True, help="where the index goes")
        parser.add_argument("--id_field", required=True, help="id column")
        parser.add_argument("--embedding_field", required=True, help="embedding column")
        parser.add_argument("--batch_size", type=int, default=1024, help="rows per batch")
        parser.add_argument(
            "--index_type", default="IVFFlatIP", choices=INDEX_TYPES, help="faiss index"
        )
        parser.add_argument("--ivf_nlist", type=int, default=1000, help="IVF lists")
        parser.add_argument("--hnsw_M", type=int, default=32, help="HNSW neighbours per node")
        parser.add_argument(
            "--hnsw_efConstruction", type=int, default=200, help="HNSW build-time search depth"
        )
        parser.add_argument(
            "--reader_type", default=None, choices=READER_TYPES, help="input format"
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an index already in the directory"
        )

    def run(self, args: argparse.Namespace) -> int:
        """Read the table, build the index, write it."""
        from tzrec.export.hitrate import create_faiss_index

        result = create_faiss_index(
            args.embedding_input_path,
            args.index_output_dir,
            args.id_field,
            args.embedding_field,
            index_type=args.index_type,
            batch_size=args.batch_size,
            ivf_nlist=args.ivf_nlist,
            hnsw_m=args.hnsw_M,
            hnsw_ef_construction=args.hnsw_efConstruction,
            reader_type=args.reader_type,
            overwrite=args.overwrite,
        )
        print(
            f"tzrec create-faiss-index: {result['items']} embeddings of dim {result['dim']} "
            f"({result['index']}) -> {args.index_output_dir}"
        )
        return 0
