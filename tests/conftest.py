"""Shared fixtures: real servers started once per test session on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

# config, app and raw_redis for tests of the login app alone; a module's own fixture of the
# same name takes precedence.
pytest_plugins = ("tests.support.login_app_alone",)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the module's own, for tests that pause or break it."""
    server = RedisServer(tmp_path_factory.mktemp("own-redis")).start()
    yield server
    server.resume()
    server.stop()


@pytest.fixture(scope="session")
def echo_backend() -> Iterator[EchoBackend]:
    backend = EchoBackend().start()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    """Envoy + ext_authz + Redis + echo backend, shared by tests that only read from it."""
    stack = start_stack(tmp_path_factory.mktemp("gateway"), redis_server, echo_backend)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def login_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    """The gateway with the login app and two dev identity providers, one per test module."""
    stack = start_stack(
        tmp_path_factory.mktemp("login"), redis_server, echo_backend, with_login=True
    )
    yield stack
    stack.stop()
