"""``/login`` and ``/callback``: walk the login sequence, one provider after another.

The first provider of the sequence (the primary) says who the user is; every later one only
adds its tokens. A provider whose token in the current session is still valid is skipped.
The finished login always gets a brand-new session id and secret (no session fixation).

A CLI login's approval runs the same sequence for the device, none skipped, so the CLI
session gets token families of its own: providers that rotate refresh tokens would otherwise
break one of two sessions sharing a refresh token. Its finish hands the new session to the
device and leaves the browser's own session alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response

from gateway.credentials import SessionCredential
from gateway.sessions import Session
from gateway.store import new_session_times
from login_app.attempts import LoginAttempt, binding_bytes, new_binding
from login_app.cookies import (
    binding_cookie_name,
    parse_credential,
    set_binding_cookie,
    set_session_cookie,
)
from login_app.device_store import device_codes
from login_app.errors import (
    AttemptExpired,
    IdTokenInvalid,
    LoginError,
    ProviderError,
    StateMismatch,
)
from login_app.metrics import LOGINS
from login_app.redirects import safe_redirect_target
from login_app.services import Services, request_session, services

logger = logging.getLogger(__name__)
blueprint = Blueprint("login", __name__)

# A token this close to expiry is not worth skipping its provider's login for.
SKIP_MARGIN_SECONDS = 60
_MAX_PARAMETER = 4096


class DeviceLoginLapsed(AttemptExpired):
    """The CLI login expired, or was settled elsewhere, while the browser was logging in."""

    code = "cli_login_lapsed"
    title = "The command-line login can no longer be approved"
    retry = False


def redirect_target(svc: Services, value: str | None) -> str:
    return safe_redirect_target(
        value,
        public_url=svc.config.public_url,
        allowed_origins=svc.config.allowed_redirect_origins,
    )


@blueprint.get("/login")
def login() -> Response:
    svc = services()
    target = redirect_target(svc, request.args.get("redirect_url"))
    now = time.time()
    credential, existing = request_session(svc)
    sequence = svc.login_sequence
    if not sequence:
        raise LoginError("no provider is configured for login")
    valid = {
        pid
        for pid, tokens in (existing.tokens.items() if existing else ())
        if not tokens.needs_login
        and tokens.presentable
        and not tokens.expired_at(now + SKIP_MARGIN_SECONDS)
    }
    steps = [pid for pid in sequence if pid not in valid]
    if not steps:
        return redirect(target)  # every provider's token is still good
    attempt = svc.attempts.start(
        target, steps, replaces=credential.encode() if credential and existing else None
    )
    if existing is not None:
        attempt.identity = asdict(existing.identity)
        attempt.carried_subject = existing.identity.subject
        for pid in valid:
            attempt.add_tokens(pid, existing.tokens[pid])
    return begin_login(svc, attempt)


def start_device_login(svc: Services, device_id: str, approver_subject: str) -> Response:
    """Log the browser in through every provider again, for a new session for a CLI device."""
    if not svc.login_sequence:
        raise LoginError("no provider is configured for login")
    attempt = svc.attempts.start(
        svc.url("/cli/approve"),  # never followed: the finish shows a page instead
        list(svc.login_sequence),
        for_device=device_id,
        approver_subject=approver_subject,
    )
    return begin_login(svc, attempt)


def begin_login(svc: Services, attempt: LoginAttempt) -> Response:
    """Send the browser to the attempt's first provider."""
    # Reusing the browser's binding keeps its other attempts (other tabs) working.
    binding = request.cookies.get(binding_cookie_name(svc.config))
    try:
        binding_bytes(binding)
    except StateMismatch:
        binding = new_binding()
    assert binding is not None
    return _send_to_provider(svc, attempt, binding)


def _send_to_provider(svc: Services, attempt: LoginAttempt, binding: str) -> Response:
    attempt.begin_step()
    client = svc.providers[attempt.provider_id]
    url = client.authorization_url(
        state=attempt.state,
        code_verifier=attempt.code_verifier,
        nonce=attempt.nonce if client.is_oidc else None,
    )
    svc.attempts.save(attempt, binding)
    response = redirect(url)
    set_binding_cookie(response, svc.config, binding)
    return response


def _argument(name: str) -> str | None:
    value = request.args.get(name)
    if value is not None and len(value) > _MAX_PARAMETER:
        raise StateMismatch(f"the {name} parameter is too long")
    return value


