"""Closed-loop maximum throughput with wrk (HTTP/1.1) and h2load (gRPC over h2c), parsed.

Both report every response status they saw, so a run that was fast because it was answered
with errors fails instead of looking good: wrk through a small Lua script whose ``done()``
prints the per-status counts of all threads, h2load through its own status and traffic lines.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.errors import BenchError

WRK_SCRIPT = r"""
-- Counts every response status per thread; done() prints the merged counts and the totals.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  for status, count in pairs(merged) do
    io.write(string.format("BENCH status %d %d\n", status, count))
  end
  local e = summary.errors
  io.write(string.format("BENCH summary %d %d %d %d %d %d %d\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("BENCH latency %d %d\n", latency:percentile(50), latency:percentile(99)))
end
"""


_WRK_ERRORS = ("connect", "read", "write", "status", "timeout")


def _run(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])}... failed ({done.returncode}): {done.stderr}")
    return done.stdout


def run_wrk(
    url: str,
    headers: dict[str, str],
    *,
    duration: float,
    connections: int,
    threads: int,
    script: Path,
) -> dict[str, Any]:
    """wrk for ``duration`` seconds (whole seconds, at least 1): throughput and statuses."""
    seconds = max(1, math.ceil(duration))
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    argv += ["--timeout", "5s", "-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    output = _run([*argv, url], timeout=seconds + 30)
    statuses: dict[str, int] = {}
    summary: list[int] = []
    latency: list[int] = []
    for line in output.splitlines():
        if not line.startswith("BENCH "):
            continue
        kind, _, rest = line.removeprefix("BENCH ").partition(" ")
        numbers = [int(n) for n in rest.split()]
        if kind == "status":
            statuses[str(numbers[0])] = numbers[1]
        elif kind == "summary":
            summary = numbers
        elif kind == "latency":
            latency = numbers
    if not summary:
        raise BenchError(f"wrk printed no summary:\n{output}")
    requests, duration_us, *errors = summary
    return {
        "tool": f"wrk -t {threads} -c {connections} -d {seconds}s",
        "rps": round(requests / (duration_us / 1e6), 1),
        "requests": requests,
        "duration_s": round(duration_us / 1e6, 2),
        "statuses": dict(sorted(statuses.items())),
        "socket_errors": dict(zip(_WRK_ERRORS, errors, strict=True)),
        # Closed-loop latencies, kept for reference only: the open-loop run is the honest one.
        "closed_loop_p50_ms": latency[0] / 1000 if latency else None,
        "closed_loop_p99_ms": latency[1] / 1000 if latency else None,
    }


_STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
_H2LOAD_PATTERNS = {
    "rps": re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s"),
    "requests": re.compile(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout"
    ),
    "statuses": re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx"),
    "data": re.compile(r"traffic: .* \((\d+)\) data"),
}


def run_h2load(
    url: str,
    body: Path,
    *,
    clients: int,
    threads: int,
    streams: int,
    duration: float | None = None,
    requests: int | None = None,
    rps_per_client: float | None = None,
    log_file: Path | None = None,
) -> dict[str, Any]:
    """POST ``body`` (a framed gRPC message) as gRPC does; counts and the bytes of data received."""
    argv = ["h2load", "-t", str(threads), "-c", str(clients), "-m", str(streams)]
    argv += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if duration is not None:
        argv += ["-D", f"{duration:g}"]
    if requests is not None:
        argv += ["-n", str(requests)]
    if rps_per_client is not None:
        argv += [f"--rps={rps_per_client:g}"]
    if log_file is not None:
        argv += [f"--log-file={log_file}"]
    output = _run([*argv, url], timeout=(duration or 10) + 30)
    total, done, succeeded, failed, errored, timeouts = _numbers(output, "requests")
    return {
        "tool": f"h2load -t {threads} -c {clients} -m {streams}",
        "rps": _numbers(output, "rps")[0],
        "requests": int(done),
        "succeeded": int(succeeded),
        "statuses": dict(zip(_STATUS_CLASSES, map(int, _numbers(output, "statuses")), strict=True)),
        "failures": {"failed": int(failed), "errored": int(errored), "timeout": int(timeouts)},
        "data_bytes": int(_numbers(output, "data")[0]),
    }


def _numbers(output: str, key: str) -> list[float]:
    match = _H2LOAD_PATTERNS[key].search(output)
    if match is None:
        raise BenchError(f"h2load output lacks its {key} line:\n{output}")
    return [float(group) for group in match.groups()]
