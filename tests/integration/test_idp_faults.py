"""The primary IdP failing, slow or frozen: a new login ends quickly on a readable error page
with a retry link and no session, everyone already logged in keeps working, and logins work
again once the IdP is back."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.providers.transport import HTTP_TIMEOUT
from tests.support.dev_idp import DevIdp, submit_login_form
from tests.support.login import HTML, browser_login, follow, start_login
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT, READ_TIMEOUT = HTTP_TIMEOUT
# Text that must never reach a person's browser: a traceback or a library's exception.
LEAKS = ("Traceback", 'File "', "requests.exceptions", "urllib3", "ReadTimeout", "OAuthError")
# Slack on the provider timeout: the login app's own work, Redis and Envoy around the call.
SLACK_SECONDS = 2.0


@pytest.fixture(scope="module")
def stack(login_stack: Stack) -> Stack:
    return login_stack


@pytest.fixture(scope="module")
def logged_in_browser(stack: Stack) -> requests.Session:
    """A browser that logged in through both IdPs before anything went wrong."""
    browser, page = browser_login(stack, "/api/before")
    assert page.status_code == 200, page.text[:500]
    return browser


@pytest.fixture
def primary(stack: Stack) -> Iterator[DevIdp]:
    """The primary IdP, healthy again after the test whatever the test did to it."""
    idp = stack.idps["primary"]
    yield idp
    os.kill(idp_pid(idp), signal.SIGCONT)
    idp.set_faults("ok")


def idp_pid(idp: DevIdp) -> int:
    # The support class offers no pause(); its process handle is the one way to the pid.
    return idp._process.pid


def callback_redirect(stack: Stack, browser: requests.Session) -> str:
    """Start a login and pass the primary IdP's form; the callback URL the IdP redirects to."""
    start = start_login(stack, browser, "/api/after")
    assert start.status_code == 302, start.text[:500]
    form = browser.get(start.headers["location"], headers=HTML, allow_redirects=False, timeout=10)
    reply = submit_login_form(browser, form)
    assert reply.status_code == 302 and "/auth/callback?" in reply.headers["location"]
    return str(reply.headers["location"])


