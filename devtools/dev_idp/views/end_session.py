"""OIDC RP-initiated logout (oidc mode only).

A ``post_logout_redirect_uri`` that is not registered, or that cannot be tied to a
client, gets an error page and the session is left alone: the OP must never redirect
to an unverified URI (RP-Initiated Logout §3).
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, make_response, render_template, request

from devtools.dev_idp.context import current_context
from devtools.dev_idp.views.pages import error_page

bp = Blueprint("end_session", __name__)


@bp.route("/end-session", methods=["GET", "POST"])
def end_session() -> Response:
    """End the IdP session, notify relying parties, then redirect or show a page."""
    context = current_context()
    server = context.authorization_server
    requested_redirect = request.values.get("post_logout_redirect_uri")
    event: dict[str, object] = {
        "id_token_hint": "id_token_hint" in request.values,
        "post_logout_redirect_uri": requested_redirect,
        "outcome": "error",
    }
    try:
        validated = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        context.stats.end_session(event)
        return error_page(error.error or "invalid_request", error.description or "")
    if requested_redirect and validated.redirect_uri is None:
        context.stats.end_session(event)
        return error_page(
            "invalid_request",
            "post_logout_redirect_uri is not registered for this client, or no client "
            "was identified (send id_token_hint or client_id).",
        )

    browser_session = context.store.session_for_cookie(
        request.cookies.get(context.config.session_cookie_name)
    )
    if browser_session is not None:
        context.sessions.end(browser_session.sid)
    # Authlib calls our EndSession.end_session, which ends the hint's sid (if another).
    response: Response | None = server.create_endpoint_response("end_session", validated)
    if response is None:
        response = make_response(
            render_template("logged_out.html", issuer=context.config.issuer), 200
        )
    response.delete_cookie(context.config.session_cookie_name, path="/")
    event["outcome"] = "redirected" if validated.redirect_uri else "logged_out"
    context.stats.end_session(event)
    return response
