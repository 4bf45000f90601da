"""Requests through a real Envoy to the echo backend, decided by a real ext_authz and Redis."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, sync_store
from gateway.sessions.model import Identity, TokenSet
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

PRIMARY_TOKEN = "primary-access-token-1"
GITLAB_TOKEN = "glpat-gitlab-token-2"


@pytest.fixture(scope="module", params=["grpc", "http"])
def gateway(request, tmp_path_factory, redis_server, echo_backend) -> Iterator[Stack]:
    """The whole stack, once with each ext_authz transport: both must behave the same."""

    def transport(raw: dict) -> None:
        raw["ext_authz"]["transport"] = request.param

    stack = start_stack(
        tmp_path_factory.mktemp(f"gateway-{request.param}"), redis_server, echo_backend, transport
    )
    yield stack
    stack.stop()


@pytest.fixture
def credential(gateway: Stack) -> SessionCredential:
    return gateway.create_session(tokens={"primary": PRIMARY_TOKEN, "gitlab": GITLAB_TOKEN})


def get(stack: Stack, path: str, credential: SessionCredential | None = None, **kwargs):
    headers = dict(kwargs.pop("headers", {}))
    if credential is not None:
        cookie = f"{stack.cookie_name}={credential.encode()}"
        headers["Cookie"] = f"{headers['Cookie']}; {cookie}" if "Cookie" in headers else cookie
    return requests.request(
        kwargs.pop("method", "GET"),
        stack.url + path,
        headers=headers,
        allow_redirects=False,
        timeout=5,
        **kwargs,
    )


def echoed(response: requests.Response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.text
    return json.loads(response.text)["headers"]


def test_session_cookie_reaches_backend_as_its_providers_bearer_token(gateway, credential):
    headers = echoed(get(gateway, "/api/projects", credential))
    assert headers["authorization"] == [f"Bearer {PRIMARY_TOKEN}"]
    assert "cookie" not in headers
    assert unquote(headers["x-gateway-user-name"][0]) == "Alice Ärger"
    assert headers["x-gateway-user-id"] == ["alice"]
    assert unquote(headers["x-gateway-user-email"][0]) == "alice@example.org"


@pytest.mark.parametrize(
    ("path", "header", "expected"),
    [
        ("/gitlab/api/v4/user", "private-token", GITLAB_TOKEN),
        ("/jupyter/hub/api/user", "authorization", f"token {PRIMARY_TOKEN}"),
        (
            "/repos/group/project.git/info/refs",
            "authorization",
            "Basic " + base64.b64encode(f"oauth2:{GITLAB_TOKEN}".encode()).decode(),
        ),
    ],
)
def test_each_route_gets_its_own_providers_token_in_its_format(
    gateway, credential, path, header, expected
):
    headers = echoed(get(gateway, path, credential))
    assert headers[header] == [expected]
    other_tokens = {PRIMARY_TOKEN, GITLAB_TOKEN} - {
        t
        for t in (PRIMARY_TOKEN, GITLAB_TOKEN)
        if t in expected or base64.b64encode(f"oauth2:{t}".encode()).decode() in expected
    }
    assert not any(token in json.dumps(headers) for token in other_tokens)


def test_other_cookies_survive_while_the_session_cookie_is_removed(gateway, credential):
    headers = echoed(get(gateway, "/api/x", credential, headers={"Cookie": "theme=dark; lang=en"}))
    assert headers["cookie"] == ["theme=dark; lang=en"]


def test_bearer_session_token_works_for_cli_clients_and_never_reaches_the_backend(
    gateway, credential
):
    response = get(
        gateway, "/gitlab/api", headers={"Authorization": f"Bearer {credential.encode()}"}
    )
    headers = echoed(response)
    assert headers["private-token"] == [GITLAB_TOKEN]
    assert "authorization" not in headers
    assert credential.encode() not in response.text


def test_spoofed_gateway_headers_are_stripped_even_for_anonymous_requests(gateway):
    spoofed = {
        "X-Gateway-User-Id": "admin",
        "Private-Token": "stolen",
        "Authorization": "Bearer forged",
        "X-Gateway-User-Email": "admin@example.org",
    }
    headers = echoed(get(gateway, "/catalog/items", headers=spoofed))
    for name in spoofed:
        assert name.lower() not in headers


def test_spoofed_identity_is_overwritten_for_a_logged_in_user(gateway, credential):
    headers = echoed(get(gateway, "/api/x", credential, headers={"X-Gateway-User-Id": "admin"}))
    assert headers["x-gateway-user-id"] == ["alice"]


def test_public_route_skips_authorization_but_still_strips_gateway_headers(gateway):
    headers = echoed(get(gateway, "/status", headers={"X-Gateway-User-Id": "admin"}))
    assert "x-gateway-user-id" not in headers


def test_api_request_without_session_gets_401_json_with_login_url(gateway):
    response = get(gateway, "/api/projects?page=2", headers={"Accept": "application/json"})
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "unauthorized"
    login = urlsplit(body["login_url"])
    assert login.path == "/auth/login"
    assert parse_qs(login.query)["redirect_url"] == [gateway.url + "/api/projects?page=2"]
    assert response.headers["www-authenticate"].startswith("Bearer realm=")


def test_browser_navigation_without_session_is_redirected_to_login(gateway):
    response = get(gateway, "/jupyter/lab", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == gateway.url
    assert parse_qs(location.query)["redirect_url"] == [gateway.url + "/jupyter/lab"]


def test_tampered_session_credential_is_refused(gateway, credential):
    encoded = credential.encode()
    tampered = encoded[:-2] + ("A" if encoded[-2] != "A" else "B") + encoded[-1]
    response = get(gateway, "/api/x", headers={"Cookie": f"{gateway.cookie_name}={tampered}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "invalid_session"
    assert "max-age=0" in response.headers["set-cookie"].lower()


def test_unknown_session_is_refused(gateway):
    response = get(gateway, "/api/x", SessionCredential.generate())
    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_session"


def test_expired_session_is_refused_even_while_redis_still_keeps_its_record(gateway):
    # Written by a store whose clock says it is an hour ago: the session it started then
    # has just ended, yet its record has most of an idle window left in Redis.
    an_hour_ago = time.time() - 3600
    credential, _ = sync_store(gateway.config, clock=lambda: an_hour_ago).create(
        Identity("alice"), {"primary": TokenSet(PRIMARY_TOKEN)}, an_hour_ago, lifetime=3599
    )
    assert (
        sync_client(gateway.config.redis).pttl(
            keyspace(gateway.config).session_record(credential.lookup_id)
        )
        > 60_000
    )
    response = get(gateway, "/api/x", credential)
    assert response.status_code == 401
    assert response.json()["reason"] in ("unknown_session", "session_expired")


def test_route_whose_provider_token_is_missing_asks_for_that_login(gateway):
    credential = gateway.create_session(tokens={"primary": PRIMARY_TOKEN})
    response = get(gateway, "/gitlab/api", credential)
    assert response.status_code == 401
    assert response.json()["reason"] == "provider_login_required"


def test_cross_site_post_with_cookie_is_refused_and_same_origin_post_allowed(gateway, credential):
    evil = get(
        gateway, "/api/x", credential, method="POST", headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    assert evil.json()["reason"] == "csrf"
    ours = get(gateway, "/api/x", credential, method="POST", headers={"Origin": gateway.url})
    assert echoed(ours)["authorization"] == [f"Bearer {PRIMARY_TOKEN}"]


def test_cors_preflight_passes_without_credentials(gateway):
    response = get(
        gateway,
        "/api/x",
        method="OPTIONS",
        headers={"Origin": gateway.url, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200


def test_unknown_path_never_reaches_a_backend(gateway, credential):
    response = get(gateway, "/etc/passwd", credential)
    assert response.status_code == 404
