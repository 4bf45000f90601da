"""The token, revocation and userinfo endpoints, with fault injection and counting."""

from __future__ import annotations

import time

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, jsonify, request

from devtools.dev_idp.context import current_context
from devtools.dev_idp.faults import TokenEndpointFault

bp = Blueprint("tokens", __name__)
_REFUSED_REFRESHES = {
    TokenEndpointFault.REFRESH_INVALID_SCOPE: "invalid_scope",
    TokenEndpointFault.REFRESH_INVALID_CLIENT: "invalid_client",
}


@bp.post("/token")
def token() -> Response:
    """Exchange a code or a refresh token (after any injected fault)."""
    context = current_context()
    grant_type = request.form.get("grant_type", "")
    faults = context.faults.settings
    if faults.token_endpoint is TokenEndpointFault.SLOW_503:
        time.sleep(faults.slow_seconds)
    if faults.token_endpoint in (TokenEndpointFault.ERROR_503, TokenEndpointFault.SLOW_503):
        context.stats.token_request(grant_type, "error503")
        unavailable = jsonify(error="temporarily_unavailable", error_description="injected fault")
        unavailable.status_code = 503
        unavailable.headers["Retry-After"] = "1"
        return unavailable
    if faults.token_endpoint is TokenEndpointFault.SLOW:
        time.sleep(faults.slow_seconds)
    refused_as = _REFUSED_REFRESHES.get(faults.token_endpoint)
    if refused_as is not None and grant_type == "refresh_token":
        context.stats.token_request(grant_type, refused_as)
        refused = jsonify(error=refused_as, error_description="injected fault")
        refused.status_code = 401 if refused_as == "invalid_client" else 400
        return refused

    response: Response = context.authorization_server.create_token_response()
    outcome = "ok"
    if response.status_code != 200:
        body = response.get_json(silent=True) or {}
        outcome = str(body.get("error", f"http_{response.status_code}"))
    context.stats.token_request(grant_type, outcome)
    return response


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009: always 200 for unknown tokens, 401 for a client that fails to authenticate."""
    context = current_context()
    value = request.form.get("token", "")
    kind = context.store.kind_of_token(value)
    response: Response = context.authorization_server.create_endpoint_response("revocation")
    client_id = request.authorization.username if request.authorization else None
    context.stats.revocation(
        {
            "token_type_hint": request.form.get("token_type_hint"),
            "token_kind": kind,
            "client_id": client_id or request.form.get("client_id"),
            "status": response.status_code,
        }
    )
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """The identity behind a bearer access token."""
    context = current_context()
    try:
        access_token = context.resource_protector.acquire_token()
    except OAuth2Error as error:
        context.stats.userinfo(error.error or "error")
        failure: Response = context.authorization_server.handle_response(*error())
        return failure
    context.stats.userinfo("ok")
    return jsonify(access_token.get_user().claims())
