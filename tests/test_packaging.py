"""Distributions stand on their own: sdists build wheels, wheels install, recipes work.

`uv build --all-packages` makes every member's sdist and then its wheel from that sdist alone
(tzrec-core's sdist carries the .proto sources its wheel ships). A fresh venv gets only
tzrec-core and tzrec-hstu from those wheels by README's uv recipe (dependencies from the
index, pinned to uv.lock's versions); README's pip swap line runs with real pip in it. The
checks: what `tzrec plugins --json` reports, what a config needing a missing plugin says, and
that the CUDA fbgemm-gpu on a CPU machine is one line with the exact fix.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tzrec.core.fbgemm import cpu_swap_command
from tzrec.core.testing import run, uv_bin

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

MEMBERS = [
    "tzrec_core",
    "tzrec_data",
    "tzrec_export",
    "tzrec_hstu",
    "tzrec_kernels",
    "tzrec_match",
    "tzrec_models",
    "tzrec_multitask",
    "tzrec_rank",
    "tzrec_tdm",
]
FBGEMM_VERSION = "1.9.0"
# README's uv recipe, verbatim (test_readme_shows_the_tested_recipes keeps them in sync)
OVERRIDE_LINE = "fbgemm-gpu ; sys_platform == 'never'"
UV_INSTALL = f"uv pip install --override no-fbgemm-gpu.txt tzrec-core tzrec-hstu fbgemm-gpu-cpu=={FBGEMM_VERSION}"
PIP_SWAP = cpu_swap_command(FBGEMM_VERSION)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = run([uv_bin(), "build", "--all-packages", "-o", str(out)], cwd=REPO_ROOT)
    return out, proc.stdout + proc.stderr


def test_every_wheel_builds_from_its_sdist(dist):
    out, log = dist
    assert sorted(p.name.split("-")[0] for p in out.glob("*.tar.gz")) == MEMBERS
    assert sorted(p.name.split("-")[0] for p in out.glob("*.whl")) == MEMBERS
    assert log.count("Building wheel from source distribution") == len(MEMBERS), log
    with tarfile.open(out / "tzrec_core-0.1.0.tar.gz") as sdist:
        names = sdist.getnames()
    assert "tzrec_core-0.1.0/protos/tzrec/protos/model.proto" in names
    assert "tzrec_core-0.1.0/hatch_build.py" in names
    sources = sorted(
        p.relative_to(REPO_ROOT / "protos").as_posix()
        for p in (REPO_ROOT / "protos").rglob("*.proto")
    )
    with zipfile.ZipFile(out / "tzrec_core-0.1.0-py3-none-any.whl") as wheel:
        shipped = sorted(n for n in wheel.namelist() if n.endswith(".proto"))
    assert shipped == sources


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    wheels, _ = dist
    root = tmp_path_factory.mktemp("packaging")
    uv = uv_bin()
    constraints = root / "constraints.txt"
    exported = run(
        [uv, "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-groups"],
        cwd=REPO_ROOT,
    ).stdout
    constraints.write_text(exported)
    (root / "no-fbgemm-gpu.txt").write_text(OVERRIDE_LINE + "\n")
    env_dir = root / "venv"
    run([uv, "venv", "--seed", "--python", sys.executable, str(env_dir)])
    # README's uv recipe, plus where our wheels are and uv.lock's pins
    recipe = UV_INSTALL.split()
    run(
        [
            uv,
            *recipe[1:3],
            "--python",
            str(env_dir / "bin" / "python"),
            "--find-links",
            str(wheels),
            "--constraint",
            str(constraints),
            *recipe[3:],
        ],
        cwd=root,
    )
    return env_dir


def test_wheels_install_and_list_hstu_match(venv):
    out = run([str(venv / "bin" / "tzrec"), "plugins", "--json"]).stdout
    rows = {row["distribution"]: row for row in json.loads(out)}
    assert rows["tzrec-hstu"]["registers"]["models"] == ["dlrm_hstu", "hstu_match", "ultra_hstu"]
    # tzrec-hstu pulls in the packages it builds on
    assert {"tzrec-core", "tzrec-data", "tzrec-export"} <= set(rows)
    freeze = run([uv_bin(), "pip", "list", "--python", str(venv / "bin" / "python")]).stdout
    assert "fbgemm-gpu-cpu" in freeze
    assert "fbgemm-gpu " not in freeze


def test_installed_package_is_not_the_workspace_source(venv):
    code = "import tzrec.core, tzrec.hstu; print(tzrec.core.__file__); print(tzrec.hstu.__file__)"
    out = run([str(venv / "bin" / "python"), "-c", code]).stdout
    assert str(REPO_ROOT) not in out
    assert out.count(str(venv)) == 2


def test_wheel_ships_proto_sources_for_plugin_authors(venv):
    out = run([str(venv / "bin" / "tzrec"), "plugins", "--proto-path"]).stdout.strip()
    assert out.startswith(str(venv))
    assert (Path(out) / "tzrec" / "protos" / "model.proto").is_file()


def test_readme_pip_swap_line_runs_with_pip_and_leaves_a_working_torchrec(venv):
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run(["bash", "-c", PIP_SWAP], env=env)
    out = run([str(venv / "bin" / "python"), "-c", "import torchrec; print('torchrec ok')"])
    assert out.stdout.strip() == "torchrec ok"
    freeze = run([str(venv / "bin" / "pip"), "list"]).stdout
    assert re.search(rf"^fbgemm[-_]gpu[-_]cpu\s+{re.escape(FBGEMM_VERSION)}$", freeze, re.M), freeze


def test_without_tzrec_hstu_a_hstu_match_config_says_to_install_it(venv):
    run([uv_bin(), "pip", "uninstall", "--python", str(venv / "bin" / "python"), "tzrec-hstu"])
    config = REPO_ROOT / "docs" / "examples" / "hstu_match_kuairand.config"
    proc = run(
        [str(venv / "bin" / "tzrec"), "train", "--pipeline_config_path", str(config)],
        check=False,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("tzrec: error: ")
    assert "hstu_match" in line and "pip install tzrec-hstu" in line, line


def test_readme_shows_the_tested_recipes():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f'echo "{OVERRIDE_LINE}" > no-fbgemm-gpu.txt' in readme
    assert UV_INSTALL in readme
    assert PIP_SWAP in readme


# A stand-in for the CUDA build on a machine without a driver: it fails exactly as
# fbgemm-gpu 1.9 does (an ERROR record, then OSError from torch.ops.load_library).
FAKE_CUDA_FBGEMM = textwrap.dedent(
    """
    import logging, os
    _so = os.path.join(os.path.dirname(__file__), "fbgemm_gpu_py.so")
    logging.error(f"Could not load the library 'fbgemm_gpu_py.so'!\\n\\n\\nCould not load this library: {_so}\\n\\n\\n")
    try:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file: No such file or directory")
    except OSError as e:
        raise OSError(f"Could not load this library: {_so}") from e
    """
)


def test_cuda_fbgemm_on_cpu_is_one_line_with_the_exact_fix(tmp_path):
    site = tmp_path / "site"
    (site / "fbgemm_gpu").mkdir(parents=True)
    (site / "fbgemm_gpu" / "__init__.py").write_text(FAKE_CUDA_FBGEMM)
    info = site / f"fbgemm_gpu-{FBGEMM_VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: fbgemm-gpu\nVersion: {FBGEMM_VERSION}\n"
    )
    config = REPO_ROOT / "docs" / "examples" / "dssm.config"
    proc = subprocess.run(
        [sys.executable, "-m", "tzrec.core.cli", "train", "--pipeline_config_path", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"tzrec: error: fbgemm-gpu {FBGEMM_VERSION} (the CUDA build torchrec depends on) "
        "cannot load here (libnvidia-ml.so.1: cannot open shared object file: No such file "
        f"or directory); on a machine without an NVIDIA GPU use the CPU build: {PIP_SWAP}"
    ]
