"""``/cli/*``: a terminal logs in by having a logged-in browser approve it (after RFC 8628).

    POST /cli/start     no auth        a device_code for the CLI, a user_code for the person
    GET  /cli/approve   session        type the code, or see it with Approve / Deny
    POST /cli/approve   session, CSRF  approve (log in again, for the CLI) or deny
    POST /cli/token     device_code    RFC 8628 §3.5 polling; the credential is handed out once

Approving runs the whole login sequence once more in the browser (login.py): the identity
providers' SSO sessions usually make that a few redirects. Its finish gives the CLI a
brand-new session with tokens of its own, never copies of the browser's: with providers that
rotate refresh tokens, a refresh in one session would otherwise end the other's. The CLI never
holds the browser's credential. The device stays pending until that login finishes.

Each session is logged out on its own: the browser's logout (and the provider's back-channel
answer to it) leaves the CLI session alone, and the CLI's leaves the browser's. A logout the
provider makes itself ends both, as they were logged in within one provider session (see
logout.py and own_logouts.py; the README's "Logging out" states the rule).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
)
from werkzeug.wrappers import Response as BaseResponse

from gateway.contract import CLIENT_ADDRESS_HEADER
from gateway.errors import ProviderFailure, StoreUnavailable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Session
from login_app.device_codes import (
    GUESS_LIMIT,
    GUESS_WINDOW_SECONDS,
    START_LIMIT,
    START_WINDOW_SECONDS,
    ApprovalForged,
    TooManyRequests,
    UnknownUserCode,
    client_key,
    csrf_token,
    csrf_token_matches,
    display_user_code,
    normalize_user_code,
)
from login_app.device_store import DeviceRecord, device_codes
from login_app.errors import LoginError, LoginUnavailable
from login_app.login import DeviceLoginLapsed, start_device_login
from login_app.pages import as_login_error, error_json, error_page
from login_app.services import Services, browser_session, services

logger = logging.getLogger(__name__)
blueprint = Blueprint("cli_login", __name__)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 §3.4
# A person's browser sees these two; errors elsewhere here are for a CLI: JSON (RFC 8628 §3.5).
_BROWSER_ENDPOINTS = frozenset({"cli_login.approve_page", "cli_login.approve"})
_EXPLANATIONS = {
    "unknown_user_code": "Check the code your terminal shows and type it again. Each code "
    "works once and for ten minutes; if yours has run out, start the login in your terminal "
    "again.",
    "forged_approval": "The approval was not sent from this site's approval page, so nothing "
    "was approved. Open the link your terminal shows again.",
    "too_many_requests": "Too many wrong codes were tried from your network. Wait ten minutes "
    "and try again.",
    "cli_login_lapsed": "The code in your terminal ran out or was used while you were logging "
    "in, so the command-line tool was not logged in. Start the login in your terminal again.",
    "unavailable": "A service the login needs is not answering. Please try again shortly.",
}


def _client() -> str:
    # X-Forwarded-For's last hop is Envoy itself; Envoy names the real peer in this header.
    # Envoy sets this header on every request to the login app (the client cannot).
    return client_key(request.remote_addr, request.headers.get(CLIENT_ADDRESS_HEADER))


@blueprint.post("/cli/start")
def start() -> Response:
    store = device_codes()
    if not store.take("start", _client(), limit=START_LIMIT, window=START_WINDOW_SECONDS):
        raise TooManyRequests("too many CLI logins started from one client")
    device_code, user_code = store.start(time.time())
    shown = display_user_code(user_code)
    verification_uri = services().url("/cli/approve")
    logger.info("cli login started")
    return jsonify(
        device_code=device_code,
        user_code=shown,
        verification_uri=verification_uri,
        verification_uri_complete=f"{verification_uri}?{urlencode({'user_code': shown})}",
        expires_in=store.expires_in,
        interval=store.interval,
    )


@blueprint.post("/cli/token")
def token() -> tuple[Response, int]:
    parameters = _token_parameters()
    grant_type = parameters.get("grant_type")
    if grant_type is not None and grant_type != GRANT_TYPE:
        return jsonify(error="unsupported_grant_type"), 400
    device_code = parameters.get("device_code")
    if not isinstance(device_code, str) or not device_code:
        return jsonify(error="invalid_request", error_description="device_code is missing"), 400
    now = time.time()
    result, grant = device_codes().poll(device_code, now)
    if grant is None:
        return jsonify(error=result.value), 400
    logger.info("cli login handed its session to the device")
    return jsonify(
        access_token=grant.credential,
        token_type="Bearer",
        expires_in=max(0, grant.session_expires_at - int(now)),
    ), 200


def _token_parameters() -> dict[str, Any]:
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form.to_dict()


@blueprint.get("/cli/approve")
def approve_page() -> BaseResponse | str:
    svc = services()
    typed = request.args.get("user_code")
    user_code = normalize_user_code(typed)
    approver = _approver(svc)
    if approver is None:
        return _to_login(svc, user_code)
    credential, session = approver
    if not typed:
        return render_template(
            "cli_approve.html",
            title="Log in a command-line tool",
            user_code=None,
            action_url=svc.url("/cli/approve"),
        )
    if user_code is None:
        raise UnknownUserCode("the typed user code is malformed")
    _pending_record(user_code)
    identity = session.identity
    page = make_response(
        render_template(
            "cli_approve.html",
            title="Approve a command-line login",
            user_code=display_user_code(user_code),
            user_name=identity.name or identity.email or identity.subject,
            csrf_token=csrf_token(
                svc.config.session.secret_keys[0], credential.lookup_id, user_code
            ),
            action_url=_approve_url(svc, user_code),
        )
    )
    # Under "no-referrer" (every other page's policy) browsers post this form with
    # "Origin: null", which _refuse_cross_site must refuse. "same-origin" keeps the real Origin
    # on our own requests and still sends other sites no Referer: this page's URL holds the
    # user code.
    page.headers["Referrer-Policy"] = "same-origin"
    return page


@blueprint.post("/cli/approve")
def approve() -> BaseResponse | str:
    svc = services()
    _refuse_cross_site(svc)
    user_code = normalize_user_code(request.form.get("user_code") or request.args.get("user_code"))
    approver = _approver(svc)
    if approver is None:
        return _to_login(svc, user_code)
    credential, session = approver
    if user_code is None:
        raise UnknownUserCode("the posted user code is malformed")
    presented = request.form.get("csrf_token")
    secret_keys = svc.config.session.secret_keys
    if not csrf_token_matches(secret_keys, credential.lookup_id, user_code, presented):
        raise ApprovalForged("the approval's CSRF token does not match")
    action = request.form.get("action")
    if action not in ("approve", "deny"):
        raise ApprovalForged("the approval names no action")
    record = _pending_record(user_code)
    if action == "deny":
        if not device_codes().deny(record.device_id, time.time()):
            raise UnknownUserCode("the code was settled meanwhile")
        logger.info("cli login denied")
        return render_template(
            "cli_done.html",
            title="Command-line login denied",
            message="You denied the login. The command-line tool was not logged in.",
        )
    logger.info("cli login approval logs in again")
    return start_device_login(svc, record.device_id, session)


def _pending_record(user_code: str) -> DeviceRecord:
    """The pending flow a user code names; unknown codes count against the client."""
    store, client = device_codes(), _client()
    # Counted before the look-up and given back on a hit: concurrent guesses cannot race past
    # the limit, and once over it no look-up happens at all (RFC 8628 §5.1).
    if not store.take("guess", client, limit=GUESS_LIMIT, window=GUESS_WINDOW_SECONDS):
        raise TooManyRequests("too many unknown user codes from one client")
    record = store.find(user_code)
    if record is None:
        raise UnknownUserCode("no CLI login has this user code")
    store.give_back("guess", client)
    if not record.pending_at(time.time()):
        raise UnknownUserCode("this user code was already used or has expired")
    return record


def _approver(svc: Services) -> tuple[SessionCredential, Session] | None:
    # Only a browser's cookie approves: a CLI's bearer token must not approve another CLI.
    credential, session = browser_session(svc)
    if credential is None or session is None:
        return None
    return credential, session


def _approve_url(svc: Services, user_code: str | None) -> str:
    url = svc.url("/cli/approve")
    if user_code is None:
        return url
    return f"{url}?{urlencode({'user_code': display_user_code(user_code)})}"


def _to_login(svc: Services, user_code: str | None) -> BaseResponse:
    back = _approve_url(svc, user_code)
    return redirect(svc.url("/login") + "?" + urlencode({"redirect_url": back}))


def _refuse_cross_site(svc: Services) -> None:
    """Belt to the CSRF token's braces: browsers name where a POST came from."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != svc.config.public_origin:
        raise ApprovalForged(f"the approval came from origin {origin[:100]!r}")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise ApprovalForged("the browser says the approval came from another site")


