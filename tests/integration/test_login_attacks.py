"""What must never produce a session or an off-site redirect, tried against the real stack."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from gateway.config import load_config
from gateway.errors import TokenInvalid
from gateway.providers.client import ProviderClient
from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from tests.support.dev_idp import submit_login_form
from tests.support.login import HTML, browser_login, start_login
from tests.support.servers import gateway_env
from tests.support.stack import GITLAB_SECRET, PRIMARY_SECRET, Stack
from tests.unit.test_redirects import OPEN_REDIRECT_PAYLOAD_IDS, OPEN_REDIRECT_PAYLOADS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(login_stack: Stack) -> Stack:
    return login_stack


def no_session(stack: Stack, browser: requests.Session) -> bool:
    return stack.cookie_name not in browser.cookies


def stays_on_site(stack: Stack, response: requests.Response) -> bool:
    location = response.headers.get("location")
    if location is None:
        return True
    parts = urlsplit(location)
    return not parts.netloc or f"{parts.scheme}://{parts.netloc}" == stack.url


def callback_at_primary(stack: Stack, browser: requests.Session) -> requests.Response:
    """Start a login and log in at the primary IdP; return the IdP's redirect to our callback."""
    start = start_login(stack, browser)
    form = browser.get(start.headers["location"], headers=HTML, allow_redirects=False, timeout=10)
    # With an IdP session already (single sign-on) the IdP answers without its form.
    reply = form if form.is_redirect else submit_login_form(browser, form)
    assert reply.status_code == 302 and "/auth/callback?" in reply.headers["location"]
    return reply


def callback(browser: requests.Session, url: str) -> requests.Response:
    return browser.get(url, headers=HTML, allow_redirects=False, timeout=10)


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return parts._replace(query=urlencode(query)).geturl()


def assert_refused(stack, browser, response, code: str) -> None:
    assert response.status_code in (400, 502), response.text[:500]
    assert f"<code>{code}</code>" in response.text
    assert stays_on_site(stack, response)
    assert no_session(stack, browser)


def test_callback_without_state_is_refused(stack):
    browser = requests.Session()
    reply = callback_at_primary(stack, browser)
    assert_refused(
        stack,
        browser,
        callback(browser, with_query(reply.headers["location"], state=None)),
        "state_mismatch",
    )


def test_callback_with_a_mismatched_state_is_refused(stack):
    browser = requests.Session()
    reply = callback_at_primary(stack, browser)
    state = parse_qs(urlsplit(reply.headers["location"]).query)["state"][0]
    forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    assert_refused(
        stack,
        browser,
        callback(browser, with_query(reply.headers["location"], state=forged)),
        "state_mismatch",
    )


def test_a_callback_used_twice_is_refused_the_second_time(stack):
    browser = requests.Session()
    reply = callback_at_primary(stack, browser)
    first = callback(browser, reply.headers["location"])
    assert first.status_code == 302  # on to the next provider
    other_browser = requests.Session()
    other_browser.cookies.update(browser.cookies)
    assert_refused(
        stack, other_browser, callback(other_browser, reply.headers["location"]), "state_mismatch"
    )


def test_a_callback_from_another_browser_is_refused(stack):
    """Login CSRF: the attacker's code and state, replayed in the victim's browser."""
    attacker = requests.Session()
    reply = callback_at_primary(stack, attacker)
    victim = requests.Session()
    assert_refused(stack, victim, callback(victim, reply.headers["location"]), "state_mismatch")


def test_a_code_injected_into_another_attempt_is_refused(stack):
    """Reused code: the IdP binds it to the first attempt's PKCE verifier and single use."""
    browser = requests.Session()
    stolen = callback_at_primary(stack, browser)
    code = parse_qs(urlsplit(stolen.headers["location"]).query)["code"][0]
    assert callback(browser, stolen.headers["location"]).status_code == 302  # code used once
    fresh = callback_at_primary(stack, browser)
    injected = with_query(fresh.headers["location"], code=code)
    assert_refused(stack, browser, callback(browser, injected), "token_exchange_failed")


def test_provider_error_reply_shows_a_page_with_a_retry(stack):
    browser = requests.Session()
    start = start_login(stack, browser)
    form = browser.get(start.headers["location"], headers=HTML, allow_redirects=False, timeout=10)
    denied = submit_login_form(browser, form, action="deny")
    assert "error=access_denied" in denied.headers["location"]
    page = callback(browser, denied.headers["location"])
    assert_refused(stack, browser, page, "provider_error")
    assert "Try logging in again" in page.text


