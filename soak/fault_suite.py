"""The fault-injection suite: each fault in turn on one running gateway, and its report.

``python -m soak --faults all --fault-seconds 20`` (``make faults``) runs every fault of
:func:`soak.faults.catalogue` for that long on a gateway started as deployed: one ext_authz
supervisor with two workers, Redis with the shipped persistence, both dev IdPs rotating
refresh tokens with short-lived access tokens. The report is JSON on disk plus a Markdown
table (fault | what users see | recovery time | sessions lost) for the README.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from soak.environment import Environment, running_gateway
from soak.fault_run import Carried, FaultRun, FaultTimings
from soak.faults import catalogue

ACCESS_TOKEN_TTL = 6  # seconds: refreshes every 3 s, so each fault outlives several tokens


@contextmanager
def fault_gateway(access_token_ttl: int = ACCESS_TOKEN_TTL) -> Iterator[Environment]:
    """The gateway as deployed, for faults: supervised workers, a durable Redis."""
    with running_gateway(
        access_token_ttl=access_token_ttl,
        authz_workers=2,
        log_level="warning",
        supervised=True,
        durable_redis=True,
    ) as env:
        yield env


def fault_names(selection: str) -> list[str]:
    """``all`` or a comma-separated list of fault names (ValueError names the unknown)."""
    known = list(catalogue())
    if selection == "all":
        return known
    names = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown faults {unknown}; known: {', '.join(known)}")
    return names


def run_fault(
    env: Environment,
    name: str,
    timings: FaultTimings,
    seed: int = 0,
    carried: Carried | None = None,
) -> dict:
    """Run one fault of the catalogue on ``env`` and return its result; ``carried`` passes
    healthy sessions and refused credentials from one fault to the next."""
    return FaultRun(env, catalogue()[name], timings, seed, carried).run()


def run_suite(
    names: Sequence[str],
    timings: FaultTimings,
    *,
    access_token_ttl: int = ACCESS_TOKEN_TTL,
    progress: Any = print,
) -> dict[str, Any]:
    """Every fault of ``names`` on one gateway, in turn; the whole report."""
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = []
    carried = Carried()
    timings = replace(timings, access_token_ttl=access_token_ttl)
    with fault_gateway(access_token_ttl) as env:
        for index, name in enumerate(names):
            progress(f"fault {name}: {catalogue()[name].summary}")
            try:
                result = run_fault(env, name, timings, index * 100, carried)
            except Exception as exc:  # noqa: BLE001 (one broken fault must not hide the others)
                result = failed_run(name, f"the suite could not run it: {exc!r}")
            progress(
                f"fault {name}: {'passed' if result['passed'] else 'FAILED'} {result['failures']}"
            )
            results.append(result)
    return {
        "started_at": started_at,
        "access_token_ttl": access_token_ttl,
        "timings": asdict(timings),
        "passed": all(result["passed"] for result in results),
        "faults": results,
    }


def failed_run(name: str, why: str) -> dict[str, Any]:
    """The result of a fault the suite itself failed to run."""
    return {
        "fault": name, "summary": catalogue()[name].summary, "passed": False,
        "failures": [why], "fault_seconds": 0, "sessions": 0, "let_through": 0,
        "sessions_lost": 0, "recovered": False, "recovery_seconds": None, "during_fault": {},
    }  # fmt: skip


def users_saw(result: dict[str, Any]) -> str:
    """What users saw during the fault, as a short phrase: statuses of live sessions first."""
    parts = []
    for kind in ("session", "no_session", "logged_out", "expired", "login_start"):
        statuses = result["during_fault"].get(kind)
        if not statuses:
            continue
        total = sum(statuses.values())
        shown = ", ".join(
            f"{status} {_percent(count, total)}"
            for status, count in sorted(statuses.items(), key=lambda item: -item[1])
        )
        label = {"session": "logged in", "login_start": "login page"}.get(kind, kind)
        parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _percent(count: int, total: int) -> str:
    share = 100 * count / total
    return "<1%" if 0 < share < 0.5 else f"{share:.0f}%"


def markdown_table(report: dict[str, Any]) -> str:
    """The README's table: fault | what users see | recovery time | sessions lost."""
    lines = [
        "| fault | what users see during the fault | recovery time | let through | sessions lost |",
        "|---|---|---|---|---|",
    ]
    for result in report["faults"]:
        if result["recovered"]:
            recovery = f"{result['recovery_seconds']:.1f} s"
        elif result["sessions_lost"]:
            recovery = "never: sessions lost"  # needs_login only ends with a new login
        else:
            recovery = f"not within {report['timings']['recovery_timeout']:g} s"
        lines.append(
            f"| {result['fault']} ({result['summary']}, {result['fault_seconds']:g} s) "
            f"| {users_saw(result)} | {recovery} | {result['let_through']} "
            f"| {result['sessions_lost']} of {result['sessions']} |"
        )
    return "\n".join(lines)


def write(report: dict[str, Any], directory: Path) -> Path:
    """``faults-<UTC time>.json`` and the ``.md`` table beside it; returns the JSON's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / time.strftime("faults-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    path.with_suffix(".md").write_text(markdown_table(report) + "\n")
    return path