@blueprint.get("/callback")
def callback() -> Response | str:
    svc = services()
    state = _argument("state")
    if not state:
        raise StateMismatch("the reply carries no state")
    binding = request.cookies.get(binding_cookie_name(svc.config))
    attempt = svc.attempts.consume(state, binding)
    assert binding is not None  # consume() refuses a missing binding
    client = svc.providers.get(attempt.provider_id)
    if client is None:  # the provider left the configuration during this login
        raise AttemptExpired("this login's provider is no longer configured")
    # RFC 9207 (§2.4, error replies too): a reply naming another issuer is a mix-up attack;
    # refused before its code or error text goes anywhere.
    client.check_reply_issuer(_argument("iss"))
    error = _argument("error")
    if error:
        description = _argument("error_description") or error
        raise ProviderError(f"{error}: {description}"[:300], provider=client.id)
    code = _argument("code")
    if not code:
        raise ProviderError("the reply carries no authorization code", provider=client.id)

    now = time.time()
    tokens = client.token_set(client.exchange_code(code, attempt.code_verifier), now)
    is_primary = attempt.provider_id == svc.login_sequence[0]
    claims = None
    if client.is_oidc:
        if not tokens.id_token:
            raise IdTokenInvalid("the reply has no ID token", provider=client.id)
        claims = client.verify_id_token(tokens.id_token, attempt.nonce, now)
    identity = (
        client.identity(tokens.access_token, claims, svc.config.kept_claims) if is_primary else None
    )

    if identity is not None:
        if attempt.carried_subject and attempt.carried_subject != identity.subject:
            # Another person logged in: nothing of the previous user's session carries over.
            attempt.tokens = {}
            attempt.steps = list(svc.login_sequence)
            attempt.step = 0
        attempt.identity = asdict(identity)
    attempt.add_tokens(client.id, tokens)
    LOGINS.labels(client.id, "ok").inc()
    attempt.step += 1
    logger.info("provider login done", extra={"provider": client.id, "step": attempt.step})
    if not attempt.finished:
        return _send_to_provider(svc, attempt, binding)
    return _finish(svc, attempt, now)


def _finish(svc: Services, attempt: LoginAttempt, now: float) -> Response | str:
    identity = attempt.identity_value()
    if identity is None:
        raise LoginError("the login sequence produced no identity")
    created_at, expires_at = new_session_times(svc.config.session, now)
    replaced = parse_credential(attempt.replaces)
    old = svc.live_session(replaced)
    identity_carried = svc.login_sequence[0] not in attempt.steps
    if identity_carried and replaced is not None:
        # This login only added providers to an existing session: it must not outlive that
        # session, nor bring it back after a logout or revocation ended it meanwhile.
        if old is None:
            raise AttemptExpired("the session this login was adding a provider to has ended")
        expires_at = min(expires_at, old.expires_at)
    session = Session(identity, created_at, expires_at, attempt.token_sets())
    credential = SessionCredential.generate()
    svc.sessions.save(credential, session)
    if attempt.for_device is not None:
        return _hand_to_device(svc, attempt, attempt.for_device, credential, session, now)
    if replaced is not None:
        svc.sessions.delete(replaced, old)
    svc.attempts.finish(attempt)
    logger.info("login complete", extra={"providers": sorted(attempt.tokens)})
    response = redirect(attempt.redirect_url)
    set_session_cookie(response, svc.config, credential)
    return response


def _hand_to_device(
    svc: Services,
    attempt: LoginAttempt,
    device_id: str,
    credential: SessionCredential,
    session: Session,
    now: float,
) -> str:
    """Give the new session to the waiting CLI; the browser gets no cookie and keeps its own."""
    svc.attempts.finish(attempt)
    if session.identity.subject != attempt.approver_subject:
        # The person has just proved this identity at the IdP, so the CLI gets it; an approver
        # switching accounts midway is worth a trace all the same.
        logger.warning(
            "cli login approved as one user and logged in as another",
            extra={"approver": attempt.approver_subject, "subject": session.identity.subject},
        )
    # The session is saved before the record flips to approved, so a poll never gets a dead
    # credential. Should Redis fail in between, the orphan is unreadable (its secret was never
    # stored) and idles out.
    if not device_codes().approve(device_id, credential.encode(), session.expires_at, now):
        svc.sessions.delete(credential, session)
        raise DeviceLoginLapsed("the CLI login expired or was settled during the browser's login")
    logger.info("cli login approved", extra={"providers": sorted(attempt.tokens)})
    return render_template(
        "cli_done.html",
        title="Command-line login approved",
        message="You approved the login. The command-line tool is now logged in as you.",
    )
