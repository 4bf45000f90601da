"""The decision core: allow or deny one request, with no transport and no I/O in it.

A check runs in two pure steps around one session lookup:

1. :meth:`Decider.begin` picks the route and answers what needs no session (preflight,
   public, no credential, malformed credential, CSRF); otherwise it returns a
   :class:`SessionNeeded` naming the credential to look up.
2. :meth:`Decider.complete` takes the lookup's outcome and returns the decision.

The caller (ext_authz's servicer) does the lookup in between and translates the result into
Envoy's protobuf. Everything the core needs from the config is computed once in ``__init__``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlencode

from ext_authz.request import (
    SAFE_METHODS,
    CheckRequest,
    CredentialSource,
    PresentedCredential,
    bearer_credential_text,
    cookie_header_without,
    is_browser_navigation,
    is_preflight,
    is_websocket_upgrade,
    read_credential,
    request_origin,
)
from gateway import contract
from gateway.config import GatewayConfig, Route, TokenFormat
from gateway.errors import CredentialError
from gateway.sessions.model import Identity, Session, TokenSet

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Allow:
    route: str
    reason: str
    set_headers: Headers = ()
    remove_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Deny:
    route: str | None
    reason: str
    status: int
    headers: Headers = ()
    body: str = ""


Decision = Allow | Deny


@dataclass(frozen=True, slots=True)
class SessionNeeded:
    request: CheckRequest
    route: Route
    presented: PresentedCredential


class Lookup:
    """Outcomes of a session lookup that are not a session (reason codes for logs/metrics)."""

    UNKNOWN = "unknown_session"
    INVALID = "invalid_session"
    UNAVAILABLE = "redis_unavailable"
    CONFLICT = "conflicting_sessions"


_MESSAGES = {
    "no_session": "Log in to use this resource.",
    "invalid_credential": "The session credential is malformed. Log in again.",
    Lookup.UNKNOWN: "The session has ended. Log in again.",
    Lookup.INVALID: "The session cannot be read. Log in again.",
    "session_expired": "The session has expired. Log in again.",
    "provider_login_required": "This resource needs a login with another provider.",
    "token_expired": "The access token for this resource has expired. Log in again.",
}
# Reasons that only a new login at the route's provider can cure.
_PROVIDER_REASONS = frozenset({"provider_login_required", "token_expired"})
# Reasons after which the cookie the browser holds is useless and is expired in the reply.
_DEAD_COOKIE_REASONS = frozenset(
    {"invalid_credential", Lookup.UNKNOWN, Lookup.INVALID, "session_expired"}
)


def encode_identity_value(value: str) -> str:
    """Percent-encode UTF-8 so any name survives as an ASCII header; decode with unquote()."""
    if len(value) <= _CACHED_IDENTITY_CHARS:
        return _encoded_identity_value(value)
    return quote(value, safe=_IDENTITY_SAFE)


_IDENTITY_SAFE = "@.+-_~"
# The same users' ids, emails and names come with every check; only short values are kept,
# so the cache stays small whatever an identity provider sends.
_CACHED_IDENTITY_CHARS = 256


@lru_cache(maxsize=4096)
def _encoded_identity_value(value: str) -> str:
    return quote(value, safe=_IDENTITY_SAFE)


def format_token(token_format: TokenFormat, access_token: str) -> str:
    if token_format is TokenFormat.BEARER:
        return f"Bearer {access_token}"
    if token_format is TokenFormat.TOKEN:
        return f"token {access_token}"
    if token_format is TokenFormat.BASIC_OAUTH2:
        return "Basic " + base64.b64encode(f"oauth2:{access_token}".encode()).decode("ascii")
    return access_token


class Decider:
    """Holds what the config fixes for every request; decides each one."""

    def __init__(self, config: GatewayConfig) -> None:
        self._routes_by_name = {route.name: route for route in config.routes}
        self._routes_longest_first = sorted(
            config.routes, key=lambda r: len(r.prefix), reverse=True
        )
        # Only the real name is read: on https that is the __Host- one, which no sibling host
        # or plain-http reply can plant. Both spellings are stripped before the backend.
        self._credential_cookie = frozenset({config.cookie_name})
        self._cookie_names = frozenset(
            {
                config.cookie_name,
                config.session.cookie_name,
                # The login app's binding cookie is ours too: no backend needs to see it.
                contract.LOGIN_BINDING_COOKIE,
                "__Host-" + contract.LOGIN_BINDING_COOKIE,
            }
        )
        self._managed = config.managed_headers()
        self._identity_names = config.identity_headers.names()
        self._allowed_origins = frozenset({config.public_origin, *config.ext_authz.allowed_origins})
        self._public_url = config.public_url
        self._login_url = f"{config.public_url}{config.login_app.path_prefix}{contract.LOGIN_PATH}"
        self._on_demand = frozenset(
            provider.id for provider in config.providers if not provider.login_sequence
        )
        self._realm = f'Bearer realm="{config.public_origin}"'
        secure = "; Secure" if config.secure_cookies else ""
        self._expire_cookie = (
            f"{config.cookie_name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{secure}"
        )
        self._forbidden_page = _PAGE.format(
            title="No access", message=_FORBIDDEN_MESSAGE, home=config.public_url + "/"
        )
        self._conflict_page = _PAGE.format(
            title="Conflicting sessions", message=_CONFLICT, home=config.public_url + "/"
        )
        self._required_groups = {
            route.name: frozenset(route.require_groups)
            for route in config.routes
            if route.require_groups
        }

    # ---- step 1 -------------------------------------------------------------------------

    def route_for(self, request: CheckRequest) -> Route | None:
        """The route Envoy named, else the longest matching prefix."""
        if request.route_name is not None:
            return self._routes_by_name.get(request.route_name)
        path = request.path_only
        for route in self._routes_longest_first:
            if route.matches(path):
                return route
        return None

    def begin(self, request: CheckRequest) -> Decision | SessionNeeded:
        route = self.route_for(request)
        if route is None:
            return json_deny(None, "unknown_route", 403, "forbidden", "No such route.")
        if request.method == "TRACE":
            # A backend answering TRACE would echo the injected token back to the client.
            return json_deny(
                route.name, "method_not_allowed", 405, "method_not_allowed", "TRACE is refused."
            )
        if route.public:
            return self._allow_anonymous(request, route, "public")
        if is_preflight(request) and request_origin(request) in self._allowed_origins:
            # Browsers send preflights without credentials; only origins we serve get one
            # through. Any other OPTIONS needs a session like every other request.
            return self._allow_anonymous(request, route, "preflight")
        try:
            presented = read_credential(request, self._credential_cookie)
        except CredentialError:
            from_cookie = bearer_credential_text(request) is None
            return self._refuse(request, route, "invalid_credential", from_cookie=from_cookie)
        if presented is None:
            return self._refuse(request, route, "no_session", from_cookie=False)
        if presented.source is CredentialSource.COOKIE and not self._origin_allowed(request):
            return json_deny(route.name, "csrf", 403, "forbidden", "Cross-site request refused.")
        return SessionNeeded(request, route, presented)

    def _origin_allowed(self, request: CheckRequest) -> bool:
        """CSRF guard: unsafe methods carried by a cookie must come from an allowed origin.

        So must a WebSocket handshake: it is a GET, but any site can open one with the
        user's cookies and then read the replies (cross-site WebSocket hijacking).
        """
        if request.method in SAFE_METHODS and not is_websocket_upgrade(request):
            return True
        return request_origin(request) in self._allowed_origins

    # ---- step 2 -------------------------------------------------------------------------

    def complete(
        self,
        pending: SessionNeeded,
        session: Session | None,
        failure: str | None,
        now: float,
        *,
        refresh_failed: bool = False,
    ) -> Decision:
        """Decide with the lookup's result: a session, or a :class:`Lookup` failure reason.

        ``refresh_failed``: a due refresh could not be done now (provider or Redis trouble);
        a still-valid token is used anyway, an expired one gets 503, never a logout.
        """
        request, route = pending.request, pending.route
        from_cookie = pending.presented.source is CredentialSource.COOKIE
        if failure == Lookup.UNAVAILABLE:
            return json_deny(
                route.name,
                Lookup.UNAVAILABLE,
                503,
                "unavailable",
                "Sessions are unavailable right now; try again shortly.",
                extra=(("retry-after", "1"),),
            )
        if session is None:
            return self._refuse(request, route, failure or Lookup.UNKNOWN, from_cookie=from_cookie)
        if session.expired_at(now):
            return self._refuse(request, route, "session_expired", from_cookie=from_cookie)
        if route.restricted and not self._admits(route, session.identity):
            return self._forbidden(request, route)

        set_headers: list[tuple[str, str]] = []
        if route.provider is not None:
            tokens = session.tokens.get(route.provider)
            problem = _token_problem(tokens, now)
            if problem == "token_expired" and refresh_failed:
                return json_deny(
                    route.name,
                    "refresh_unavailable",
                    503,
                    "unavailable",
                    "The access token could not be renewed right now; try again shortly.",
                    extra=(("retry-after", "2"),),
                )
            if problem is not None:
                return self._refuse(request, route, problem, from_cookie=False)
            assert tokens is not None  # _token_problem returned None
            header = route.token_format.header_name
            set_headers.append((header, format_token(route.token_format, tokens.access_token)))
        if route.identity_headers:
            identity = session.identity
            values = (identity.subject, identity.email, identity.name)
            for name, value in zip(self._identity_names, values, strict=True):
                if value:
                    set_headers.append((name, encode_identity_value(value)))
        return self._allow(request, route, "allowed", set_headers)

    def _admits(self, route: Route, identity: Identity) -> bool:
        """The route's policy: one of its groups (if it names any) and all of its claims."""
        groups = self._required_groups.get(route.name)
        if groups is not None and groups.isdisjoint(identity.groups):
            return False
        return all(identity.claims.get(k) == v for k, v in route.require_claims.items())

    # ---- building results ----------------------------------------------------------------

    def _allow_anonymous(self, request: CheckRequest, route: Route, reason: str) -> Allow:
        return self._allow(request, route, reason, [])

    def _allow(
        self, request: CheckRequest, route: Route, reason: str, set_headers: list[tuple[str, str]]
    ) -> Allow:
        set_names = {name for name, _ in set_headers}
        remove = [name for name in self._managed if name not in set_names]
        cookie_header = request.header(contract.COOKIE)
        if cookie_header and any(name in cookie_header for name in self._cookie_names):
            kept = cookie_header_without(cookie_header, self._cookie_names)
            if not kept:
                remove.append(contract.COOKIE)
            elif kept != cookie_header:
                set_headers.append((contract.COOKIE, kept))
        return Allow(route.name, reason, tuple(set_headers), tuple(remove))

    def _refuse(
        self, request: CheckRequest, route: Route, reason: str, *, from_cookie: bool
    ) -> Decision:
        """No usable session: anonymous routes let the request through, others ask to log in."""
        if route.anonymous:
            return self._allow_anonymous(request, route, "anonymous")
        login_url = self.login_url(request, self._provider_to_log_in(route, reason))
        extra: list[tuple[str, str]] = []
        if from_cookie and reason in _DEAD_COOKIE_REASONS:
            extra.append(("set-cookie", self._expire_cookie))
        if is_browser_navigation(request):
            extra += [("location", login_url), ("cache-control", "no-store")]
            return Deny(route.name, reason, 302, tuple(extra), "")
        challenge = self._realm
        if reason != "no_session":
            challenge += ', error="invalid_token"'
        extra.append(("www-authenticate", challenge))
        return json_deny(
            route.name,
            reason,
            401,
            "unauthorized",
            _MESSAGES.get(reason, "Log in again."),
            login_url=login_url,
            extra=tuple(extra),
        )

    def conflict(self, pending: SessionNeeded) -> Decision:
        """Live sessions of different users in one request (gateway.sessions.choice): one
        was planted. A login cannot cure it (the planted cookie stays), so the answer is a
        page saying what will, never a redirect that would come back here."""
        request, route = pending.request, pending.route
        if route.anonymous:
            return self._allow_anonymous(request, route, "anonymous")
        if is_browser_navigation(request):
            return Deny(route.name, Lookup.CONFLICT, 400, _HTML_HEADERS, self._conflict_page)
        return json_deny(route.name, Lookup.CONFLICT, 400, "conflicting_sessions", _CONFLICT)

    def _forbidden(self, request: CheckRequest, route: Route) -> Deny:
        """Logged in, but the route's policy (groups, claims) does not admit this user."""
        if is_browser_navigation(request):
            return Deny(route.name, "forbidden", 403, _HTML_HEADERS, self._forbidden_page)
        return json_deny(route.name, "forbidden", 403, "forbidden", _FORBIDDEN_MESSAGE)

    def _provider_to_log_in(self, route: Route, reason: str) -> str | None:
        """The provider the login must visit for this route, when walking the login sequence
        would not bring its token: its own token is the problem, or it is logged in on demand.
        Without it the login app would find nothing to do and send the browser straight back
        here: a redirect loop."""
        provider = route.provider
        if provider is not None and (reason in _PROVIDER_REASONS or provider in self._on_demand):
            return provider
        return None

    def login_url(self, request: CheckRequest, provider: str | None = None) -> str:
        """Where to log in (at ``provider`` too, when given) and come back to this request's
        URL (always on our own origin)."""
        path = request.path if request.path.startswith("/") else "/"
        query = {contract.REDIRECT_URL_PARAMETER: self._public_url + path}
        if provider is not None:
            query[contract.PROVIDER_PARAMETER] = provider
        return self._login_url + "?" + urlencode(query)


