"""``tzrec synth-data``'s command line; the generator (numpy, pyarrow) loads when it runs.

Kept apart from :mod:`tzrec.data.synth` so ``tzrec --help`` builds this parser without
importing numpy or pyarrow.
"""

from __future__ import annotations

import argparse
import json

from tzrec.core.commands import Command, add_pipeline_config_arg


class SynthDataCommand(Command):
    """``tzrec synth-data``: synthetic data with exactly the columns a config reads."""

    help = "write synthetic data with exactly the columns and types a pipeline config reads"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Sizes, seed, output directory and the optional rewritten config."""
        add_pipeline_config_arg(parser, required=True)
        parser.add_argument("--rows", type=int, default=1000, help="training rows")
        parser.add_argument(
            "--eval_rows", type=int, default=None, help="evaluation rows (default rows/4, >= 64)"
        )
        parser.add_argument("--out", required=True, help="output directory")
        parser.add_argument("--seed", type=int, default=0, help="random seed")
        parser.add_argument(
            "--max_id", type=int, default=1000, help="distinct ids per feature (capped by its size)"
        )
        parser.add_argument(
            "--max_seq_len",
            type=int,
            default=20,
            help="longest synthetic sequence (capped by each sequence_length)",
        )
        parser.add_argument(
            "--sequence_format",
            choices=("string", "list"),
            default="string",
            help="sequence cells joined by sequence_delim (string) or as arrow lists",
        )
        parser.add_argument(
            "--write_config",
            default=None,
            help="write a copy of the config whose input paths point at the data",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Write the data, then say which config paths to point at it."""
        from tzrec.core.commands import parse_edit_config_json
        from tzrec.core.config import load_pipeline_config, save_message
        from tzrec.data.synth import SynthOptions, synthesize, with_paths

        config = load_pipeline_config(
            args.pipeline_config_path, edits=parse_edit_config_json(args.edit_config_json)
        )
        opts = SynthOptions(
            rows=args.rows,
            eval_rows=args.eval_rows,
            seed=args.seed,
            max_id=args.max_id,
            max_seq_len=args.max_seq_len,
            sequence_format=args.sequence_format,
        )
        result = synthesize(config, args.out, opts)
        for role, path in result.files.items():
            print(f"tzrec synth-data: {role}: {path}")
        print(
            "tzrec synth-data: columns: "
            + ", ".join(f"{c} ({t})" for c, t in result.columns.items())
        )
        if args.write_config:
            save_message(with_paths(config, result.config_paths), args.write_config)
            print(f"tzrec synth-data: config: {args.write_config}")
        else:
            print(
                "tzrec synth-data: point the config at it with --edit_config_json "
                f"'{json.dumps(result.config_paths)}'"
            )
        for note in result.notes:
            print(f"tzrec synth-data: note: {note}")
        return 0


__all__ = ["SynthDataCommand"]
