"""What operators rely on: metrics, log lines without secrets, health, and reload."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import grpc
import pytest
import redis
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.contract import SESSION_FEED_HEALTH_SERVICE
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, sync_store
from tests.support.checks import check, injected
from tests.support.login import browser_login
from tests.support.metrics import metrics, sample
from tests.support.servers import TEST_SECRET, EchoBackend, RedisServer
from tests.support.stack import GITLAB_SECRET, PRIMARY_SECRET, Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory, own_redis: RedisServer, echo_backend: EchoBackend) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("ops"), own_redis, echo_backend, with_login=True)
    yield stack
    stack.stop()


def test_metrics_count_decisions_logins_and_redis_without_user_data(stack):
    browser, page = browser_login(stack, "/api/metrics-run")
    assert page.status_code == 200
    requests.get(stack.url + "/api/x", headers={"Accept": "application/json"}, timeout=5)

    authz = metrics(stack.ext_authz.metrics_address)
    assert (
        sample(authz, "gateway_decisions_total", route="api", decision="allow", reason="allowed")
        >= 1
    )
    assert (
        sample(authz, "gateway_decisions_total", route="api", decision="deny", reason="no_session")
        >= 1
    )
    assert sample(authz, "gateway_check_duration_seconds_count", transport="grpc") >= 2
    assert sample(authz, "gateway_redis_seconds_count", operation="loading a session") >= 1

    login = metrics(stack.config.login_app.metrics_listen)
    assert sample(login, "gateway_logins_total", provider="primary", result="ok") >= 1
    assert sample(login, "gateway_logins_total", provider="gitlab", result="ok") >= 1
    for text in (authz, login):
        assert "alice" not in text.lower()  # no user ids, names or paths as labels
        assert "/api/" not in text


def test_logs_of_a_full_login_and_requests_contain_no_secret(stack):
    browser, _ = browser_login(stack, "/gitlab/projects")
    credential = SessionCredential.parse(browser.cookies.get(stack.cookie_name))
    session = sync_store(stack.config).load(credential)
    assert session is not None
    browser.get(stack.url + "/api/x", timeout=5)
    browser.post(stack.url + "/api/x", headers={"Origin": "https://evil.example"}, timeout=5)
    requests.get(
        stack.url + "/api/x", headers={"Authorization": f"Bearer {credential.encode()}"}, timeout=5
    )
    browser.get(stack.url + "/auth/logout", timeout=5)

    secrets = {credential.encode(), TEST_SECRET, PRIMARY_SECRET, GITLAB_SECRET}
    for tokens in session.tokens.values():
        secrets |= {tokens.access_token, tokens.refresh_token, tokens.id_token} - {""}
    logs = {
        "ext_authz": stack.ext_authz.output(),
        "login_app": stack.login_app.output() if stack.login_app else "",
        "envoy": stack.envoy.output(),
    }
    assert '"decision": "deny"' in logs["ext_authz"]  # denials are logged by default;
    assert '"decision": "allow"' not in logs["ext_authz"]  # allows are in Envoy's access log
    for component, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {component}'s log"
        for line in text.splitlines():
            if line.startswith("{") and component != "envoy":
                json.loads(line)  # one JSON object per line


AUTHORIZATION = "envoy.service.auth.v3.Authorization"


def grpc_health_of(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


def grpc_health(address: str) -> int:
    return grpc_health_of(address, "")


def wait_for(condition, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_a_redis_outage_leaves_health_serving_and_users_get_the_gateways_503(stack, own_redis):
    """Liveness and readiness do not follow Redis (deploy/README.md, Probes): a frozen Redis
    restarts nothing and keeps every pod in the Service, where ext_authz answers with its own
    503; only the login app's /auth/ready, which no probe uses, says logins cannot work."""
    serving = health_pb2.HealthCheckResponse.SERVING
    ready = stack.url + "/auth/ready"
    credential = stack.create_session(tokens={"primary": "p-tok"})
    cookie = {"Cookie": f"{stack.cookie_name}={credential.encode()}", "Accept": "application/json"}
    assert grpc_health(stack.ext_authz.address) == serving
    assert requests.get(ready, timeout=5).status_code == 200
    own_redis.pause()
    try:
        # The cache may answer for a moment; then every check needs Redis, and gets our 503.
        wait_for(
            lambda: (
                requests.get(stack.url + "/api/x", headers=cookie, timeout=5).status_code == 503
            ),
            timeout=20,
        )
        reply = requests.get(stack.url + "/api/x", headers=cookie, timeout=5)
        assert reply.json()["reason"] == "redis_unavailable" and reply.headers["retry-after"]
        # Once the session feed has noticed (it reports under a name of its own) ...
        wait_for(
            lambda: (
                grpc_health_of(stack.ext_authz.address, SESSION_FEED_HEALTH_SERVICE)
                == health_pb2.HealthCheckResponse.NOT_SERVING
            ),
            timeout=20,
        )
        # ... what the probes ask stays SERVING.
        assert grpc_health(stack.ext_authz.address) == serving
        assert grpc_health_of(stack.ext_authz.address, AUTHORIZATION) == serving
        not_ready = requests.get(ready, timeout=5)
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["redis"] == "unreachable"
        assert requests.get(stack.url + "/auth/health", timeout=5).status_code == 200  # alive
    finally:
        own_redis.resume()
    wait_for(lambda: requests.get(ready, timeout=5).status_code == 200)
    wait_for(
        lambda: grpc_health_of(stack.ext_authz.address, SESSION_FEED_HEALTH_SERVICE) == serving
    )
    assert requests.get(stack.url + "/api/x", headers=cookie, timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("refuse", "allow", "error"),
    [
        pytest.param(
            [
                ("CONFIG", "SET", "maxmemory-policy", "noeviction"),
                ("CONFIG", "SET", "maxmemory", "1"),
            ],
            [("CONFIG", "SET", "maxmemory", "0")],
            "maxmemory",
            id="maxmemory-noeviction",
        ),
        pytest.param(
            # A replica of a master that is not there: what a failed-over-from node becomes.
            [("REPLICAOF", "127.0.0.1", "1")],
            [("REPLICAOF", "NO", "ONE")],
            "read only replica",
            id="read-only-replica",
        ),
    ],
)
def test_the_login_app_is_not_ready_while_redis_refuses_writes(
    stack, own_redis, refuse, allow, error
):
    ready = stack.url + "/auth/ready"
    raw = redis.Redis.from_url(own_redis.url)
    probe_key = keyspace(stack.config).readiness_probe()
    assert requests.get(ready, timeout=5).status_code == 200
    try:
        for command in refuse:
            raw.execute_command(*command)
        with pytest.raises(redis.ResponseError, match=error):
            raw.set("gw-test:write", b"1")
        assert raw.ping()  # answers, yet cannot log anyone in
        reply = requests.get(ready, timeout=5)
        assert reply.status_code == 503
        assert reply.json()["checks"]["redis"] == "refuses_writes"
        assert grpc_health(stack.ext_authz.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        for command in allow:
            raw.execute_command(*command)
    assert requests.get(ready, timeout=5).status_code == 200
    assert 0 < raw.pttl(probe_key) <= 10_000, "the probe key is short-lived"
    raw.close()


def test_sighup_reloads_routes_and_keeps_the_old_config_when_the_new_one_is_bad(stack):
    cookie = f"{stack.cookie_name}={stack.create_session(tokens={'gitlab': 'g-tok'}).encode()}"
    original = stack.config_path.read_text()
    assert check(stack.ext_authz.address, cookie, path="/tools/x", route="tools").denied_response
    raw = yaml.safe_load(original)
    raw["routes"].append(
        {
            "name": "tools",
            "prefix": "/tools/",
            "upstream": "http://127.0.0.1:9",
            "provider": "gitlab",
            "token_format": "private_token",
        }
    )
    try:
        stack.config_path.write_text(yaml.safe_dump(raw))
        stack.ext_authz.signal(signal.SIGHUP)
        wait_for(
            lambda: (
                injected(
                    check(stack.ext_authz.address, cookie, path="/tools/x", route="tools"),
                    "private-token",
                )
                == "g-tok"
            )
        )

        stack.config_path.write_text("routes: [this is: not valid")
        stack.ext_authz.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in stack.ext_authz.output())
        still = check(stack.ext_authz.address, cookie, path="/tools/x", route="tools")
        assert injected(still, "private-token") == "g-tok"  # the last good config serves on
    finally:
        stack.config_path.write_text(original)
        stack.ext_authz.signal(signal.SIGHUP)
