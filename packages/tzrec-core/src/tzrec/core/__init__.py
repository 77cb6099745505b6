"""tzrec core: config schema and API, plugin manager, CLI and training engine."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tzrec-core")
except PackageNotFoundError:  # running from a source tree without metadata
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
