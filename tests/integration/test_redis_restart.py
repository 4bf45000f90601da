"""A Redis restart leaves every pooled connection dead: the gateway must not answer the
requests that happen to draw one with 503 once Redis is back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.login import HTML
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack, without_session_cache

pytestmark = pytest.mark.integration

BURST = 64


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("restart"),
        own_redis,
        echo_backend,
        without_session_cache,
        with_login=True,
    )
    yield stack
    stack.stop()


def burst(request: Callable[[int], int]) -> Counter[int]:
    """``BURST`` requests at once; how many got each status."""
    with ThreadPoolExecutor(BURST) as pool:
        return Counter(pool.map(request, range(BURST)))


def test_checks_right_after_a_redis_restart_are_answered_not_503(stack, own_redis):
    cookies = [stack.create_session(f"user-{n}", tokens={"primary": "tok"}) for n in range(BURST)]

    def check(n: int) -> int:
        return requests.get(
            stack.url + "/api/x",
            headers={"Cookie": f"{stack.cookie_name}={cookies[n].encode()}"},
            timeout=10,
        ).status_code

    # Concurrent checks fill ext_authz's pool with open connections.
    assert burst(check) == Counter({200: BURST})
    own_redis.restart()
    assert burst(check) == Counter({200: BURST})


def test_logins_right_after_a_redis_restart_are_answered_not_503(stack, own_redis):
    # (The blocking pool already tests an idle connection before lending it, which catches
    # most dead sockets; the retry covers the ones that die after that test.)
    def start_login(_n: int) -> int:
        return requests.get(
            f"{stack.url}/auth/login?redirect_url=/api/x",
            headers=HTML,
            allow_redirects=False,
            timeout=10,
        ).status_code

    # Concurrent starts fill the login app's pool; each one writes its attempt to Redis.
    assert burst(start_login) == Counter({302: BURST})
    own_redis.restart()
    assert burst(start_login) == Counter({302: BURST})
