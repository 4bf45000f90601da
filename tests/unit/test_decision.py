"""The decision core: every allow/deny rule, checked on plain values with no transport or I/O."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from ext_authz import decision as decision_module
from ext_authz.decision import Allow, Decider, Decision, Deny, Lookup, SessionNeeded
from ext_authz.request import CheckRequest, CredentialSource
from gateway.config import GatewayConfig, parse_config
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet

PUBLIC_URL = "http://gateway.test:8080"
HTTPS_PUBLIC_URL = "https://gateway.example"
FOREIGN_ORIGIN = "https://evil.example"
PARTNER_ORIGIN = "https://partner.example"
COOKIE = "gw_session"
NOW = 1_700_000_000
SECRETS = {"GATEWAY_SECRET_KEYS": "x" * 40}
HTML = "text/html,application/xhtml+xml,*/*;q=0.8"
SPOOFED = {
    "authorization": "Bearer spoofed",
    "private-token": "spoofed",
    "x-gateway-user-id": "admin",
    "x-gateway-user-email": "admin@example.com",
    "x-gateway-user-name": "Admin",
}


def config_data(
    public_url: str = PUBLIC_URL, extra_routes: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """The routes of tests/support/servers.py::base_config, with no ports to find."""
    backend = "http://backend.test:9000"
    return {
        "public_url": public_url,
        "session": {"cookie_name": COOKIE, "absolute_lifetime": "1h", "idle_timeout": "30m"},
        "ext_authz": {"allowed_origins": [PARTNER_ORIGIN]},
        "providers": [
            {"id": "primary", "kind": "oidc", "issuer": "https://idp.test", "client_id": "gw"},
            {
                "id": "gitlab",
                "kind": "oauth2",
                "authorize_url": "https://gitlab.test/authorize",
                "token_url": "https://gitlab.test/token",
                "client_id": "gw",
            },
        ],
        "routes": [
            {
                "name": "api",
                "prefix": "/api/",
                "upstream": backend,
                "provider": "primary",
                "identity_headers": True,
            },
            {
                "name": "gitlab",
                "prefix": "/gitlab/",
                "upstream": backend,
                "provider": "gitlab",
                "token_format": "private_token",
            },
            {
                "name": "git",
                "prefix": "/repos/",
                "upstream": backend,
                "provider": "gitlab",
                "token_format": "basic_oauth2",
            },
            {
                "name": "notebooks",
                "prefix": "/jupyter/",
                "upstream": backend,
                "provider": "primary",
                "token_format": "token",
            },
            {
                "name": "catalog",
                "prefix": "/catalog/",
                "upstream": backend,
                "provider": "primary",
                "anonymous": True,
                "identity_headers": True,
            },
            {"name": "status", "prefix": "/status", "upstream": backend, "public": True},
            *extra_routes,
        ],
    }


def make_config(**kwargs: Any) -> GatewayConfig:
    return parse_config(config_data(**kwargs), SECRETS)


@pytest.fixture
def config() -> GatewayConfig:
    return make_config()


@pytest.fixture
def decider(config: GatewayConfig) -> Decider:
    return Decider(config)


@pytest.fixture
def credential() -> SessionCredential:
    return SessionCredential.generate()


def session_with(
    tokens: dict[str, TokenSet] | None = None,
    *,
    identity: Identity | None = None,
    expires_at: int = NOW + 3600,
) -> Session:
    if tokens is None:
        tokens = {
            "primary": TokenSet("primary-access-token", expires_at=NOW + 600),
            "gitlab": TokenSet("gitlab-access-token"),  # no known expiry
        }
    return Session(
        identity=identity or Identity("user-42", "ada@example.com", "Ada Lovelace"),
        created_at=NOW - 60,
        expires_at=expires_at,
        tokens=tokens,
    )


def browser_request(
    credential: SessionCredential | None,
    path: str = "/api/items",
    method: str = "GET",
    *,
    route_name: str | None = None,
    **headers: str,
) -> CheckRequest:
    """A request carrying the credential in the session cookie (header kwargs: _ becomes -)."""
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if credential is not None:
        all_headers["cookie"] = f"{COOKIE}={credential.encode()}"
    return CheckRequest(method, path, all_headers, route_name)


def api_request(
    credential: SessionCredential, path: str = "/api/items", method: str = "GET", **headers: str
) -> CheckRequest:
    """A request carrying the credential as a bearer token, as the CLI sends it."""
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    all_headers["authorization"] = f"Bearer {credential.encode()}"
    return CheckRequest(method, path, all_headers)


def decide(
    decider: Decider,
    request: CheckRequest,
    session: Session | None = None,
    failure: str | None = None,
    now: float = NOW,
) -> Decision:
    """Run both steps, the lookup answering ``session`` or ``failure``."""
    step = decider.begin(request)
    if isinstance(step, SessionNeeded):
        return decider.complete(step, session, failure, now)
    return step


def allowed(decision: Decision) -> Allow:
    assert isinstance(decision, Allow), decision
    return decision


def denied(decision: Decision, status: int) -> Deny:
    assert isinstance(decision, Deny), decision
    assert decision.status == status, decision
    return decision


def headers_of(decision: Allow | Deny) -> dict[str, str]:
    pairs = decision.set_headers if isinstance(decision, Allow) else decision.headers
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a header is set twice: {names}"
    return dict(pairs)


def body_of(decision: Deny) -> dict[str, str]:
    return json.loads(decision.body)


# ---- allowed: the route's token and the user's identity ------------------------------------


@pytest.mark.parametrize(
    ("path", "header", "value"),
    [
        pytest.param("/api/items", "authorization", "Bearer primary-access-token", id="bearer"),
        pytest.param("/jupyter/hub/api", "authorization", "token primary-access-token", id="token"),
        pytest.param(
            "/gitlab/api/v4/user", "private-token", "gitlab-access-token", id="private_token"
        ),
        pytest.param(
            "/repos/group/project.git/info/refs",
            "authorization",
            "Basic " + base64.b64encode(b"oauth2:gitlab-access-token").decode(),
            id="basic_oauth2",
        ),
    ],
)
def test_a_live_session_is_allowed_with_the_routes_token_in_its_format(
    decider: Decider, credential: SessionCredential, path: str, header: str, value: str
) -> None:
    decision = allowed(decide(decider, browser_request(credential, path), session_with()))
    assert decision.reason == "allowed"
    assert headers_of(decision)[header] == value
    assert header not in decision.remove_headers


def test_a_private_token_route_strips_the_authorization_header(
    decider: Decider, credential: SessionCredential
) -> None:
    decision = allowed(decide(decider, api_request(credential, "/gitlab/x"), session_with()))
    assert "authorization" in decision.remove_headers
    assert "authorization" not in headers_of(decision)


def test_identity_headers_are_percent_encoded_and_survive_unquote(
    decider: Decider, credential: SessionCredential
) -> None:
    identity = Identity("user/42", "zoë+tag@example.com", "Zoë Ünal 山田\r\nX-Evil: 1")
    decision = allowed(
        decide(decider, browser_request(credential), session_with(identity=identity))
    )
    headers = headers_of(decision)
    values = [
        headers[n] for n in ("x-gateway-user-id", "x-gateway-user-email", "x-gateway-user-name")
    ]
    assert all(value.isascii() and "\r" not in value and "\n" not in value for value in values)
    assert [unquote(v) for v in values] == [identity.subject, identity.email, identity.name]


def test_an_empty_identity_field_is_removed_not_sent_empty(
    decider: Decider, credential: SessionCredential
) -> None:
    decision = allowed(
        decide(decider, browser_request(credential), session_with(identity=Identity("user-42")))
    )
    assert headers_of(decision)["x-gateway-user-id"] == "user-42"
    assert "x-gateway-user-email" not in headers_of(decision)
    assert {"x-gateway-user-email", "x-gateway-user-name"} <= set(decision.remove_headers)


def test_a_route_without_identity_headers_sends_no_identity(
    decider: Decider, credential: SessionCredential
) -> None:
    decision = allowed(decide(decider, browser_request(credential, "/jupyter/x"), session_with()))
    assert not {"x-gateway-user-id", "x-gateway-user-email", "x-gateway-user-name"} & set(
        headers_of(decision)
    )


# ---- anonymous routes ----------------------------------------------------------------------


def test_an_anonymous_route_without_a_session_is_allowed_without_identity(
    decider: Decider, config: GatewayConfig
) -> None:
    request = CheckRequest("GET", "/catalog/books", dict(SPOOFED))
    decision = allowed(decide(decider, request))
    assert decision.reason == "anonymous"
    assert decision.set_headers == ()
    assert set(config.managed_headers()) <= set(decision.remove_headers)


@pytest.mark.parametrize(
    ("session", "failure"),
    [
        pytest.param(None, None, id="unknown-session"),
        pytest.param(None, Lookup.INVALID, id="invalid-session"),
        pytest.param(session_with(expires_at=NOW - 1), None, id="expired-session"),
        pytest.param(session_with(tokens={}), None, id="session-without-the-provider-token"),
        pytest.param(
            session_with(tokens={"primary": TokenSet("p", expires_at=NOW)}),
            None,
            id="expired-provider-token",
        ),
    ],
)
def test_an_anonymous_route_with_an_unusable_session_is_allowed_anonymously(
    decider: Decider, credential: SessionCredential, session: Session | None, failure: str | None
) -> None:
    decision = allowed(decide(decider, browser_request(credential, "/catalog/"), session, failure))
    assert decision.reason == "anonymous"
    assert "authorization" in decision.remove_headers
    assert not [name for name, _ in decision.set_headers if name.startswith("x-gateway")]


def test_an_anonymous_route_with_a_garbled_cookie_is_allowed_anonymously(
    decider: Decider,
) -> None:
    request = CheckRequest("GET", "/catalog/", {"cookie": f"{COOKIE}=garbage"})
    assert allowed(decide(decider, request)).reason == "anonymous"


def test_an_anonymous_route_with_a_live_session_gets_token_and_identity(
    decider: Decider, credential: SessionCredential
) -> None:
    decision = allowed(decide(decider, browser_request(credential, "/catalog/"), session_with()))
    assert decision.reason == "allowed"
    assert headers_of(decision)["authorization"] == "Bearer primary-access-token"
    assert headers_of(decision)["x-gateway-user-id"] == "user-42"


# ---- refusals after the lookup -------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "failure", "reason"),
    [
        pytest.param(None, None, Lookup.UNKNOWN, id="unknown-session"),
        pytest.param(None, Lookup.INVALID, Lookup.INVALID, id="invalid-session"),
        pytest.param(session_with(expires_at=NOW), None, "session_expired", id="expired-session"),
        pytest.param(
            session_with(tokens={"gitlab": TokenSet("g")}),
            None,
            "provider_login_required",
            id="missing-provider-token",
        ),
        pytest.param(
            session_with(tokens={"primary": TokenSet("p", needs_login=True)}),
            None,
            "provider_login_required",
            id="provider-token-needs-login",
        ),
        pytest.param(
            session_with(tokens={"primary": TokenSet("p", expires_at=NOW)}),
            None,
            "token_expired",
            id="expired-provider-token",
        ),
    ],
)
def test_an_unusable_session_is_refused_with_its_reason(
    decider: Decider,
    credential: SessionCredential,
    session: Session | None,
    failure: str | None,
    reason: str,
) -> None:
    decision = denied(decide(decider, api_request(credential), session, failure), 401)
    assert decision.reason == reason
    assert body_of(decision)["reason"] == reason


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("abc\r\nX-Injected: yes", id="crlf"),
        pytest.param("abc\ndef", id="lf"),
        pytest.param("abc def", id="space"),
        pytest.param("tökén", id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param("a" * 8193, id="oversized"),
    ],
)
def test_a_token_that_cannot_travel_in_a_header_is_never_injected(
    decider: Decider, credential: SessionCredential, token: str
) -> None:
    session = session_with(tokens={"primary": TokenSet(token, expires_at=NOW + 600)})
    decision = denied(decide(decider, api_request(credential), session), 401)
    assert decision.reason == "provider_login_required"
    assert token == "" or all(token not in value for _, value in decision.headers)
    assert token == "" or token not in decision.body


def test_a_provider_token_without_known_expiry_is_used(
    decider: Decider, credential: SessionCredential
) -> None:
    later = NOW + 10**9
    session = session_with(expires_at=later + 1)
    decision = decide(decider, api_request(credential, "/gitlab/x"), session, now=later)
    assert headers_of(allowed(decision))["private-token"] == "gitlab-access-token"


# ---- managed headers and the session cookie never reach a backend --------------------------


def _preflight() -> CheckRequest:
    return CheckRequest(
        "OPTIONS",
        "/api/items",
        {**SPOOFED, "origin": PARTNER_ORIGIN, "access-control-request-method": "PUT"},
    )


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(CheckRequest("GET", "/status", dict(SPOOFED)), id="public"),
        pytest.param(_preflight(), id="preflight"),
        pytest.param(CheckRequest("GET", "/catalog/", dict(SPOOFED)), id="anonymous"),
    ],
)
def test_spoofed_managed_headers_are_removed_when_nothing_is_injected(
    decider: Decider, config: GatewayConfig, request_: CheckRequest
) -> None:
    decision = allowed(decider.begin(request_))
    assert set(config.managed_headers()) <= set(decision.remove_headers)
    assert set(SPOOFED) <= set(decision.remove_headers)


@pytest.mark.parametrize("path", ["/api/x", "/gitlab/x", "/repos/x", "/jupyter/x", "/catalog/x"])
def test_every_managed_header_is_either_overwritten_or_removed_on_allow(
    decider: Decider, config: GatewayConfig, credential: SessionCredential, path: str
) -> None:
    request = CheckRequest("GET", path, {**SPOOFED, "cookie": f"{COOKIE}={credential.encode()}"})
    decision = allowed(decide(decider, request, session_with()))
    handled = set(headers_of(decision)) | set(decision.remove_headers)
    assert set(config.managed_headers()) <= handled
    for name, value in decision.set_headers:
        assert value != SPOOFED.get(name)


def test_the_session_cookie_is_stripped_and_other_cookies_kept(
    decider: Decider, credential: SessionCredential
) -> None:
    cookie = f"theme=dark; {COOKIE}={credential.encode()}; lang=en"
    request = CheckRequest("GET", "/api/x", {"cookie": cookie})
    decision = allowed(decide(decider, request, session_with()))
    assert headers_of(decision)["cookie"] == "theme=dark; lang=en"
    assert "cookie" not in decision.remove_headers


def test_the_cookie_header_is_removed_when_only_the_session_cookie_was_sent(
    decider: Decider, credential: SessionCredential
) -> None:
    decision = allowed(decide(decider, browser_request(credential), session_with()))
    assert "cookie" in decision.remove_headers
    assert "cookie" not in headers_of(decision)


@pytest.mark.parametrize(
    "path", [pytest.param("/status", id="public"), pytest.param("/catalog/", id="anonymous")]
)
def test_the_session_cookie_is_stripped_on_routes_without_a_lookup(
    decider: Decider, path: str
) -> None:
    request = CheckRequest("GET", path, {"cookie": f"{COOKIE}=garbage; theme=dark"})
    assert headers_of(allowed(decide(decider, request)))["cookie"] == "theme=dark"


# ---- reading the credential ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "no_session", id="no-cookie"),
        pytest.param({"cookie": "theme=dark"}, "no_session", id="other-cookies-only"),
        pytest.param({"cookie": f"{COOKIE}=garbage"}, "invalid_credential", id="garbled-cookie"),
        pytest.param(
            {"cookie": f"{COOKIE}=garbage; {COOKIE}=gws_x.y"},
            "invalid_credential",
            id="only-garbled-session-cookies",
        ),
        pytest.param(
            {"authorization": "Bearer gws_truncated"},
            "invalid_credential",
            id="malformed-bearer-token",
        ),
    ],
)
def test_a_missing_or_unusable_credential_is_refused_before_any_lookup(
    decider: Decider, headers: dict[str, str], reason: str
) -> None:
    decision = decider.begin(CheckRequest("GET", "/api/x", headers))
    assert denied(decision, 401).reason == reason


def test_a_valid_cookie_is_looked_up_however_many_other_cookies_come_with_it(
    decider: Decider, credential: SessionCredential
) -> None:
    bomb = "; ".join(f"sibling{i}={'x' * 3000}" for i in range(20))  # 60 KB, Envoy's limit
    cookie = f"{bomb}; {COOKIE}={credential.encode()}; after=1"
    step = decider.begin(CheckRequest("GET", "/api/x", {"cookie": cookie}))
    assert isinstance(step, SessionNeeded) and step.presented.credential == credential


def test_every_well_formed_session_cookie_is_a_candidate_in_the_order_sent(
    decider: Decider, credential: SessionCredential
) -> None:
    other = SessionCredential.generate()
    cookie = f"{COOKIE}={other.encode()}; {COOKIE}=garbage; {COOKIE}={credential.encode()}"
    step = decider.begin(CheckRequest("GET", "/api/x", {"cookie": cookie}))
    assert isinstance(step, SessionNeeded)
    assert step.presented.candidates == (other, credential)


def test_conflicting_sessions_get_a_page_not_a_login_redirect(decider: Decider) -> None:
    cookie = f"{COOKIE}={SessionCredential.generate().encode()}"
    step = decider.begin(CheckRequest("GET", "/api/x", {"cookie": cookie, "accept": "text/html"}))
    assert isinstance(step, SessionNeeded)
    decision = decider.conflict(step)
    assert isinstance(decision, Deny) and decision.status == 400
    assert not any(name in ("location", "set-cookie") for name, _ in decision.headers)
    assert "Clear this site" in decision.body


def test_a_bearer_gateway_token_takes_precedence_over_the_cookie(
    decider: Decider, credential: SessionCredential
) -> None:
    cookie_credential = SessionCredential.generate()
    request = CheckRequest(
        "GET",
        "/api/x",
        {
            "authorization": f"Bearer {credential.encode()}",
            "cookie": f"{COOKIE}={cookie_credential.encode()}",
        },
    )
    step = decider.begin(request)
    assert isinstance(step, SessionNeeded)
    assert step.presented.credential == credential
    assert step.presented.source is CredentialSource.BEARER


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", id="foreign-jwt"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
    ],
)
def test_other_authorization_values_are_not_credentials(
    decider: Decider, authorization: str
) -> None:
    decision = decider.begin(CheckRequest("GET", "/api/x", {"authorization": authorization}))
    assert denied(decision, 401).reason == "no_session"


# ---- CSRF ----------------------------------------------------------------------------------

UNSAFE_METHODS = ["POST", "PUT", "PATCH", "DELETE"]


@pytest.mark.parametrize("method", UNSAFE_METHODS)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"origin": FOREIGN_ORIGIN}, id="foreign-origin"),
        pytest.param({"origin": "null"}, id="opaque-origin"),
        pytest.param({}, id="neither-origin-nor-referer"),
        pytest.param({"referer": f"{FOREIGN_ORIGIN}/page"}, id="foreign-referer"),
        pytest.param({"referer": "/relative"}, id="relative-referer"),
        pytest.param({"origin": f"{PUBLIC_URL}.evil.example"}, id="public-origin-as-prefix"),
        pytest.param(
            {"origin": FOREIGN_ORIGIN, "referer": f"{PUBLIC_URL}/page"},
            id="foreign-origin-with-same-origin-referer",
        ),
    ],
)
def test_a_cookie_carried_unsafe_request_from_elsewhere_is_refused_without_lookup(
    decider: Decider, credential: SessionCredential, method: str, headers: dict[str, str]
) -> None:
    decision = denied(decider.begin(browser_request(credential, method=method, **headers)), 403)
    assert decision.reason == "csrf"
    assert body_of(decision)["error"] == "forbidden"


@pytest.mark.parametrize("method", UNSAFE_METHODS)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"origin": PUBLIC_URL}, id="public-origin"),
        pytest.param({"origin": PUBLIC_URL.upper()}, id="public-origin-other-case"),
        pytest.param({"origin": PARTNER_ORIGIN}, id="configured-allowed-origin"),
        pytest.param({"referer": f"{PUBLIC_URL}/api/form?x=1"}, id="same-origin-referer"),
    ],
)
def test_a_cookie_carried_unsafe_request_from_an_allowed_origin_is_allowed(
    decider: Decider, credential: SessionCredential, method: str, headers: dict[str, str]
) -> None:
    request = browser_request(credential, method=method, **headers)
    assert allowed(decide(decider, request, session_with())).reason == "allowed"


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_safe_method_from_a_foreign_origin_is_not_a_csrf_refusal(
    decider: Decider, credential: SessionCredential, method: str
) -> None:
    request = browser_request(credential, method=method, origin=FOREIGN_ORIGIN)
    assert allowed(decide(decider, request, session_with())).reason == "allowed"


@pytest.mark.parametrize("method", UNSAFE_METHODS)
def test_a_bearer_authenticated_unsafe_request_from_a_foreign_origin_is_allowed(
    decider: Decider, credential: SessionCredential, method: str
) -> None:
    # No ambient credential: a foreign page cannot make the browser attach the header.
    request = api_request(credential, method=method, origin=FOREIGN_ORIGIN)
    assert allowed(decide(decider, request, session_with())).reason == "allowed"


# ---- CORS preflight ------------------------------------------------------------------------


def test_a_cors_preflight_is_allowed_without_a_lookup(
    decider: Decider, credential: SessionCredential
) -> None:
    request = browser_request(
        credential,
        method="OPTIONS",
        origin=PARTNER_ORIGIN,
        access_control_request_method="DELETE",
    )
    decision = allowed(decider.begin(request))
    assert decision.reason == "preflight"
    assert not [name for name, _ in decision.set_headers if name != "cookie"]


def test_a_preflight_from_an_origin_we_do_not_serve_needs_a_session(decider: Decider) -> None:
    request = CheckRequest(
        "OPTIONS",
        "/api/items",
        {"origin": FOREIGN_ORIGIN, "access-control-request-method": "GET"},
    )
    assert body_of(denied(decider.begin(request), 401))["reason"] == "no_session"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="bare"),
        pytest.param({"origin": PUBLIC_URL}, id="origin-only"),
        pytest.param({"access-control-request-method": "PUT"}, id="request-method-only"),
    ],
)
def test_options_without_preflight_headers_needs_a_session(
    decider: Decider, headers: dict[str, str]
) -> None:
    decision = denied(decider.begin(CheckRequest("OPTIONS", "/api/x", headers)), 401)
    assert decision.reason == "no_session"


# ---- how a refusal is answered: 401 JSON or a 302 to the login page ------------------------


def test_a_request_without_credential_gets_a_401_json_challenge_without_error_code(
    decider: Decider,
) -> None:
    decision = denied(decider.begin(CheckRequest("GET", "/api/x?a=1", {})), 401)
    headers = headers_of(decision)
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["www-authenticate"] == 'Bearer realm="http://gateway.test:8080"'
    body = body_of(decision)
    assert set(body) == {"error", "reason", "message", "login_url"}
    assert body["error"] == "unauthorized"
    assert body["reason"] == "no_session"
    assert body["message"]
    assert body["login_url"] == decider.login_url(CheckRequest("GET", "/api/x?a=1", {}))


def test_401s_for_many_paths_each_name_their_own_path_and_keep_nothing_per_path(
    decider: Decider,
) -> None:
    # Anyone can ask for any number of long paths without a session: a 401 must not
    # remember each one (its login URL holds the path, percent-encoded).
    kept = decision_module._fixed_json_deny.cache_info
    decider.begin(CheckRequest("GET", "/api/warm-up", {}))
    before = kept().currsize
    for number in range(20):
        path = f"/api/{number}?q=" + "&" * 1000
        body = body_of(denied(decider.begin(CheckRequest("GET", path, {})), 401))
        assert body["login_url"] == decider.login_url(CheckRequest("GET", path, {}))
    assert kept().currsize == before


@pytest.mark.parametrize(
    ("request_", "session", "failure"),
    [
        pytest.param(
            CheckRequest("GET", "/api/x", {"cookie": f"{COOKIE}=garbage"}),
            None,
            None,
            id="garbled-cookie",
        ),
        pytest.param(None, None, None, id="unknown-session"),
        pytest.param(None, None, Lookup.INVALID, id="invalid-session"),
        pytest.param(None, session_with(tokens={}), None, id="provider-login-required"),
    ],
)
def test_a_refused_credential_gets_an_invalid_token_challenge(
    decider: Decider,
    credential: SessionCredential,
    request_: CheckRequest | None,
    session: Session | None,
    failure: str | None,
) -> None:
    request = request_ or api_request(credential)
    decision = denied(decide(decider, request, session, failure), 401)
    assert headers_of(decision)["www-authenticate"] == (
        'Bearer realm="http://gateway.test:8080", error="invalid_token"'
    )


def test_a_browser_navigation_is_redirected_to_the_login_page(decider: Decider) -> None:
    request = CheckRequest("GET", "/api/page?tab=2", {"accept": HTML})
    decision = denied(decider.begin(request), 302)
    headers = headers_of(decision)
    assert headers["location"] == decider.login_url(request)
    assert headers["cache-control"] == "no-store"
    assert "www-authenticate" not in headers
    assert decision.body == ""


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("GET", {"accept": HTML, "x-requested-with": "XMLHttpRequest"}, id="xhr"),
        pytest.param("GET", {"accept": HTML, "sec-fetch-mode": "cors"}, id="fetch-cors"),
        pytest.param("POST", {"accept": HTML, "origin": PUBLIC_URL}, id="form-post"),
        pytest.param("GET", {"accept": "application/json"}, id="json-client"),
    ],
)
def test_requests_that_are_not_page_loads_get_401_not_a_redirect(
    decider: Decider, method: str, headers: dict[str, str]
) -> None:
    decision = denied(decider.begin(CheckRequest(method, "/api/x", headers)), 401)
    assert "location" not in headers_of(decision)


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param({"host": "evil.example"}, id="host"),
        pytest.param(
            {
                ":authority": "evil.example",
                "x-forwarded-host": "evil.example",
                "x-forwarded-proto": "https",
            },
            id="forwarded",
        ),
    ],
)
@pytest.mark.parametrize("accept", [pytest.param(HTML, id="302"), pytest.param("*/*", id="401")])
def test_the_login_url_is_on_the_public_origin_and_returns_to_the_original_url(
    decider: Decider, hostile: dict[str, str], accept: str
) -> None:
    request = CheckRequest("GET", "/api/reports?year=2024&q=a%20b", {**hostile, "accept": accept})
    decision = denied(decider.begin(request), 302 if accept == HTML else 401)
    login_url = headers_of(decision).get("location") or body_of(decision)["login_url"]
    parts = urlsplit(login_url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
    assert parts.path == "/auth/login"
    assert parse_qs(parts.query) == {
        "redirect_url": [f"{PUBLIC_URL}/api/reports?year=2024&q=a%20b"]
    }


def login_query(decision: Deny) -> dict[str, list[str]]:
    login_url = headers_of(decision).get("location") or body_of(decision)["login_url"]
    return parse_qs(urlsplit(login_url).query)


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        pytest.param({"primary": TokenSet("p")}, "provider_login_required", id="no-token"),
        pytest.param(
            {"primary": TokenSet("p"), "gitlab": TokenSet("g", needs_login=True)},
            "provider_login_required",
            id="refresh-refused",
        ),
        pytest.param(
            {"primary": TokenSet("p"), "gitlab": TokenSet("g", expires_at=NOW - 1)},
            "token_expired",
            id="expired-without-refresh",
        ),
    ],
)
@pytest.mark.parametrize("accept", [pytest.param(HTML, id="302"), pytest.param("*/*", id="401")])
def test_a_missing_provider_token_sends_to_a_login_naming_that_provider(
    decider: Decider,
    credential: SessionCredential,
    tokens: dict[str, TokenSet],
    reason: str,
    accept: str,
) -> None:
    """The login app then visits that provider: walking the sequence alone would find nothing
    to do and send the browser straight back (a redirect loop)."""
    request = browser_request(credential, "/gitlab/projects", accept=accept)
    status = 302 if accept == HTML else 401
    decision = denied(decide(decider, request, session_with(tokens)), status)
    assert decision.reason == reason
    assert login_query(decision) == {
        "redirect_url": [f"{PUBLIC_URL}/gitlab/projects"],
        "provider": ["gitlab"],
    }


def test_without_a_session_only_an_on_demand_provider_is_named_in_the_login_url() -> None:
    data = config_data()
    data["providers"][1]["login_sequence"] = False
    decider = Decider(parse_config(data, SECRETS))
    on_demand = denied(decider.begin(CheckRequest("GET", "/gitlab/x", {})), 401)
    assert login_query(on_demand)["provider"] == ["gitlab"]
    in_sequence = denied(decider.begin(CheckRequest("GET", "/api/x", {})), 401)
    assert "provider" not in login_query(in_sequence)


# ---- choosing the route --------------------------------------------------------------------


def test_an_unknown_route_name_is_forbidden(decider: Decider) -> None:
    decision = denied(decider.begin(CheckRequest("GET", "/api/x", {}, route_name="nope")), 403)
    assert decision.reason == "unknown_route"
    assert decision.route is None


def test_a_path_under_no_route_is_forbidden(decider: Decider) -> None:
    assert denied(decider.begin(CheckRequest("GET", "/elsewhere", {})), 403).reason == (
        "unknown_route"
    )


@pytest.fixture
def nested_decider() -> Decider:
    backend = "http://backend.test:9000"
    return Decider(
        make_config(
            extra_routes=(
                {
                    "name": "api-admin",
                    "prefix": "/api/admin/",
                    "upstream": backend,
                    "provider": "primary",
                },
                {
                    "name": "api-admin-open",
                    "prefix": "/api/admin/open",
                    "upstream": backend,
                    "public": True,
                },
            )
        )
    )


@pytest.mark.parametrize(
    ("path", "route_name", "expected"),
    [
        pytest.param("/api/admin/users", None, "api-admin", id="longest-prefix-wins"),
        pytest.param("/api/admin", None, "api-admin", id="prefix-without-trailing-slash"),
        pytest.param("/api/admin/open/x?q", None, "api-admin-open", id="deepest-prefix"),
        pytest.param("/api/administrators", None, "api", id="not-a-segment-match"),
        pytest.param("/api/other", None, "api", id="shorter-prefix"),
        pytest.param("/status", None, "status", id="exact-prefix"),
        pytest.param("/status/health", None, "status", id="under-exact-prefix"),
        pytest.param("/statusx", None, None, id="no-partial-segment"),
        pytest.param("/api/admin/users", "api", "api", id="envoys-route-name-wins"),
    ],
)
def test_the_route_is_envoys_named_route_else_the_longest_prefix(
    nested_decider: Decider, path: str, route_name: str | None, expected: str | None
) -> None:
    route = nested_decider.route_for(CheckRequest("GET", path, {}, route_name))
    assert (route.name if route else None) == expected


# ---- Redis unavailable and dead cookies ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/api/x", {}, id="protected-route"),
        pytest.param("/catalog/x", {}, id="anonymous-route"),
        pytest.param("/api/x", {"accept": HTML}, id="browser-navigation"),
    ],
)
def test_redis_unavailable_is_a_503_never_a_logout(
    decider: Decider, credential: SessionCredential, path: str, headers: dict[str, str]
) -> None:
    request = browser_request(credential, path, **headers)
    decision = denied(decide(decider, request, failure=Lookup.UNAVAILABLE), 503)
    response_headers = headers_of(decision)
    assert decision.reason == Lookup.UNAVAILABLE
    assert response_headers["retry-after"] == "1"
    assert "set-cookie" not in response_headers
    assert "location" not in response_headers
    assert body_of(decision)["error"] == "unavailable"


@pytest.mark.parametrize(
    ("request_", "session", "failure"),
    [
        pytest.param(
            CheckRequest("GET", "/api/x", {"cookie": f"{COOKIE}=garbage"}),
            None,
            None,
            id="invalid_credential",
        ),
        pytest.param(None, None, None, id="unknown_session"),
        pytest.param(None, None, Lookup.INVALID, id="invalid_session"),
        pytest.param(None, session_with(expires_at=NOW - 5), None, id="session_expired"),
        pytest.param(
            CheckRequest("GET", "/api/x", {"cookie": f"{COOKIE}=garbage", "accept": HTML}),
            None,
            None,
            id="invalid_credential-on-a-page-load",
        ),
    ],
)
def test_a_dead_session_cookie_is_expired_in_the_reply(
    decider: Decider,
    credential: SessionCredential,
    request_: CheckRequest | None,
    session: Session | None,
    failure: str | None,
) -> None:
    request = request_ or browser_request(credential)
    decision = decide(decider, request, session, failure)
    assert isinstance(decision, Deny) and decision.status in (302, 401)
    assert headers_of(decision)["set-cookie"] == (
        f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
    )


@pytest.mark.parametrize(
    ("request_", "session"),
    [
        pytest.param(CheckRequest("GET", "/api/x", {}), None, id="no_session"),
        pytest.param(None, session_with(tokens={}), id="provider_login_required"),
        pytest.param(
            None, session_with(tokens={"primary": TokenSet("p", expires_at=1)}), id="token_expired"
        ),
    ],
)
def test_a_refusal_that_leaves_the_session_usable_keeps_the_cookie(
    decider: Decider,
    credential: SessionCredential,
    request_: CheckRequest | None,
    session: Session | None,
) -> None:
    decision = denied(decide(decider, request_ or browser_request(credential), session), 401)
    assert "set-cookie" not in headers_of(decision)


def test_an_unknown_session_presented_as_bearer_sets_no_cookie(
    decider: Decider, credential: SessionCredential
) -> None:
    decision = denied(decide(decider, api_request(credential)), 401)
    assert decision.reason == Lookup.UNKNOWN
    assert "set-cookie" not in headers_of(decision)


# ---- https: the __Host- cookie -------------------------------------------------------------


@pytest.fixture
def https_decider() -> Decider:
    return Decider(make_config(public_url=HTTPS_PUBLIC_URL))


def test_on_https_the_host_prefixed_cookie_is_read_and_expired_with_secure(
    https_decider: Decider, credential: SessionCredential
) -> None:
    request = CheckRequest("GET", "/api/x", {"cookie": f"__Host-{COOKIE}={credential.encode()}"})
    step = https_decider.begin(request)
    assert isinstance(step, SessionNeeded) and step.presented.credential == credential
    decision = denied(https_decider.complete(step, None, None, NOW), 401)
    assert headers_of(decision)["set-cookie"] == (
        f"__Host-{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
    )


def test_on_https_both_cookie_spellings_are_stripped_from_the_backend_request(
    https_decider: Decider,
) -> None:
    cookie = f"__Host-{COOKIE}=one; {COOKIE}=two; theme=dark"
    decision = allowed(https_decider.begin(CheckRequest("GET", "/status", {"cookie": cookie})))
    assert headers_of(decision)["cookie"] == "theme=dark"


def test_on_https_a_cookie_without_the_host_prefix_is_not_a_credential(
    https_decider: Decider, credential: SessionCredential
) -> None:
    request = CheckRequest("GET", "/api/x", {"cookie": f"{COOKIE}={credential.encode()}"})
    assert denied(https_decider.begin(request), 401).reason == "no_session"


def test_a_malformed_bearer_token_does_not_expire_the_browsers_cookie(
    decider: Decider, credential: SessionCredential
) -> None:
    request = CheckRequest(
        "GET",
        "/api/items",
        {"authorization": "Bearer gws_garbage", "cookie": f"{COOKIE}={credential.encode()}"},
    )
    deny = denied(decide(decider, request), 401)
    assert body_of(deny)["reason"] == "invalid_credential"
    assert "set-cookie" not in headers_of(deny)


def test_a_cookie_header_without_the_session_cookie_is_passed_through_untouched(
    decider: Decider,
) -> None:
    request = CheckRequest("GET", "/catalog/x", {"cookie": "a=1;b=2, c"})
    allow = allowed(decide(decider, request))
    assert "cookie" not in headers_of(allow)
    assert "cookie" not in allow.remove_headers


def test_a_public_url_with_its_default_port_matches_the_browsers_origin(
    credential: SessionCredential,
) -> None:
    decider = Decider(make_config(public_url="https://gateway.example:443"))
    request = CheckRequest(
        "POST",
        "/api/items",
        {"cookie": f"__Host-{COOKIE}={credential.encode()}", "origin": "https://gateway.example"},
    )
    assert isinstance(decider.begin(request), SessionNeeded)


@pytest.mark.parametrize(
    ("groups", "claims", "expected"),
    [
        (("admins",), {"tenant": "a"}, 200),
        (("users", "admins"), {"tenant": "a"}, 200),
        (("users",), {"tenant": "a"}, 403),
        ((), {"tenant": "a"}, 403),
        (("admins",), {"tenant": "b"}, 403),
        (("admins",), {}, 403),
    ],
    ids=["member", "member-among-others", "other-group", "no-groups", "wrong-claim", "no-claim"],
)
def test_a_restricted_route_admits_only_users_with_its_groups_and_claims(
    credential: SessionCredential, groups, claims, expected
) -> None:
    route = {
        "name": "admin",
        "prefix": "/admin/",
        "upstream": "http://backend.test:9000",
        "provider": "primary",
        "require_groups": ["admins"],
        "require_claims": {"tenant": "a"},
    }
    decider = Decider(make_config(extra_routes=(route,)))
    session = session_with(identity=Identity(subject="alice", groups=groups, claims=claims))
    decision = decide(decider, api_request(credential, "/admin/x"), session)
    if expected == 200:
        allowed(decision)
    else:
        deny = denied(decision, 403)
        assert body_of(deny)["reason"] == "forbidden"
        assert all(name != "authorization" for name, _ in deny.headers)


def test_trace_is_refused_so_no_backend_can_echo_an_injected_token(
    decider: Decider, credential: SessionCredential
) -> None:
    deny = denied(decide(decider, browser_request(credential, method="TRACE")), 405)
    assert body_of(deny)["reason"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("origin", "allowed_through"),
    [(FOREIGN_ORIGIN, False), (None, False), (PUBLIC_URL, True), (PARTNER_ORIGIN, True)],
    ids=["foreign-origin", "no-origin", "own-origin", "allowed-partner"],
)
def test_a_cookie_websocket_handshake_must_come_from_an_allowed_origin(
    decider: Decider, credential: SessionCredential, origin, allowed_through
) -> None:
    headers = {"upgrade": "websocket", "connection": "Upgrade"}
    if origin:
        headers["origin"] = origin
    step = decider.begin(browser_request(credential, "/api/socket", **headers))
    if allowed_through:
        assert isinstance(step, SessionNeeded)
    else:
        assert body_of(denied(step, 403))["reason"] == "csrf"


def test_the_login_apps_binding_cookie_never_reaches_a_backend(
    decider: Decider, credential: SessionCredential
) -> None:
    request = CheckRequest(
        "GET", "/catalog/x", {"cookie": "gateway_login=abc; theme=dark; __Host-gateway_login=x"}
    )
    allow = allowed(decide(decider, request))
    assert headers_of(allow)["cookie"] == "theme=dark"
