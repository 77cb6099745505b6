"""``tzrec create-fg-json``: upstream's ``tzrec.tools.create_fg_json`` (fg.json + assets).

Kept apart from :mod:`tzrec.data.fg.fg_json` so ``tzrec --help`` builds this parser without
importing the feature code.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tzrec.core.commands import Command


def _reserves(text: str) -> list[str]:
    """``--reserves a,b``: the column names (upstream strips each)."""
    return [c.strip() for c in text.strip().split(",")]


class CreateFgJsonCommand(Command):
    """``tzrec create-fg-json``: the fg.json (and its asset files) a serving system reads."""

    help = "write the fg.json (feature generator config) and its asset files for a config"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Upstream's flags, except the MaxCompute upload ones."""
        parser.add_argument(
            "--pipeline_config_path",
            required=True,
            help="pipeline config in protobuf text format (.config) or JSON (.json)",
        )
        parser.add_argument(
            "--edit_config_json",
            default=None,
            help="JSON object of config overrides, as for tzrec train",
        )
        parser.add_argument(
            "--fg_output_dir",
            required=True,
            help="directory to write the fg.json and the vocab/tokenizer files it names",
        )
        parser.add_argument(
            "--reserves",
            type=_reserves,
            default=None,
            help="reserved column names written as fg.json's reserves, e.g. label,request_id",
        )
        parser.add_argument(
            "--fg_resource_name",
            default="fg.json",
            help="file name of the fg.json in --fg_output_dir (default fg.json)",
        )
        parser.add_argument(
            "--remove_bucketizer",
            action="store_true",
            help="drop hash_bucket_size / vocab / boundaries / num_buckets from every feature",
        )
        parser.add_argument(
            "--check_data",
            action="store_true",
            help="first read one batch of train_input_path with the config's features "
            "(upstream's --debug; tzrec's --debug shows tracebacks)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Check the config (and data), write the assets, then the fg.json atomically."""
        from tzrec.core.commands import parse_edit_config_json
        from tzrec.core.config import load_pipeline_config
        from tzrec.core.errors import ConfigError
        from tzrec.data.fg.fg_json import create_fg_json, write_atomic

        config = load_pipeline_config(
            args.pipeline_config_path, edits=parse_edit_config_json(args.edit_config_json)
        )
        name = args.fg_resource_name
        if not name or os.sep in name or name in (".", ".."):
            raise ConfigError(f"--fg_resource_name: {name!r} must be a plain file name")
        out_dir = Path(args.fg_output_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--fg_output_dir: {out_dir} exists and is not a directory")
        create_fg_json(config.feature_configs)  # config errors before anything is written
        if args.check_data:
            from tzrec.core import build

            features = build.create_features(config)
            dataset = build.build_dataset(config, features, config.train_input_path, "train")
            next(iter(dataset), None)
            print(f"tzrec create-fg-json: read a batch of {config.train_input_path}")
        out_dir.mkdir(parents=True, exist_ok=True)
        fg = create_fg_json(
            config.feature_configs,
            asset_dir=out_dir,
            config_dir=Path(args.pipeline_config_path).resolve().parent,
            remove_bucketizer=args.remove_bucketizer,
            reserves=args.reserves,
        )
        path = out_dir / name
        write_atomic(path, json.dumps(fg, indent=4))
        print(f"tzrec create-fg-json: {len(fg['features'])} fg entries: {path}")
        return 0


__all__ = ["CreateFgJsonCommand"]