def json_deny(
    route_name: str | None,
    reason: str,
    status: int,
    error: str,
    message: str,
    *,
    login_url: str | None = None,
    extra: Headers = (),
) -> Deny:
    """A denial with a JSON body ``{"error", "reason", "message"[, "login_url"]}``."""
    fixed = _fixed_json_deny(route_name, reason, status, error, message, extra)
    if login_url is None:
        return fixed
    # The login URL names the request's own path, so it is added per request: caching
    # it would keep one entry (up to three times Envoy's header limit) per path asked for.
    body = fixed.body[:-1] + ', "login_url": ' + json.dumps(login_url) + "}"
    return Deny(route_name, reason, status, fixed.headers, body)


@lru_cache(maxsize=1024)
def _fixed_json_deny(
    route_name: str | None, reason: str, status: int, error: str, message: str, extra: Headers
) -> Deny:
    """The same few denials are answered over and over (unknown routes, 503s while Redis is
    away, 401s), all from config and constants; a Deny is immutable, so each is built once."""
    body = json.dumps({"error": error, "reason": reason, "message": message})
    headers = (("content-type", "application/json"), ("cache-control", "no-store"), *extra)
    return Deny(route_name, reason, status, headers, body)


_FORBIDDEN_MESSAGE = "Your account does not have access to this resource."
_HTML_HEADERS = (("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"))
_CONFLICT = (
    "Your browser sent two sessions of different users for this site; another site of the "
    "same domain may have set one. Clear this site's cookies in your browser, then log in again."
)
_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
    "</head><body><main><h1>{title}</h1><p>{message}</p>"
    '<p><a href="{home}">Go to the start page</a></p></main></body></html>'
)


def _token_problem(tokens: TokenSet | None, now: float) -> str | None:
    if tokens is None or tokens.needs_login or not tokens.presentable:
        return "provider_login_required"
    if tokens.expired_at(now):
        return "token_expired"
    return None
