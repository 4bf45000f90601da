"""``python -m soak``: mixed, verified traffic through the whole gateway for a set time.

Exit codes: 0 passed; 1 an unexpected outcome, memory growth beyond the allowance, leaked
Redis keys or a component that died; 2 usage or the stack did not start.

With ``--faults`` it runs the fault-injection suite instead (soak/fault_suite.py): exit 1
then means a fault let a request through, lost a session or did not heal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soak import fault_suite, report
from soak.fault_run import FaultTimings
from soak.runner import SoakOptions, log, run
from soak.verdict import Thresholds


def _parser() -> argparse.ArgumentParser:
    defaults = SoakOptions()
    thresholds = Thresholds()
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds")
    parser.add_argument(
        "--clients", type=int, help=f"client threads (soak {defaults.clients}, faults 4)"
    )
    parser.add_argument(
        "--access-token-ttl",
        type=int,
        help="seconds the dev IdPs' access tokens live (refreshes happen at half of it; "
        f"soak {defaults.access_token_ttl}, faults {fault_suite.ACCESS_TOKEN_TTL})",
    )
    parser.add_argument("--authz-workers", type=int, default=defaults.authz_workers)
    parser.add_argument(
        "--think-time", type=float, default=defaults.think_time, help="pause between steps (s)"
    )
    parser.add_argument(
        "--memory-growth-percent", type=float, default=thresholds.memory_growth_percent
    )
    parser.add_argument("--memory-growth-mb", type=float, default=thresholds.memory_growth_mb)
    parser.add_argument(
        "--log-level",
        default=defaults.log_level,
        choices=("debug", "info", "warning", "error"),
        help="the gateway components' log level",
    )
    parser.add_argument(
        "--cli-logout",
        action="store_true",
        help="add CLI logouts (POST /auth/logout with a bearer credential) to the mix",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="traffic mix seed")
    parser.add_argument(
        "--faults",
        metavar="all|NAME,...",
        help="run the fault-injection suite instead of a soak (soak/faults.py names the faults)",
    )
    parser.add_argument(
        "--fault-seconds",
        type=float,
        default=FaultTimings().fault_seconds,
        help="how long each fault lasts (with --faults)",
    )
    parser.add_argument("--out", type=Path, default=Path("soak-results"), help="report directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.faults is not None:
        return _faults(parser, args)
    defaults = SoakOptions()
    args.clients = defaults.clients if args.clients is None else args.clients
    if args.access_token_ttl is None:
        args.access_token_ttl = defaults.access_token_ttl
    if args.duration <= 0 or args.clients < 1 or args.authz_workers < 1:
        parser.error("--duration, --clients and --authz-workers must be positive")
    options = SoakOptions(
        duration=args.duration,
        clients=args.clients,
        access_token_ttl=args.access_token_ttl,
        authz_workers=args.authz_workers,
        think_time=args.think_time,
        log_level=args.log_level,
        seed=args.seed,
        cli_logout=args.cli_logout,
        thresholds=Thresholds(args.memory_growth_percent, args.memory_growth_mb),
    )
    try:
        result = run(options)
    except RuntimeError as exc:  # a process of the stack did not start (with its output)
        log(f"the stack did not start: {exc}")
        return 2
    print(report.summary(result))
    path = report.write(result, args.out)
    print(f"report: {path}")
    return 0 if result["passed"] else 1


def _faults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The fault-injection suite: exit 0 when every fault let nobody through, lost no
    session and healed by itself."""
    try:
        names = fault_suite.fault_names(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if args.fault_seconds <= 0:
        parser.error("--fault-seconds must be positive")
    timings = FaultTimings(fault_seconds=args.fault_seconds, clients=args.clients or 4)
    ttl = args.access_token_ttl or fault_suite.ACCESS_TOKEN_TTL
    try:
        result = fault_suite.run_suite(names, timings, access_token_ttl=ttl, progress=log)
    except RuntimeError as exc:
        log(f"the stack did not start: {exc}")
        return 2
    print(fault_suite.markdown_table(result))
    path = fault_suite.write(result, args.out)
    print(f"report: {path} (table: {path.with_suffix('.md')})")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
