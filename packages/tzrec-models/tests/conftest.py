import pytest

from tzrec.core import plugins


@pytest.fixture
def only_models_plugin(monkeypatch):
    """Load just tzrec-models' plugin: fast, and independent of sibling packages."""
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tzrec-models")
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()