# What the error handlers below answer: JSON for the CLI, else a page with its headers.
_ErrorReply = tuple[BaseResponse, int] | tuple[str, int, dict[str, str]]


def _respond(error: LoginError) -> _ErrorReply:
    return _page(error) if request.endpoint in _BROWSER_ENDPOINTS else error_json(error)


def _page(error: LoginError) -> tuple[str, int, dict[str, str]]:
    message = _EXPLANATIONS.get(error.code, "The request could not be completed.")
    headers = {"Retry-After": str(GUESS_WINDOW_SECONDS)} if error.status == 429 else {}
    return error_page(error, message, retry_url=None), error.status, headers


@blueprint.errorhandler(LoginError)
def _login_error(error: LoginError) -> _ErrorReply:
    logger.info("cli login error", extra={"code": error.code, "detail": str(error)})
    return _respond(error)


@blueprint.errorhandler(ProviderFailure)
def _provider_failure(error: ProviderFailure) -> _ErrorReply:
    """Approving starts a login: the provider's discovery can fail there."""
    return _login_error(as_login_error(error))


@blueprint.app_errorhandler(DeviceLoginLapsed)
def _device_login_lapsed(error: DeviceLoginLapsed) -> tuple[str, int, dict[str, str]]:
    """Raised where an approval's login sequence ends (login.callback); explained here."""
    logger.info("cli login error", extra={"code": error.code, "detail": str(error)})
    return _page(error)


@blueprint.errorhandler(StoreUnavailable)
def _store_unavailable(error: StoreUnavailable) -> _ErrorReply:
    logger.warning("redis unavailable", extra={"detail": str(error)})
    return _respond(LoginUnavailable(str(error)))
