"""Error types whose message is the one line a user sees.

The CLI prints ``str(error)`` and exits non-zero; ``--debug`` shows the traceback.
"""


class TzrecError(Exception):
    """Base class of every error tzrec reports to a user as a single line."""

    exit_code = 1


class ConfigError(TzrecError):
    """A pipeline config is malformed, inconsistent or names something unknown."""


class PluginError(TzrecError):
    """Plugins clash, fail to load, or do not provide what a config asks for."""


class DataError(TzrecError):
    """Input data does not match what the config says it should contain."""


class NotBuiltError(TzrecError):
    """A command or component exists in the interface but its engine is not built yet."""

    exit_code = 3
