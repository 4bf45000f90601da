"""Discovery documents and the JSON Web Key Set."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify

from devtools.dev_idp.config import Mode
from devtools.dev_idp.context import current_context

bp = Blueprint("discovery", __name__)


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OIDC Discovery; absent in oauth2 mode, as with a plain OAuth 2.0 provider."""
    context = current_context()
    if context.config.mode is not Mode.OIDC:
        abort(404)
    return jsonify(context.metadata)


@bp.get("/.well-known/oauth-authorization-server")
def oauth_authorization_server() -> Response:
    """RFC 8414 metadata, served in both modes."""
    return jsonify(current_context().metadata)


@bp.get("/jwks")
def jwks() -> Response:
    """The public signing keys, current key first."""
    response = jsonify(current_context().keys.public_jwks())
    # Never cached: tests rotate keys and expect the next fetch to see it.
    response.headers["Cache-Control"] = "no-store"
    return response
