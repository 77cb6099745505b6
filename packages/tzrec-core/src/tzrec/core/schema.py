"""Where tzrec's ``.proto`` sources live, for plugins that compile their own extensions.

Installed wheels ship the sources beside the generated ``*_pb2.py`` files; a workspace
checkout keeps them in the repository's top-level ``protos/`` directory.
"""

from __future__ import annotations

from pathlib import Path

from tzrec.core.errors import PluginError


def proto_include_dir() -> Path:
    """The directory to pass to ``protoc -I`` so ``import "tzrec/protos/model.proto"`` works."""
    import tzrec.protos

    entries = [Path(entry) for entry in tzrec.protos.__path__]
    for pkg in entries:  # a workspace checkout: prefer the editable sources
        for parent in pkg.parents:
            candidate = parent / "protos"
            if (candidate / "tzrec" / "protos" / "model.proto").is_file():
                return candidate
    for pkg in entries:  # an installed wheel
        if (pkg / "model.proto").is_file():
            return pkg.parent.parent
    raise PluginError(
        "tzrec's .proto sources are not installed next to tzrec.protos; reinstall tzrec-core"
    )
