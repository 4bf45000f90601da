"""``/login`` and ``/callback``: walk the login sequence, one provider after another.

The first provider of the sequence (the primary) says who the user is; every later one only
adds its tokens. A provider whose token in the current session is still valid is skipped.
The finished login always gets a brand-new session id and secret (no session fixation).

Providers outside the sequence are logged in on demand: ``/login?provider=ID``, the login URL
ext_authz hands out when a route needs that provider's token, sends a browser that has a
session through that provider alone, and one without a session through the sequence first.
A login naming a provider always visits it, so the browser never comes straight back to the
route that sent it (a redirect loop); a browser sent to the same provider again and again
within a minute gets an error page instead of another round.

An optional provider that is down is skipped, logged and counted: the session gets no tokens
for it, and a route that needs them later logs in to it on demand.

A CLI login's approval runs the same sequence for the device, no valid token skipped, so the
CLI session gets token families of its own: providers that rotate refresh tokens would
otherwise break one of two sessions sharing a refresh token. Its finish hands the new session
to the device and leaves the browser's own session alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response

from gateway.contract import LOGIN_PATH, PROVIDER_PARAMETER, REDIRECT_URL_PARAMETER
from gateway.errors import ProviderUnavailable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Session
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
    LoginLoop,
    LoginUnavailable,
    ProviderError,
    StateMismatch,
    UnknownProvider,
)
from login_app.metrics import LOGIN_STEPS_SKIPPED, LOGINS
from login_app.redirects import safe_redirect_target
from login_app.services import Services, request_session, services

logger = logging.getLogger(__name__)
blueprint = Blueprint("login", __name__)

# A token this close to expiry is not worth skipping its provider's login for.
SKIP_MARGIN_SECONDS = 60
# A browser sent to log in to one provider this often within the window is going round in
# circles: the route that sends it keeps refusing what the provider gives. With single
# sign-on at the provider such a loop needs no click, so it is stopped here.
LOOP_ROUNDS = 3
LOOP_WINDOW_SECONDS = 60
_MAX_PARAMETER = 4096
# Authorization error replies (RFC 6749 4.1.2.1) that say the provider is down, not "no".
_PROVIDER_DOWN_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


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


@blueprint.get(LOGIN_PATH)
def login() -> Response | str:
    svc = services()
    target = redirect_target(svc, request.args.get(REDIRECT_URL_PARAMETER))
    wanted = _requested_provider(svc)
    now = time.time()
    credential, existing = request_session(svc)
    if not svc.login_sequence:
        raise LoginError("no provider is configured for login")
    binding = _browser_binding(svc)
    if wanted is not None:
        if svc.attempts.count_round(binding, wanted, LOOP_WINDOW_SECONDS) > LOOP_ROUNDS:
            raise LoginLoop(f"{wanted} was asked for {LOOP_ROUNDS} times lately", provider=wanted)
        _require_up(svc, wanted)
    if wanted is not None and existing is not None:
        steps = [wanted]
        carried = {pid: tokens for pid, tokens in existing.tokens.items() if pid != wanted}
    else:
        valid = _valid_providers(existing, now)
        steps = [pid for pid in _full_sequence(svc, wanted) if pid not in valid]
        if not steps:
            return redirect(target)  # every provider's token is still good
        carried = {pid: existing.tokens[pid] for pid in valid} if existing else {}
    attempt = svc.attempts.start(
        target,
        steps,
        replaces=credential.encode() if credential and existing else None,
        requested=wanted,
    )
    if existing is not None:
        attempt.identity = asdict(existing.identity)
        attempt.carried_subject = existing.identity.subject
        for pid, tokens in carried.items():
            attempt.add_tokens(pid, tokens)
    return _continue(svc, attempt, binding, now)


def _requested_provider(svc: Services) -> str | None:
    """The provider the login URL names (``provider=``), if any."""
    provider_id = _argument(PROVIDER_PARAMETER)
    if not provider_id:
        return None
    if provider_id not in svc.providers:
        raise UnknownProvider(f"the login asks for provider {provider_id[:64]!r}")
    return provider_id


def _full_sequence(svc: Services, wanted: str | None) -> list[str]:
    """The login sequence, followed by ``wanted`` when it is logged in on demand."""
    steps = list(svc.login_sequence)
    if wanted is not None and wanted not in steps:
        steps.append(wanted)
    return steps


def _valid_providers(session: Session | None, now: float) -> set[str]:
    """Providers whose tokens in ``session`` are good for a while yet."""
    return {
        pid
        for pid, tokens in (session.tokens.items() if session else ())
        if not tokens.needs_login
        and tokens.presentable
        and not tokens.expired_at(now + SKIP_MARGIN_SECONDS)
    }


def _require_up(svc: Services, provider_id: str) -> None:
    """A provider asked for by name must answer: better our page than a browser error."""
    if not svc.providers[provider_id].is_up():
        raise LoginUnavailable(f"{provider_id} is not answering", provider=provider_id)


def start_device_login(svc: Services, device_id: str, approver: Session) -> Response | str:
    """Log the browser in again, for a new session for a CLI device: through the sequence
    and every on-demand provider the approving session has tokens for."""
    if not svc.login_sequence:
        raise LoginError("no provider is configured for login")
    on_demand = [
        p.id for p in svc.config.providers if not p.login_sequence and p.id in approver.tokens
    ]
    attempt = svc.attempts.start(
        svc.url("/cli/approve"),  # never followed: the finish shows a page instead
        [*svc.login_sequence, *on_demand],
        for_device=device_id,
        approver_subject=approver.identity.subject,
    )
    return begin_login(svc, attempt)


def begin_login(svc: Services, attempt: LoginAttempt) -> Response | str:
    """Send the browser to the attempt's first provider."""
    return _continue(svc, attempt, _browser_binding(svc), time.time())


