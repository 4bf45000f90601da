"""The load tools (installed when missing and allowed to) and what the report records about
the machine and the software measured."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from bench.errors import BenchError
from devtools.processes import REPO_ROOT, find_binary

# Command -> the Debian package that has it.
LOAD_TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client"}


def missing_tools() -> list[str]:
    return [tool for tool in LOAD_TOOLS if shutil.which(tool) is None]


def ensure_tools() -> None:
    """Install wrk and h2load with apt-get when missing and we are root; else say how."""
    missing = missing_tools()
    if not missing:
        return
    packages = [LOAD_TOOLS[tool] for tool in missing]
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(
            f"{', '.join(missing)} not found; install them with `sudo {' '.join(command)}`"
        )
    print(f"installing {', '.join(packages)} with apt-get", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], command):
        if subprocess.run(step, env=env, stdout=subprocess.DEVNULL, check=False).returncode:
            raise BenchError(f"`{' '.join(step)}` failed")
    if missing_tools():
        raise BenchError(f"still missing after apt-get: {', '.join(missing_tools())}")


def _first_line(argv: list[str], pattern: str = r".+") -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(0).strip() if match else "unknown"


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "memory_mib": int(memory.group(1)) // 1024 if memory else None,
        "kernel": platform.release(),
        # Other work on the machine skews every number; this shows whether there was any.
        "load_average_before": os.getloadavg(),
    }


def versions() -> dict[str, str]:
    envoy = _first_line([find_binary("envoy"), "--version"], r"\d+\.\d+\.\d+/[^ ]+")
    commit = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True, check=False
    ).stdout
    return {
        "envoy": envoy,
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "python": platform.python_version(),
        "redis_server": _first_line([find_binary("redis-server"), "--version"], r"v=\S+"),
        "wrk": _first_line(["wrk", "-v"], r"wrk \S+"),
        "h2load": _first_line(["h2load", "--version"]),
        "gateway_commit": commit + ("+uncommitted" if dirty.strip() else ""),
    }
