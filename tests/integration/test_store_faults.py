"""Redis failing under the gateway: it must answer 503, never log anyone out, and recover."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import contract
from gateway.sessions.credentials import SessionCredential
from tests.support.servers import EchoBackend, ExtAuthzServer, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("faults"), own_redis, echo_backend)
    yield stack
    stack.stop()


def api_get(stack: Stack, cookie: str) -> requests.Response:
    return requests.get(
        stack.url + "/api/x",
        headers={"Cookie": f"{stack.cookie_name}={cookie}", "Accept": "application/json"},
        timeout=10,
    )


def test_paused_redis_gives_503_within_envoys_timeout_and_the_session_survives(stack, own_redis):
    cookie = stack.create_session(tokens={"primary": "tok"}).encode()
    stack_cookie_unseen = stack.create_session(tokens={"primary": "tok"}).encode()
    assert api_get(stack, cookie).status_code == 200

    own_redis.pause()
    try:
        # A session used a moment ago may be answered from a worker's memory for up to
        # session_cache_ttl; the workers notice the silent Redis and stop trusting it.
        deadline = time.monotonic() + stack.config.ext_authz.session_cache_ttl + 20
        while (answer := api_get(stack, cookie).status_code) != 503:
            assert answer == 200 and time.monotonic() < deadline, answer
            time.sleep(0.05)
        started = time.monotonic()
        response = api_get(stack, cookie)
        elapsed = time.monotonic() - started
        never_seen = api_get(stack, stack_cookie_unseen)
    finally:
        own_redis.resume()
    assert response.status_code == 503
    assert never_seen.status_code == 503
    assert elapsed < stack.config.ext_authz.timeout + 0.5
    assert "set-cookie" not in response.headers  # nobody was logged out

    # Same session, no new login: it works again once Redis answers.
    deadline = time.monotonic() + 5
    while (status := api_get(stack, cookie).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_redis_refusing_connections_gives_503(tmp_path, echo_backend):
    dead_redis = RedisServer(tmp_path)  # never started: its port refuses connections
    stack = start_stack(tmp_path, dead_redis, echo_backend)
    try:
        response = requests.get(
            stack.url + "/api/x",
            headers={"Cookie": f"{stack.cookie_name}={'gws_' + 'A' * 43 + '.' + 'A' * 43}"},
            timeout=10,
        )
        assert response.status_code == 503
        assert response.json()["reason"] == "redis_unavailable"
    finally:
        stack.stop()


def test_ext_authz_down_means_503_never_a_request_through(tmp_path, own_redis, echo_backend):
    stack = start_stack(tmp_path, own_redis, echo_backend)
    try:
        cookie = stack.create_session(tokens={"primary": "tok"}).encode()
        stack.ext_authz.stop()
        response = api_get(stack, cookie)
        assert response.status_code == 503
        assert "tok" not in response.text
    finally:
        stack.stop()


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)


def test_grpc_health_and_reflection_are_served(tmp_path, own_redis, echo_backend):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stack = start_stack(tmp_path, own_redis, echo_backend)
    try:
        deadline = time.monotonic() + 3
        while _health(stack.ext_authz.address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with grpc.insecure_channel(stack.ext_authz.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=2)))
        names = {service.name for service in reply.list_services_response.service}
        assert "envoy.service.auth.v3.Authorization" in names
    finally:
        stack.stop()


def test_sigterm_lets_in_flight_checks_finish(tmp_path, own_redis, echo_backend):
    """A check already waiting on Redis when SIGTERM arrives still gets its answer."""
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    stack = start_stack(tmp_path, own_redis, echo_backend)
    stack.stop()
    server = ExtAuthzServer(stack.config_path).start()

    def check_request(cookie: str) -> external_auth_pb2.CheckRequest:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path = "GET", "/api/x"
        http.headers["cookie"] = f"{stack.cookie_name}={cookie}"
        request.attributes.context_extensions[contract.ROUTE_KEY] = "api"
        return request

    warm = check_request(stack.create_session(tokens={"primary": "tok"}).encode())
    # Not seen before, so not in the worker's memory: its check must wait for Redis.
    request = check_request(stack.create_session(tokens={"primary": "tok"}).encode())
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert stub.Check(warm, timeout=5).status.code == 0  # connected and serving
            own_redis.pause()  # the next check now waits for Redis' timeout
            try:
                in_flight = stub.Check.future(request, timeout=5)
                time.sleep(0.1)
                server.signal(signal.SIGTERM)
                reply = in_flight.result()
            finally:
                own_redis.resume()
        assert reply.denied_response.status.code == 503  # answered, not cut off
        assert server.process.process is not None
        assert server.process.process.wait(10) == 0
    finally:
        server.stop()


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_stalled_redis_under_load_piles_up_no_work_and_no_memory(stack, own_redis):
    """Every check waits at most redis.timeout; nothing queues behind a frozen Redis."""
    from concurrent.futures import ThreadPoolExecutor

    def call(_: int) -> int:
        cookie = SessionCredential.generate().encode()  # never cached: each one asks Redis
        return api_get(stack, cookie).status_code

    pid = stack.ext_authz.process.pid
    before = _rss_mib(pid)
    own_redis.pause()
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            statuses = list(pool.map(call, range(400)))
        elapsed = time.monotonic() - started
        grown = _rss_mib(pid) - before
    finally:
        own_redis.resume()
    assert set(statuses) == {503}
    # 400 checks, 32 at a time, each cut off by Envoy's 1 s timeout at the latest.
    assert elapsed < 400 / 32 * stack.config.ext_authz.timeout + 5
    assert grown < 30, f"ext_authz grew {grown:.1f} MiB while Redis was frozen"
    cookie = stack.create_session(tokens={"primary": "tok"}).encode()
    deadline = time.monotonic() + 5
    while api_get(stack, cookie).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
