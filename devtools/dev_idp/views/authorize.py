"""The authorization endpoint: the login form, SSO via the IdP cookie, the code redirect.

Errors about the client or its redirect URI render a page and never redirect (RFC 6749
§4.1.2.1); every other error goes back to the client's redirect URI with ``state``.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, make_response, render_template, request

from devtools.dev_idp.context import IdpContext, current_context
from devtools.dev_idp.models import BrowserSession
from devtools.dev_idp.views.pages import error_page

bp = Blueprint("authorize", __name__)

# Fields of our own form; everything else in a POST is the original authorization request.
_FORM_FIELDS = frozenset({"username", "password", "action"})


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """Show the login form, or issue a code for a logged-in or just-authenticated user."""
    context = current_context()
    server = context.authorization_server
    session = context.store.session_for_cookie(
        request.cookies.get(context.config.session_cookie_name)
    )
    try:
        grant = server.get_consent_grant(end_user=session)
    except OAuth2Error as error:
        return _error_response(context, error)

    if request.method == "GET":
        if session is not None and not _login_forced():
            context.stats.login("sso")
            response: Response = server.create_authorization_response(
                grant=grant, grant_user=session
            )
            return response
        return _login_form(context)

    if request.form.get("action") == "deny":
        context.stats.login("denied")
        denied: Response = server.create_authorization_response(grant=grant, grant_user=None)
        return denied

    user = context.store.user(request.form.get("username", ""))
    if user is None or not user.check_password(request.form.get("password", "")):
        context.stats.login("failed")
        return _login_form(context, error="Invalid username or password.")

    context.stats.login("password")
    if session is not None and session.username == user.username:
        context.store.reauthenticate(session)
    else:
        if session is not None:
            context.sessions.end(session.sid)
        session = context.store.start_session(user.username)
    response = server.create_authorization_response(grant=grant, grant_user=session)
    _set_session_cookie(context, response, session)
    return response


def _login_forced() -> bool:
    return "login" in request.values.get("prompt", "").split()


def _error_response(context: IdpContext, error: OAuth2Error) -> Response:
    if error.redirect_uri:
        redirect: Response = context.authorization_server.handle_error_response(None, error)
        return redirect
    return error_page(error.error or "invalid_request", error.description or "", 400)


def _login_form(context: IdpContext, *, error: str | None = None, status: int = 200) -> Response:
    carried = [
        (key, value)
        for key, values in request.values.lists()
        if key not in _FORM_FIELDS
        for value in values
    ]
    html = render_template(
        "login.html",
        issuer=context.config.issuer,
        client_id=request.values.get("client_id", ""),
        carried=carried,
        username=request.form.get("username", ""),
        error=error,
    )
    response = make_response(html, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_session_cookie(context: IdpContext, response: Response, session: BrowserSession) -> None:
    response.set_cookie(
        context.config.session_cookie_name,
        session.cookie_value,
        httponly=True,
        samesite="Lax",
        path="/",
    )
