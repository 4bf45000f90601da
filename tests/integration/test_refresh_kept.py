"""A refresh the provider answered is kept, whatever happens to Redis or how long it took.

The dev IdP rotates refresh tokens: a refresh whose answer is dropped leaves the session with
a retired refresh token, and its next refresh gets ``invalid_grant`` (a new login). These
tests break Redis's writes, or stall the IdP past requests' default read timeout, while a
refresh is answered, and require that the session keeps working on the new tokens and the
IdP never sees a retired refresh token.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from gateway.errors import StoreUnavailable
from gateway.providers.transport import HTTP_TIMEOUT
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, sync_store
from gateway.sessions.model import Session
from tests.support.checks import check, injected
from tests.support.dev_idp import DevIdp
from tests.support.login import browser_login
from tests.support.polling import wait_for
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

_, DEFAULT_READ_TIMEOUT = HTTP_TIMEOUT


def refresh_settings(raw: dict) -> None:
    # A token aged to expire in 30 s is due (margin 60 s) and still serves meanwhile.
    raw["tokens"] = {"refresh_margin": "60s", "refresh_lock_lease": "2s", "refresh_wait": "500ms"}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("refresh-kept"),
        own_redis,
        echo_backend,
        refresh_settings,
        with_login=True,
        authz_workers=2,
    )
    yield stack
    stack.stop()


@pytest.fixture
def raw_redis(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.config.redis.url)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


@pytest.fixture
def primary(stack: Stack) -> Iterator[DevIdp]:
    idp = stack.idps["primary"]
    idp.reset()
    yield idp
    idp.set_faults("ok")


@pytest.fixture
def credential(stack: Stack, primary: DevIdp) -> SessionCredential:
    browser, page = browser_login(stack)
    assert page.status_code == 200, page.text[:500]
    return SessionCredential.parse(browser.cookies.get(stack.cookie_name))


def stored(stack: Stack, credential: SessionCredential) -> Session:
    """The session as Redis has it (read again when the busy machine makes one read slower
    than redis.timeout: the test reads Redis, it does not test this read)."""
    for attempt in range(5):
        try:
            session = sync_store(stack.config).load(credential)
            break
        except StoreUnavailable:
            if attempt == 4:
                raise
    assert session is not None
    return session


def age_token(stack: Stack, credential: SessionCredential, expires_in: float = 30) -> str:
    """Make the stored access token due for a refresh (still valid for ``expires_in``)."""
    session = stored(stack, credential)
    tokens = replace(
        session.tokens["primary"],
        expires_at=int(time.time() + expires_in),
        obtained_at=int(time.time() - 600),
    )
    sync_store(stack.config).save(credential, session.with_tokens("primary", tokens))
    return tokens.access_token


def cookie(stack: Stack, credential: SessionCredential) -> str:
    return f"{stack.cookie_name}={credential.encode()}"


def bearer(stack: Stack, worker: int, credential: SessionCredential) -> str:
    answer = check(stack.workers[worker].address, cookie(stack, credential), timeout=10)
    assert answer.status.code == 0, answer.denied_response.status.code
    token = injected(answer)
    assert token is not None
    return token.removeprefix("Bearer ")


def refused_refreshes(idp: DevIdp) -> dict[str, int]:
    outcomes = idp.stats()["token_requests"].get("refresh_token", {})
    return {outcome: n for outcome, n in outcomes.items() if outcome != "ok"}


def assert_refreshes_again(stack: Stack, credential: SessionCredential, primary: DevIdp) -> None:
    """The stored refresh token is the IdP's current one: one more refresh works."""
    before = stored(stack, credential).tokens["primary"].access_token
    age_token(stack, credential)
    refreshes = primary.stats()["refreshes"]
    bearer(stack, 1, credential)
    wait_for(
        lambda: stored(stack, credential).tokens["primary"].access_token != before,
        "the next refresh did not happen",
    )
    assert primary.stats()["refreshes"] == refreshes + 1
    assert not stored(stack, credential).tokens["primary"].needs_login
    assert refused_refreshes(primary) == {}


