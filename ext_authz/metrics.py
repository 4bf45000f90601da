"""ext_authz's metrics: check latency, decisions, refreshes, session cache."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# Summed over the live workers (prometheus multiprocess mode; one process: its own value).
SESSION_CACHE_ENTRIES = Gauge(
    "gateway_session_cache_entries",
    "Sessions held in memory by the session cache.",
    multiprocess_mode="livesum",
)
SESSION_CACHE_BYTES = Gauge(
    "gateway_session_cache_bytes",
    "Estimated memory of the sessions held by the session cache "
    "(bounded by ext_authz.session_cache_max_bytes per worker).",
    multiprocess_mode="livesum",
)
