"""One benchmark run: start what the chosen scenarios need, check each answers correctly,
measure maximum throughput, then latency at one fixed rate, then the issue's gateway targets."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench import tools
from bench.errors import BenchError
from bench.gateway_targets import gateway_targets
from bench.measure import LoadSettings, Target, fixed_rate_latency, max_throughput, verify
from bench.scenarios import RATE_REFERENCE, SCENARIOS, Lab, Scenario
from bench.servers import worker_memory

MANY_SESSIONS_ROUNDS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    duration: float
    warmup: float
    connections: int
    threads: int
    only: tuple[str, ...] | None
    rate: float | None
    sessions: int
    authz_log_level: str
    authz_workers: int = 1


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def select(only: tuple[str, ...] | None) -> list[Scenario]:
    """The scenarios named by ``--only`` (``f`` is both f-*), plus (b) for the rate."""
    if not only:
        return list(SCENARIOS)
    known = {s.key for s in SCENARIOS} | {s.key.split("-")[0] for s in SCENARIOS}
    if unknown := set(only) - known:
        raise BenchError(f"--only: unknown scenarios {sorted(unknown)}; known: {sorted(known)}")
    return [s for s in SCENARIOS if s.key in only or s.key.split("-")[0] in only]


def run(options: RunOptions) -> dict[str, Any]:
    """Measure the chosen scenarios; the report as plain data (see ``bench.report``)."""
    tools.ensure_tools()
    chosen = select(options.only)
    if options.rate is None and RATE_REFERENCE not in {s.key for s in chosen}:
        log(f"adding ({RATE_REFERENCE}): its maximum sets the rate of the latency runs")
        chosen = [s for s in SCENARIOS if s in chosen or s.key == RATE_REFERENCE]
    results = {s.key: _entry(s) for s in chosen}
    report: dict[str, Any] = {"machine": tools.machine(), "versions": tools.versions()}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        load = LoadSettings(
            duration=options.duration, warmup=options.warmup, latency_duration=options.duration,
            connections=options.connections, threads=options.threads, workdir=workdir,
        )  # fmt: skip
        lab = Lab(stack, workdir, options.authz_log_level, options.authz_workers)
        targets: dict[str, Target] = {}
        for scenario in chosen:
            if scenario.start is not None:
                target = _attempt(results[scenario.key], "start", partial(scenario.start, lab))
                if target is not None:
                    targets[scenario.key] = target
        for key, target in targets.items():
            results[key]["throughput"] = _attempt(
                results[key], "throughput", partial(_throughput, key, target, load)
            )
        report["rate_rps"] = rate = options.rate or _reference_rate(results)
        for key, target in targets.items():
            if rate is not None:
                results[key]["latency"] = _attempt(
                    results[key], "latency", partial(_latency, key, target, rate, load)
                )
            if key in ("d", "f-gateway") and "ext_authz_memory" not in report:
                at_start = lab.ext_authz_memory_at_start["rss_mib"]
                memory = {"after": key, "at_start_rss_mib": at_start}
                per_worker = worker_memory(lab.ext_authz[0].pid)
                report["ext_authz_memory"] = {**memory, **per_worker}
        if "gateway" in lab.__dict__:
            settings = lab.gateway.ext_authz.model_dump(mode="json")
            settings["workers"] = lab.authz_workers  # given on the command line, as operators do
            report["gateway_settings"] = {"log_level": lab.gateway.log_level, "ext_authz": settings}
        if "ext_authz" in lab.__dict__:  # the real ext_authz ran: the gateway's own targets
            rounds = 1 if options.duration <= 1 else MANY_SESSIONS_ROUNDS
            report["gateway"] = gateway_targets(lab, options.sessions, load, rounds, log)
        failures = [
            f"({r['key']}) {r['error']}" for r in results.values() if r["status"] == "failed"
        ]
        if error := report.get("gateway", {}).get("many_sessions", {}).get("error"):
            failures.append(f"many-sessions comparison: {error}")
        if error := report.get("gateway", {}).get("distinct_sessions", {}).get("error"):
            failures.append(f"distinct-sessions memory: {error}")
        if failures:
            _show_log_tails(workdir)
            # Last, so that a CI log cut to its tail still says what went wrong.
            log("failed:\n" + "\n".join(failures))
    report["machine"]["load_average_after"] = os.getloadavg()
    report["scenarios"] = list(results.values())
    _add_ratios(report["scenarios"])
    return report


def _entry(scenario: Scenario) -> dict[str, Any]:
    status = "pending" if scenario.start else "not available"
    entry = {"key": scenario.key, "title": scenario.title, "description": scenario.description}
    return {**entry, "status": status, "error": scenario.unavailable or None,
            "throughput": None, "latency": None}  # fmt: skip


def _attempt(entry: dict[str, Any], what: str, action: Callable[[], T]) -> T | None:
    """Run one step of a scenario that has not failed yet; a failure is recorded, not raised,
    so one broken scenario does not hide the others' numbers."""
    if entry["status"] == "failed":
        return None
    try:
        value = action()
    except (BenchError, RuntimeError, OSError) as exc:
        log(f"({entry['key']}) {what} failed: {exc}")
        entry.update(status="failed", error=f"{what}: {exc}"[:2000])
        return None
    entry["status"] = "ok"
    return value


def _throughput(key: str, target: Target, load: LoadSettings) -> dict[str, Any]:
    verify(target, load)
    result = max_throughput(target, load)
    log(f"({key}) max {result['rps']:.0f} req/s")
    return result


def _latency(key: str, target: Target, rate: float, load: LoadSettings) -> dict[str, Any]:
    verify(target, load)
    result = fixed_rate_latency(target, rate, load)
    note = " (overloaded)" if result["overloaded"] else ""
    log(f"({key}) at {rate:.0f}/s: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms{note}")
    return result


def _reference_rate(results: dict[str, Any]) -> float | None:
    reference = results.get(RATE_REFERENCE, {}).get("throughput")
    if not reference:
        log(f"no latency runs: ({RATE_REFERENCE}) has no maximum and --rate was not given")
        return None
    return round(reference["rps"] / 2, 1)


def _add_ratios(scenarios: list[dict[str, Any]]) -> None:
    by_key = {s["key"]: s for s in scenarios}
    for scenario in scenarios:
        ratios = {}
        for reference in ("a", "b"):
            base = (by_key.get(reference) or {}).get("throughput")
            if base and scenario["throughput"]:
                ratios[f"vs_{reference}"] = round(scenario["throughput"]["rps"] / base["rps"], 3)
        scenario["throughput_ratio"] = ratios


def _show_log_tails(workdir: Path) -> None:
    """After a failure, the last lines of every process log (they vanish with the run)."""
    for path in sorted(workdir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-20:]
        log(f"--- {path.name} (last lines)\n" + "\n".join(lines))
