"""tzrec-tdm tests: planted data where the tree's category structure decides retrieval."""

from __future__ import annotations

from pathlib import Path

import pytest

from tzrec.tdm.synthetic import write_tdm_data

CONFIG = Path(__file__).resolve().parent / "configs" / "tdm.config"


@pytest.fixture(scope="session")
def config_path() -> Path:
    """``tests/configs/tdm.config``."""
    return CONFIG


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """Planted data (seed 0) and its category tree built by ``tzrec tdm-init-tree``."""
    from tzrec.core.cli import main

    root = tmp_path_factory.mktemp("tdm")
    paths = write_tdm_data(root / "data")
    tree_dir = root / "tree"
    rc = main(
        [
            "tdm-init-tree",
            "--item_input_path",
            paths["items"],
            "--item_id_field",
            "item_id",
            "--cate_id_field",
            "cate_id",
            "--attr_fields",
            "cate_id",
            "--node_edge_output_file",
            str(tree_dir),
            "--tree_output_dir",
            str(root / "serving"),
        ]
    )
    assert rc == 0
    paths["tree"] = str(tree_dir)
    paths["serving"] = str(root / "serving")
    return paths


def _sampler_config(tree_dir: str, layer_num_sample=(0, 1, 2, 3, 4, 5, 6), attrs=("cate_id",)):
    """A ``TDMSampler`` config over the tables in ``tree_dir``."""
    from tzrec.protos import sampler_pb2

    cfg = sampler_pb2.TDMSampler(
        item_input_path=f"{tree_dir}/node_table.txt",
        edge_input_path=f"{tree_dir}/edge_table.txt",
        predict_edge_input_path=f"{tree_dir}/predict_edge_table.txt",
        item_id_field="item_id",
        attr_delimiter=",",
    )
    cfg.attr_fields.extend(attrs)
    cfg.layer_num_sample.extend(layer_num_sample)
    return cfg


@pytest.fixture(scope="session")
def sampler_config():
    """``sampler_config(tree_dir, layer_num_sample, attrs)``: a ``TDMSampler`` config."""
    return _sampler_config
