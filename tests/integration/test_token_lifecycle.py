"""Access tokens expiring under load: one refresh across replicas, and no session ever lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, sync_store
from gateway.sessions.model import Session
from tests.support.checks import check, injected
from tests.support.login import browser_login
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

ACCESS_TOKEN_TTL = 6  # seconds; the dev IdPs issue short-lived, rotating tokens
JSON = {"Accept": "application/json"}


def short_refresh_settings(raw: dict) -> None:
    # A margin this wide makes a token aged to expire in 30 s due (the margin never exceeds
    # half a token's lifetime, so the IdPs' 6 s tokens are still due 3 s after issue).
    raw["tokens"] = {"refresh_margin": "60s", "refresh_lock_lease": "1s", "refresh_wait": "500ms"}


def start_stack_with_short_tokens(
    directory: Path, redis_server: RedisServer, echo_backend: EchoBackend
) -> Stack:
    """Two workers, the login app, and IdPs issuing tokens that soon need a refresh."""
    return start_stack(
        directory,
        redis_server,
        echo_backend,
        short_refresh_settings,
        with_login=True,
        idp_args=["--access-token-ttl", str(ACCESS_TOKEN_TTL)],
        authz_workers=2,
    )


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack_with_short_tokens(
        tmp_path_factory.mktemp("tokens"), redis_server, echo_backend
    )
    yield stack
    stack.stop()


@pytest.fixture
def logged_in(stack: Stack) -> tuple[requests.Session, SessionCredential]:
    for idp in stack.idps.values():
        idp.set_faults("ok")
    browser, page = browser_login(stack)
    assert page.status_code == 200
    return browser, SessionCredential.parse(browser.cookies.get(stack.cookie_name))


def stored(stack: Stack, credential: SessionCredential) -> Session:
    session = sync_store(stack.config).load(credential)
    assert session is not None
    return session


def age_token(stack: Stack, credential: SessionCredential, provider: str, expires_in: float) -> str:
    """Make the stored access token expire ``expires_in`` seconds from now; returns it."""
    session = stored(stack, credential)
    tokens = replace(
        session.tokens[provider],
        expires_at=int(time.time() + expires_in),
        obtained_at=int(time.time() - max(ACCESS_TOKEN_TTL, 2 * expires_in)),
    )
    sync_store(stack.config).save(credential, session.with_tokens(provider, tokens))
    return tokens.access_token


def cookie(stack: Stack, credential: SessionCredential) -> str:
    return f"{stack.cookie_name}={credential.encode()}"


def test_many_requests_at_expiry_across_two_replicas_cause_exactly_one_refresh(stack, logged_in):
    browser, credential = logged_in
    old = age_token(stack, credential, "primary", expires_in=1)
    stack.idps["primary"].reset()

    def call(_: int) -> requests.Response:
        return requests.get(
            stack.url + "/api/x", headers={**JSON, "Cookie": cookie(stack, credential)}, timeout=10
        )

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(call, range(48)))
    assert [r.status_code for r in responses] == [200] * 48
    assert stack.idps["primary"].stats()["refreshes"] == 1
    new = stored(stack, credential).tokens["primary"]
    assert new.access_token != old
    seen = {r.json()["headers"]["authorization"][0] for r in responses}
    assert seen == {f"Bearer {new.access_token}"}
    # The rotated refresh token was stored: the session keeps working and refreshes again.
    age_token(stack, credential, "primary", expires_in=1)
    assert call(0).status_code == 200
    assert stack.idps["primary"].stats()["refreshes"] == 2


def test_a_refresh_lock_without_a_ttl_delays_the_refresh_by_one_lease_at_most(stack, logged_in):
    _, credential = logged_in
    age_token(stack, credential, "primary", expires_in=-1)  # already expired
    lock = keyspace(stack.config).refresh_lock(credential.lookup_id, "primary")
    sync_client(stack.config.redis).set(lock, "persisted-by-an-operator")  # no TTL at all

    lease = stack.config.tokens.refresh_lock_lease
    started = time.monotonic()
    # 503s (never a logout) while the lock is held, then the refresh; generous for a busy box.
    while (answer := check(stack.workers[0].address, cookie(stack, credential))).status.code:
        assert answer.denied_response.status.code == 503
        assert time.monotonic() - started < lease + 20, "the lock without a TTL blocked for good"
        time.sleep(0.1)
    assert injected(answer) == f"Bearer {stored(stack, credential).tokens['primary'].access_token}"


def test_a_crashed_lock_holder_blocks_the_session_no_longer_than_the_lease(stack, logged_in):
    _, credential = logged_in
    age_token(stack, credential, "primary", expires_in=-1)  # already expired
    lock = keyspace(stack.config).refresh_lock(credential.lookup_id, "primary")
    sync_client(stack.config.redis).set(lock, "a-process-that-died", px=1000)

    first = check(stack.workers[1].address, cookie(stack, credential))
    assert first.denied_response.status.code == 503  # cannot refresh yet, never a logout
    # Redis's timer ends the lease; until then every answer is a 503, never a logout.
    deadline = time.monotonic() + 20
    while (after_lease := check(stack.workers[1].address, cookie(stack, credential))).status.code:
        assert after_lease.denied_response.status.code == 503
        assert time.monotonic() < deadline, "the dead holder's lock outlived its lease"
        time.sleep(0.1)
    assert (
        injected(after_lease)
        == f"Bearer {stored(stack, credential).tokens['primary'].access_token}"
    )


def test_killing_the_refreshing_process_mid_refresh_lets_another_refresh_after_the_lease(
    tmp_path, redis_server, echo_backend
):
    stack = start_stack_with_short_tokens(tmp_path, redis_server, echo_backend)
    try:
        browser, page = browser_login(stack)
        credential = SessionCredential.parse(browser.cookies.get(stack.cookie_name))
        age_token(stack, credential, "primary", expires_in=-1)
        stack.idps["primary"].set_faults("slow503", slow_seconds=3)  # the provider stalls
        holder, other = stack.workers
        check(holder.address, cookie(stack, credential))  # takes the lock, waits on the IdP
        holder.process.process.kill()  # crash mid-refresh, lock still held
        stack.idps["primary"].set_faults("ok")
        # The lease (1 s) runs out on Redis's timer, the holder being dead.
        lock = keyspace(stack.config).refresh_lock(credential.lookup_id, "primary")
        client = sync_client(stack.config.redis)
        deadline = time.monotonic() + 20
        while client.exists(lock):
            assert time.monotonic() < deadline, "the dead holder's lock outlived its lease"
            time.sleep(0.05)
        check(other.address, cookie(stack, credential))  # starts the refresh
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            response = check(other.address, cookie(stack, credential))
            if response.status.code == 0:
                break
            time.sleep(0.2)
        assert response.status.code == 0
        assert stored(stack, credential).tokens["primary"].expires_at > time.time()
    finally:
        stack.stop()


def test_provider_down_serves_the_still_valid_token_then_503_and_recovers(stack, logged_in):
    _, credential = logged_in
    old = age_token(stack, credential, "primary", expires_in=1.5)  # due, still valid
    stack.idps["primary"].set_faults("error503")
    try:
        still_valid = requests.get(
            stack.url + "/api/x", headers={**JSON, "Cookie": cookie(stack, credential)}, timeout=10
        )
        assert still_valid.status_code == 200
        assert still_valid.json()["headers"]["authorization"] == [f"Bearer {old}"]
        age_token(stack, credential, "primary", expires_in=-1)  # and now it has expired
        expired = requests.get(
            stack.url + "/api/x", headers={**JSON, "Cookie": cookie(stack, credential)}, timeout=10
        )
        assert expired.status_code == 503
        assert expired.json()["reason"] == "refresh_unavailable"
        assert stored(stack, credential).tokens["primary"].access_token == old  # intact
    finally:
        stack.idps["primary"].set_faults("ok")
    recovered = requests.get(
        stack.url + "/api/x", headers={**JSON, "Cookie": cookie(stack, credential)}, timeout=10
    )
    assert recovered.status_code == 200
    assert recovered.json()["headers"]["authorization"] != [f"Bearer {old}"]


def refused_refreshes(stack: Stack, provider: str, error: str = "invalid_scope") -> int:
    return stack.idps[provider].stats()["token_requests"].get("refresh_token", {}).get(error, 0)


def test_a_refused_refresh_is_not_retried_per_request_and_ends_in_a_login_not_503(stack, logged_in):
    _, credential = logged_in
    headers = {**JSON, "Cookie": cookie(stack, credential)}
    before = refused_refreshes(stack, "primary")
    old = age_token(stack, credential, "primary", expires_in=30)  # due (margin), still valid
    stack.idps["primary"].set_faults("refresh_invalid_scope")
    try:
        for _ in range(20):
            still_valid = requests.get(stack.url + "/api/x", headers=headers, timeout=10)
            assert still_valid.status_code == 200
            assert still_valid.json()["headers"]["authorization"] == [f"Bearer {old}"]
        # Once per worker at most, not once per request.
        assert 1 <= refused_refreshes(stack, "primary") - before <= 2

        age_token(stack, credential, "primary", expires_in=-1)
        for _ in range(10):
            expired = requests.get(stack.url + "/api/x", headers=headers, timeout=10)
            assert expired.status_code == 401, expired.text
            assert expired.json()["reason"] in ("provider_login_required", "token_expired")
        assert refused_refreshes(stack, "primary") - before <= 4
        assert stored(stack, credential).tokens["primary"].needs_login
        page = requests.get(
            stack.url + "/api/x",
            headers={"Accept": "text/html", "Cookie": cookie(stack, credential)},
            allow_redirects=False,
            timeout=10,
        )
        assert page.status_code == 302 and "/auth/login" in page.headers["location"]
    finally:
        stack.idps["primary"].set_faults("ok")


def test_a_revoked_refresh_token_asks_only_that_provider_for_a_new_login(stack, logged_in):
    browser, credential = logged_in
    session = stored(stack, credential)
    gitlab = stack.idps["gitlab"]
    requests.post(
        f"{gitlab.url}/revoke",
        data={"token": session.tokens["gitlab"].refresh_token},
        auth=("gw", "gitlab-client-secret"),
        timeout=10,
    ).raise_for_status()
    age_token(stack, credential, "gitlab", expires_in=-1)

    api = requests.get(
        stack.url + "/gitlab/api", headers={**JSON, "Cookie": cookie(stack, credential)}, timeout=10
    )
    assert api.status_code == 401
    assert api.json()["reason"] == "provider_login_required"
    primary = requests.get(
        stack.url + "/api/x", headers={**JSON, "Cookie": cookie(stack, credential)}, timeout=10
    )
    assert primary.status_code == 200  # the rest of the session is untouched
    assert stored(stack, credential).tokens["gitlab"].needs_login

    # The browser is sent through the gitlab login only, and gets a working session back.
    _, page = browser_login(stack, "/gitlab/projects", browser=browser)
    assert page.status_code == 200
    assert page.json()["headers"]["private-token"]


# Last in the module: each worker then pauses gitlab refreshes for 30 s.
def test_a_refusal_of_the_gateway_s_own_client_logs_nobody_out(stack, logged_in):
    _, credential = logged_in
    headers = {**JSON, "Cookie": cookie(stack, credential)}
    before = refused_refreshes(stack, "gitlab", "invalid_client")
    refresh_token = stored(stack, credential).tokens["gitlab"].refresh_token
    old = age_token(stack, credential, "gitlab", expires_in=30)
    stack.idps["gitlab"].set_faults("refresh_invalid_client")
    try:
        for _ in range(10):
            still_valid = requests.get(stack.url + "/gitlab/x", headers=headers, timeout=10)
            assert still_valid.status_code == 200
            assert still_valid.json()["headers"]["private-token"] == [old]
        assert 1 <= refused_refreshes(stack, "gitlab", "invalid_client") - before <= 2
        age_token(stack, credential, "gitlab", expires_in=-1)
        expired = requests.get(stack.url + "/gitlab/x", headers=headers, timeout=10)
        # Not "log in again": a login would fail the same way, and the session's refresh
        # token is still good once the client's secret is fixed.
        assert expired.status_code == 503
        assert refused_refreshes(stack, "gitlab", "invalid_client") - before <= 2  # paused
        tokens = stored(stack, credential).tokens["gitlab"]
        assert not tokens.needs_login and tokens.refresh_token == refresh_token
    finally:
        stack.idps["gitlab"].set_faults("ok")
