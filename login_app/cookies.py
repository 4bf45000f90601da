"""The cookies the login app sets: the session cookie and the login-attempt binding cookie.

Both are HttpOnly, SameSite=Lax (the IdP's redirect back is a top-level GET, which Lax
allows), Path=/, and on https Secure with the ``__Host-`` prefix so no sibling host or path
can plant one.
"""

from __future__ import annotations

from flask import Request
from werkzeug.wrappers import Response

from gateway.config import GatewayConfig
from gateway.contract import LOGIN_BINDING_COOKIE
from gateway.errors import CredentialError
from gateway.sessions.credentials import SessionCredential, read_presented
from login_app.attempts import ATTEMPT_TTL_SECONDS


def binding_cookie_name(config: GatewayConfig) -> str:
    return ("__Host-" if config.secure_cookies else "") + LOGIN_BINDING_COOKIE


def _set(response: Response, config: GatewayConfig, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=config.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def set_session_cookie(
    response: Response, config: GatewayConfig, credential: SessionCredential
) -> None:
    _set(
        response,
        config,
        config.cookie_name,
        credential.encode(),
        int(config.session.absolute_lifetime),
    )


def expire_session_cookie(response: Response, config: GatewayConfig) -> None:
    _set(response, config, config.cookie_name, "", 0)


def set_binding_cookie(response: Response, config: GatewayConfig, binding: str) -> None:
    _set(response, config, binding_cookie_name(config), binding, ATTEMPT_TTL_SECONDS)


def expire_binding_cookie(response: Response, config: GatewayConfig) -> None:
    _set(response, config, binding_cookie_name(config), "", 0)


def parse_credential(text: str | None) -> SessionCredential | None:
    """A credential from a cookie or bearer value; None for anything unusable."""
    if not text:
        return None
    try:
        return SessionCredential.parse(text)
    except CredentialError:
        return None


def request_credentials(request: Request, config: GatewayConfig) -> tuple[SessionCredential, ...]:
    """The session credentials a request carries, read by the rule ext_authz reads them by:
    a bearer token first, else every well-formed session cookie in the order sent (which one
    counts is gateway.sessions.choice's to say); () for none or only unusable ones."""
    return _presented(request.headers.get("Authorization", ""), request, config)


def cookie_credentials(request: Request, config: GatewayConfig) -> tuple[SessionCredential, ...]:
    """The browser's session cookies only (a bearer token does not count), by the same rule."""
    return _presented("", request, config)


def _presented(
    authorization: str, request: Request, config: GatewayConfig
) -> tuple[SessionCredential, ...]:
    try:
        presented = read_presented(
            authorization, request.headers.get("Cookie", ""), (config.cookie_name,)
        )
    except CredentialError:
        return ()
    return presented.candidates if presented is not None else ()
