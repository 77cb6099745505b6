"""tzrec-hstu tests: Triton runs in its CPU interpreter (set before triton is imported)."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

EXAMPLE_CONFIG = (
    Path(__file__).resolve().parents[3] / "docs" / "examples" / ("hstu_match_kuairand.config")
)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """A few hundred synthetic rows in the example config's layout."""
    from tzrec.hstu.synthetic import write_hstu_data

    return write_hstu_data(
        tmp_path_factory.mktemp("hstu") / "data",
        num_rows=128,
        num_eval_rows=64,
        num_items=100,
        max_history=6,
        empty_fraction=0.1,
    )


@pytest.fixture(scope="session")
def example_config() -> Path:
    """``docs/examples/hstu_match_kuairand.config``."""
    return EXAMPLE_CONFIG


@pytest.fixture(scope="session")
def data_edits():
    """Make the ``--edit_config_json`` that points the example config at generated data."""
    return _data_edits


def _data_edits(paths: dict[str, str], model_dir: Path, **extra) -> str:
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
        "data_config.negative_sampler.input_path": paths["items"],
        "data_config.num_workers": 0,
    }
    edits.update(extra)
    return json.dumps(edits)
