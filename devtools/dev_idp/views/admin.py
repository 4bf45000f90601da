"""Test and observability endpoints under ``/_admin/`` (JSON in, JSON out).

They have no authentication: the provider only ever listens on loopback for development
and tests.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from devtools.dev_idp.context import current_context
from devtools.dev_idp.errors import AdminRequestError

bp = Blueprint("admin", __name__, url_prefix="/_admin")
MAX_TOKEN_INFO = 10_000


@bp.errorhandler(AdminRequestError)
def _bad_admin_request(error: AdminRequestError) -> tuple[Response, int]:
    return jsonify(error=error.code, error_description=str(error)), 400


@bp.get("/stats")
def stats() -> Response:
    """Counts of token requests, refreshes, revocations, logouts and deliveries."""
    return jsonify(current_context().stats.snapshot())


@bp.post("/reset")
def reset() -> Response:
    """Clear the stats and the injected faults (keys, sessions and tokens stay)."""
    context = current_context()
    context.stats.reset()
    context.faults.reset()
    return jsonify(status="reset")


@bp.post("/rotate-keys")
def rotate_keys() -> Response:
    """Make a new signing key current; ``?drop_old=1`` removes the old ones from the JWKS."""
    keys = current_context().keys
    drop_old = request.args.get("drop_old", "") in ("1", "true", "yes")
    kid = keys.rotate(drop_old=drop_old)
    return jsonify(kid=kid, kids=keys.kids())


@bp.route("/faults", methods=["GET", "POST"])
def faults() -> Response:
    """Read or set ``{"token_endpoint": "ok"|"error503"|"slow", "slow_seconds": N}``."""
    context = current_context()
    settings = context.faults.settings
    if request.method == "POST":
        settings = context.faults.update(_json_body())
    return jsonify(token_endpoint=str(settings.token_endpoint), slow_seconds=settings.slow_seconds)


@bp.post("/token-info")
def token_info() -> Response:
    """What the provider knows of each ``{"access_tokens": [...]}``: grant, user, validity
    window, revocation (null for a token it never issued), so a test can judge a token a
    gateway injected without trusting the gateway's own storage."""
    values = _json_body().get("access_tokens")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise AdminRequestError("'access_tokens' must be a list of strings")
    if len(values) > MAX_TOKEN_INFO:
        raise AdminRequestError(f"at most {MAX_TOKEN_INFO} tokens per call")
    records = current_context().store.access_token_records(values)
    return jsonify(
        tokens={
            value: None
            if record is None
            else {
                "grant_id": record.grant_id,
                "username": record.user.username,
                "client_id": record.client.client_id,
                "issued_at": record.issued_at,
                "expires_at": record.issued_at + record.expires_in,
                "revoked": record.access_revoked,
            }
            for value, record in records.items()
        }
    )


@bp.post("/backchannel-logout")
def backchannel_logout() -> Response:
    """End session ``sid`` and POST a logout token for it: ``{"sid", "sub", "client_id"?}``."""
    context = current_context()
    if not context.backchannel.enabled:
        raise AdminRequestError("start the provider with --backchannel-logout-uri")
    body = _json_body()
    sid = _optional_str(body, "sid")
    if not sid:
        raise AdminRequestError("'sid' is required")
    client_id = _optional_str(body, "client_id")
    deliveries = context.sessions.end_and_notify(
        sid,
        sub=_optional_str(body, "sub"),
        client_ids=[client_id] if client_id else None,
    )
    return jsonify(deliveries=deliveries)


@bp.post("/sign")
def sign() -> Response:
    """Sign ``{"claims": {...}, "kid"?, "alg"?, "header"?}`` with the provider's key."""
    body = _json_body()
    claims = body.get("claims")
    header = body.get("header") or {}
    if not isinstance(claims, dict) or not isinstance(header, dict):
        raise AdminRequestError("'claims' (and 'header', if given) must be JSON objects")
    token = current_context().keys.sign(
        claims,
        kid=_optional_str(body, "kid"),
        alg=_optional_str(body, "alg") or "RS256",
        header=header,
    )
    return jsonify(token=token)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise AdminRequestError("send a JSON object with Content-Type: application/json")
    return body


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise AdminRequestError(f"{key!r} must be a string")
    return value
