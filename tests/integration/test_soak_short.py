"""A 15-second soak: every kind of traffic as expected, and a report with all its measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.processes import REPO_ROOT

pytestmark = pytest.mark.integration

COMPONENTS = {"ext_authz-0", "ext_authz-1", "login_app", "envoy"}
KINDS = {
    "api_cookie", "gitlab_cookie", "api_bearer", "gitlab_bearer", "anonymous_protected",
    "anonymous_page", "anonymous_catalog", "unknown_session", "expired_session",
    "short_session", "login", "logout", "after_logout",
}  # fmt: skip


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("soak")
    # 6 s tokens: refreshes start after 3 s, so a 15 s run sees several per provider.
    done = subprocess.run(
        [
            sys.executable, "-m", "soak", "--duration", "15", "--access-token-ttl", "6",
            "--out", str(out),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    reports = sorted(Path(out).glob("soak-*.json"))
    assert reports, f"no report written:\n{done.stdout}\n{done.stderr}"
    return done, json.loads(reports[-1].read_text())


def test_a_short_soak_passes_with_no_unexpected_outcome(soak):
    done, report = soak
    assert report["traffic"]["unexpected"] == {
        "count": 0, "by_kind": {}, "details": [], "details_capped_at": 50,
    }, done.stdout  # fmt: skip
    assert report["passed"] and report["failures"] == [], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert "soak PASSED" in done.stdout


def test_every_kind_of_traffic_was_sent(soak):
    _, report = soak
    requests = report["traffic"]["requests"]
    assert KINDS <= {kind for kind, count in requests.items() if count > 0}
    assert report["traffic"]["total_requests"] == sum(requests.values())


def test_the_report_has_memory_of_every_component_at_start_and_end(soak):
    _, report = soak
    assert set(report["memory"]) == COMPONENTS
    for entry in report["memory"].values():
        assert isinstance(entry["pid"], int)
        assert entry["start_kb"] > 0 and entry["end_kb"] > 0
        assert entry["growth_kb"] == entry["end_kb"] - entry["start_kb"]
        assert entry["ok"] is True
    assert report["memory_samples_kb"] and COMPONENTS <= set(report["memory_samples_kb"][0])


def test_redis_keys_match_the_live_sessions(soak):
    _, report = soak
    redis = report["redis"]
    for moment in ("start", "end"):
        assert isinstance(redis[moment]["dbsize"], int)
        assert redis[moment]["by_prefix"]["s"]["keys"] > 0
    accounting = redis["accounting"]
    assert accounting["session_records"] == accounting["live_sessions"]["total"] > 0
    for index, count in accounting["index_keys"].items():
        assert count <= accounting["index_keys_allowed"][index]


def test_access_tokens_were_refreshed_at_both_idps(soak):
    _, report = soak
    assert report["idps"]["primary"]["refreshes"] > 0
    assert report["idps"]["gitlab"]["refreshes"] > 0
