"""A third-party plugin, installed from its own package, extends tzrec without editing it."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tzrec.core.testing import run, uv_bin

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"

PLUGIN_CONFIG = """
train_input_path: "{data}/train.parquet"
eval_input_path: "{data}/train.parquet"
model_dir: "{data}/model"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.1 }} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.01 }} }}
  num_epochs: 3
}}
data_config {{ batch_size: 32 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 10 embedding_dim: 4 }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: "user_id" group_type: DEEP }}
  [tzrec_plugin_example.toy_model] {{ hidden_units: 4 scale: 2.5 }}
  losses {{ binary_cross_entropy {{}} }}
  metrics {{ auc {{}} }}
}}
"""


def write_config(tmp_path):
    """Config plus data where users 0-4 click and 5-9 don't."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    users = np.arange(200) % 10
    pq.write_table(
        pa.table({"user_id": users, "clk": (users < 5).astype(np.int64)}),
        tmp_path / "train.parquet",
    )
    config = tmp_path / "toy.config"
    config.write_text(PLUGIN_CONFIG.format(data=tmp_path))
    return config


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """Generate the plugin's config module, build and install it into its own directory."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "tzrec-plugin-example"
    shutil.copytree(FIXTURES / "tzrec-plugin-example", src)
    include = run([sys.executable, "-m", "tzrec.core.cli", "plugins", "--proto-path"]).stdout
    run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(src / "src"),
            "-I",
            include.strip(),
            f"--python_out={src / 'src'}",
            str(src / "src" / "tzrec_plugin_example" / "toy_model.proto"),
        ]
    )
    site = root / "site"
    run([uv_bin(), "pip", "install", "--no-deps", "--target", str(site), str(src)])
    assert (site / "tzrec_plugin_example" / "toy_model_pb2.py").is_file()
    return site


def plugin_env(site, **extra):
    env = dict(os.environ, PYTHONPATH=str(site), **extra)
    env.pop("TZREC_LOAD_PLUGINS", None)
    env.update(extra)
    return env


def test_tzrec_plugins_lists_the_installed_plugin(plugin_site):
    out = run(
        [sys.executable, "-m", "tzrec.core.cli", "plugins", "--json"], env=plugin_env(plugin_site)
    ).stdout
    rows = {row["distribution"]: row for row in json.loads(out)}
    row = rows["tzrec-plugin-example"]
    assert row["name"] == "toy"
    assert row["version"] == "0.3.0"
    assert row["registers"] == {"models": ["toy_model"]}
    assert row["hooks"] == ["register_models"]


def test_config_using_the_plugin_resolves_to_its_model(plugin_site, tmp_path):
    config = write_config(tmp_path)
    script = f"""
from tzrec.core.builtin_commands import resolve_model
from tzrec.core.config import load_pipeline_config, validate_pipeline_config, which_oneof
config = load_pipeline_config({str(config)!r})
validate_pipeline_config(config)
name, cls = resolve_model(config)
ext = which_oneof(config.model_config, "model")[1]
print(name, cls.__module__, cls.__name__, ext.hidden_units, ext.scale)
"""
    out = run([sys.executable, "-c", script], env=plugin_env(plugin_site)).stdout.split()
    assert out == ["toy_model", "tzrec_plugin_example.model", "ToyModel", "4", "2.5"]


def test_tzrec_run_trains_exports_and_serves_the_plugin_model(plugin_site, tmp_path):
    config = write_config(tmp_path)
    env = plugin_env(plugin_site)
    proc = run(
        [sys.executable, "-m", "tzrec.core.cli", "run", "--pipeline_config_path", str(config)],
        env=env,
    )
    assert "tzrec train: eval auc=" in proc.stdout
    last = json.loads((tmp_path / "model" / "train_eval_result.txt").read_text().splitlines()[-1])
    assert last["auc"] > 0.9  # the plugin's model learned who clicks
    export = tmp_path / "model" / "export"
    assert f"tzrec run: exported to {export}" in proc.stdout
    meta = json.loads((export / "model_meta.json").read_text())
    assert {"logits", "probs"} <= set(meta["outputs"])
    assert meta["parity_max_abs_diff"] <= 1e-5
    out = tmp_path / "pred.parquet"
    run(
        [
            sys.executable,
            "-m",
            "tzrec.core.cli",
            "predict",
            "--scripted_model_path",
            str(export),
            "--predict_input_path",
            str(tmp_path / "train.parquet"),
            "--predict_output_path",
            str(out),
            "--reserved_columns",
            "user_id",
        ],
        env=env,
    )
    import pyarrow.parquet as pq

    pred = pq.read_table(out).to_pydict()
    assert len(pred["probs"]) == 200
    clicked = [p for p, u in zip(pred["probs"], pred["user_id"], strict=True) if u < 5]
    others = [p for p, u in zip(pred["probs"], pred["user_id"], strict=True) if u >= 5]
    assert min(clicked) > max(others)  # the served model ranks clickers first


def test_an_undeclared_field_of_the_plugin_message_is_refused(plugin_site, tmp_path):
    config = write_config(tmp_path)
    text = config.read_text().replace("scale: 2.5", "scale: 2.5 not_read: 1")
    config.write_text(text)
    proc = run(
        [sys.executable, "-m", "tzrec.core.cli", "train", "--pipeline_config_path", str(config)],
        check=False,
        env=plugin_env(plugin_site),
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"tzrec: error: {config}: model_config.[tzrec_plugin_example.toy_model].not_read: "
        "not supported by tzrec-plugin-example 0.3.0; remove it, or pass "
        "--allow_unsupported_fields (or set TZREC_ALLOW_UNSUPPORTED_FIELDS=1) to run without it"
    )


def test_the_fixture_uses_only_the_public_plugin_api():
    src = FIXTURES / "tzrec-plugin-example" / "src" / "tzrec_plugin_example"
    for path in src.glob("*.py"):
        text = path.read_text()
        tzrec_imports = [
            line.split()[1]
            for line in text.splitlines()
            if line.startswith(("from tzrec.", "import tzrec."))
        ]
        assert set(tzrec_imports) <= {"tzrec.models.plugin_api"}, path
        private = re.findall(r"\.(_[a-z]\w*)", text)
        assert private == [], (path, private)  # no private member of tzrec's classes


def test_config_using_the_plugin_without_it_says_what_is_missing(plugin_site, tmp_path):
    config = write_config(tmp_path)
    proc = run(
        [sys.executable, "-m", "tzrec.core.cli", "train", "--pipeline_config_path", str(config)],
        check=False,
        env=plugin_env(plugin_site, TZREC_LOAD_PLUGINS="tzrec-hstu"),
    )
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith(f"tzrec: error: {config}:14:")
    assert "tzrec_plugin_example.toy_model" in err
    assert "install the plugin that defines it" in err
    assert "\n" not in err


def test_fixture_sources_are_what_docs_describe():
    doc = (REPO_ROOT / "docs" / "plugins.md").read_text()
    for needle in (
        "[project.entry-points.tzrec]",
        "extend tzrec.protos.ModelConfig",
        "--proto-path",
    ):
        assert needle in doc
