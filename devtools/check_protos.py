"""Fail when the committed generated protobuf code differs from what protos/ compiles to."""

from __future__ import annotations

import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.processes import REPO_ROOT

GENERATED = REPO_ROOT / "gateway" / "proto"


def main() -> int:
    protos = sorted((REPO_ROOT / "protos").glob("*.proto"))
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{REPO_ROOT / 'protos'}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                *map(str, protos),
            ],
            check=True,
        )
        stale = [
            fresh.name
            for fresh in sorted(Path(out).iterdir())
            if not (GENERATED / fresh.name).exists()
            or not filecmp.cmp(fresh, GENERATED / fresh.name, shallow=False)
        ]
    if stale:
        print(f"generated code out of date: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    print(f"generated code matches {len(protos)} proto file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
