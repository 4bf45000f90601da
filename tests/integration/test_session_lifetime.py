"""Idle timeout, absolute lifetime, bounded Redis writes, and operators revoking sessions."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from tests.support.servers import EchoBackend, RedisServer, gateway_env
from tests.support.stack import Stack, api_get, start_stack

pytestmark = pytest.mark.integration

WRITE_COMMANDS = ("set", "pexpire", "expire", "del", "hset", "hdel", "eval", "setex", "psetex")


def short_lifetimes(raw: dict) -> None:
    raw["session"].update({"idle_timeout": "2s", "absolute_lifetime": "5s"})


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("lifetime"),
        redis_server,
        echo_backend,
        short_lifetimes,
        authz_workers=2,
    )
    yield stack
    stack.stop()


def status(stack: Stack, credential: SessionCredential) -> int:
    return api_get(stack, credential).status_code


def new_session(stack: Stack, user: str = "alice", lifetime: float = 5) -> SessionCredential:
    return stack.create_session(user, tokens={"primary": "tok"}, lifetime=lifetime)


def test_a_session_unused_for_the_idle_timeout_ends(stack):
    credential = new_session(stack)
    assert status(stack, credential) == 200
    time.sleep(2.3)
    assert status(stack, credential) == 401


def test_use_slides_the_idle_window_but_never_past_the_absolute_lifetime(stack):
    credential = new_session(stack, lifetime=5)
    started = time.monotonic()
    while time.monotonic() - started < 4.2:  # well past the 2 s idle window
        assert status(stack, credential) == 200
        time.sleep(0.7)
    time.sleep(max(0.0, 5.3 - (time.monotonic() - started)))
    assert status(stack, credential) == 401  # absolute lifetime reached, however busy


def test_redis_writes_per_request_stay_bounded(stack):
    credential = new_session(stack, lifetime=60)
    client = sync_client(stack.config.redis)
    client.config_resetstat()
    for _ in range(100):
        assert status(stack, credential) == 200
    stats = client.info("commandstats")
    writes = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in WRITE_COMMANDS)
    reads = stats.get("cmdstat_get", {}).get("calls", 0)
    # One slide per tenth of the idle window at most, not one write per request.
    assert writes <= 12, stats
    # Each worker reads the session once, then answers from memory until told it changed.
    assert 1 <= reads <= 2 * len(stack.workers) + 4, stats


def gateway_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--config", str(stack.config_path)],
        capture_output=True,
        text=True,
        env=gateway_env(),
        timeout=30,
        check=False,
    )


def test_operators_list_and_revoke_sessions_and_every_replica_honours_it(stack):
    bob = [stack.create_session("bob", tokens={"primary": "tok"}) for _ in range(2)]
    carol = stack.create_session("carol", tokens={"primary": "tok"})
    listed = gateway_cli(stack, "sessions", "list", "--user", "bob")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("active") == 2
    for credential in bob:
        assert credential.lookup_id[:16] in listed.stdout

    revoked = gateway_cli(stack, "sessions", "revoke", "--session", bob[0].lookup_id[:12])
    assert revoked.returncode == 0, revoked.stderr
    assert [status(stack, c) for c in bob] == [401, 200]

    everyone = gateway_cli(stack, "sessions", "revoke", "--user", "bob")
    assert everyone.returncode == 0
    # Both replicas behind Envoy answer from Redis, so no replica still lets bob in.
    assert {status(stack, bob[1]) for _ in range(10)} == {401}
    assert status(stack, carol) == 200
    assert gateway_cli(stack, "sessions", "revoke", "--user", "bob").returncode == 5
    assert gateway_cli(stack, "sessions", "revoke", "--session", "nope").returncode == 2


def test_a_users_index_forgets_sessions_past_their_lifetime(stack):
    from gateway.sessions.factory import keyspace

    for _ in range(3):
        stack.create_session("dave", tokens={"primary": "tok"}, lifetime=1)
    time.sleep(1.2)
    stack.create_session("dave", tokens={"primary": "tok"}, lifetime=60)
    index = keyspace(stack.config).user_index("dave")
    assert sync_client(stack.config.redis).hlen(index) == 1
