"""An optional provider that is down stops no one who does not need it.

The stack's second provider (``gitlab``, plain OAuth2) is in the login sequence with
``optional: true``. With its process killed, a new user logs in with the primary alone (the
step is skipped, logged and counted), the login app stays ready, and a route that needs gitlab
ends on a page while it is down and logs in there on demand once it is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Session
from tests.support.dev_idp import DevIdp
from tests.support.login import HTML, browser_login, follow
from tests.support.metrics import metrics, sample
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration
SKIPPED = "gateway_login_steps_skipped_total"


def gitlab_optional(raw: dict[str, Any]) -> None:
    raw["providers"][1]["optional"] = True


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("optional"),
        redis_server,
        echo_backend,
        gitlab_optional,
        with_login=True,
    )
    yield stack
    stack.stop()


@pytest.fixture
def gitlab(stack: Stack) -> Iterator[DevIdp]:
    """The optional provider, running again after the test whatever the test did to it."""
    idp = stack.idps["gitlab"]
    yield idp
    if not _answers(idp):
        idp.restart()
    idp.set_faults("ok")


def _answers(idp: DevIdp) -> bool:
    try:
        requests.get(idp.url + "/_admin/stats", timeout=5)
    except requests.ConnectionError:
        return False
    return True


def session_of(stack: Stack, browser: requests.Session) -> Session:
    session = sync_store(stack.config).load(
        SessionCredential.parse(browser.cookies[stack.cookie_name])
    )
    assert session is not None
    return session


def skipped(stack: Stack) -> float:
    login_metrics = metrics(stack.config.login_app.metrics_listen)
    return sample(login_metrics, SKIPPED, provider="gitlab", reason="unavailable")


def open_page(browser: requests.Session, url: str) -> requests.Response:
    return browser.get(url, headers=HTML, allow_redirects=False, timeout=10)


def test_with_the_optional_provider_killed_new_users_log_in_without_it(stack, gitlab):
    before = skipped(stack)
    gitlab.kill()
    ready = requests.get(stack.url + "/auth/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["provider:gitlab"] == "unreachable"

    browser, page = browser_login(stack, "/api/while-gitlab-is-down")
    assert page.status_code == 200, page.text[:500]
    assert page.url == stack.url + "/api/while-gitlab-is-down"
    assert set(session_of(stack, browser).tokens) == {"primary"}
    assert skipped(stack) == before + 1
    assert '"message": "login step skipped"' in stack.login_app.output()

    # A route that needs gitlab asks for it by name: a page while it is down, never a loop.
    down = follow(browser, open_page(browser, stack.url + "/gitlab/projects"))
    assert down.status_code == 503 and "<code>unavailable</code>" in down.text
    assert "Provider: gitlab" in down.text
    assert open_page(browser, stack.url + "/api/still").status_code == 200

    gitlab.restart()
    back = follow(browser, open_page(browser, stack.url + "/gitlab/projects"))
    assert back.status_code == 200, back.text[:500]
    assert back.url == stack.url + "/gitlab/projects"
    session = session_of(stack, browser)
    assert set(session.tokens) == {"primary", "gitlab"}
    assert back.json()["headers"]["private-token"] == [session.tokens["gitlab"].access_token]
    assert skipped(stack) == before + 1  # asked for by name, it was never skipped


def test_an_optional_provider_failing_its_code_exchange_is_skipped(stack, gitlab):
    before = skipped(stack)
    gitlab.set_faults("error503")  # it answers, then fails the exchange the login needs
    browser, page = browser_login(stack, "/api/gitlab-fails")
    assert page.status_code == 200, page.text[:500]
    assert set(session_of(stack, browser).tokens) == {"primary"}
    assert skipped(stack) == before + 1


def test_a_provider_the_sequence_requires_still_stops_the_login(stack):
    """Only optional providers are skipped: with the primary failing, no session is made."""
    primary = stack.idps["primary"]
    primary.set_faults("error503")
    try:
        browser, page = browser_login(stack, "/api/primary-fails")
    finally:
        primary.set_faults("ok")
    assert page.status_code in (502, 503)
    assert stack.cookie_name not in browser.cookies
