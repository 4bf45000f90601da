"""Liveness (``/health``) and readiness (``/ready``: Redis and providers' metadata reachable)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from werkzeug.wrappers import Response

from gateway.errors import ProviderFailure, StoreUnavailable
from gateway.redis_client import translate_redis_errors
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
        try:
            client.endpoints()  # oidc: discovery (cached once fetched); oauth2: from config
            checks[f"provider:{provider_id}"] = "ok"
        except ProviderFailure:
            checks[f"provider:{provider_id}"] = "unreachable"
    ok = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ok else "not_ready", checks=checks), 200 if ok else 503
