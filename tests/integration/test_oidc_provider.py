"""The gateway against node oidc-provider, an OpenID Certified provider we did not write,
through a real Envoy: oidc-provider is the primary (identity) provider, the dev IdP ``gitlab``
the second login step.

The provider rotates refresh tokens and revokes the whole grant when a used one comes back, so
a gateway refreshing twice with one token loses the session; its event log says what the
gateway did there (grants, client authentication used, revocations, back-channel logouts).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import redis
import requests
from joserfc.jwk import RSAKey

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, sync_store
from gateway.sessions.model import Session
from login_app.cli_login import GRANT_TYPE
from tests.support.dev_idp import submit_login_form
from tests.support.login import HTML
from tests.support.oidc_provider import (
    OidcProvider,
    OpClient,
    OpUser,
    complete_login,
    logout_at_provider,
    start_oidc_provider,
)
from tests.support.polling import wait_for
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

PROVIDER_ID = "oidc"
# What a user would configure to get refresh tokens. oidc-provider drops offline_access when
# the request lacks prompt=consent, so the provider grants less than the gateway asks for.
SCOPES = ["openid", "profile", "email", "groups", "offline_access"]
ALICE = OpUser(
    "alice",
    secrets.token_urlsafe(12),
    email="alice@op.example",
    name="Alice Ødegård",
    groups=("staff", "ops"),
    # Keycloak's shape, released only with the `roles` scope.
    claims={"realm_access": {"roles": ["realm-admin"]}},
)
JSON = {"Accept": "application/json"}
CONCURRENT_REQUESTS = 50


@dataclass
class Gateway:
    """A gateway stack whose primary provider is oidc-provider, with its client there."""

    stack: Stack
    client: OpClient

    def session(self, browser: requests.Session) -> tuple[SessionCredential, Session]:
        cookie = browser.cookies.get(self.stack.cookie_name)
        assert cookie is not None, "no session cookie: the login did not finish"
        credential = SessionCredential.parse(cookie)
        session = sync_store(self.stack.config).load(credential)
        assert session is not None
        return credential, session

    def cookie(self, credential: SessionCredential) -> dict[str, str]:
        return {"Cookie": f"{self.stack.cookie_name}={credential.encode()}"}

    def api_get(self, credential: SessionCredential, path: str = "/api/x") -> requests.Response:
        return requests.get(
            self.stack.url + path, headers={**JSON, **self.cookie(credential)}, timeout=30
        )


def gateway_settings(
    op: OidcProvider, client: OpClient, provider_settings: dict[str, Any]
) -> Callable[[dict[str, Any]], None]:
    """The adjust for start_stack: oidc-provider first, gitlab (dev IdP) second; the
    client is registered at the provider once the gateway's URL is known."""

    def adjust(raw: dict[str, Any]) -> None:
        public = raw["public_url"]
        raw["providers"][0] = {
            "id": PROVIDER_ID,
            "kind": "oidc",
            "issuer": op.issuer,
            "client_id": client.client_id,
            "scopes": SCOPES,
            **provider_settings,
        }
        for route in raw["routes"]:
            if route.get("provider") == "primary":
                route["provider"] = PROVIDER_ID
        backend = raw["routes"][0]["upstream"]
        for name, group in (("staff", "staff"), ("realm", "realm-admin")):
            raw["routes"].append(
                {
                    "name": name,
                    "prefix": f"/{name}/",
                    "upstream": backend,
                    "provider": PROVIDER_ID,
                    "require_groups": [group],
                }
            )
        # Refreshes wait for the one in flight; a busy machine may take its time.
        raw["ext_authz"]["timeout"] = "10s"
        raw["tokens"] = {"refresh_margin": "2s", "refresh_lock_lease": "2s", "refresh_wait": "8s"}
        op.add_client(
            replace(
                client,
                redirect_uris=(f"{public}/auth/callback",),
                post_logout_redirect_uris=(f"{public}/auth/logged-out",),
                backchannel_logout_uri=f"{public}/auth/backchannel-logout",
            )
        )

    return adjust


