"""What every transport does with a decision: count it, log it; and the answer given when
deciding failed."""

from __future__ import annotations

from functools import lru_cache

from ext_authz.decision import Allow, Decision, json_deny
from ext_authz.metrics import CHECK_SECONDS, DECISIONS
from ext_authz.request import CheckRequest
from gateway import contract
from gateway.observability.logs import FastLine

_decision_line = FastLine("ext_authz.check")
_logged = {"allow": False, "deny": True}


def log_decisions(which: str) -> None:
    """Set from ``ext_authz.decision_log`` at start: all, denied or none."""
    _logged["allow"] = which == "all"
    _logged["deny"] = which in ("all", "denied")


# A bug must not open the gate: an unexpected error is answered like an outage.
INTERNAL_ERROR = json_deny(None, "internal_error", 503, "unavailable", "Try again shortly.")


# The label sets are few and fixed (routes, outcomes, reasons): find each child once.
_check_seconds = lru_cache(maxsize=None)(CHECK_SECONDS.labels)
_decisions = lru_cache(maxsize=1024)(DECISIONS.labels)


def record_decision(
    check: CheckRequest, decision: Decision, seconds: float, transport: str
) -> None:
    """Metrics and one JSON log line per decision: request id, route, outcome, latency;
    never a credential."""
    allowed = isinstance(decision, Allow)
    outcome = "allow" if allowed else "deny"
    _check_seconds(transport).observe(seconds)
    _decisions(decision.route or "-", outcome, decision.reason).inc()
    if not _logged[outcome]:
        return
    _decision_line(
        "check",
        {
            "request_id": check.header(contract.X_REQUEST_ID),
            "route": decision.route,
            "decision": outcome,
            "reason": decision.reason,
            "status": 200 if isinstance(decision, Allow) else decision.status,
            "latency_ms": round(seconds * 1000, 3),
        },
    )
