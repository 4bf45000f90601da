"""Liveness (``/health``) and readiness (``/ready``: Redis and the providers every login needs).

A provider that only some logins need (optional, or logged in on demand) is reported but does
not make the login app unready: while it is down everyone else still logs in.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from werkzeug.wrappers import Response

from gateway.errors import StoreUnavailable
from gateway.redis.clients import translate_redis_errors
from login_app.services import services

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
def health() -> Response:
    return jsonify(status="ok")


@blueprint.get("/ready")
def ready() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, str] = {}
    try:
        with translate_redis_errors("readiness ping"):
            svc.redis.ping()
        checks["redis"] = "ok"
    except StoreUnavailable:
        checks["redis"] = "unreachable"
    for provider_id, client in svc.providers.items():
        up = client.is_up()  # oidc: discovery too (cached once fetched)
        checks[f"provider:{provider_id}"] = "ok" if up else "unreachable"
    needed = ["redis"] + [f"provider:{p}" for p in svc.login_sequence if p not in svc.optional]
    ok = all(checks[name] == "ok" for name in needed)
    return jsonify(status="ready" if ok else "not_ready", checks=checks), 200 if ok else 503