def start_gateway(
    directory: Path,
    op: OidcProvider,
    redis_server: RedisServer,
    echo_backend: EchoBackend,
    method: str,
    **provider_settings: Any,
) -> Gateway:
    """A gateway whose client at ``op`` authenticates with ``method``: a secret of its own,
    or (private_key_jwt) a key made now, its public half registered at the provider."""
    client_id = f"gw-{method}-{secrets.token_hex(3)}"
    if method == "private_key_jwt":
        key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)})
        key_file = directory / "client-key.pem"
        key_file.write_bytes(key.as_pem(private=True))
        client = OpClient(
            client_id,
            token_endpoint_auth_method=method,
            jwks={"keys": [key.as_dict(private=False)]},
        )
        provider_settings = {
            "token_endpoint_auth_method": method,
            "private_key_file": str(key_file),
            "private_key_id": key.kid,
            **provider_settings,
        }
    else:
        client = OpClient(client_id, secrets.token_urlsafe(24), token_endpoint_auth_method=method)
        provider_settings = {"client_secret": client.client_secret, **provider_settings}
        if method != "client_secret_basic":  # basic comes from discovery by default
            provider_settings["token_endpoint_auth_method"] = method
    adjust = gateway_settings(op, client, provider_settings)
    stack = start_stack(directory, redis_server, echo_backend, adjust, with_login=True)
    return Gateway(stack, client)


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = start_oidc_provider(
        tmp_path_factory.mktemp("oidc-provider"),
        users=[ALICE],
        scope_claims={"roles": ["realm_access"]},
    )
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    op: OidcProvider,
    redis_server: RedisServer,
    echo_backend: EchoBackend,
) -> Iterator[Gateway]:
    started = start_gateway(
        tmp_path_factory.mktemp("gateway-op"), op, redis_server, echo_backend, "client_secret_basic"
    )
    yield started
    started.stack.stop()


def log_in(
    gateway: Gateway,
    op: OidcProvider,
    path: str = "/api/whoami",
    browser: requests.Session | None = None,
    max_hops: int = 20,
    callback: Callable[[str], str] = lambda url: url,
) -> tuple[requests.Session, requests.Response]:
    """Open a protected page and log in: at oidc-provider as ALICE, at the dev IdP as alice.
    ``callback`` may change the provider's redirect back before the browser follows it."""
    browser = browser or requests.Session()
    response = browser.get(
        gateway.stack.url + path, headers=HTML, allow_redirects=False, timeout=10
    )
    return browser, through_logins(op, browser, response, max_hops, callback)


def through_logins(
    op: OidcProvider,
    browser: requests.Session,
    response: requests.Response,
    max_hops: int = 20,
    callback: Callable[[str], str] = lambda url: url,
) -> requests.Response:
    """Follow redirects from ``response``, logging in at both providers on the way."""
    for _ in range(max_hops):
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if op.owns(target):
                target = callback(complete_login(browser, target, ALICE.id, ALICE.password))
            response = browser.get(target, headers=HTML, allow_redirects=False, timeout=10)
        elif response.status_code == 200 and 'id="password"' in response.text:
            response = submit_login_form(browser, response)  # the dev IdP's login page
        else:
            return response
    raise AssertionError(f"more than {max_hops} hops, last at {response.url}")


def expire_token(gateway: Gateway, credential: SessionCredential, seconds_ago: float = 1) -> None:
    """Make the stored access token look expired to the gateway (the provider's clock is
    not touched: its token may still be valid there)."""
    store = sync_store(gateway.stack.config)
    session = store.load(credential)
    assert session is not None
    tokens = replace(session.tokens[PROVIDER_ID], expires_at=int(time.time() - seconds_ago))
    store.save(credential, session.with_tokens(PROVIDER_ID, tokens))


def grant_errors(op: OidcProvider, since: int, client: OpClient) -> list[str]:
    """What went wrong at the provider for this client since event ``since``, readably."""
    return [
        " ".join(
            str(event.get(name, ""))
            for name in ("event", "grant_type", "client_auth", "error", "error_description")
        )
        + (f" ({event['error_detail']})" if "error_detail" in event else "")
        for event in op.events(since)
        if event["event"] in ("grant.error", "client_auth.refused", "server_error")
        and event.get("client_id") in (client.client_id, None)
    ]


