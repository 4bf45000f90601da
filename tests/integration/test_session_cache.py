"""Workers answer from memory, yet a logout or revocation is honoured at once everywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from tests.support.checks import wait_until_feed_serving
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, api_get, start_stack

pytestmark = pytest.mark.integration

CACHE_TTL = 30.0  # long on purpose: only invalidation, not expiry, can explain a quick 401


@pytest.fixture(scope="module")
def stack(tmp_path_factory, own_redis: RedisServer, echo_backend: EchoBackend) -> Iterator[Stack]:
    def long_cache(raw: dict) -> None:
        raw["ext_authz"]["session_cache_ttl"] = f"{CACHE_TTL}s"

    stack = start_stack(
        tmp_path_factory.mktemp("cache"), own_redis, echo_backend, long_cache, authz_workers=2
    )
    yield stack
    stack.stop()


def status(stack: Stack, credential: SessionCredential, http: requests.Session) -> int:
    return api_get(stack, credential, http).status_code


def warm(stack: Stack, credential: SessionCredential, http: requests.Session) -> None:
    """Enough requests that both workers hold the session in memory."""
    client = sync_client(stack.config.redis)
    client.config_resetstat()
    for _ in range(20):
        assert status(stack, credential, http) == 200
    reads = client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    assert reads <= 4  # one miss per worker, then memory


def test_a_logout_is_honoured_by_every_worker_within_a_fraction_of_a_second(stack):
    http = requests.Session()
    credential = stack.create_session(tokens={"primary": "tok"})
    warm(stack, credential, http)
    sync_store(stack.config).delete(credential)  # what logout and revocation do
    # Far below CACHE_TTL: only the invalidation explains a 401 this soon, even on a busy
    # machine (where a tight deadline would measure the machine, not the gateway).
    deadline = time.monotonic() + 5
    while status(stack, credential, http) != 401:
        assert time.monotonic() < deadline, "a worker kept serving a logged-out session"
        time.sleep(0.02)
    assert {status(stack, credential, http) for _ in range(10)} == {401}


def test_a_changed_session_is_re_read_by_every_worker(stack):
    http = requests.Session()
    credential = stack.create_session(tokens={"primary": "old-token"})
    warm(stack, credential, http)
    store = sync_store(stack.config)
    session = store.load(credential)
    assert session is not None
    store.save(
        credential,
        session.with_tokens(
            "primary", session.tokens["primary"].__class__(access_token="new-token")
        ),
    )

    def seen() -> set[str]:
        return {
            http.get(
                stack.url + "/api/x",
                headers={"Cookie": f"{stack.cookie_name}={credential.encode()}"},
                timeout=10,
            ).json()["headers"]["authorization"][0]
            for _ in range(10)
        }

    deadline = time.monotonic() + 5  # far below CACHE_TTL: the invalidation did it
    while (answers := seen()) != {"Bearer new-token"}:
        assert time.monotonic() < deadline, answers
        time.sleep(0.05)


def test_without_the_invalidation_feed_memory_is_not_trusted(stack, own_redis):
    http = requests.Session()
    credential = stack.create_session(tokens={"primary": "tok"})
    warm(stack, credential, http)
    own_redis.pause()
    try:
        # The workers notice their feed went silent (SILENCE_SECONDS) and stop answering
        # from memory: 503, not the cached 200, long before CACHE_TTL could explain it.
        deadline = time.monotonic() + 15
        while (answer := status(stack, credential, http)) != 503:
            assert answer == 200 and time.monotonic() < deadline, answer
            time.sleep(0.05)
    finally:
        own_redis.resume()
    for worker in stack.workers:  # the feeds come back, and with them the cache
        wait_until_feed_serving(worker.address)
    assert status(stack, credential, http) == 200


def test_garbage_on_the_invalidation_channel_does_not_stop_the_feed(stack):
    http = requests.Session()
    client = sync_client(stack.config.redis)
    channel = f"{stack.config.redis.key_prefix}invalidate"
    for garbage in (b"\xff\xfe\x00", b"", b"x" * 10_000):
        client.publish(channel, garbage)
    credential = stack.create_session(tokens={"primary": "tok"})
    warm(stack, credential, http)
    sync_store(stack.config).delete(credential)
    # Far below CACHE_TTL: only the invalidation explains a 401 this soon, even on a busy
    # machine (where a tight deadline would measure the machine, not the gateway).
    deadline = time.monotonic() + 5
    while status(stack, credential, http) != 401:
        assert time.monotonic() < deadline, "the feed stopped applying invalidations"
        time.sleep(0.02)
