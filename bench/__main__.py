"""``python -m bench``: measure the gateway against native Envoy authorization, side by side.

Exit codes: 0 every available scenario and target measured, 1 some failed, 2 usage or setup.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from bench import report
from bench.errors import BenchError
from bench.runner import RunOptions, log, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load")
    parser.add_argument("--connections", type=int, default=20, help="requests in flight (wrk)")
    parser.add_argument("--threads", type=int, default=2, help="load generator threads")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 s runs, 1k sessions")
    parser.add_argument("--only", help="comma-separated scenario keys, e.g. a,b,d or f")
    parser.add_argument("--rate", type=float, help="fixed rate for latency (default: (b)/2)")
    parser.add_argument(
        "--sessions",
        type=int,
        help="sessions added for the many-sessions run, and distinct sessions (and as many "
        "bogus cookies) checked for the memory run (default 100000)",
    )
    parser.add_argument(
        "--authz-log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="ext_authz's log_level (info, the default config, logs one line per check)",
    )
    parser.add_argument(
        "--authz-workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="ext_authz worker processes for (d) and (e) (default: one per CPU)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="report directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or (args.rate is not None and args.rate <= 0):
        parser.error("--duration and --rate must be positive, --warmup not negative")
    if min(args.threads, args.authz_workers) < 1 or args.connections < args.threads:
        # wrk refuses fewer connections than threads; 0 threads would divide by zero.
        parser.error("--threads and --authz-workers must be positive, --connections >= --threads")
    quick = args.quick
    options = RunOptions(
        duration=1.0 if quick else args.duration,
        warmup=0.0 if quick else args.warmup,
        connections=args.connections,
        threads=args.threads,
        only=tuple(args.only.split(",")) if args.only else None,
        rate=args.rate,
        sessions=args.sessions if args.sessions is not None else (1000 if quick else 100_000),
        authz_log_level=args.authz_log_level,
        authz_workers=args.authz_workers,
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        result = run(options)
    except BenchError as exc:
        log(str(exc))
        return 2
    result["started_at"] = started
    result["command"] = shlex.join(
        ["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]
    )
    result["settings"] = {
        **options.__dict__,
        "load": f"{options.connections} connections, {options.threads} threads, "
        f"{options.duration:g} s runs after {options.warmup:g} s warm-up",
    }
    paths = report.write(result, args.out)
    print(report.markdown(result))
    print("written: " + ", ".join(str(path) for path in paths.values()))
    failed = [s["key"] for s in result["scenarios"] if s["status"] == "failed"]
    if "error" in result.get("gateway", {}).get("many_sessions", {}):
        failed.append("many-sessions")
    if "error" in result.get("gateway", {}).get("distinct_sessions", {}):
        failed.append("distinct-sessions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
