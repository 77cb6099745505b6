from pathlib import Path

import pytest

from tzrec.core import plugins

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT / "docs" / "examples"


@pytest.fixture(autouse=True)
def fresh_plugin_manager(monkeypatch):
    """Every test starts with no cached plugins and no TZREC_LOAD_PLUGINS."""
    monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


@pytest.fixture
def hstu_config_path() -> Path:
    return EXAMPLES / "hstu_match_kuairand.config"


@pytest.fixture
def dssm_config_path() -> Path:
    return EXAMPLES / "dssm.config"
