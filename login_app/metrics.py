"""The login app's metrics: logins, skipped login steps and logouts by provider and result."""

from prometheus_client import Counter

LOGINS = Counter(
    "gateway_logins_total",
    "Provider logins by result (ok, or the error code shown to the person).",
    ["provider", "result"],
)
LOGOUTS = Counter(
    "gateway_logouts_total", "Logouts by kind (rp, backchannel) and result.", ["kind", "result"]
)
LOGIN_STEPS_SKIPPED = Counter(
    "gateway_login_steps_skipped_total",
    "Optional providers a login went on without, by reason (unavailable: it was down).",
    ["provider", "reason"],
)
