"""``python -m bench --quick`` runs end to end and writes a well-formed report.

No timing is asserted: the numbers depend on the machine. What is pinned down is that every
scenario is there, measured (or marked not available), and that the three files are sound.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scenarios import SCENARIOS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LATENCY_FIELDS = ("target_rps", "achieved_rps", "p50_ms", "p90_ms", "p99_ms", "overloaded")


@pytest.fixture(scope="module")
def bench_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tools_missing = shutil.which("wrk") is None or shutil.which("h2load") is None
    if tools_missing and os.geteuid() != 0:
        pytest.skip("wrk or h2load is missing, and only root may apt-get install them")
    out = tmp_path_factory.mktemp("bench-results")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def report(bench_results: Path) -> dict[str, Any]:
    return dict(json.loads((bench_results / "bench.json").read_text()))


def test_every_scenario_is_measured_or_marked_not_available(report: dict[str, Any]) -> None:
    by_key = {entry["key"]: entry for entry in report["scenarios"]}
    assert list(by_key) == [scenario.key for scenario in SCENARIOS]
    for scenario in SCENARIOS:
        entry = by_key[scenario.key]
        if scenario.start is None:
            assert entry["status"] == "not available"
            assert entry["throughput"] is None and entry["latency"] is None
            continue
        assert entry["status"] == "ok", entry["error"]
        assert entry["throughput"]["rps"] > 0
        assert all(entry["latency"][field] is not None for field in LATENCY_FIELDS)
        assert entry["latency"]["statuses"] == {"200": entry["latency"]["completed"]}


def test_the_report_says_where_and_with_what_it_was_measured(report: dict[str, Any]) -> None:
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu_model"]
    assert {"envoy", "grpcio", "python"} <= set(report["versions"])
    assert report["command"].startswith("python -m bench --quick")
    assert report["rate_rps"] > 0


def test_the_gateway_targets_are_measured(report: dict[str, Any]) -> None:
    assert report["ext_authz_memory"]["rss_mib"] > 0
    assert report["gateway"]["session"]["memory_usage_bytes"] > 0
    many = report["gateway"]["many_sessions"]
    assert many["sessions_added"] == 1000
    assert many["rps_one_session"] > 0 and many["rps_many_sessions"] > 0
    distinct = report["gateway"]["distinct_sessions"]
    assert distinct["valid_checks"]["checks"] == distinct["bogus_checks"]["checks"] == 1000
    assert distinct["rss_mib"] >= distinct["at_start"]["rss_mib"] > 0
    assert distinct["cache_after_valid"]["entries"] > 0  # the cache was on and reporting


def test_the_markdown_table_has_a_row_per_scenario(bench_results: Path) -> None:
    rows = [
        line for line in (bench_results / "bench.md").read_text().splitlines() if line[:2] == "| "
    ]
    by_key = {row.split("|")[1].strip(): row for row in rows}
    assert len(by_key) == len(rows)
    for scenario in SCENARIOS:
        row = by_key[scenario.key]
        assert scenario.title in row
        assert ("not available" in row) == (scenario.start is None)


def test_the_chart_is_a_png(bench_results: Path) -> None:
    assert (bench_results / "bench.png").read_bytes()[:8] == PNG_SIGNATURE
