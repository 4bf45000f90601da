"""Providers outside the login sequence are logged in on demand, and nothing loops.

The stack's second provider (``gitlab``, plain OAuth2) has ``login_sequence: false``: the
browser login only visits the primary, and the first request to a route that needs gitlab's
token sends the browser through gitlab alone and back. Every browser here follows redirects
with a loop detector (tests.support.login.follow).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Identity, Session, TokenSet
from login_app.cli_login import GRANT_TYPE
from login_app.login import LOOP_ROUNDS
from tests.support.dev_idp import submit_login_form
from tests.support.login import HTML, browser_login, follow, session_of
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration


def gitlab_on_demand(raw: dict[str, Any]) -> None:
    raw["providers"][1]["login_sequence"] = False


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("on-demand"),
        redis_server,
        echo_backend,
        gitlab_on_demand,
        with_login=True,
    )
    yield stack
    stack.stop()


@pytest.fixture
def logged_in(stack: Stack) -> requests.Session:
    """A browser that went through the login sequence: the primary only."""
    browser, page = browser_login(stack, "/api/first")
    assert page.status_code == 200, page.text[:500]
    assert set(session_of(stack, browser)[1].tokens) == {"primary"}
    return browser


def hosts(stack: Stack, seen: list[requests.Response]) -> list[str]:
    """Which identity providers the browser visited, in order (repeats collapsed)."""
    netlocs = {urlsplit(idp.url).netloc: name for name, idp in stack.idps.items()}
    visited: list[str] = []
    for response in seen:
        name = netlocs.get(urlsplit(response.url).netloc)
        if name and (not visited or visited[-1] != name):
            visited.append(name)
    return visited


def open_page(browser: requests.Session, url: str) -> requests.Response:
    return browser.get(url, headers=HTML, allow_redirects=False, timeout=10)


def test_a_route_needing_it_sends_a_logged_in_browser_through_that_provider_alone(stack, logged_in):
    before = session_of(stack, logged_in)[1]
    denied = open_page(logged_in, stack.url + "/gitlab/projects?page=2")
    assert denied.status_code == 302
    login = urlsplit(denied.headers["location"])
    assert parse_qs(login.query) == {
        "redirect_url": [stack.url + "/gitlab/projects?page=2"],
        "provider": ["gitlab"],
    }
    seen: list[requests.Response] = []
    page = follow(logged_in, denied, seen=seen)
    assert page.status_code == 200, page.text[:500]
    assert page.url == stack.url + "/gitlab/projects?page=2"
    assert hosts(stack, seen) == ["gitlab"]

    after = session_of(stack, logged_in)[1]
    assert page.json()["headers"]["private-token"] == [after.tokens["gitlab"].access_token]
    assert after.identity == before.identity
    assert after.tokens["primary"] == before.tokens["primary"]
    assert after.expires_at <= before.expires_at  # adding a provider never extends a session
    # Next time the token is there: no more logins.
    assert open_page(logged_in, stack.url + "/gitlab/again").status_code == 200


def test_without_a_session_the_sequence_comes_first_then_the_provider_the_route_needs(stack):
    seen: list[requests.Response] = []
    browser, page = browser_login(stack, "/gitlab/projects", seen=seen)
    assert page.status_code == 200, page.text[:500]
    assert page.url == stack.url + "/gitlab/projects"
    assert hosts(stack, seen) == ["primary", "gitlab"]
    assert set(session_of(stack, browser)[1].tokens) == {"primary", "gitlab"}


def test_an_api_client_gets_401_with_a_login_url_naming_the_provider(stack):
    credential = stack.create_session(tokens={"primary": "primary-token"})
    reply = requests.get(
        stack.url + "/gitlab/api/v4/user",
        headers={"Authorization": f"Bearer {credential.encode()}", "Accept": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 401
    body = reply.json()
    assert body["reason"] == "provider_login_required"
    login = urlsplit(body["login_url"])
    assert login.path == "/auth/login"
    assert parse_qs(login.query)["provider"] == ["gitlab"]


def test_a_login_naming_an_unknown_provider_shows_a_page(stack, logged_in):
    page = open_page(
        logged_in, stack.url + "/auth/login?provider=nope&redirect_url=/gitlab/projects"
    )
    assert page.status_code == 400
    assert "unknown_provider" in page.text and "location" not in page.headers


def test_refusing_consent_at_the_provider_ends_on_a_page(stack, logged_in):
    response = open_page(logged_in, stack.url + "/gitlab/projects")
    for _ in range(5):  # to gitlab's login form: a few redirects, never a loop
        if not response.is_redirect:
            break
        response = open_page(logged_in, response.headers["location"])
    assert 'id="password"' in response.text, response.url
    refused = follow(logged_in, submit_login_form(logged_in, response, action="deny"))
    assert refused.status_code == 400 and "provider_error" in refused.text
    assert set(session_of(stack, logged_in)[1].tokens) == {"primary"}  # the session is as it was
    assert open_page(logged_in, stack.url + "/api/still").status_code == 200


def test_a_provider_failing_the_login_ends_on_a_page(stack, logged_in):
    gitlab = stack.idps["gitlab"]
    gitlab.set_faults("error503")
    try:
        page = follow(logged_in, open_page(logged_in, stack.url + "/gitlab/projects"))
    finally:
        gitlab.set_faults("ok")
    assert page.status_code in (502, 503), page.text[:500]
    assert 'role="alert"' in page.text
    assert open_page(logged_in, stack.url + "/api/still").status_code == 200


def test_a_browser_sent_to_the_same_provider_again_and_again_gets_a_page(stack):
    """A route that keeps refusing the token a provider issues would otherwise loop: with
    single sign-on at the provider, without a single click."""
    now = int(time.time())
    session = Session(
        identity=Identity(subject="alice"),
        created_at=now,
        expires_at=now + 3600,
        tokens={"primary": TokenSet("primary-token", expires_at=now + 3600)},
    )
    credential = SessionCredential.generate()
    sync_store(stack.config).save(credential, session)
    browser = requests.Session()
    browser.cookies.set(stack.cookie_name, credential.encode())
    login = stack.url + "/auth/login?provider=gitlab&redirect_url=/gitlab/projects"
    statuses = [open_page(browser, login).status_code for _ in range(LOOP_ROUNDS + 1)]
    assert statuses == [302] * LOOP_ROUNDS + [409]
    page = open_page(browser, login)
    assert page.status_code == 409 and "login_loop" in page.text
    # Another browser is not held back by this one.
    other = requests.Session()
    other.cookies.set(stack.cookie_name, credential.encode())
    assert open_page(other, login).status_code == 302


def test_a_cli_login_approved_by_that_browser_gets_its_on_demand_providers_too(stack, logged_in):
    """A terminal cannot be sent through a login page later: it gets now what the browser has."""
    assert follow(logged_in, open_page(logged_in, stack.url + "/gitlab/x")).status_code == 200
    started = requests.post(stack.url + "/auth/cli/start", timeout=10).json()
    approval = logged_in.get(
        started["verification_uri_complete"], headers=HTML, allow_redirects=False, timeout=10
    )
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', approval.text)
    assert csrf, approval.text[:500]
    pressed = logged_in.post(
        started["verification_uri"],
        data={"user_code": started["user_code"], "csrf_token": csrf[1], "action": "approve"},
        headers={**HTML, "Origin": stack.config.public_origin},
        allow_redirects=False,
        timeout=10,
    )
    seen: list[requests.Response] = []
    done = follow(logged_in, pressed, seen=seen)
    assert done.status_code == 200 and "return to your terminal" in done.text
    assert hosts(stack, seen) == ["primary", "gitlab"]
    token = requests.post(
        stack.url + "/auth/cli/token",
        data={"grant_type": GRANT_TYPE, "device_code": started["device_code"]},
        timeout=10,
    ).json()["access_token"]
    cli = sync_store(stack.config).load(SessionCredential.parse(token))
    assert cli is not None and set(cli.tokens) == {"primary", "gitlab"}
