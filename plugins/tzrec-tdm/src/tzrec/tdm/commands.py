"""``tzrec tdm-init-tree``, ``tdm-cluster-tree`` and ``tdm-retrieval``: upstream's TDM tools.

The flags are upstream's (``tzrec.tools.tdm.init_tree`` / ``cluster_tree`` / ``retrieval``);
torch, numpy and pyarrow load only when a command runs.
"""

from __future__ import annotations

import argparse
import logging

from tzrec.core.commands import Command, add_pipeline_config_arg, positive_int

logger = logging.getLogger(__name__)


def _split(value: str | None) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()] if value else []


def _add_tree_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--item_input_path", required=True, help="item table (parquet or csv): one row per item"
    )
    parser.add_argument("--item_id_field", required=True, help="item id column (int64 ids)")
    parser.add_argument(
        "--attr_fields", default=None, help="comma-separated id/string attribute columns"
    )
    parser.add_argument(
        "--raw_attr_fields", default=None, help="comma-separated numeric attribute columns"
    )
    parser.add_argument(
        "--attr_delimiter", default=",", help="attribute delimiter in the node table"
    )
    parser.add_argument(
        "--tree_output_dir", default=None, help="also write upstream's serving_tree file here"
    )
    parser.add_argument(
        "--node_edge_output_file",
        required=True,
        help="directory for node_table.txt, edge_table.txt, predict_edge_table.txt",
    )
    parser.add_argument(
        "--n_cluster", type=positive_int, default=2, help="branching factor of the tree"
    )


def _write(tree, args: argparse.Namespace) -> int:
    paths = tree.write(args.node_edge_output_file, args.attr_delimiter, args.tree_output_dir)
    for name, path in paths.items():
        print(f"tzrec {args.command_name}: {name}: {path}")
    print(
        f"tzrec {args.command_name}: {len(tree.leaves())} items, {len(tree.codes)} nodes, "
        f"{tree.depth + 1} levels (layer_num_sample needs {tree.depth + 1} entries)"
    )
    return 0


class InitTreeCommand(Command):
    """``tzrec tdm-init-tree``: the initial TDM tree from item categories."""

    help = "build the initial TDM tree from item categories (node / edge tables)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Upstream's init_tree flags."""
        _add_tree_args(parser)
        parser.add_argument("--cate_id_field", required=True, help="item category column")

    def run(self, args: argparse.Namespace) -> int:
        """Sort items by category, code them, build and write the tree."""
        from tzrec.tdm.items import read_items
        from tzrec.tdm.tree import build_tree, category_codes

        args.command_name = "tdm-init-tree"
        items = read_items(
            args.item_input_path,
            args.item_id_field,
            _split(args.attr_fields),
            _split(args.raw_attr_fields),
            category_field=args.cate_id_field,
        )
        codes = category_codes(items.categories, items.ids, args.n_cluster)
        return _write(items.tree(codes, args.n_cluster, build_tree), args)


class ClusterTreeCommand(Command):
    """``tzrec tdm-cluster-tree``: the learnt TDM tree by balanced k-means over embeddings."""

    help = "build a TDM tree by balanced k-means over item embeddings (node / edge tables)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Upstream's cluster_tree flags."""
        _add_tree_args(parser)
        parser.add_argument("--embedding_field", default="item_emb", help="item embedding column")
        parser.add_argument(
            "--parallel",
            type=positive_int,
            default=16,
            help="accepted for upstream compatibility; k-means runs in this process",
        )
        parser.add_argument("--seed", type=int, default=0, help="k-means seeding")

    def run(self, args: argparse.Namespace) -> int:
        """Cluster the embeddings recursively, build and write the tree."""
        from tzrec.tdm.items import read_items
        from tzrec.tdm.tree import build_tree, cluster_codes

        args.command_name = "tdm-cluster-tree"
        items = read_items(
            args.item_input_path,
            args.item_id_field,
            _split(args.attr_fields),
            _split(args.raw_attr_fields),
            embedding_field=args.embedding_field,
        )
        codes = cluster_codes(items.embeddings, args.n_cluster, args.seed)
        return _write(items.tree(codes, args.n_cluster, build_tree), args)


class RetrievalCommand(Command):
    """``tzrec tdm-retrieval``: beam search over the tree with an exported TDM model."""

    help = "retrieve items per user by beam search over the TDM tree; report recall@K"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Upstream's retrieval flags, plus the training config for the tree tables."""
        add_pipeline_config_arg(parser, required=False)
        parser.add_argument(
            "--scripted_model_path", required=True, help="the exported model (tzrec export)"
        )
        parser.add_argument("--predict_input_path", required=True, help="input rows (users)")
        parser.add_argument(
            "--predict_output_path", default=None, help="output parquet (file or directory)"
        )
        parser.add_argument("--reserved_columns", default=None, help="columns copied to output")
        parser.add_argument("--batch_size", type=positive_int, default=None, help="rows per batch")
        parser.add_argument(
            "--recall_num", type=positive_int, default=200, help="items recalled per user"
        )
        parser.add_argument(
            "--n_cluster", type=positive_int, default=2, help="branching factor of the tree"
        )

    def run(self, args: argparse.Namespace) -> int:
        """Load the config (the export's, unless given), retrieve, print recall@K."""
        from pathlib import Path

        from tzrec.core.commands import parse_edit_config_json
        from tzrec.core.config import load_pipeline_config
        from tzrec.core.errors import ConfigError
        from tzrec.tdm.retrieval import tdm_retrieval

        path = args.pipeline_config_path or str(Path(args.scripted_model_path) / "pipeline.config")
        config = load_pipeline_config(path, edits=parse_edit_config_json(args.edit_config_json))
        if not config.data_config.HasField("tdm_sampler"):
            raise ConfigError(
                f"{path}: no data_config.tdm_sampler (the tree tables); pass the training "
                "config with --pipeline_config_path"
            )
        recall = tdm_retrieval(
            config,
            args.scripted_model_path,
            args.predict_input_path,
            args.predict_output_path,
            args.recall_num,
            args.n_cluster,
            _split(args.reserved_columns),
            args.batch_size,
        )
        print(f"tzrec tdm-retrieval: recall@{args.recall_num}={recall:.6f}")
        return 0


__all__ = ["ClusterTreeCommand", "InitTreeCommand", "RetrievalCommand"]