def test_tokens_answered_while_redis_refuses_writes_are_served_then_stored(
    stack, primary, raw_redis, credential
):
    old = age_token(stack, credential)
    lock = keyspace(stack.config).refresh_lock(credential.lookup_id, "primary")
    # Slow enough that Redis can be filled up between the lock and the IdP's answer.
    primary.set_faults("slow", slow_seconds=2)
    assert bearer(stack, 0, credential) == old  # the check stops waiting; the refresh goes on
    wait_for(lambda: raw_redis.exists(lock), "the refresh took no lock", 10)
    # Redis at maxmemory with noeviction: reads work, writes fail with OOM.
    raw_redis.config_set("maxmemory-policy", "noeviction")
    raw_redis.config_set("maxmemory", int(raw_redis.info("memory")["used_memory"]) // 2)
    wait_for(lambda: primary.stats()["refreshes"] == 1, "the IdP never answered", 15)
    primary.set_faults("ok")

    # The IdP has retired the old refresh token; Redis still has it. The refreshing worker
    # serves the new token from memory, the other one the old (still valid) token, and
    # neither sends the retired refresh token anywhere.
    wait_for(lambda: bearer(stack, 0, credential) != old, "the new token was not served", 10)
    new = bearer(stack, 0, credential)
    for _ in range(5):
        assert bearer(stack, 1, credential) == old
        assert bearer(stack, 0, credential) == new
    assert stored(stack, credential).tokens["primary"].access_token == old
    assert refused_refreshes(primary) == {}

    raw_redis.config_set("maxmemory", 0)
    wait_for(
        lambda: stored(stack, credential).tokens["primary"].access_token == new,
        "the refreshed tokens never reached Redis",
        15,
    )
    assert bearer(stack, 1, credential) == new
    assert primary.stats()["refreshes"] == 1
    assert_refreshes_again(stack, credential, primary)


def test_an_idp_slower_than_the_default_read_timeout_completes_the_refresh(
    stack, primary, credential
):
    old = age_token(stack, credential)
    stall = DEFAULT_READ_TIMEOUT + 3
    primary.set_faults("slow", slow_seconds=stall)
    started = time.monotonic()
    assert bearer(stack, 0, credential) == old  # the old token serves meanwhile
    wait_for(
        lambda: stored(stack, credential).tokens["primary"].access_token != old,
        "the slow refresh was never stored",
        stall + 20,
    )
    assert time.monotonic() - started >= stall - 0.5
    primary.set_faults("ok")
    assert primary.stats()["refreshes"] == 1
    assert refused_refreshes(primary) == {}
    new = stored(stack, credential).tokens["primary"].access_token
    assert bearer(stack, 1, credential) == new
    assert_refreshes_again(stack, credential, primary)


def test_a_stored_refresh_survives_redis_killed_and_restarted_with_the_shipped_persistence(
    tmp_path, echo_backend
):
    redis_server = RedisServer(tmp_path / "redis-data", persistence=True)
    (tmp_path / "redis-data").mkdir()
    redis_server.start()
    stack = start_stack(
        tmp_path, redis_server, echo_backend, refresh_settings, with_login=True, authz_workers=2
    )
    try:
        primary = stack.idps["primary"]
        browser, page = browser_login(stack)
        assert page.status_code == 200, page.text[:500]
        credential = SessionCredential.parse(browser.cookies.get(stack.cookie_name))
        old = age_token(stack, credential)
        bearer(stack, 0, credential)
        wait_for(
            lambda: stored(stack, credential).tokens["primary"].access_token != old,
            "the refresh was never stored",
        )
        new = stored(stack, credential).tokens["primary"].access_token

        # The process handle is the one way to SIGKILL it: no shutdown, no final save.
        redis_server._process.signal(signal.SIGKILL)
        assert redis_server._process.process is not None
        redis_server._process.process.wait(10)
        redis_server.start()

        # Stale pooled connections may give 503s for a moment; never a logout, never the
        # retired refresh token.
        def answers() -> bool:
            reply = check(stack.workers[1].address, cookie(stack, credential), timeout=10)
            assert reply.status.code == 0 or reply.denied_response.status.code == 503, reply
            return reply.status.code == 0

        wait_for(answers, "the session never answered again after the restart")
        assert bearer(stack, 1, credential) == new
        assert_refreshes_again(stack, credential, primary)
    finally:
        stack.stop()
        redis_server.stop()