def test_an_expired_login_attempt_is_refused(stack):
    browser = requests.Session()
    reply = callback_at_primary(stack, browser)
    client = sync_client(stack.config.redis)
    for key in client.scan_iter(match=f"{stack.config.redis.key_prefix}login:*"):
        client.delete(key)
    assert_refused(stack, browser, callback(browser, reply.headers["location"]), "expired_attempt")


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS, ids=OPEN_REDIRECT_PAYLOAD_IDS)
def test_open_redirect_payloads_are_refused_by_login_and_logout(stack, payload):
    browser = requests.Session()
    for path in ("/auth/login", "/auth/logout"):
        response = browser.get(
            stack.url + path,
            params={"redirect_url": payload},
            headers=HTML,
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 400, (path, payload)
        assert "location" not in response.headers
        assert "rejected_redirect" in response.text
    assert no_session(stack, browser)


def test_a_full_login_still_works_after_all_that(stack):
    browser, page = browser_login(stack, "/api/after")
    assert page.status_code == 200 and urlsplit(page.url).path == "/api/after"


# ---- ID token validation against the live IdP's keys ----------------------------------------


@pytest.fixture(scope="module")
def primary_client(stack) -> ProviderClient:
    config = load_config(
        stack.config_path,
        gateway_env(
            {
                "GATEWAY_PROVIDER_PRIMARY_CLIENT_SECRET": PRIMARY_SECRET,
                "GATEWAY_PROVIDER_GITLAB_CLIENT_SECRET": GITLAB_SECRET,
            }
        ),
    )
    return ProviderClient(
        config.provider("primary"), stack.url + "/auth/callback", clock=_jwks_clock.now
    )


class _MovableClock:
    """Wall time plus however far a test has moved it (to age the JWKS cache)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


_jwks_clock = _MovableClock()


def _claims(stack: Stack, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims = {
        "iss": stack.idps["primary"].issuer,
        "sub": "u1",
        "aud": "gw",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "signing"),
    [
        ({"aud": "someone-else"}, {}),
        ({"aud": ["gw", "other"]}, {}),  # several audiences and no azp
        ({"azp": "other"}, {}),
        ({"iss": "http://127.0.0.1:1"}, {}),
        ({"exp": int(time.time()) - 3600}, {}),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) + 300}, {}),
        ({"nonce": "another-attempt"}, {}),
        ({"nonce": None}, {}),
        ({"sub": None}, {}),
        ({}, {"kid": "unknown-kid"}),
        ({}, {"alg": "none"}),
        ({}, {"alg": "HS256"}),
    ],
    ids=[
        "wrong-aud",
        "multi-aud-no-azp",
        "wrong-azp",
        "wrong-iss",
        "expired",
        "stale-iat",
        "wrong-nonce",
        "no-nonce",
        "no-sub",
        "unknown-kid",
        "alg-none",
        "alg-hs256-confusion",
    ],
)
def test_id_tokens_that_must_be_refused(stack, primary_client, changes, signing):
    token = stack.idps["primary"].sign(_claims(stack, **changes), **signing)
    with pytest.raises(TokenInvalid):
        primary_client.verify_id_token(token, "n-1", time.time())


def test_a_good_id_token_passes_and_rotated_keys_are_picked_up(stack, primary_client):
    assert (
        primary_client.verify_id_token(
            stack.idps["primary"].sign(_claims(stack)), "n-1", time.time()
        )["sub"]
        == "u1"
    )
    stack.idps["primary"].rotate_keys()
    _jwks_clock.offset += 60  # past the refetch rate limit
    token = stack.idps["primary"].sign(_claims(stack))
    assert primary_client.verify_id_token(token, "n-1", time.time())["sub"] == "u1"


def test_neither_server_acts_in_either_of_two_users_live_sessions(stack):
    """A tossed cookie (planted by a sibling host or for a narrower path) arrives next to the
    user's own; ext_authz and the login app read the request by one rule: with live sessions
    of two users neither is used (ext_authz answers a page saying to clear the cookies, not
    a login that would come back to the same). A stale one next to the user's is passed over;
    the same cookie sent twice is still the user's."""
    user = stack.create_session("alice", tokens={"primary": "alice-token"})
    planted = stack.create_session("mallory", tokens={"primary": "mallory-token"})
    stale = SessionCredential.generate()
    name = stack.cookie_name

    def statuses(cookie_header: str) -> tuple[int, int]:
        headers = {"Cookie": cookie_header, "Accept": "application/json"}
        backend = requests.get(stack.url + "/api/x", headers=headers, timeout=10)
        assert "mallory-token" not in backend.text
        profile = requests.get(stack.url + "/auth/user", headers=headers, timeout=10)
        assert "mallory" not in profile.text
        return backend.status_code, profile.status_code

    assert statuses(f"{name}={planted.encode()}; {name}={user.encode()}") == (400, 401)
    assert statuses(f"{name}={user.encode()}; {name}={planted.encode()}") == (400, 401)
    assert statuses(f"{name}={stale.encode()}; {name}={user.encode()}") == (200, 200)
    assert statuses(f"{name}={user.encode()}; {name}={user.encode()}") == (200, 200)