def bearer(response: requests.Response) -> str:
    (value,) = response.json()["headers"]["authorization"]
    assert value.startswith("Bearer ")
    return str(value.removeprefix("Bearer "))


def test_chained_login_ends_on_the_page_with_the_providers_token(gateway, op):
    since = op.event_count()
    browser, page = log_in(gateway, op, "/api/whoami?tab=1")
    assert page.status_code == 200, page.text
    assert page.url == gateway.stack.url + "/api/whoami?tab=1"
    _, session = gateway.session(browser)
    assert set(session.tokens) == {PROVIDER_ID, "gitlab"}
    assert bearer(page) == session.tokens[PROVIDER_ID].access_token
    assert session.identity.subject == ALICE.id
    assert session.identity.provider_session_id  # oidc-provider's sid, for back-channel logout
    codes = op.events(
        since,
        event="grant.success",
        grant_type="authorization_code",
        client_id=gateway.client.client_id,
    )
    assert len(codes) == 1
    assert grant_errors(op, since, gateway.client) == []


def test_the_token_the_backend_gets_is_active_at_the_provider(gateway, op):
    browser, page = log_in(gateway, op)
    token = bearer(page)
    introspection = op.introspect(token)
    assert introspection["active"] is True
    assert introspection["client_id"] == gateway.client.client_id
    assert introspection["sub"] == ALICE.id
    _, session = gateway.session(browser)
    refresh = op.introspect(session.tokens[PROVIDER_ID].refresh_token, "refresh_token")
    assert refresh["active"] is True


def test_backend_gets_email_and_name_that_only_userinfo_has(gateway, op):
    """oidc-provider puts scope claims in userinfo, not in the ID token (OIDC Core §5.4)."""
    browser, page = log_in(gateway, op)
    headers = page.json()["headers"]
    assert headers["x-gateway-user-id"] == [ALICE.id]
    assert headers["x-gateway-user-email"] == [ALICE.email]
    assert [unquote(value) for value in headers["x-gateway-user-name"]] == [ALICE.name]
    profile = browser.get(gateway.stack.url + "/auth/user", headers=JSON, timeout=10).json()
    assert profile["email"] == ALICE.email
    assert profile["name"] == ALICE.name
    assert sorted(profile["groups"]) == sorted(ALICE.groups)


def test_routes_requiring_a_group_follow_the_groups_userinfo_names(gateway, op):
    browser, _ = log_in(gateway, op)
    credential, _ = gateway.session(browser)
    assert gateway.api_get(credential, "/staff/x").status_code == 200
    assert gateway.api_get(credential, "/realm/x").status_code == 403


def test_groups_can_come_from_a_nested_claim(tmp_path, op, redis_server, echo_backend):
    """Keycloak puts roles in ``realm_access.roles``; ``claims.groups`` says where to look."""
    subject = start_gateway(
        tmp_path,
        op,
        redis_server,
        echo_backend,
        "client_secret_basic",
        scopes=[*SCOPES, "roles"],
        claims={"groups": "realm_access.roles"},
    )
    try:
        browser, page = log_in(subject, op)
        assert page.status_code == 200, page.text
        credential, _ = subject.session(browser)
        profile = browser.get(subject.stack.url + "/auth/user", headers=JSON, timeout=10).json()
        assert profile["groups"] == ["realm-admin"]
        assert subject.api_get(credential, "/realm/x").status_code == 200
        assert subject.api_get(credential, "/staff/x").status_code == 403
    finally:
        subject.stack.stop()


def test_a_refused_refresh_is_asked_once_then_the_user_must_log_in(gateway, op):
    """The refresh token was revoked at the provider behind the gateway's back: the
    provider's invalid_grant sends the user to log in, and no request after that asks the
    provider again."""
    browser, _ = log_in(gateway, op)
    credential, session = gateway.session(browser)
    revoked = requests.post(
        op.metadata()["revocation_endpoint"],
        data={"token": session.tokens[PROVIDER_ID].refresh_token},
        auth=(gateway.client.client_id, gateway.client.client_secret or ""),
        timeout=10,
    )
    assert revoked.status_code == 200
    expire_token(gateway, credential)
    since = op.event_count()

    def refresh_attempts() -> int:
        return len(op.events(since, grant_type="refresh_token", client_id=gateway.client.client_id))

    first = [gateway.api_get(credential) for _ in range(3)]
    assert {r.status_code for r in first} == {401}
    assert all("login_url" in r.json() for r in first)
    attempts = refresh_attempts()
    assert 1 <= attempts <= 2
    assert [gateway.api_get(credential).status_code for _ in range(5)] == [401] * 5
    assert refresh_attempts() == attempts


