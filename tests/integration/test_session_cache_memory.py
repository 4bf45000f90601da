"""A worker's session cache lets go of sessions nobody asks for again: what it holds falls
back to nothing once their entries expire, seen on the operators' gauge."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import ManagedProcess, free_ports, port_open
from gateway.config import GatewayConfig, load_config
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Identity, TokenSet
from tests.support.checks import check, wait_until_feed_serving
from tests.support.metrics import metrics, sample
from tests.support.polling import wait_for
from tests.support.servers import EchoBackend, RedisServer, base_config, gateway_env, write_config

pytestmark = pytest.mark.integration

WORKERS = 2
CACHE_TTL = 6.0
SESSIONS = 40  # per worker


@pytest.fixture
def supervised(
    tmp_path: Path, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[tuple[GatewayConfig, list[str]]]:
    raw = base_config(redis_url=redis_server.url, backend_url=echo_backend.url)
    first = free_ports(WORKERS)
    raw["ext_authz"].update(
        listen=f"127.0.0.1:{first}", workers=WORKERS, session_cache_ttl=f"{CACHE_TTL}s"
    )
    config_path = write_config(tmp_path / "gateway.yaml", raw)
    authz = ManagedProcess(
        "ext-authz-cache",
        [sys.executable, "-m", "ext_authz", "--config", str(config_path)],
        env=gateway_env(),
    ).start(lambda: all(port_open(first + i) for i in range(WORKERS)))
    addresses = [f"127.0.0.1:{first + i}" for i in range(WORKERS)]
    for address in addresses:
        wait_until_feed_serving(address)  # the cache is on only once the change feed is
    yield load_config(config_path, gateway_env()), addresses
    authz.stop()


def new_session(config: GatewayConfig) -> SessionCredential:
    now = time.time()
    credential, _ = sync_store(config).create(
        Identity(subject="alice"), {"primary": TokenSet("tok", expires_at=int(now + 3600))}, now
    )
    return credential


def cached_entries(config: GatewayConfig) -> float:
    assert config.ext_authz.metrics_listen is not None
    return sample(metrics(config.ext_authz.metrics_listen), "gateway_session_cache_entries")


def test_the_cache_falls_back_to_empty_once_its_entries_expire_without_lookups(supervised):
    config, addresses = supervised
    cookie_name = config.session.cookie_name
    for address in addresses:
        for _ in range(SESSIONS):  # each seen once, never again
            cookie = f"{cookie_name}={new_session(config).encode()}"
            assert check(address, cookie).status.code == 0
    # Summed over both workers; each reports within a second of a change.
    wait_for(lambda: cached_entries(config) >= SESSIONS, "the gauge to count them")
    assert cached_entries(config) <= WORKERS * SESSIONS
    # No check comes any more: only the cache's own sweep can let them go.
    wait_for(lambda: cached_entries(config) == 0, "the expired entries to be dropped")
