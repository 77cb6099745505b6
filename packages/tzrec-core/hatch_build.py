"""Hatch build hook: ship tzrec's ``.proto`` sources in tzrec-core's sdist and wheel.

The sources live in the repository's top-level ``protos/`` (one schema for every package).
The sdist copies them to its own ``protos/`` so that a wheel built from the sdist alone finds
them there; a wheel built from the source tree reads them from the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: Where the sources are, first match wins: inside an unpacked sdist, then in the repository.
_CANDIDATES = ("protos/tzrec/protos", "../../protos/tzrec/protos")


class ProtoSourcesHook(BuildHookInterface):
    """Force-include ``tzrec/protos/*.proto`` (sdist: ``protos/...``; wheel: beside the pb2s)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Add the proto directory to this target's forced inclusions."""
        root = Path(self.root)
        found = next((root / c for c in _CANDIDATES if (root / c / "model.proto").is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"tzrec-core build: no tzrec .proto sources under {root} (looked in "
                f"{', '.join(_CANDIDATES)}); build from the repository or from tzrec-core's sdist"
            )
        target = "protos/tzrec/protos" if self.target_name == "sdist" else "tzrec/protos"
        build_data["force_include"][str(found.resolve())] = target
