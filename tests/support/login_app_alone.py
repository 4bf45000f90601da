"""Fixtures for tests against the login app alone (Flask's test client and a real Redis, no
IdP, no Envoy), each test with keys of its own. tests/conftest.py registers them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from gateway.config import GatewayConfig, parse_config
from gateway.redis.clients import sync_client
from login_app import create_app
from tests.support.servers import TEST_SECRET, RedisServer, base_config


def isolated_config(redis_server: RedisServer) -> GatewayConfig:
    """The test config on the shared Redis under a key prefix no other test uses."""
    raw = base_config(redis_url=redis_server.url, backend_url="http://127.0.0.1:1")
    raw["redis"]["key_prefix"] = f"t{secrets.token_hex(6)}:"
    return parse_config(raw, {"GATEWAY_SECRET_KEYS": TEST_SECRET})


@pytest.fixture
def config(redis_server: RedisServer) -> GatewayConfig:
    return isolated_config(redis_server)


@pytest.fixture
def app(config: GatewayConfig) -> Flask:
    return create_app(config)


@pytest.fixture
def raw_redis(config: GatewayConfig) -> Iterator[redis.Redis]:
    client = sync_client(config.redis)
    yield client
    client.close()
