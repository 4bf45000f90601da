"""The soak report: a short text summary for the terminal and the full JSON on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

MAX_PRINTED_SURPRISES = 10


def write(report: dict[str, Any], directory: Path) -> Path:
    """Write the report as ``soak-<UTC time>.json`` in ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / time.strftime("soak-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def _mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.1f}"


def summary(report: dict[str, Any]) -> str:
    traffic = report["traffic"]
    lines = [
        f"soak {'PASSED' if report['passed'] else 'FAILED'}: {report['elapsed_seconds']}s, "
        f"{traffic['total_requests']} requests, "
        f"{traffic['unexpected']['count']} unexpected",
        "",
        "requests per kind (login and logout count every hop, the IdPs' pages included):",
    ]
    for kind, count in traffic["requests"].items():
        statuses = ", ".join(f"{s}×{n}" for s, n in traffic["statuses"][kind].items())
        lines.append(f"  {kind:<22} {count:>8}   ({statuses})")
    if traffic["notes"]:
        lines.append("notes: " + ", ".join(f"{k}={v}" for k, v in traffic["notes"].items()))
    for surprise in traffic["unexpected"]["details"][:MAX_PRINTED_SURPRISES]:
        lines.append(
            f"  UNEXPECTED {surprise['kind']} {surprise['request']} at {surprise['at_seconds']}s: "
            f"status {surprise['status']}, expected {surprise['expected']}: "
            f"{surprise['detail'][:300]}"
        )
    lines += ["", "resident memory (MB)   launch    start      end     peak   growth  allowed"]
    for name, entry in report["memory"].items():
        lines.append(
            f"  {name:<18} {_mb(entry['launch_kb']):>8} {_mb(entry['start_kb']):>8} "
            f"{_mb(entry['end_kb']):>8} {_mb(entry['peak_kb']):>8} "
            f"{_mb(entry.get('growth_kb')):>8} {_mb(entry.get('allowed_growth_kb')):>8}"
            f"{'' if entry['ok'] else '  TOO MUCH'}"
        )
    redis = report["redis"]
    accounting = redis["accounting"]
    lines += [
        "",
        f"redis: DBSIZE {redis['start']['dbsize']} at start, {redis['end']['dbsize']} at end; "
        f"{accounting['session_records']} session records for "
        f"{accounting['live_sessions']['total']} live sessions "
        f"({accounting['live_sessions']['login']} logged in, "
        f"{accounting['live_sessions']['direct']} CLI)",
    ]
    for moment in ("start", "end"):
        prefixes = ", ".join(
            f"{category}={values['keys']}"
            for category, values in redis[moment]["by_prefix"].items()
        )
        lines.append(f"  keys by prefix at {moment}: {prefixes or 'none'}")
    lines.append(
        f"  index entries at end: {redis['end']['index_entries']}, "
        f"of them stale: {redis['end']['stale_index_entries']}"
    )
    lines.append(
        "idp refreshes: "
        + ", ".join(f"{name}={stats['refreshes']}" for name, stats in report["idps"].items())
        + "; logins: "
        + ", ".join(f"{name}={stats['logins']}" for name, stats in report["idps"].items())
    )
    for warning in report["warnings"]:
        lines.append(f"WARNING: {warning}")
    for failure in report["failures"]:
        lines.append(f"FAILURE: {failure}")
    return "\n".join(lines)
