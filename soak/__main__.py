"""``python -m soak``: mixed, verified traffic through the whole gateway for a set time.

Exit codes: 0 passed; 1 an unexpected outcome, memory growth beyond the allowance, leaked
Redis keys or a component that died; 2 usage or the stack did not start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soak import report
from soak.runner import SoakOptions, log, run
from soak.verdict import Thresholds


def _parser() -> argparse.ArgumentParser:
    defaults = SoakOptions()
    thresholds = Thresholds()
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="client threads")
    parser.add_argument(
        "--access-token-ttl",
        type=int,
        default=defaults.access_token_ttl,
        help="seconds the dev IdPs' access tokens live (refreshes happen at half of it)",
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
    parser.add_argument("--out", type=Path, default=Path("soak-results"), help="report directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
