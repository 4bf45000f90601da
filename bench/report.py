"""The run's report three ways: JSON (everything), a Markdown table, a PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

COLUMNS = ("", "scenario", "max req/s", "vs (a)", "vs (b)", "p50 ms", "p99 ms", "notes")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _notes(scenario: dict[str, Any]) -> str:
    if scenario["status"] != "ok":
        return (scenario["error"] or scenario["status"]).replace("|", "/").splitlines()[0][:160]
    latency = scenario["latency"] or {}
    if latency.get("overloaded"):
        return f"overloaded at the fixed rate (answered {_number(latency['achieved_rps'])}/s)"
    return ""


def markdown(report: dict[str, Any]) -> str:
    machine, versions = report["machine"], report["versions"]
    rate = report.get("rate_rps")
    lines = [
        "# gateway benchmark",
        "",
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_mib']} MiB, "
        f"Linux {machine['kernel']}, load average {machine['load_average_before'][0]:.2f} "
        f"before and {machine['load_average_after'][0]:.2f} after.",
        f"Envoy {versions['envoy']} (1 worker per front Envoy), "
        f"grpcio {versions['grpcio']}, Python {versions['python']}, "
        f"gateway {versions['gateway_commit']}.",
        f"Command: `{report['command']}` ({report['started_at']}).",
        f"Max req/s: closed loop (wrk; h2load for f), {report['settings']['load']}. "
        "Latency: open loop (bench.openloop, timed from each request's due time) at "
        + (f"{_number(rate)} req/s (half of (b)'s maximum)." if rate else "no fixed rate."),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for s in report["scenarios"]:
        throughput, latency = s["throughput"] or {}, s["latency"] or {}
        ratios = s.get("throughput_ratio", {})
        cells = (
            s["key"], s["title"], _number(throughput.get("rps")),
            _number(ratios.get("vs_a"), 2), _number(ratios.get("vs_b"), 2),
            _number(latency.get("p50_ms"), 2), _number(latency.get("p99_ms"), 2), _notes(s),
        )  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += _settings_line(report)
    lines += _gateway_lines(report)
    return "\n".join(lines) + "\n"


def _settings_line(report: dict[str, Any]) -> list[str]:
    settings = report.get("gateway_settings")
    if not settings:
        return []
    ext_authz = settings["ext_authz"]
    return [
        "",
        f"Gateway as configured by default but for ext_authz workers "
        f"{ext_authz.get('workers', 1)} (one per CPU; f rows hit one worker), "
        f"log_level {settings['log_level']}, "
        f"session_cache_ttl {ext_authz.get('session_cache_ttl', 'n/a')} s; "
        "f-noop is grpc.aio alone. Ratios of f rows compare a Check with a whole request.",
    ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _gateway_lines(report: dict[str, Any]) -> list[str]:
    gateway = report.get("gateway")
    if not gateway:
        return []
    lines = ["", "Gateway targets from the issue:", "", "| target | limit | measured | |"]
    lines.append("|---|---|---|---|")
    memory = report.get("ext_authz_memory")
    if memory:
        ok = memory["rss_mib"] <= gateway["rss_limit_mib"]
        lines.append(
            f"| ext_authz RSS (1 process), after ({memory['after']}) | ≤ "
            f"{gateway['rss_limit_mib']} MiB | {memory['rss_mib']} MiB "
            f"(peak {memory['peak_rss_mib']}, {memory['at_start_rss_mib']} at start) "
            f"| {_verdict(ok)} |"
        )
    session = gateway["session"]
    ok = session["memory_usage_bytes"] <= session["limit_bytes"]
    lines.append(
        f"| Redis MEMORY USAGE, one session with 3 providers' tokens | ≤ "
        f"{session['limit_bytes']} B | {session['memory_usage_bytes']} B (sealed record "
        f"{session['sealed_record_bytes']} B) | {_verdict(ok)} |"
    )
    lines += _distinct_sessions_line(gateway)
    many = gateway.get("many_sessions")
    if many and "error" in many:
        lines.append(f"| Check req/s, many sessions vs 1 | | failed: {many['error'][:120]} | |")
    elif many:
        ok = abs(min(many["change"], 0)) <= many["tolerance"]
        lines.append(
            f"| Check req/s, {many['sessions_added']:,} more sessions vs 1 (session cache off, "
            f"medians of {many['rounds']} alternating runs) | within "
            f"{many['tolerance']:.0%} | {_number(many['rps_many_sessions'])} vs "
            f"{_number(many['rps_one_session'])} ({many['change']:+.1%}; "
            f"{many['used_memory_per_session_bytes']} B/session in Redis, filled in "
            f"{many['seconds']} s) | {_verdict(ok)} |"
        )
    return lines


def _distinct_sessions_line(gateway: dict[str, Any]) -> list[str]:
    distinct = gateway.get("distinct_sessions")
    if not distinct:
        return []
    title = "ext_authz RSS (1 worker) after N distinct sessions and N bogus cookies"
    if "error" in distinct:
        return [f"| {title} | | failed: {distinct['error'][:120]} | |"]
    ok = distinct["rss_mib"] <= gateway["rss_limit_mib"]
    return [
        f"| {title.replace('N', format(distinct['sessions'], ','))} | ≤ "
        f"{gateway['rss_limit_mib']} MiB | {distinct['rss_mib']} MiB (highest of: "
        f"{distinct['after_valid']['rss_mib']} after the sessions, "
        f"{distinct['after_bogus']['rss_mib']} after the bogus cookies, "
        f"{distinct['idle']['rss_mib']} once the cache emptied; "
        f"{distinct['at_start']['rss_mib']} at start) | {_verdict(ok)} |"
    ]


def chart(report: dict[str, Any], path: Path) -> None:
    """Two panels: maximum throughput, and p50/p99 at the fixed rate; n/a where not measured."""
    scenarios = report["scenarios"]
    labels = [f"({s['key']}) {s['title']}" for s in scenarios]
    rps = [(s["throughput"] or {}).get("rps") or 0 for s in scenarios]
    p50 = [(s["latency"] or {}).get("p50_ms") or 0 for s in scenarios]
    p99 = [(s["latency"] or {}).get("p99_ms") or 0 for s in scenarios]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 0.6 * len(scenarios) + 2))
    rows = list(range(len(scenarios)))
    left.barh(rows, rps, color="#4c72b0")
    left.set_title("max throughput (req/s, closed loop)")
    # Hatched: the scenario could not keep up with the fixed rate (its latency is queueing).
    hatches = ["//" if (s["latency"] or {}).get("overloaded") else "" for s in scenarios]
    right.barh([r - 0.2 for r in rows], p50, 0.4, label="p50", color="#55a868", hatch=hatches)
    right.barh([r + 0.2 for r in rows], p99, 0.4, label="p99", color="#c44e52", hatch=hatches)
    rate = _number(report.get("rate_rps"))
    right.set_title(f"latency at {rate} req/s (ms, open loop; hatched: overloaded)")
    if any(p99):
        right.set_xscale("log")
    right.legend()
    for axis in (left, right):
        axis.set_yticks(rows, labels if axis is left else [""] * len(rows))
        axis.invert_yaxis()
    for row, scenario in enumerate(scenarios):
        if scenario["status"] != "ok":
            left.text(0, row, "  n/a" if scenario["status"] == "not available" else "  failed")
    figure.suptitle(f"{report['machine']['nproc']} CPUs, {report['machine']['cpu_model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "png": out / "bench.png"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(markdown(report))
    chart(report, paths["png"])
    return paths
