"""`tzrec --help`, `plugins`, `<cmd> --help` and config errors never import torch.

torch + torchrec cost ~10 s of CPU; these paths must answer in about a second with every
workspace plugin installed. One fresh interpreter runs all cases in order and records, after
each, which heavy modules have appeared, so a regression names the case that caused it.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "torchrec", "fbgemm_gpu", "tensorboard", "faiss")
DSSM = REPO_ROOT / "docs" / "examples" / "dssm.config"

PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from tzrec.core.cli import main
    from tzrec.core.plugins import get_plugin_manager, reset_plugin_manager

    HEAVY = {heavy!r}
    cases = json.loads(sys.argv[1])
    if cases == "help-of-every-command":
        commands = sorted(get_plugin_manager().registry("commands"))
        cases = [[name, "--help"] for name in commands]
        reset_plugin_manager()
    out = []
    for argv in cases:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
        loaded = [m for m in HEAVY if m in sys.modules]
        out.append({{"argv": argv, "rc": rc, "stderr": err.getvalue(), "heavy": loaded}})
    print(json.dumps(out))
    """
).format(heavy=HEAVY)


def run_cases(cases, tmp_path, env=None):
    """Run ``cases`` (argv lists) in one fresh interpreter; the result per case."""
    import os

    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=full_env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_no_heavy_imports(results):
    for r in results:
        assert r["heavy"] == [], f"tzrec {' '.join(r['argv'])} imported {r['heavy']}"


def test_help_and_plugins_do_not_import_torch(tmp_path):
    results = run_cases(
        [["--help"], ["plugins"], ["plugins", "--json"], ["plugins", "--proto-path"]], tmp_path
    )
    assert_no_heavy_imports(results)
    assert [r["rc"] for r in results] == [0, 0, 0, 0]


def test_help_of_every_registered_command_does_not_import_torch(tmp_path):
    results = run_cases("help-of-every-command", tmp_path)
    # core's and tzrec-export's commands at least; plugins may add more
    assert {"train", "eval", "run", "plugins", "export", "predict"} <= {
        r["argv"][0] for r in results
    }
    assert_no_heavy_imports(results)
    assert all(r["rc"] == 0 for r in results), results


def test_config_errors_do_not_import_torch(tmp_path):
    bad_field = tmp_path / "bad_field.config"
    bad_field.write_text('model_dir: "m"\nno_such_field: 1\n')
    no_paths = tmp_path / "no_paths.config"
    no_paths.write_text("model_config { }\n")
    dssm = ["train", "--pipeline_config_path", str(DSSM), "--edit_config_json"]
    cases = {
        "pipeline config not found": ["train", "--pipeline_config_path", "missing.config"],
        "no_such_field": ["train", "--pipeline_config_path", str(bad_field)],
        "missing required field(s)": ["eval", "--pipeline_config_path", str(no_paths)],
        "feature 'nope' is not defined": [
            *dssm,
            '{"model_config.feature_groups[0].feature_names[0]": "nope"}',
        ],
        "--edit_config_json is not valid JSON": [*dssm, "{oops"],
        "no_such_field_either": [*dssm, '{"no_such_field_either": 1}'],
        "no installed plugin provides the built-in example 'nope'": [
            "run",
            "--example",
            "nope",
        ],
    }
    results = run_cases(list(cases.values()), tmp_path)
    assert_no_heavy_imports(results)
    for expected, r in zip(cases, results, strict=True):
        assert r["rc"] != 0, r
        lines = r["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tzrec: error: "), r
        assert expected in lines[0], r


def test_missing_model_plugin_error_does_not_import_torch(tmp_path):
    config = tmp_path / "hstu.config"
    config.write_text(
        'train_input_path: "a"\neval_input_path: "b"\nmodel_dir: "m"\n'
        "model_config { hstu_match { } }\n"
    )
    results = run_cases(
        [["train", "--pipeline_config_path", str(config)]],
        tmp_path,
        env={"TZREC_LOAD_PLUGINS": "data,models,export"},
    )
    assert_no_heavy_imports(results)
    (r,) = results
    assert r["rc"] == 1
    assert r["stderr"] == (
        "tzrec: error: model 'hstu_match' is provided by tzrec-hstu: it is installed but "
        "TZREC_LOAD_PLUGINS does not load it\n"
    )


def test_lazy_tzrec_data_still_exports_its_names():
    import tzrec.data as data
    from tzrec.data import Batch, ParquetDataset, combine_neg_as_candidate_sequence
    from tzrec.data.batch import Batch as BatchDefined
    from tzrec.data.readers.parquet import ParquetDataset as ParquetDefined

    assert Batch is BatchDefined and ParquetDataset is ParquetDefined
    assert callable(combine_neg_as_candidate_sequence)
    assert set(data.__all__) <= set(dir(data))
    for name in data.__all__:
        assert getattr(data, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018
