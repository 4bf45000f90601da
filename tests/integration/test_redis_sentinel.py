"""The gateway on Redis Sentinel: requests keep flowing while the master fails over.

During the failover checks may answer 503 (never 401: nobody is logged out), for a bounded
time; afterwards the same sessions work against the new master and new ones can be written.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.contract import SESSION_FEED_HEALTH_SERVICE
from gateway.redis.clients import MASTER_CHECK_SECONDS
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import async_store, session_codec, sync_store
from tests.support.redis_topologies import SentinelGroup
from tests.support.servers import EchoBackend
from tests.support.stack import Stack, api_get, start_stack_on

pytestmark = pytest.mark.integration

# Sentinel needs ~1 s (down-after-milliseconds) to see the master gone, then elects a leader
# and promotes the replica; clients find the new master on their next connection.
MAX_UNAVAILABLE_SECONDS = 15
STREAM_THREADS = 4


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the request was sent
    status: int


class RequestStream:
    """A few threads sending checks through Envoy, round robin over the sessions."""

    def __init__(self, stack: Stack, credentials: list[SessionCredential]) -> None:
        self._stack = stack
        self._credentials = credentials
        self._stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(offset,), daemon=True)
            for offset in range(STREAM_THREADS)
        ]

    def __enter__(self) -> RequestStream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, offset: int) -> None:
        http = requests.Session()
        count = offset
        while not self._stop.is_set():
            credential = self._credentials[count % len(self._credentials)]
            count += 1
            sent = time.monotonic()
            try:
                status = api_get(self._stack, credential, http).status_code
            except requests.RequestException:
                status = 0  # Envoy itself never failed in these tests; counted if it does
            with self._lock:
                self.outcomes.append(Outcome(sent, status))
            time.sleep(0.01)

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= moment]


def feed_live(stack: Stack) -> bool:
    """ext_authz reports its feed under a health service name of its own."""
    with grpc.insecure_channel(stack.ext_authz.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SESSION_FEED_HEALTH_SERVICE), timeout=2
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` holds; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"gave up waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path_factory.mktemp("redis-sentinel"), sentinels=3).start()
    yield group
    group.stop()


@pytest.fixture
def stack(
    tmp_path_factory: pytest.TempPathFactory, group: SentinelGroup, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack_on(tmp_path_factory.mktemp("sentinel-stack"), group, echo_backend)
    yield stack
    stack.stop()


@pytest.mark.parametrize("kill", [True, False], ids=["master-crashes", "operator-failover"])
def test_a_failover_costs_a_bounded_503_window_and_no_session(stack, group, kill, capsys):
    credentials = [
        stack.create_session(f"user-{n}", tokens={"primary": f"tok-{n}"}) for n in range(6)
    ]
    group.replicate()  # WAIT 1: the replica has every session before the master goes
    wait_until(lambda: feed_live(stack), 5, "the invalidation feed")
    for credential in credentials:
        assert api_get(stack, credential).status_code == 200

    with RequestStream(stack, credentials) as stream:
        time.sleep(0.5)
        failed_at = time.monotonic()
        old_master = group.failover(kill=kill)
        new_master = group.wait_for_new_master(old_master)
        promoted_after = time.monotonic() - failed_at
        # Every check answers 200 again, for every session: wait for a clean second.
        wait_until(lambda: _clean_second(stream, failed_at), MAX_UNAVAILABLE_SECONDS, "recovery")
    outcomes = stream.since(failed_at)
    unavailable = [o.at - failed_at for o in outcomes if o.status != 200]
    window = max(unavailable, default=0.0)
    with capsys.disabled():
        print(
            f"\nsentinel failover ({'crash' if kill else 'SENTINEL FAILOVER'}): "
            f"{len(outcomes)} checks, {len(unavailable)} not 200, last one "
            f"{window:.2f}s after the failover began; replica promoted after "
            f"{promoted_after:.2f}s; {old_master} -> {new_master}"
        )
    assert {o.status for o in outcomes} <= {200, 503}  # never 401: nobody was logged out
    assert window < MAX_UNAVAILABLE_SECONDS

    # The same sessions, from the new master, all still there.
    store = sync_store(stack.config)
    for credential in credentials:
        assert api_get(stack, credential).status_code == 200
        assert store.load(credential) is not None
    with group.master() as master:
        codec = session_codec(stack.config)
        assert all(master.exists(codec.record_key(c)) for c in credentials)

    # The login app's writes (the sync store) reach the new master, and ext_authz reads them
    # there: at once after a crash; after an operator's failover within its next look at the
    # sentinels, since the old master keeps answering, as a master, for several seconds.
    newcomer = stack.create_session("newcomer", tokens={"primary": "tok-new"})
    wait_until(
        lambda: api_get(stack, newcomer).status_code == 200,
        MASTER_CHECK_SECONDS + 1,
        "ext_authz to read from the new master",
    )
    # The invalidation feed moved there too: a logout ends a cached session at once.
    wait_until(lambda: feed_live(stack), 5, "the invalidation feed on the new master")
    assert api_get(stack, credentials[0]).status_code == 200  # cached for 60 s
    assert store.delete(credentials[0], store.load(credentials[0]))
    assert wait_until(lambda: api_get(stack, credentials[0]).status_code == 401, 2, "401") < 1


def _clean_second(stream: RequestStream, failed_at: float) -> bool:
    """True once a full second of checks, after the failover, all answered 200."""
    now = time.monotonic()
    if now - failed_at < 1.5:
        return False
    recent = stream.since(now - 1.0)
    return len(recent) > 0 and all(o.status == 200 for o in recent)


def test_clients_opened_before_an_operator_failover_move_to_the_new_master(stack, group):
    """The old master stays up, still a master, for several seconds after SENTINEL FAILOVER:
    clients must stop using connections to it even when nothing fails on them."""
    before = stack.create_session("before", tokens={"primary": "t"})
    group.replicate()
    login_app_store = sync_store(stack.config)  # like the login app's, opened before
    assert login_app_store.load(before) is not None

    async def scenario() -> None:
        ext_authz_store = async_store(stack.config)
        try:
            assert await ext_authz_store.load(before) is not None  # a connection to the old
            old = group.failover(kill=False)
            new = group.wait_for_new_master(old)
            with group.node(old) as old_master:
                assert old_master.info("replication")["role"] == "master"  # not demoted yet
            time.sleep(MASTER_CHECK_SECONDS)  # the login app's pool looks again by now
            after = stack.create_session("after", tokens={"primary": "t"})
            await ext_authz_store.keep_current()  # what ext_authz's feed does every second
            assert await ext_authz_store.load(after) is not None
            # A write through the long-lived sync client lands on the new master, not on the
            # old one (whose writes Redis throws away when it finally demotes it).
            written = SessionCredential.generate()
            session = login_app_store.load(before)
            assert session is not None
            login_app_store.save(written, session)
            with group.node(new) as new_master:
                assert new_master.exists(session_codec(stack.config).record_key(written))
        finally:
            await ext_authz_store.close()

    asyncio.run(scenario())