def test_fifty_requests_at_expiry_make_one_refresh_grant_per_refresh(gateway, op):
    browser, _ = log_in(gateway, op)
    credential, session = gateway.session(browser)
    for _ in range(2):  # the rotated refresh token must work the next time too
        since = op.event_count()
        old = session.tokens[PROVIDER_ID]
        expire_token(gateway, credential)
        with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
            responses = list(pool.map(lambda _: gateway.api_get(credential), range(50)))
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * CONCURRENT_REQUESTS, grant_errors(op, since, gateway.client)
        refreshes = op.events(
            since,
            event="grant.success",
            grant_type="refresh_token",
            client_id=gateway.client.client_id,
        )
        assert len(refreshes) == 1
        assert grant_errors(op, since, gateway.client) == []
        _, session = gateway.session(browser)
        new = session.tokens[PROVIDER_ID]
        assert new.access_token != old.access_token
        assert new.refresh_token != old.refresh_token  # rotated
        assert {bearer(r) for r in responses} == {new.access_token}
        assert op.introspect(new.access_token)["active"] is True
        assert op.introspect(old.refresh_token, "refresh_token")["active"] is False


def test_a_refresh_the_provider_rotated_is_kept_while_redis_refuses_writes(
    tmp_path, op, own_redis, echo_backend
):
    """oidc-provider rotates the refresh token and, should the old one come back, revokes
    the whole grant. Its answer to a refresh is held back until Redis is full (a harness
    delay, after the provider has rotated): the new tokens must still reach Redis once it
    takes writes again, and the retired refresh token must never be sent."""
    gateway = start_gateway(tmp_path, op, own_redis, echo_backend, "client_secret_basic")
    raw = redis.Redis.from_url(own_redis.url)
    store = sync_store(gateway.stack.config)
    try:
        browser, _ = log_in(gateway, op)
        credential, session = gateway.session(browser)
        old = session.tokens[PROVIDER_ID]
        lock = keyspace(gateway.stack.config).refresh_lock(credential.lookup_id, PROVIDER_ID)
        expire_token(gateway, credential)
        since = op.event_count()

        def rotated() -> bool:
            return bool(
                op.events(
                    since,
                    event="grant.success",
                    grant_type="refresh_token",
                    client_id=gateway.client.client_id,
                )
            )

        # Answered after the check stopped waiting for it, and after Redis is full.
        op.delay_token_replies("refresh_token", gateway.stack.config.tokens.refresh_wait + 4)
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(gateway.api_get, credential)
            wait_for(lambda: raw.exists(lock), "the refresh to take its lock", 10)
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) // 2)
            # Expired and the refresh under way: a 503, never a logout.
            assert first.result().status_code == 503
        wait_for(rotated, "oidc-provider to rotate the refresh token", 20)
        op.delay_token_replies("refresh_token", 0)
        # Redis refuses the new tokens: the user waits (503) or is served, never logged out.
        assert {gateway.api_get(credential).status_code for _ in range(5)} <= {200, 503}

        raw.config_set("maxmemory", 0)
        wait_for(
            lambda: store.load(credential).tokens[PROVIDER_ID].access_token != old.access_token,
            "the rotated tokens to reach Redis",
            20,
        )
        new = store.load(credential).tokens[PROVIDER_ID]
        assert new.refresh_token != old.refresh_token
        assert bearer(gateway.api_get(credential)) == new.access_token
        assert grant_errors(op, since, gateway.client) == []
        assert op.introspect(new.refresh_token, "refresh_token")["active"] is True

        # The kept refresh token is the live one: the next refresh works too.
        expire_token(gateway, credential)
        wait_for(lambda: gateway.api_get(credential).status_code == 200, "the next refresh", 20)
        assert grant_errors(op, since, gateway.client) == []
    finally:
        op.delay_token_replies("refresh_token", 0)
        raw.config_set("maxmemory", 0)
        gateway.stack.stop()


