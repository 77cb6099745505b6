"""tzrec-rank tests: the example configs and planted Criteo-shaped data."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

#: the example configs (``<model>_criteo.config``)
CONFIGS = Path(__file__).resolve().parent / "configs"
#: ids per ``cat_*`` column of :func:`write_crossed_data`
NUM_IDS = 4


def write_crossed_data(
    out_dir: Path, num_rows: int = 2000, seed: int = 0, noise: float = 0.05
) -> dict[str, str]:
    """Criteo-shaped rows (``int_0..2`` raw, ``cat_0..4`` ids) whose label is a pair cross.

    ``label = parity(cat_0) XOR parity(cat_1)`` (flipped with probability ``noise``): each
    feature alone carries no information about the label, so a model without feature
    interactions stays at AUC 0.5 while a pairwise term (``<v_a, v_b>``) separates it.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    def rows(n: int) -> pa.Table:
        cats = rng.integers(0, NUM_IDS, (n, 5))
        label = (cats[:, 0] % 2) ^ (cats[:, 1] % 2)
        label = np.where(rng.random(n) < noise, 1 - label, label)
        cols = {f"int_{i}": rng.random(n).astype(np.float32) for i in range(3)}
        cols.update({f"cat_{i}": cats[:, i] for i in range(5)})
        cols["label"] = label.astype(np.int64)
        return pa.table(cols)

    paths = {"train": str(out_dir / "train.parquet"), "eval": str(out_dir / "eval.parquet")}
    pq.write_table(rows(num_rows), paths["train"])
    pq.write_table(rows(max(num_rows // 4, 64)), paths["eval"])
    return paths


@pytest.fixture(scope="session")
def crossed_data(tmp_path_factory) -> dict[str, str]:
    """2000 train / 500 eval rows of :func:`write_crossed_data`."""
    return write_crossed_data(tmp_path_factory.mktemp("crossed") / "data")


@pytest.fixture(scope="session")
def model_and_batch(crossed_data):
    """``make(config_name, edit=None)``: an example config's model and a training batch.

    ``edit(config)`` may change the pipeline config first; the batch is 128 rows of
    :func:`crossed_data`; the model is built after ``torch.manual_seed(0)``.
    """
    import torch

    from tzrec.core import build
    from tzrec.core.config import load_pipeline_config

    def make(name: str, edit=None):
        config = load_pipeline_config(str(CONFIGS / f"{name}.config"))
        config.train_input_path = crossed_data["train"]
        config.data_config.num_workers = 0
        if edit is not None:
            edit(config)
        features = build.create_features(config)
        ds = build.build_dataset(config, features, config.train_input_path, "train")
        torch.manual_seed(0)
        return build.build_model(config, ds.features), next(iter(ds.make_dataloader()))

    return make
