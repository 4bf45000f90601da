"""How the fault suite judges an injected token and renders its table (no servers)."""

from __future__ import annotations

import pytest

from gateway.sessions.credentials import SessionCredential
from soak.fault_suite import fault_names, markdown_table
from soak.fault_traffic import (
    EXPIRED_TOKEN,
    OK,
    PENDING,
    WRONG_TOKEN,
    FaultSession,
    Observation,
    _judge,
)
from soak.faults import catalogue

SESSION = FaultSession(SessionCredential.generate(), "alice", {"primary": "grant-1"})


def observation(sent_wall: float = 1000.0) -> Observation:
    return Observation("session", 0.0, sent_wall, 200, PENDING, SESSION, "primary", "tok")


def info(**overrides: object) -> dict[str, object]:
    return {"grant_id": "grant-1", "issued_at": 990.0, "expires_at": 1004.0, "revoked": False,
            **overrides}  # fmt: skip


@pytest.mark.parametrize(
    ("provider_says", "outcome"),
    [
        (info(), OK),
        (None, WRONG_TOKEN),  # never issued by this provider
        (info(grant_id="grant-2"), WRONG_TOKEN),  # another login's token
        (info(expires_at=998.0), EXPIRED_TOKEN),
        (info(expires_at=1000.5), OK),  # within the whole-second tolerance
        (info(revoked=True), EXPIRED_TOKEN),
    ],
)
def test_an_injected_token_is_judged_by_what_its_provider_issued(provider_says, outcome):
    assert _judge(observation(), provider_says) == outcome


def test_fault_names_accept_all_or_known_names_only():
    assert fault_names("all") == list(catalogue())
    assert fault_names("idp_stall, redis_restart") == ["idp_stall", "redis_restart"]
    with pytest.raises(ValueError, match="nonsense"):
        fault_names("idp_stall,nonsense")


def test_the_table_shows_what_users_saw_recovery_and_sessions_lost():
    report = {
        "timings": {"recovery_timeout": 60.0},
        "faults": [
            {"fault": "idp_down", "summary": "503", "fault_seconds": 20, "recovered": True,
             "recovery_seconds": 1.25, "let_through": 0, "sessions_lost": 0, "sessions": 6,
             "during_fault": {"session": {"200": 3, "503": 1}}},
            {"fault": "slow", "summary": "slow", "fault_seconds": 20, "recovered": False,
             "recovery_seconds": None, "let_through": 0, "sessions_lost": 0, "sessions": 6,
             "during_fault": {"session": {"200": 999, "503": 1}}},
            {"fault": "redis_resets", "summary": "kills", "fault_seconds": 20,
             "recovered": False, "recovery_seconds": None, "let_through": 0,
             "sessions_lost": 2, "sessions": 6, "during_fault": {}},
        ],
    }  # fmt: skip
    rows = markdown_table(report).splitlines()
    assert rows[0].startswith("| fault | what users see")
    assert "logged in: 200 75%, 503 25%" in rows[2] and "| 1.2 s |" in rows[2]
    assert "200 100%, 503 <1%" in rows[3] and "not within 60 s" in rows[3]
    assert "never: sessions lost" in rows[4] and rows[4].endswith("| 2 of 6 |")