def test_logout_revokes_the_refresh_token_at_the_provider(gateway, op):
    browser, _ = log_in(gateway, op)
    credential, session = gateway.session(browser)
    tokens = session.tokens[PROVIDER_ID]
    since = op.event_count()
    logout = browser.get(
        gateway.stack.url + "/auth/logout?redirect_url=/",
        headers=HTML,
        allow_redirects=False,
        timeout=10,
    )
    assert logout.status_code == 302
    # Revoked by the gateway itself, before the browser reaches the provider's logout page.
    assert op.introspect(tokens.refresh_token, "refresh_token")["active"] is False
    assert op.introspect(tokens.access_token)["active"] is False
    revocations = op.events(since, event="revocation", client_id=gateway.client.client_id)
    assert {event["status"] for event in revocations} == {200}
    assert {event.get("token_kind") for event in revocations} >= {"RefreshToken"}

    end_session = logout.headers["location"]
    assert op.owns(end_session)
    back = logout_at_provider(browser, end_session)
    assert back.is_redirect
    final = browser.get(back.headers["location"], headers=HTML, timeout=10)
    assert final.status_code == 200 and "logged out" in final.text
    # The provider's own back-channel notice for this logout finds the session gone: fine.
    assert op.events(since, event="backchannel.error") == []
    assert sync_store(gateway.stack.config).load(credential) is None
    assert gateway.api_get(credential).status_code == 401


def test_logout_at_the_provider_ends_the_gateway_session_by_back_channel(gateway, op):
    browser, _ = log_in(gateway, op)
    credential, _ = gateway.session(browser)
    assert gateway.api_get(credential).status_code == 200
    since = op.event_count()
    # The user signs out at the provider itself, not through the gateway.
    logout_at_provider(browser, op.metadata()["end_session_endpoint"])
    delivered = op.events(since, event="backchannel.success", client_id=gateway.client.client_id)
    assert len(delivered) == 1, op.events(since)
    assert sync_store(gateway.stack.config).load(credential) is None
    assert gateway.api_get(credential).status_code == 401


