"""Regenerate ``tzrec.protos`` (``*_pb2.py`` + ``.pyi``) from ``protos/`` into tzrec-core.

Usage: ``uv run python scripts/gen_protos.py`` to regenerate, ``--check`` to fail (exit 1)
when the committed files differ from what the ``.proto`` sources generate.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "packages" / "tzrec-core" / "src"
GENERATED_DIR = OUT_ROOT / "tzrec" / "protos"


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every ``.proto`` and return the generated files (relative)."""
    sources = sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))
    if not sources:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    include = resources.files("grpc_tools") / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            *(str(s) for s in sources),
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")
    return sorted(p.relative_to(out_root) for p in (out_root / "tzrec").rglob("*.py*"))


def main() -> int:
    """Regenerate, or with ``--check`` compare against the committed files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check freshness")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_root = Path(tmp)
        fresh = generate(tmp_root)
        committed = sorted(p.relative_to(OUT_ROOT) for p in GENERATED_DIR.rglob("*_pb2.py*"))
        if args.check:
            stale = [
                str(p)
                for p in fresh
                if not (OUT_ROOT / p).exists()
                or not filecmp.cmp(tmp_root / p, OUT_ROOT / p, shallow=False)
            ]
            extra = [str(p) for p in committed if p not in fresh]
            if stale or extra:
                print(
                    "generated protos are stale; run `uv run python scripts/gen_protos.py`"
                    f" (differs: {', '.join(stale) or '-'}; no source: "
                    f"{', '.join(extra) or '-'})"
                )
                return 1
            print(f"protos are fresh ({len(fresh)} generated files)")
            return 0
        for p in committed:
            (OUT_ROOT / p).unlink()
        for p in fresh:
            (OUT_ROOT / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_root / p, OUT_ROOT / p)
        print(f"wrote {len(fresh)} files under {GENERATED_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
