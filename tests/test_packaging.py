"""Built wheels install on their own: `pip install tzrec-core tzrec-hstu` gives HSTUMatch.

Builds every member's wheel, creates a fresh venv, installs only tzrec-core and tzrec-hstu
from those wheels (their dependencies come from the index, pinned to uv.lock's versions
and with the CPU build of fbgemm, as README's CPU recipe does), then checks what
`tzrec plugins --json` reports and what a config needing a missing plugin says.
"""

import json
import sys

import pytest
from tzrec_testing import REPO_ROOT, run, uv_bin

pytestmark = pytest.mark.slow

FBGEMM_CPU_OVERRIDE = "fbgemm-gpu ; sys_platform == 'never'\n"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("packaging")
    dist = root / "dist"
    uv = uv_bin()
    run([uv, "build", "--all-packages", "--wheel", "-o", str(dist)], cwd=REPO_ROOT)
    wheels = sorted(p.name.split("-")[0] for p in dist.glob("*.whl"))
    assert wheels == [
        "tzrec_core",
        "tzrec_data",
        "tzrec_export",
        "tzrec_hstu",
        "tzrec_kernels",
        "tzrec_models",
    ]
    constraints = root / "constraints.txt"
    exported = run(
        [uv, "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-groups"],
        cwd=REPO_ROOT,
    ).stdout
    constraints.write_text(exported)
    overrides = root / "overrides.txt"
    overrides.write_text(FBGEMM_CPU_OVERRIDE)
    env_dir = root / "venv"
    run([uv, "venv", "--python", sys.executable, str(env_dir)])
    python = env_dir / "bin" / "python"
    run(
        [
            uv,
            "pip",
            "install",
            "--python",
            str(python),
            "--find-links",
            str(dist),
            "--constraint",
            str(constraints),
            "--override",
            str(overrides),
            "tzrec-core==0.1.0",
            "tzrec-hstu==0.1.0",
            "fbgemm-gpu-cpu",
        ]
    )
    return env_dir


def test_wheels_install_and_list_hstu_match(venv):
    out = run([str(venv / "bin" / "tzrec"), "plugins", "--json"]).stdout
    rows = {row["distribution"]: row for row in json.loads(out)}
    assert rows["tzrec-hstu"]["registers"]["models"] == ["dlrm_hstu", "hstu_match"]
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
    assert (venv / "lib").exists()
    from pathlib import Path

    assert (Path(out) / "tzrec" / "protos" / "model.proto").is_file()


def test_without_tzrec_hstu_a_hstu_match_config_says_to_install_it(venv):
    run([uv_bin(), "pip", "uninstall", "--python", str(venv / "bin" / "python"), "tzrec-hstu"])
    config = REPO_ROOT / "docs" / "examples" / "hstu_match_kuairand.config"
    proc = run(
        [str(venv / "bin" / "tzrec"), "train", "--pipeline_config_path", str(config)],
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "tzrec: error: model 'hstu_match' is provided by tzrec-hstu: pip install tzrec-hstu"
    )
