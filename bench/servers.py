"""The processes one benchmark run starts; each logs into the run's work directory."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from devtools.processes import ManagedProcess, envoy_ready, find_binary, port_open


def _started(stack: ExitStack, process: ManagedProcess, ready: Any, timeout: float = 30) -> None:
    process.start(ready, timeout=timeout)
    stack.callback(process.stop)


def start_envoy(
    stack: ExitStack, name: str, bootstrap: dict[str, Any], workdir: Path, concurrency: int = 1
) -> ManagedProcess:
    """Envoy on ``bootstrap`` with ``concurrency`` workers; ready once its listener accepts."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False, width=1000))
    listener = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    argv = [
        find_binary("envoy"), "-c", str(path), "--disable-hot-restart",
        "--concurrency", str(concurrency), "--log-level", "warning",
    ]  # fmt: skip
    process = ManagedProcess(name, argv, log_dir=workdir)
    _started(stack, process, lambda: envoy_ready(admin, listener["port_value"]))
    return process


def start_redis(
    stack: ExitStack, port: int, workdir: Path, name: str = "redis-server"
) -> ManagedProcess:
    argv = [
        find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
    ]  # fmt: skip
    process = ManagedProcess(name, argv, log_dir=workdir)
    _started(stack, process, lambda: port_open(port))
    return process


def start_python_server(
    stack: ExitStack,
    name: str,
    module_argv: list[str],
    ports: list[int],
    workdir: Path,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """``python -m ...`` on this interpreter (the real ext_authz, or the do-nothing one);
    ready once every one of ``ports`` accepts connections (worker processes start in any
    order)."""
    process = ManagedProcess(name, [sys.executable, "-m", *module_argv], env=env, log_dir=workdir)
    _started(stack, process, lambda: all(port_open(port) for port in ports))
    return process


def worker_memory(pid: int) -> dict[str, float]:
    """The largest resident memory among a supervisor's worker processes (or of the process
    itself when it has none): the issue's target is per worker."""
    children_file = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(c) for c in children_file.read_text().split()] if children_file.exists() else []
    measured = [memory_of(child) for child in children] or [memory_of(pid)]
    largest = max(measured, key=lambda m: m.get("VmRSS_mib", m.get("rss_mib", 0.0)))
    return {**largest, "workers": float(len(children) or 1)}


def memory_of(pid: int) -> dict[str, float]:
    """Resident memory (VmRSS) and its peak (VmHWM) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)  # the kernel says kB
    return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}
