"""Routes that only some users may use: groups and claims from the primary provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.login import HTML, browser_login
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    def restricted_routes(raw: dict) -> None:
        raw["routes"] += [
            {
                "name": "admin",
                "prefix": "/admin/",
                "upstream": echo_backend.url,
                "provider": "primary",
                "require_groups": ["admins"],
            },
            {
                "name": "alice-only",
                "prefix": "/alice/",
                "upstream": echo_backend.url,
                "provider": "primary",
                "require_claims": {"email": "alice@example.org"},
            },
        ]

    users = [
        "--user",
        "alice:alice:alice@example.org:Alice:admins+users",
        "--user",
        "bob:bob:bob@example.org:Bob:users",
    ]
    stack = start_stack(
        tmp_path_factory.mktemp("policy"),
        redis_server,
        echo_backend,
        restricted_routes,
        with_login=True,
        idp_args=users,
    )
    yield stack
    stack.stop()


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("alice", "/admin/x", 200),
        ("bob", "/admin/x", 403),
        ("alice", "/alice/x", 200),
        ("bob", "/alice/x", 403),
        ("bob", "/api/x", 200),
    ],
)
def test_only_users_the_route_admits_get_through(stack, user, path, status):
    browser, _ = browser_login(stack, "/api/start", username=user, password=user)
    api = browser.get(stack.url + path, headers={"Accept": "application/json"}, timeout=10)
    assert api.status_code == status
    if status == 403:
        assert api.json()["reason"] == "forbidden"
        page = browser.get(stack.url + path, headers=HTML, timeout=10)
        assert page.status_code == 403 and "No access" in page.text
        assert "authorization" not in page.text.lower()


def test_anonymous_callers_of_a_restricted_route_are_asked_to_log_in(stack):
    reply = requests.get(stack.url + "/admin/x", headers={"Accept": "application/json"}, timeout=10)
    assert reply.status_code == 401