def timed_callback(browser: requests.Session, url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = browser.get(url, headers=HTML, allow_redirects=False, timeout=READ_TIMEOUT * 4)
    return response, time.monotonic() - started


def assert_readable_error_page(stack: Stack, browser: requests.Session, page: requests.Response):
    assert page.status_code in (502, 503), (page.status_code, page.text[:500])
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>" in page.text and 'role="alert"' in page.text
    retry = re.search(r'<a class="button" href="([^"]+)">Try logging in again</a>', page.text)
    assert retry is not None, page.text
    assert retry.group(1).startswith(stack.url + "/auth/login?")
    for leak in LEAKS:
        assert leak not in page.text, leak
    assert stack.cookie_name not in browser.cookies
    assert "set-cookie" not in page.headers or stack.cookie_name not in page.headers["set-cookie"]


def error_code(page: requests.Response) -> str:
    found = re.search(r"<code>([a-z_]+)</code>", page.text)
    assert found is not None, page.text
    return found.group(1)


def existing_sessions_answer(stack: Stack, cookies: list[str]) -> tuple[list[int], float]:
    """Statuses of one API call per session through Envoy, and the slowest call's time."""
    statuses, slowest = [], 0.0
    for cookie in cookies:
        started = time.monotonic()
        response = requests.get(
            stack.url + "/api/during",
            headers={"Cookie": f"{stack.cookie_name}={cookie}", "Accept": "application/json"},
            timeout=5,
        )
        slowest = max(slowest, time.monotonic() - started)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert response.json()["headers"]["authorization"][0].startswith("Bearer ")
    return statuses, slowest


@pytest.fixture
def existing_cookies(stack: Stack, logged_in_browser: requests.Session) -> list[str]:
    """A real login's session and one written straight to Redis, with a long-lived token."""
    created = stack.create_session(tokens={"primary": "long-lived", "gitlab": "gl"}, token_ttl=3600)
    return [logged_in_browser.cookies[stack.cookie_name], created.encode()]


def test_token_endpoint_503_ends_the_login_on_an_error_page_at_once(
    stack, primary, existing_cookies
):
    browser = requests.Session()
    callback = callback_redirect(stack, browser)
    primary.set_faults("error503")
    page, elapsed = timed_callback(browser, callback)

    assert_readable_error_page(stack, browser, page)
    # A 5xx from the provider may work later: "unavailable" (503), not a failed login (502).
    assert error_code(page) == "unavailable" and page.status_code == 503
    assert elapsed < 1.5, elapsed
    statuses, slowest = existing_sessions_answer(stack, existing_cookies)
    assert statuses == [200, 200] and slowest < 1.0


def test_slow_token_endpoint_gives_the_unavailable_page_after_the_read_timeout(
    stack, primary, existing_cookies
):
    browser = requests.Session()
    callback = callback_redirect(stack, browser)
    primary.set_faults("slow", slow_seconds=READ_TIMEOUT + 5)
    with ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(timed_callback, browser, callback)
        time.sleep(0.5)  # the login app is now waiting on the IdP
        # Meanwhile: logged-in users are served, and another person's login can start.
        statuses, slowest = existing_sessions_answer(stack, existing_cookies)
        started = time.monotonic()
        other = start_login(stack, requests.Session(), timeout=5)
        other_elapsed = time.monotonic() - started
        assert not hanging.done()
        page, elapsed = hanging.result()

    assert statuses == [200, 200] and slowest < 1.0
    assert other.status_code == 302 and other_elapsed < 1.0
    assert_readable_error_page(stack, browser, page)
    assert error_code(page) == "unavailable"
    assert page.status_code == 503
    assert READ_TIMEOUT - 0.5 < elapsed < READ_TIMEOUT + SLACK_SECONDS, elapsed


def test_frozen_idp_gives_the_unavailable_page_and_logins_work_once_it_thaws(
    stack, primary, existing_cookies
):
    browser = requests.Session()
    callback = callback_redirect(stack, browser)
    os.kill(idp_pid(primary), signal.SIGSTOP)  # the kernel still accepts; nobody answers
    try:
        page, elapsed = timed_callback(browser, callback)
        statuses, slowest = existing_sessions_answer(stack, existing_cookies)
        # The gateway's side of a new login needs no IdP (its metadata is cached).
        fresh = requests.Session()
        started = time.monotonic()
        start = start_login(stack, fresh, timeout=5)
        start_elapsed = time.monotonic() - started
    finally:
        os.kill(idp_pid(primary), signal.SIGCONT)

    assert_readable_error_page(stack, browser, page)
    assert error_code(page) == "unavailable" and page.status_code == 503
    assert elapsed < READ_TIMEOUT + SLACK_SECONDS, elapsed
    assert statuses == [200, 200] and slowest < 1.0
    assert start.status_code == 302 and start_elapsed < 1.0

    # Thawed: the page's retry link leads to a working login, with no restart of anything.
    retry = re.search(r'href="([^"]+)">Try logging in again', page.text)
    assert retry is not None
    started = time.monotonic()
    first = browser.get(retry.group(1), headers=HTML, allow_redirects=False, timeout=10)
    follow(browser, first)  # ends on the start page the link names
    assert time.monotonic() - started < 5
    assert stack.cookie_name in browser.cookies
    statuses, _ = existing_sessions_answer(stack, [browser.cookies[stack.cookie_name]])
    assert statuses == [200]


def test_a_login_after_all_faults_works_and_the_old_sessions_still_do(stack, existing_cookies):
    browser, page = browser_login(stack, "/api/after")
    assert page.status_code == 200
    statuses, _ = existing_sessions_answer(stack, existing_cookies)
    assert statuses == [200, 200]
