"""ext_authz's metrics: check latency, decisions, refreshes, session cache."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHECK_SECONDS = Histogram(
    "gateway_check_duration_seconds",
    "Time to decide one check, by transport.",
    ["transport"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
DECISIONS = Counter(
    "gateway_decisions_total",
    "Decisions by route, outcome and reason (allowed, anonymous, no_session, csrf, ...).",
    ["route", "decision", "reason"],
)
REFRESHES = Counter(
    "gateway_token_refreshes_total",
    "Token refreshes by provider and outcome (refreshed, needs_login, unavailable, ...).",
    ["provider", "outcome"],
)
SESSION_CACHE = Counter(
    "gateway_session_cache_total", "Session lookups answered from memory or not.", ["result"]
)
