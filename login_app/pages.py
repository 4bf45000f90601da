"""Pages and the one place login errors become responses."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from flask import Flask, jsonify, render_template, request
from werkzeug.wrappers import Response

from gateway.errors import (
    ProviderFailure,
    ProviderUnavailable,
    StoreUnavailable,
    TokenInvalid,
)
from login_app.errors import (
    IdTokenInvalid,
    LoginError,
    LoginUnavailable,
    TokenExchangeFailed,
)
from login_app.metrics import LOGINS
from login_app.services import services

logger = logging.getLogger(__name__)

# What a person reads for each error kind; the exception's own text goes to the log only.
_EXPLANATIONS = {
    "rejected_redirect": "The page asked to send you to an address outside this site, so "
    "the request was stopped. If you followed a link, it may have been tampered with.",
    "expired_attempt": "Logins must be finished within ten minutes, and each login link "
    "works once. Start again and it will work.",
    "state_mismatch": "The reply from the identity provider does not belong to a login "
    "started in this browser, or it was already used. Start the login again.",
    "provider_error": "The identity provider did not complete the login.",
    "token_exchange_failed": "The identity provider's reply could not be used.",
    "invalid_id_token": "The identity provider's answer failed our security checks.",
    "unavailable": "A service the login needs is not answering. Please try again shortly.",
    "unknown_provider": "The link asked to log you in with an identity provider this site "
    "does not use. If you followed a link, it may be outdated.",
    "login_loop": "You have just logged in with this identity provider, yet the page you "
    "wanted still asks for that login, so it was not started again. Please tell the site's "
    "operators.",
}


def wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(error: LoginError) -> tuple[Response | str, int]:
    """The error as JSON for API clients, else as a page with a link to log in again."""
    if wants_json():
        return error_json(error)
    retry_url = None
    if error.retry:
        public_root = services().config.public_url + "/"
        retry_url = services().url("/login") + "?" + urlencode({"redirect_url": public_root})
    return error_page(error, _explanation(error), retry_url=retry_url), error.status


def error_json(error: LoginError) -> tuple[Response, int]:
    """``{"error", "message"}`` with the error's status."""
    return jsonify(error=error.code, message=_explanation(error)), error.status


def error_page(error: LoginError, message: str, *, retry_url: str | None) -> str:
    """The error page, telling a person ``message``; the exception's own text is not shown."""
    return render_template(
        "error.html",
        title=error.title,
        message=message,
        code=error.code,
        provider=error.provider,
        retry_url=retry_url,
        home_url=services().config.public_url + "/",
    )


def _explanation(error: LoginError) -> str:
    message = _EXPLANATIONS.get(error.code, "The login did not succeed.")
    if error.code == "provider_error" and str(error):
        message = f"{message} It said: {str(error)[:200]}"
    return message


def as_login_error(error: ProviderFailure) -> LoginError:
    """What a person is told when a provider call fails during a login."""
    kind: type[LoginError] = TokenExchangeFailed
    if isinstance(error, ProviderUnavailable):
        kind = LoginUnavailable
    elif isinstance(error, TokenInvalid):
        kind = IdTokenInvalid
    return kind(str(error), provider=error.provider)


def init_app(app: Flask) -> None:
    @app.errorhandler(LoginError)
    def _login_error(error: LoginError) -> tuple[Response | str, int]:
        LOGINS.labels(error.provider or "none", error.code).inc()
        logger.info(
            "login error",
            extra={"code": error.code, "detail": str(error), "provider": error.provider},
        )
        return error_response(error)

    @app.errorhandler(ProviderFailure)
    def _provider_failure(error: ProviderFailure) -> tuple[Response | str, int]:
        return _login_error(as_login_error(error))

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(error: StoreUnavailable) -> tuple[Response | str, int]:
        logger.warning("redis unavailable", extra={"detail": str(error)})
        return error_response(LoginUnavailable(str(error)))

    @app.after_request
    def _no_store(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # Our URLs carry codes, states and user codes: no page names them to anyone. A page
        # with a form posting back here sets "same-origin" itself (cli_login.approve_page),
        # since under "no-referrer" browsers send that POST with "Origin: null".
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        )
        return response
