"""Logout (RP-initiated and back-channel) and the user profile endpoint.

Logging out ends the session that logs out (and, for a browser, the provider's session);
only the provider ends more: a back-channel logout ends every gateway session of the provider
session or user it names, except those our own logout of that provider session left alive
(own_logouts.py).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from flask import Blueprint, jsonify, redirect, render_template, request
from werkzeug.wrappers import Response

from gateway.errors import ProviderFailure, ProviderUnavailable, TokenInvalid
from gateway.redis.clients import translate_redis_errors
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace
from gateway.sessions.model import Session
from login_app.cookies import expire_binding_cookie, expire_session_cookie
from login_app.login import redirect_target
from login_app.metrics import LOGOUTS
from login_app.services import Services, browser_session, request_session, services

logger = logging.getLogger(__name__)
blueprint = Blueprint("logout", __name__)

_LOGOUT_TOKEN_REPLAY_SECONDS = 900


def _revoke_all(svc: Services, session: Session) -> dict[str, bool]:
    """Revoke every provider's tokens where the provider can (RFC 7009); best effort."""
    outcome = {}
    for provider_id, tokens in session.tokens.items():
        client = svc.providers.get(provider_id)
        if client is None:
            continue
        try:
            outcome[provider_id] = client.revoke(tokens)
        except ProviderFailure:
            outcome[provider_id] = False
    return outcome


@blueprint.route("/logout", methods=["GET", "POST"])
def logout() -> Response:
    svc = services()
    target = redirect_target(svc, request.values.get("redirect_url"))
    credential, session = request_session(svc)
    if credential is not None:
        # Delete first: even if a provider is unreachable below, the gateway session is over.
        svc.sessions.delete(credential, session)
    revoked = _revoke_all(svc, session) if session else {}
    logger.info("logout", extra={"had_session": session is not None, "revoked": revoked})
    LOGOUTS.labels("rp", "ok" if session is not None else "no_session").inc()

    logged_out = svc.url("/logged-out")
    primary = svc.primary
    id_token = session.tokens.get(primary.id) if session and primary else None
    destination = logged_out + "?" + urlencode({"redirect_url": target})
    if primary is not None and primary.is_oidc and id_token and id_token.id_token:
        try:
            end_session = primary.endpoints().end_session_url
        except ProviderFailure:
            end_session = None
        if end_session:
            _note_own_logout(svc, credential, session)
            destination = (
                end_session
                + "?"
                + urlencode(
                    {
                        "id_token_hint": id_token.id_token,
                        "post_logout_redirect_uri": logged_out,
                        "client_id": primary.provider.client_id,
                        "state": target,
                    }
                )
            )
    response: Response
    if request.method == "POST" and request.accept_mimetypes.best == "application/json":
        response = jsonify(logged_out=True, logout_url=destination)
    else:
        response = redirect(destination)
    expire_session_cookie(response, svc.config)
    # Also end any login still in progress in this browser: it must not finish afterwards.
    expire_binding_cookie(response, svc.config)
    return response


def _note_own_logout(
    svc: Services, credential: SessionCredential | None, session: Session | None
) -> None:
    """The provider's back-channel reply to the end-session request a browser is about to
    make must leave the other sessions of that provider session alone (see own_logouts).

    Only a browser's logout (its cookie) is noted: a CLI's gets the end-session URL in JSON
    and may never visit it, and a note would then spare the browser's session from the
    provider's own logout of that session."""
    sid = session.identity.provider_session_id if session else ""
    browser, _ = browser_session(svc)
    if sid and credential is not None and browser is not None and browser == credential:
        svc.own_logouts.remember(sid, svc.sessions.lookup_ids_of_provider_session(sid))


@blueprint.get("/logged-out")
def logged_out() -> str:
    svc = services()
    # The IdP hands our target back as `state`; it is checked again like any input.
    target = redirect_target(svc, request.args.get("redirect_url") or request.args.get("state"))
    return render_template(
        "logged_out.html",
        title="You are logged out",
        continue_url=target,
        login_url=svc.url("/login") + "?" + urlencode({"redirect_url": target}),
    )


@blueprint.post("/backchannel-logout")
def backchannel_logout() -> tuple[Response, int]:
    """OIDC Back-Channel Logout 1.0: end every session of the IdP session (or user), but
    those our own logout of that IdP session left alive (the CLI sessions a browser approved)."""
    svc = services()
    primary = svc.primary
    token = request.form.get("logout_token", "")
    if primary is None or not primary.is_oidc or not token or len(token) > 16384:
        return jsonify(error="invalid_request"), 400
    try:
        claims = primary.verify_logout_token(token, time.time())
    except TokenInvalid as exc:
        logger.info("back-channel logout refused", extra={"detail": str(exc)})
        LOGOUTS.labels("backchannel", "invalid").inc()
        return jsonify(error="invalid_request"), 400
    except ProviderUnavailable:
        return jsonify(error="temporarily_unavailable"), 503
    replay_key = keyspace(svc.config).logout_token_seen(claims["jti"])
    with translate_redis_errors("checking a logout token"):
        seen = svc.redis.exists(replay_key)
    if seen:
        return jsonify(error="invalid_request", error_description="replayed"), 400
    sid, subject = claims.get("sid"), claims.get("sub")
    # Delete first, then remember the token: should the deletion fail (503), the provider's
    # retry of the same token must still be honoured, and deleting twice is harmless.
    spared: frozenset[str] = frozenset()
    if isinstance(sid, str) and sid:
        # Our own logout's echo ends no more than that logout did; the provider's own
        # logout of a session (or of the user, below) ends every gateway session of it.
        spared = svc.own_logouts.take(sid)
        ended = svc.sessions.delete_provider_session(sid, keep=spared)
    else:
        ended = svc.sessions.delete_user_sessions(str(subject))
    with translate_redis_errors("remembering a logout token"):
        svc.redis.set(replay_key, b"1", ex=_LOGOUT_TOKEN_REPLAY_SECONDS)
    logger.info(
        "back-channel logout", extra={"sessions_ended": ended, "sessions_spared": len(spared)}
    )
    LOGOUTS.labels("backchannel", "ok").inc()
    response = jsonify(sessions_ended=ended)
    response.headers["Cache-Control"] = "no-store"
    return response, 200


@blueprint.get("/user")
def user() -> tuple[Response, int]:
    """The logged-in user's profile as JSON; never a token."""
    svc = services()
    credential, session = request_session(svc)
    if session is None:
        return jsonify(error="unauthorized", login_url=svc.url("/login")), 401
    identity = session.identity
    now = time.time()
    return jsonify(
        sub=identity.subject,
        email=identity.email,
        name=identity.name,
        groups=list(identity.groups),
        session_expires_at=session.expires_at,
        providers={
            pid: {
                "logged_in": not tokens.needs_login and not tokens.expired_at(now),
                "expires_at": tokens.expires_at or None,
            }
            for pid, tokens in session.tokens.items()
        },
    ), 200
