"""Built-in examples: ``default`` trains HSTUMatch on synthetic KuaiRand-shaped data.

The config shipped here is a copy of ``docs/examples/hstu_match_kuairand.config`` (a test
keeps the two identical).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tzrec.core.config import parse_pipeline_config, save_message

CONFIG_NAME = "hstu_match_kuairand.config"


def config_text() -> str:
    """The example pipeline config, as shipped."""
    return resources.files(__name__).joinpath(CONFIG_NAME).read_text(encoding="utf-8")


def make(work_dir: Path) -> Path:
    """Write synthetic data and a config with its paths filled in; return the config path.

    Layout: ``<work_dir>/data/`` (train/eval parquet, item table), ``<work_dir>/model/``
    (checkpoints, metrics, export), ``<work_dir>/hstu_match.config``.
    """
    from tzrec.hstu.synthetic import write_hstu_data

    work_dir = Path(work_dir).resolve()
    paths = write_hstu_data(work_dir / "data")
    config = parse_pipeline_config(config_text(), CONFIG_NAME)
    config.train_input_path = paths["train"]
    config.eval_input_path = paths["eval"]
    config.model_dir = str(work_dir / "model")
    config.data_config.negative_sampler.input_path = paths["items"]
    out = work_dir / "hstu_match.config"
    save_message(config, out)
    print(f"tzrec run: synthetic data (planted user->item structure) in {work_dir / 'data'}")
    print(f"tzrec run: model dir {config.model_dir}")
    return out
