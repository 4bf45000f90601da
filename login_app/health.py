"""Liveness (``/health``) and readiness (``/ready``: Redis and the providers every login needs).

``/health`` depends on nothing outside the process: the probes that restart containers or take
pods out of the Service use it (deploy/README.md, Probes), so a Redis outage restarts nothing
and users still get our pages. ``/ready`` says whether a login can succeed now, for monitoring
and rollouts: Redis must accept a write, not only answer PING, since a Redis at maxmemory
(noeviction) or a read-only replica after a failover answers PING and refuses every login.

A provider that only some logins need (optional, or logged in on demand) is reported but does
not make the login app unready: while it is down everyone else still logs in.
"""

from __future__ import annotations

import redis
from flask import Blueprint, jsonify
from werkzeug.wrappers import Response

from gateway.errors import StoreUnavailable
from gateway.redis.clients import translate_redis_errors
from gateway.sessions.factory import keyspace
from login_app.services import Services, services

blueprint = Blueprint("health", __name__)

# Long enough to outlive the probe, short enough that the key never piles up or lingers.
PROBE_TTL_MILLISECONDS = 10_000


@blueprint.get("/health")
def health() -> Response:
    return jsonify(status="ok")


def redis_check(svc: Services) -> str:
    """``ok``, ``refuses_writes`` (it answered with an error: OOM, READONLY, MISCONF, ...)
    or ``unreachable``."""
    try:
        with translate_redis_errors("readiness write"):
            svc.redis.set(keyspace(svc.config).readiness_probe(), b"1", px=PROBE_TTL_MILLISECONDS)
    except StoreUnavailable as exc:
        answered = isinstance(exc.__cause__, redis.ResponseError)
        return "refuses_writes" if answered else "unreachable"
    return "ok"


@blueprint.get("/ready")
def ready() -> tuple[Response, int]:
    svc = services()
    checks = {"redis": redis_check(svc)}
    for provider_id, client in svc.providers.items():
        up = client.is_up()  # oidc: discovery too (cached once fetched)
        checks[f"provider:{provider_id}"] = "ok" if up else "unreachable"
    needed = ["redis"] + [f"provider:{p}" for p in svc.login_sequence if p not in svc.optional]
    ok = all(checks[name] == "ok" for name in needed)
    return jsonify(status="ready" if ok else "not_ready", checks=checks), 200 if ok else 503
