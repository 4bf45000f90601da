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


def request_credential(request: Request, config: GatewayConfig) -> SessionCredential | None:
    """The session credential a request carries, read by the rule ext_authz reads it by:
    a bearer token first, then the cookie; None for none or an unusable one (two different
    session cookies among them)."""
    return _presented(request.headers.get("Authorization", ""), request, config)


def cookie_credential(request: Request, config: GatewayConfig) -> SessionCredential | None:
    """The browser's session cookie only (a bearer token does not count), by the same rule."""
    return _presented("", request, config)


def _presented(
    authorization: str, request: Request, config: GatewayConfig
) -> SessionCredential | None:
    try:
        presented = read_presented(
            authorization,
            request.headers.get("Cookie", ""),
            (config.cookie_name,),
            config.ext_authz.max_cookie_header_bytes,
        )
    except CredentialError:
        return None
    return presented.credential if presented is not None else None
