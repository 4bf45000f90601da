"""Through Envoy: Redis writes stay bounded under use, and operators list and revoke sessions.

When sessions end (idle timeout, absolute lifetime, the idle slide) is the stores' decision,
proven with a clock the test moves in test_session_store_contract.py. Here nothing depends on
wall time: the sessions last far longer than any test takes on a busy machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from tests.support.servers import EchoBackend, RedisServer, gateway_env
from tests.support.stack import Stack, api_get, start_stack

pytestmark = pytest.mark.integration

WRITE_COMMANDS = ("set", "pexpire", "expire", "del", "hset", "hdel", "eval", "setex", "psetex")


def lifetimes(raw: dict) -> None:
    # A tenth of the idle window (one slide at most) is far longer than the 100 requests below.
    raw["session"].update({"idle_timeout": "10m", "absolute_lifetime": "1h"})


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("lifetime"),
        redis_server,
        echo_backend,
        lifetimes,
        authz_workers=2,
    )
    yield stack
    stack.stop()


def status(stack: Stack, credential: SessionCredential) -> int:
    return api_get(stack, credential).status_code


def new_session(stack: Stack, user: str = "alice") -> SessionCredential:
    return stack.create_session(user, tokens={"primary": "tok"})


def test_redis_writes_per_request_stay_bounded(stack):
    credential = new_session(stack)
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
    bob = [new_session(stack, "bob") for _ in range(2)]
    carol = new_session(stack, "carol")
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