def _browser_binding(svc: Services) -> str:
    """The browser's binding secret: reusing it keeps its other attempts (tabs) working."""
    binding = request.cookies.get(binding_cookie_name(svc.config))
    try:
        binding_bytes(binding)
    except StateMismatch:
        return new_binding()
    assert binding is not None
    return binding


def _continue(svc: Services, attempt: LoginAttempt, binding: str, now: float) -> Response | str:
    """Send the browser to the attempt's next provider, or finish after the last one.

    An optional provider is asked first whether it is up: a browser sent to one that is down
    would only see a connection error. One the login was started for is never skipped.
    """
    while not attempt.finished:
        provider_id = attempt.provider_id
        if not _may_skip(svc, attempt, provider_id):
            return _send_to_provider(svc, attempt, binding)
        if svc.providers[provider_id].is_up():
            try:
                return _send_to_provider(svc, attempt, binding)
            except ProviderUnavailable:
                pass  # its discovery failed after all
        _skip(attempt, provider_id, "unavailable")
    return _finish(svc, attempt, now)


def _may_skip(svc: Services, attempt: LoginAttempt, provider_id: str) -> bool:
    return provider_id in svc.optional and provider_id != attempt.requested


def _skip(attempt: LoginAttempt, provider_id: str, reason: str) -> None:
    attempt.skipped.append(provider_id)
    attempt.step += 1
    LOGIN_STEPS_SKIPPED.labels(provider_id, reason).inc()
    logger.warning("login step skipped", extra={"provider": provider_id, "reason": reason})


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
    now = time.time()
    error = _argument("error")
    if error in _PROVIDER_DOWN_ERRORS and _may_skip(svc, attempt, client.id):
        _skip(attempt, client.id, "unavailable")
        return _continue(svc, attempt, binding, now)
    if error:
        description = _argument("error_description") or error
        raise ProviderError(f"{error}: {description}"[:300], provider=client.id)
    code = _argument("code")
    if not code:
        raise ProviderError("the reply carries no authorization code", provider=client.id)

    try:
        tokens = client.token_set(client.exchange_code(code, attempt.code_verifier), now)
    except ProviderUnavailable:
        if not _may_skip(svc, attempt, client.id):
            raise
        _skip(attempt, client.id, "unavailable")  # it went down while the person was there
        return _continue(svc, attempt, binding, now)
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
            attempt.steps = _full_sequence(svc, attempt.requested)
            attempt.step = 0
            attempt.skipped = []
        attempt.identity = asdict(identity)
    attempt.add_tokens(client.id, tokens)
    LOGINS.labels(client.id, "ok").inc()
    attempt.step += 1
    logger.info("provider login done", extra={"provider": client.id, "step": attempt.step})
    return _continue(svc, attempt, binding, now)


def _finish(svc: Services, attempt: LoginAttempt, now: float) -> Response | str:
    identity = attempt.identity_value()
    if identity is None:
        raise LoginError("the login sequence produced no identity")
    replaced = parse_credential(attempt.replaces)
    old = svc.live_session(replaced)
    identity_carried = svc.login_sequence[0] not in attempt.steps
    not_after = None
    if identity_carried and replaced is not None:
        # This login only added providers to an existing session: it must not outlive that
        # session, nor bring it back after a logout or revocation ended it meanwhile.
        if old is None:
            raise AttemptExpired("the session this login was adding a provider to has ended")
        not_after = old.expires_at
    credential, session = svc.sessions.create(
        identity, attempt.token_sets(), now, not_after=not_after
    )
    if attempt.for_device is not None:
        return _hand_to_device(svc, attempt, attempt.for_device, credential, session, now)
    if replaced is not None:
        svc.sessions.delete(replaced, old)
    svc.attempts.finish(attempt)
    logger.info(
        "login complete", extra={"providers": sorted(attempt.tokens), "skipped": attempt.skipped}
    )
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
