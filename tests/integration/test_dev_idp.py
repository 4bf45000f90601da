"""The development IdP behaves like a real provider: flows succeed, misuse is rejected."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.dev_idp import DevIdp, start_dev_idp, submit_login_form

pytestmark = pytest.mark.integration

CLIENT_ID = "gateway"
CLIENT_SECRET = "gateway-secret"
REDIRECT_URI = "http://127.0.0.1:8080/_auth/callback"
OTHER_CLIENT = "other:other-secret:http://127.0.0.1:8081/callback"
POST_LOGOUT_URI = "http://127.0.0.1:8080/logged-out"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass
class LogoutReceiver:
    """A tiny relying-party endpoint that records back-channel logout POSTs."""

    server: ThreadingHTTPServer
    tokens: list[str] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/backchannel-logout"

    def wait_for_token(self, timeout: float = 5.0) -> str:
        assert self.arrived.wait(timeout), "no back-channel logout POST arrived"
        self.arrived.clear()
        return self.tokens[-1]


@pytest.fixture(scope="module")
def logout_receiver() -> Iterator[LogoutReceiver]:
    received: list[str] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            received.extend(parse_qs(body).get("logout_token", []))
            arrived.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LogoutReceiver(server, received, arrived)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def idp(logout_receiver: LogoutReceiver) -> Iterator[DevIdp]:
    with start_dev_idp(
        clients=[f"{CLIENT_ID}:{CLIENT_SECRET}:{REDIRECT_URI}", OTHER_CLIENT],
        users=["alice:alice:alice@example.org:Alice Ärger:admins+users", "bob:bob"],
        backchannel_logout_uri=logout_receiver.url,
        post_logout_redirect_uris=[POST_LOGOUT_URI],
    ) as provider:
        yield provider


@pytest.fixture(scope="module")
def oauth2_idp() -> Iterator[DevIdp]:
    # A one-second code lifetime lets the expiry test run fast.
    with start_dev_idp(
        mode="oauth2",
        clients=[f"{CLIENT_ID}:{CLIENT_SECRET}:{REDIRECT_URI}"],
        extra_args=["--authorization-code-ttl", "1"],
    ) as provider:
        yield provider


@pytest.fixture(autouse=True)
def fresh_stats(request: pytest.FixtureRequest) -> None:
    for name in ("idp", "oauth2_idp"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


# The actions a relying party and its user take.


@dataclass
class Authorization:
    code: str
    state: str
    nonce: str
    verifier: str


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(idp: DevIdp, **overrides: str) -> tuple[str, dict[str, str]]:
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile email" if idp.mode == "oidc" else "read_user",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    params = {key: value for key, value in params.items() if value != ""}
    return f"{idp.url}/authorize?{urlencode(params)}", {**params, "verifier": verifier}


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text[:500]
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI), location
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def log_in(
    idp: DevIdp,
    browser: requests.Session | None = None,
    *,
    username: str = "alice",
    password: str = "alice",
    **overrides: str,
) -> Authorization:
    browser = browser or requests.Session()
    url, params = authorize_url(idp, **overrides)
    page = browser.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text[:500]
    result = redirect_params(submit_login_form(browser, page, username=username, password=password))
    assert result["state"] == params["state"]
    return Authorization(result["code"], params["state"], params["nonce"], params["verifier"])


def exchange(
    idp: DevIdp,
    code: str,
    verifier: str,
    *,
    redirect_uri: str = REDIRECT_URI,
    secret: str = CLIENT_SECRET,
    client_id: str = CLIENT_ID,
) -> requests.Response:
    return requests.post(
        f"{idp.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(client_id, secret),
        timeout=10,
    )


def refresh(idp: DevIdp, refresh_token: str) -> requests.Response:
    return requests.post(
        f"{idp.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )


def tokens_for(idp: DevIdp, browser: requests.Session | None = None) -> dict[str, Any]:
    authorization = log_in(idp, browser)
    response = exchange(idp, authorization.code, authorization.verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    tokens["nonce"] = authorization.nonce
    return tokens


def userinfo(idp: DevIdp, access_token: str) -> requests.Response:
    return requests.get(
        f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
    )


def revoke(idp: DevIdp, token: str, hint: str | None = None) -> requests.Response:
    data = {"token": token, **({"token_type_hint": hint} if hint else {})}
    return requests.post(
        f"{idp.url}/revoke", data=data, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10
    )


def verified_claims(idp: DevIdp, token: str) -> dict[str, Any]:
    jwks = requests.get(f"{idp.url}/jwks", timeout=10).json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    return dict(decoded.claims)


# Discovery and keys


def test_discovery_advertises_endpoints_s256_and_backchannel_logout(idp: DevIdp) -> None:
    metadata = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()

    assert metadata["issuer"] == idp.issuer
    for name, path in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/end-session"),
    ]:
        assert metadata[name] == f"{idp.issuer}{path}"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    assert metadata["backchannel_logout_supported"] is True


def test_key_rotation_publishes_old_and_new_key_until_old_is_dropped(idp: DevIdp) -> None:
    old_kids = [key["kid"] for key in requests.get(f"{idp.url}/jwks", timeout=10).json()["keys"]]

    rotated = idp.rotate_keys()
    kids = [key["kid"] for key in requests.get(f"{idp.url}/jwks", timeout=10).json()["keys"]]
    assert kids == [rotated["kid"], *old_kids]
    id_token = tokens_for(idp)["id_token"]
    jwks = KeySet.import_key_set(requests.get(f"{idp.url}/jwks", timeout=10).json())
    assert jwt.decode(id_token, jwks, algorithms=["RS256"]).header["kid"] == rotated["kid"]

    idp.rotate_keys(drop_old=True)
    assert len(requests.get(f"{idp.url}/jwks", timeout=10).json()["keys"]) == 1


def test_admin_sign_forges_a_token_with_the_real_key(idp: DevIdp) -> None:
    claims = {"iss": "https://evil.example", "aud": "someone-else", "sub": "x", "exp": 1}

    token = idp.sign(claims)

    # The signature is genuine even though every claim is wrong.
    assert verified_claims(idp, token) == claims


# The code flow


def test_code_flow_with_pkce_yields_id_token_verified_by_jwks(idp: DevIdp) -> None:
    tokens = tokens_for(idp)

    claims = verified_claims(idp, tokens["id_token"])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": idp.issuer},
        aud={"essential": True, "value": CLIENT_ID},
        nonce={"essential": True, "value": tokens["nonce"]},
        sid={"essential": True},
        exp={"essential": True},
    )
    registry.validate(claims)
    assert claims["azp"] == CLIENT_ID
    assert claims["name"] == "Alice Ärger"
    assert claims["email"] == "alice@example.org"
    assert claims["groups"] == ["admins", "users"]
    assert claims["sub"] != "alice"
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    assert tokens["refresh_token"]


def test_userinfo_returns_the_identity_behind_the_access_token(idp: DevIdp) -> None:
    tokens = tokens_for(idp)

    response = userinfo(idp, tokens["access_token"])

    assert response.status_code == 200
    info = response.json()
    assert info["preferred_username"] == "alice"
    assert info["name"] == "Alice Ärger"
    assert info["groups"] == ["admins", "users"]
    assert info["sub"] == verified_claims(idp, tokens["id_token"])["sub"]


def test_client_secret_post_authenticates_at_the_token_endpoint(idp: DevIdp) -> None:
    authorization = log_in(idp)

    response = requests.post(
        f"{idp.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": authorization.code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": authorization.verifier,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=10,
    )

    assert response.status_code == 200, response.text


def test_idp_session_cookie_issues_a_code_without_the_form(idp: DevIdp) -> None:
    browser = requests.Session()
    log_in(idp, browser)
    url, params = authorize_url(idp)

    result = redirect_params(browser.get(url, allow_redirects=False, timeout=10))

    assert result["state"] == params["state"]
    assert "code" in result
    assert idp.stats()["logins"] == {"password": 1, "sso": 1}


def test_prompt_login_shows_the_form_despite_an_idp_session(idp: DevIdp) -> None:
    browser = requests.Session()
    log_in(idp, browser)
    url, _ = authorize_url(idp, prompt="login")

    page = browser.get(url, allow_redirects=False, timeout=10)

    assert page.status_code == 200
    assert 'id="username"' in page.text and 'id="password"' in page.text
    assert 'id="login"' in page.text


def test_wrong_password_shows_the_form_again_without_redirect(idp: DevIdp) -> None:
    browser = requests.Session()
    url, _ = authorize_url(idp)
    page = browser.get(url, timeout=10)

    response = submit_login_form(browser, page, password="wrong")

    assert response.status_code == 200
    assert "Invalid username or password" in response.text
    assert idp.stats()["logins"] == {"failed": 1}


def test_deny_button_redirects_access_denied_with_state(idp: DevIdp) -> None:
    browser = requests.Session()
    url, params = authorize_url(idp)
    page = browser.get(url, timeout=10)

    result = redirect_params(submit_login_form(browser, page, action="deny"))

    assert result["error"] == "access_denied"
    assert result["state"] == params["state"]
    assert "code" not in result


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"code_challenge": "", "code_challenge_method": ""}, id="no-pkce"),
        pytest.param({"code_challenge_method": "plain"}, id="plain-pkce"),
    ],
)
def test_authorization_without_s256_pkce_redirects_invalid_request(
    idp: DevIdp, overrides: dict[str, str]
) -> None:
    url, params = authorize_url(idp, **overrides)

    result = redirect_params(requests.get(url, allow_redirects=False, timeout=10))

    assert result["error"] == "invalid_request"
    assert result["state"] == params["state"]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"client_id": "nobody"}, id="unknown-client"),
        pytest.param({"redirect_uri": "http://127.0.0.1:6666/evil"}, id="unregistered-uri"),
        pytest.param({"redirect_uri": ""}, id="missing-uri"),
    ],
)
def test_bad_client_or_redirect_uri_renders_an_error_page_and_never_redirects(
    idp: DevIdp, overrides: dict[str, str]
) -> None:
    url, _ = authorize_url(idp, **overrides)

    response = requests.get(url, allow_redirects=False, timeout=10)

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert 'role="alert"' in response.text


# What the token endpoint rejects


def test_wrong_code_verifier_is_rejected_with_invalid_grant(idp: DevIdp) -> None:
    authorization = log_in(idp)

    response = exchange(idp, authorization.code, pkce_pair()[0])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_reused_code_is_rejected_and_revokes_the_tokens_issued_from_it(idp: DevIdp) -> None:
    authorization = log_in(idp)
    first = exchange(idp, authorization.code, authorization.verifier).json()

    second = exchange(idp, authorization.code, authorization.verifier)

    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert userinfo(idp, first["access_token"]).status_code == 401
    assert refresh(idp, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert idp.stats()["code_replays"] == 1


def test_wrong_redirect_uri_at_token_endpoint_is_rejected(idp: DevIdp) -> None:
    authorization = log_in(idp)

    response = exchange(
        idp, authorization.code, authorization.verifier, redirect_uri=REDIRECT_URI + "x"
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        pytest.param(CLIENT_ID, "wrong-secret", id="wrong-secret"),
        pytest.param("nobody", CLIENT_SECRET, id="unknown-client"),
    ],
)
def test_client_that_fails_authentication_gets_invalid_client(
    idp: DevIdp, client_id: str, secret: str
) -> None:
    authorization = log_in(idp)

    response = exchange(
        idp, authorization.code, authorization.verifier, client_id=client_id, secret=secret
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert idp.stats()["token_requests"]["authorization_code"] == {"invalid_client": 1}


def test_code_issued_to_another_client_is_rejected(idp: DevIdp) -> None:
    authorization = log_in(idp)

    response = exchange(
        idp, authorization.code, authorization.verifier, client_id="other", secret="other-secret"
    )

    assert response.json()["error"] == "invalid_grant"


def test_expired_code_is_rejected_with_invalid_grant(oauth2_idp: DevIdp) -> None:
    authorization = log_in(oauth2_idp)
    time.sleep(1.1)

    response = exchange(oauth2_idp, authorization.code, authorization.verifier)

    assert response.json()["error"] == "invalid_grant"


# Refresh, revocation, faults


def test_refresh_rotates_and_the_old_refresh_token_then_gets_invalid_grant(idp: DevIdp) -> None:
    tokens = tokens_for(idp)

    refreshed = refresh(idp, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    new_claims = verified_claims(idp, new["id_token"])
    assert new_claims["sid"] == verified_claims(idp, tokens["id_token"])["sid"]
    assert "nonce" not in new_claims

    replay = refresh(idp, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert refresh(idp, new["refresh_token"]).status_code == 200
    stats = idp.stats()
    assert stats["refreshes"] == 2
    assert stats["token_requests"]["refresh_token"] == {"ok": 2, "invalid_grant": 1}


def test_a_rotated_away_refresh_token_is_counted_apart_from_a_revoked_one(idp: DevIdp) -> None:
    rotated, revoked = tokens_for(idp), tokens_for(idp)
    assert refresh(idp, rotated["refresh_token"]).status_code == 200
    assert revoke(idp, revoked["refresh_token"]).status_code == 200

    assert refresh(idp, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(idp, revoked["refresh_token"]).json()["error"] == "invalid_grant"
    # Only the first means a client lost the answer of a refresh.
    assert idp.stats()["rotated_refresh_reuse"] == 1


def test_token_info_tells_grant_user_and_validity_of_each_access_token(idp: DevIdp) -> None:
    tokens = tokens_for(idp)
    fresh = refresh(idp, tokens["refresh_token"]).json()

    info = idp.token_info([tokens["access_token"], fresh["access_token"], "never-issued"])

    first, second = info[tokens["access_token"]], info[fresh["access_token"]]
    assert first is not None and second is not None and info["never-issued"] is None
    assert first["grant_id"] == second["grant_id"]  # one login, refreshed
    assert first["username"] == "alice" and first["client_id"] == CLIENT_ID
    assert first["issued_at"] <= second["issued_at"] < second["expires_at"]
    assert first["revoked"] is False
    assert info == idp.token_info(list(info))  # reading changes nothing


def test_revoked_access_token_fails_at_userinfo_and_is_counted(idp: DevIdp) -> None:
    tokens = tokens_for(idp)

    assert revoke(idp, tokens["access_token"], "access_token").status_code == 200

    assert userinfo(idp, tokens["access_token"]).status_code == 401
    assert idp.stats()["revocations"] == [
        {
            "token_type_hint": "access_token",
            "token_kind": "access_token",
            "client_id": CLIENT_ID,
            "status": 200,
        }
    ]


def test_revoking_a_refresh_token_also_revokes_its_access_tokens(idp: DevIdp) -> None:
    tokens = tokens_for(idp)

    assert revoke(idp, tokens["refresh_token"]).status_code == 200

    assert userinfo(idp, tokens["access_token"]).status_code == 401
    assert refresh(idp, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert idp.stats()["revocations"][0]["token_kind"] == "refresh_token"


def test_revoking_an_unknown_token_answers_200(idp: DevIdp) -> None:
    assert revoke(idp, "never-issued").status_code == 200
    assert idp.stats()["revocations"][0]["token_kind"] == "unknown"


def test_fault_injection_makes_the_token_endpoint_answer_503(idp: DevIdp) -> None:
    authorization = log_in(idp)
    idp.set_faults(token_endpoint="error503")

    response = exchange(idp, authorization.code, authorization.verifier)

    assert response.status_code == 503
    assert idp.stats()["token_requests"]["authorization_code"] == {"error503": 1}
    idp.set_faults(token_endpoint="ok")
    assert exchange(idp, authorization.code, authorization.verifier).status_code == 200


def test_slow_fault_delays_the_token_endpoint(idp: DevIdp) -> None:
    authorization = log_in(idp)
    idp.set_faults(token_endpoint="slow", slow_seconds=0.3)

    started = time.monotonic()
    response = exchange(idp, authorization.code, authorization.verifier)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


# Logout


def test_end_session_with_unregistered_post_logout_uri_shows_error_and_keeps_session(
    idp: DevIdp,
) -> None:
    browser = requests.Session()
    tokens = tokens_for(idp, browser)

    response = browser.get(
        f"{idp.url}/end-session",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1:6666/evil",
        },
        allow_redirects=False,
        timeout=10,
    )

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert userinfo(idp, tokens["access_token"]).status_code == 200


def test_end_session_redirects_with_state_and_posts_a_backchannel_logout_token(
    idp: DevIdp, logout_receiver: LogoutReceiver
) -> None:
    browser = requests.Session()
    tokens = tokens_for(idp, browser)
    id_claims = verified_claims(idp, tokens["id_token"])

    response = browser.get(
        f"{idp.url}/end-session",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": POST_LOGOUT_URI,
            "state": "bye",
        },
        allow_redirects=False,
        timeout=10,
    )

    assert response.status_code == 302
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=bye"
    logout_token = verified_claims(idp, logout_receiver.wait_for_token())
    assert logout_token["iss"] == idp.issuer
    assert logout_token["aud"] == CLIENT_ID
    assert logout_token["sid"] == id_claims["sid"]
    assert logout_token["sub"] == id_claims["sub"]
    assert logout_token["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in logout_token and logout_token["jti"]
    assert refresh(idp, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    url, _ = authorize_url(idp)
    assert browser.get(url, allow_redirects=False, timeout=10).status_code == 200  # form again
    stats = idp.stats()
    assert stats["end_session_calls"] == 1
    assert [d["status"] for d in stats["backchannel_deliveries"]] == [200]


def test_admin_backchannel_logout_posts_a_token_for_the_session(
    idp: DevIdp, logout_receiver: LogoutReceiver
) -> None:
    tokens = tokens_for(idp)
    sid = verified_claims(idp, tokens["id_token"])["sid"]

    deliveries = idp.backchannel_logout(sid)

    assert [delivery["status"] for delivery in deliveries] == [200]
    assert verified_claims(idp, logout_receiver.wait_for_token())["sid"] == sid
    assert userinfo(idp, tokens["access_token"]).status_code == 401


# Plain OAuth 2.0 mode


def test_oauth2_mode_issues_no_id_token_and_serves_no_oidc_discovery(
    oauth2_idp: DevIdp,
) -> None:
    tokens = tokens_for(oauth2_idp)

    assert "id_token" not in tokens
    assert userinfo(oauth2_idp, tokens["access_token"]).json()["preferred_username"] == "alice"
    assert (
        requests.get(f"{oauth2_idp.url}/.well-known/openid-configuration", timeout=10).status_code
        == 404
    )
    metadata = requests.get(
        f"{oauth2_idp.url}/.well-known/oauth-authorization-server", timeout=10
    ).json()
    assert metadata["token_endpoint"] == f"{oauth2_idp.issuer}/token"
    assert "end_session_endpoint" not in metadata
