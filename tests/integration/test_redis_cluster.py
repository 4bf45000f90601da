"""The gateway on a three-master Redis Cluster: sessions spread over every slot range, and every
operation that touches several keys (indexes, locks, login attempts, device codes) still works."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.contract import SESSION_FEED_HEALTH_SERVICE
from gateway.crypto import RecordCipher
from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import async_store, keyspace, session_admin, session_codec, sync_store
from gateway.sessions.model import TokenSet
from login_app.attempts import AttemptStore, new_binding
from login_app.device_codes import PollResult
from login_app.device_store import DeviceCodeStore
from tests.support.checks import check
from tests.support.redis_topologies import RedisCluster3
from tests.support.servers import TEST_SECRET, EchoBackend
from tests.support.stack import Stack, api_get, start_stack_on

pytestmark = pytest.mark.integration

USERS = [f"user-{n}" for n in range(24)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    cluster = RedisCluster3(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cluster: RedisCluster3, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack_on(tmp_path_factory.mktemp("cluster-stack"), cluster, echo_backend)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def sessions(stack: Stack) -> dict[str, SessionCredential]:
    """One session per user, each with its own token."""
    return {user: stack.create_session(user, tokens={"primary": f"tok-{user}"}) for user in USERS}


def wait_until_feed_live(stack: Stack) -> None:
    """ext_authz reports its feed SERVING (under a health service name of its own) only while
    the feed is subscribed, i.e. while it may answer from its session cache."""
    with grpc.insecure_channel(stack.ext_authz.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 5
        request = health_pb2.HealthCheckRequest(service=SESSION_FEED_HEALTH_SERVICE)
        while health.Check(request, timeout=2).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the invalidation feed never came up"
            time.sleep(0.05)


def wait_for_status(stack: Stack, credential: SessionCredential, status: int) -> float:
    """Seconds until a request with ``credential`` answers ``status`` (fails after 3 s)."""
    started = time.monotonic()
    while (answer := api_get(stack, credential).status_code) != status:
        assert time.monotonic() - started < 3, f"still {answer}, expected {status}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_sessions_of_many_users_land_on_every_master_and_are_allowed(stack, cluster, sessions):
    records = cluster.keys_by_node(stack.config.redis.key_prefix + "s:*")
    indexes = cluster.keys_by_node(stack.config.redis.key_prefix + "user:*")
    assert all(records.values()), records  # each master holds some of the records
    assert all(indexes.values()), indexes  # ... and some of the user indexes
    for user, credential in sessions.items():
        response = api_get(stack, credential)
        assert response.status_code == 200, (user, response.text)
        assert response.json()["headers"]["authorization"] == [f"Bearer tok-{user}"]


def test_operators_list_and_revoke_sessions_on_every_master(stack, cluster, sessions):
    admin = session_admin(stack.config)
    listed = {summary.lookup_id: summary.subject for summary in admin.list_sessions()}
    assert {c.lookup_id: user for user, c in sessions.items()}.items() <= listed.items()

    victim, other = sessions["user-1"], sessions["user-2"]
    wait_until_feed_live(stack)
    assert api_get(stack, victim).status_code == 200  # now in ext_authz's memory
    assert admin.revoke_user("user-1") == 1
    # The invalidation reached ext_authz through the cluster's pub/sub: no 60 s wait.
    assert wait_for_status(stack, victim, 401) < 1
    assert api_get(stack, other).status_code == 200

    single = sessions["user-3"]
    assert api_get(stack, single).status_code == 200
    revoked = admin.revoke_session(single.lookup_id[:12])
    assert revoked is not None and revoked.subject == "user-3"
    assert wait_for_status(stack, single, 401) < 1
    assert admin.list_sessions("user-3") == []


def test_logout_deletes_the_record_and_its_index_entries_across_slots(stack):
    store = sync_store(stack.config)
    credential = stack.create_session("leaving", tokens={"primary": "t"})
    session = store.load(credential)
    assert session is not None and api_get(stack, credential).status_code == 200

    assert store.delete(credential, session) is True
    assert wait_for_status(stack, credential, 401) < 1
    assert store.lookup_ids_of_user("leaving") == []
    assert store.delete(credential, session) is False  # a second logout finds nothing

    first, second = (stack.create_session("everywhere") for _ in range(2))
    assert store.delete_user_sessions("everywhere") == 2
    assert store.load(first) is None and store.load(second) is None


def test_refresh_lock_and_token_replacement_work_on_the_sessions_slot(stack, cluster, sessions):
    credential = sessions["user-5"]
    codec = session_codec(stack.config)
    lock_key = codec.keys.refresh_lock(credential.lookup_id, "primary")
    assert cluster.owner_of(lock_key) == cluster.owner_of(codec.record_key(credential))
    fresh = TokenSet(access_token="tok-refreshed", expires_at=int(time.time()) + 600)

    async def refresh_like_ext_authz() -> None:
        store = async_store(stack.config)
        a, b = (store.refresh_lock(credential.lookup_id, "primary", 5000) for _ in range(2))
        assert a.key == b.key == lock_key and a.owner != b.owner
        try:
            assert await a.acquire()
            assert not await b.acquire()
            assert await a.extend()
            assert not await b.extend()
            updated = await store.replace_tokens(credential, "primary", fresh)
            assert updated is not None and updated.tokens["primary"] == fresh
            await b.release()  # not the owner: nothing happens
            assert not await b.acquire()
            await a.release()
            assert await b.acquire()
            await b.release()
            reloaded = await store.reload(credential)
            assert reloaded is not None and reloaded.tokens["primary"] == fresh
            gone = SessionCredential.generate()
            assert await store.replace_tokens(gone, "primary", fresh) is None  # never re-created
        finally:
            await store.close()

    asyncio.run(refresh_like_ext_authz())
    assert sync_store(stack.config).load(credential).tokens["primary"] == fresh


def test_login_attempts_and_cli_device_codes_work_on_a_cluster(stack):
    client = sync_client(stack.config.redis)
    keys = keyspace(stack.config)
    cipher = RecordCipher((TEST_SECRET,))

    attempts = AttemptStore(client, cipher, keys)
    binding = new_binding()
    attempt = attempts.start("/after", ["primary"])
    attempt.begin_step()
    attempts.save(attempt, binding)
    assert attempts.consume(attempt.state, binding).attempt_id == attempt.attempt_id
    attempts.finish(attempt)

    devices = DeviceCodeStore(client, cipher, keys)
    now = time.time()
    assert devices.take("start", "10.0.0.9", limit=5, window=60)
    devices.give_back("start", "10.0.0.9")  # a Lua script on the counter's own slot
    device_code, user_code = devices.start(now)
    record = devices.find(user_code)
    assert record is not None and record.pending_at(now)
    assert devices.poll(device_code, now)[0] is PollResult.AUTHORIZATION_PENDING
    assert devices.approve(record.device_id, "gws_credential", int(now) + 3600, now + 10)
    result, grant = devices.poll(device_code, now + 20)
    assert result is PollResult.APPROVED and grant is not None
    assert grant.credential == "gws_credential"
    assert devices.poll(device_code, now + 30)[0] is PollResult.INVALID_GRANT  # handed out once


def test_a_silent_master_costs_503_for_its_own_sessions_only(stack, cluster):
    prefix = stack.config.redis.key_prefix + "s:"
    fresh = [stack.create_session(f"fresh-{n}", tokens={"primary": "t"}) for n in range(12)]
    by_owner: dict[int, SessionCredential] = {}
    for credential in fresh:
        by_owner.setdefault(cluster.owner_of(prefix + "{" + credential.lookup_id + "}"), credential)
    silent_port, elsewhere_port = sorted(by_owner)[:2]

    def decide(credential: SessionCredential) -> external_auth_pb2.CheckResponse:
        return check(stack.ext_authz.address, f"{stack.cookie_name}={credential.encode()}")

    cluster.pause(silent_port)
    try:
        # Well inside cluster-node-timeout: the cluster itself still considers the node up.
        started = time.monotonic()
        on_silent = decide(by_owner[silent_port])
        elapsed = time.monotonic() - started
        elsewhere = decide(by_owner[elsewhere_port])
        through_envoy = api_get(stack, by_owner[silent_port])
    finally:
        cluster.resume(silent_port)
    # ext_authz's own answer: 503 within a command timeout, not a hang and never a 401.
    assert on_silent.denied_response.status.code == 503
    assert json.loads(on_silent.denied_response.body)["reason"] == "redis_unavailable"
    assert elapsed < stack.config.redis.timeout + 0.2
    assert elsewhere.status.code == 0  # allowed: the other masters answer as usual
    assert through_envoy.status_code == 503
    wait_for_status(stack, by_owner[silent_port], 200)  # same session, no new login