def approved_cli_login(gateway: Gateway, op: OidcProvider, browser: requests.Session) -> str:
    """A CLI login approved in ``browser`` (logged in already): the CLI's credential."""
    url = gateway.stack.url
    started = requests.post(url + "/auth/cli/start", timeout=10).json()
    page = browser.get(started["verification_uri_complete"], headers=HTML, timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    pressed = browser.post(
        started["verification_uri"],
        data={"user_code": started["user_code"], "csrf_token": csrf[1], "action": "approve"},
        headers={**HTML, "Origin": gateway.stack.config.public_origin},
        allow_redirects=False,
        timeout=10,
    )
    done = through_logins(op, browser, pressed)
    assert done.status_code == 200 and "return to your terminal" in done.text, done.text[:500]
    token = requests.post(
        url + "/auth/cli/token",
        data={"grant_type": GRANT_TYPE, "device_code": started["device_code"]},
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def test_a_browser_logout_leaves_the_cli_session_and_the_provider_decides_on_its_tokens(
    gateway, op
):
    """What happens with a real provider: the browser's logout ends the provider's session
    and the provider sends its back-channel notice for it; the gateway keeps the CLI session
    it approved. oidc-provider keeps one grant per browser session and client, and revoking
    a refresh token revokes its grant, so the CLI's tokens there end with the browser's: the
    CLI keeps its other provider and needs a new login for this one."""
    browser, _ = log_in(gateway, op)
    cli = SessionCredential.parse(approved_cli_login(gateway, op, browser))
    store = sync_store(gateway.stack.config)
    cli_session = store.load(cli)
    assert cli_session is not None
    _, browser_session = gateway.session(browser)
    sid = browser_session.identity.provider_session_id
    assert sid and cli_session.identity.provider_session_id == sid  # one provider session
    cli_headers = {**JSON, "Authorization": f"Bearer {cli.encode()}"}

    since = op.event_count()
    logout = browser.get(
        gateway.stack.url + "/auth/logout", headers=HTML, allow_redirects=False, timeout=10
    )
    back = logout_at_provider(browser, logout.headers["location"])
    assert back.is_redirect
    delivered = op.events(since, event="backchannel.success", client_id=gateway.client.client_id)
    assert len(delivered) == 1, op.events(since)

    assert store.load(cli) is not None
    gitlab = requests.get(gateway.stack.url + "/gitlab/x", headers=cli_headers, timeout=10)
    assert gitlab.status_code == 200, gitlab.text
    refresh_token = cli_session.tokens[PROVIDER_ID].refresh_token
    assert refresh_token
    assert op.introspect(refresh_token, "refresh_token")["active"] is False
    expire_token(gateway, cli)
    refused = requests.get(gateway.stack.url + "/api/x", headers=cli_headers, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "provider_login_required"


@pytest.mark.parametrize("tamper", ["another_issuer", "no_issuer"])
def test_an_authorization_response_with_a_wrong_or_no_iss_is_refused_before_its_code_is_used(
    gateway, op, tamper
):
    """RFC 9207: the provider's metadata says it sends ``iss``, so the gateway requires it
    and compares it with the issuer it sent the browser to (mix-up attacks)."""
    assert op.metadata()["authorization_response_iss_parameter_supported"] is True

    def rewrite(url: str) -> str:
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        assert ("iss", op.issuer) in query
        query = [(name, value) for name, value in query if name != "iss"]
        if tamper == "another_issuer":
            query.append(("iss", "http://127.0.0.1:1"))
        return urlunsplit(parts._replace(query=urlencode(query)))

    since = op.event_count()
    browser, page = log_in(gateway, op, callback=rewrite)
    assert 400 <= page.status_code < 500, page.text
    assert gateway.stack.cookie_name not in browser.cookies
    exchanged = op.events(since, event="grant.success", client_id=gateway.client.client_id)
    assert exchanged == []


def test_an_issuer_ending_in_a_slash_works_as_oidc_discovery_says(
    tmp_path, redis_server, echo_backend
):
    """The issuer is http://host:port/ exactly (ID tokens say so); its discovery document is
    at /.well-known/openid-configuration, not //.well-known/..."""
    op = start_oidc_provider(tmp_path / "op", users=[ALICE], trailing_slash=True)
    (tmp_path / "gateway").mkdir()
    try:
        subject = start_gateway(
            tmp_path / "gateway", op, redis_server, echo_backend, "client_secret_basic"
        )
        try:
            browser, page = log_in(subject, op)
            assert page.status_code == 200, page.text
            _, session = subject.session(browser)
            assert bearer(page) == session.tokens[PROVIDER_ID].access_token
            assert op.introspect(bearer(page))["active"] is True
        finally:
            subject.stack.stop()
    finally:
        op.stop()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "private_key_jwt"])
def test_each_client_authentication_method_is_used_for_every_provider_call(
    method, gateway, op, tmp_path, redis_server, echo_backend
):
    """Code exchange, refresh and revocation all authenticate the way the client is
    registered, and the provider sees that method on the wire."""
    other = None
    if method != gateway.client.token_endpoint_auth_method:
        other = start_gateway(tmp_path, op, redis_server, echo_backend, method)
    subject = other or gateway
    try:
        since = op.event_count()
        browser, page = log_in(subject, op)
        assert page.status_code == 200, page.text
        credential, _ = subject.session(browser)
        expire_token(subject, credential)
        refreshed = subject.api_get(credential)
        assert refreshed.status_code == 200, grant_errors(op, since, subject.client)
        browser.get(
            subject.stack.url + "/auth/logout", headers=HTML, allow_redirects=False, timeout=10
        )
        mine = [
            event
            for event in op.events(since, client_id=subject.client.client_id)
            if "client_auth" in event
        ]
        kinds = {(event["event"], event.get("grant_type")) for event in mine}
        assert {
            ("grant.success", "authorization_code"),
            ("grant.success", "refresh_token"),
            ("revocation", None),
        } <= kinds
        assert {event["client_auth"] for event in mine} == {method}
        assert grant_errors(op, since, subject.client) == []
    finally:
        if other is not None:
            other.stack.stop()
