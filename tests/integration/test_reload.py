"""A SIGHUP to both servers, as an operator sends it: both follow one reload rule."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.login import browser_login
from tests.support.polling import wait_for
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json"}


@pytest.fixture
def stack(tmp_path: Path, redis_server: RedisServer, echo_backend: EchoBackend) -> Iterator[Stack]:
    """A stack of this test's own: the test rewrites its config file."""
    stack = start_stack(tmp_path, redis_server, echo_backend, with_login=True)
    yield stack
    stack.stop()


def logged_in(stack: Stack, browser: requests.Session) -> tuple[int, int]:
    """Status of a backend request through ext_authz and of the login app's /auth/user."""
    backend = browser.get(stack.url + "/api/x", headers=JSON, timeout=10)
    profile = browser.get(stack.url + "/auth/user", headers=JSON, timeout=10)
    return backend.status_code, profile.status_code


def test_a_reload_that_moves_the_sessions_keeps_users_logged_in_and_logins_working(stack):
    """Both servers keep where sessions live (the Redis key prefix, the cookie name) until a
    restart; if only the login app took the new values, its logins would land where ext_authz
    never looks and every new user would bounce between the two."""
    alice, page = browser_login(stack)
    assert page.status_code == 200, page.text
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["redis"]["key_prefix"] = "moved:"
    raw["session"]["cookie_name"] = "moved_session"
    raw["log_level"] = "debug"  # a key a reload does apply, to see that it happened
    stack.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    servers = (stack.ext_authz, stack.login_app)
    for server in servers:
        assert server is not None
        server.signal(signal.SIGHUP)
    for server in servers:
        wait_for(lambda server=server: "configuration reloaded" in server.output(), "a reload")

    assert logged_in(stack, alice) == (200, 200)
    newcomer, page = browser_login(stack)  # a browser that was not logged in before
    assert page.status_code == 200, page.text
    assert stack.cookie_name in newcomer.cookies  # the running name, not the file's new one
    assert newcomer.cookies[stack.cookie_name] != alice.cookies[stack.cookie_name]
    assert logged_in(stack, newcomer) == (200, 200)
    for server in servers:  # and the operator is told why the change did not apply
        for key in ("redis.key_prefix", "session.cookie_name"):
            assert f"{key} needs a restart" in server.output()
