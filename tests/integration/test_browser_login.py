"""A real headless Chromium logs in through Envoy at both IdPs, uses the backend, logs out, and
approves a CLI login by clicking the real button."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def stack(login_stack: Stack) -> Stack:
    return login_stack


@pytest.fixture
def page(tmp_path: Path):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `.ci/run` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context()
        yield context.new_page()
        context.close()
        browser.close()


def log_in_at_idp(page, username: str = "alice", password: str = "alice") -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.locator("#login").click()


def test_a_person_logs_in_with_both_providers_and_out_again(stack, page, tmp_path):
    page.goto(stack.url + "/api/hello")
    log_in_at_idp(page)  # primary (OIDC)
    page.wait_for_url(f"{stack.idps['gitlab'].url}/**")
    log_in_at_idp(page)  # gitlab (plain OAuth2)
    page.wait_for_url(stack.url + "/api/hello")
    echoed = json.loads(page.locator("body").inner_text())

    cookie = next(c for c in page.context.cookies() if c["name"] == stack.cookie_name)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    session = sync_store(stack.config).load(SessionCredential.parse(cookie["value"]))
    assert session is not None
    assert echoed["headers"]["authorization"] == [
        f"Bearer {session.tokens['primary'].access_token}"
    ]
    assert cookie["value"] not in json.dumps(echoed)
    page.screenshot(path=str(tmp_path / "logged-in.png"))

    page.goto(stack.url + "/auth/logout")
    page.wait_for_url(stack.url + "/auth/logged-out**")
    assert page.get_by_role("heading").inner_text() == "You are logged out"
    assert stack.cookie_name not in {c["name"] for c in page.context.cookies()}
    assert sync_store(stack.config).load(SessionCredential.parse(cookie["value"])) is None

    response = page.goto(stack.url + "/api/hello")
    assert response is not None
    assert "/authorize" in page.url  # sent to log in again


class Terminal:
    """``gateway auth-login`` as a person runs it: a real process, its output read as it comes."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "auth-login", "--url", url, "--no-browser"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._told: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._told.put(line)

    def link(self, deadline_seconds: float = 30) -> str:
        """The approval link the command prints (the one with the code in it)."""
        deadline = time.monotonic() + deadline_seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._told.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith("Or open "):
                return line.removeprefix("Or open ").strip()
        raise AssertionError("gateway auth-login printed no approval link")

    def token(self, deadline_seconds: float = 60) -> str:
        """What the command prints on stdout once the login is approved."""
        out, _ = self.process.communicate(timeout=deadline_seconds)
        assert self.process.returncode == 0, out
        return out.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def terminal(stack: Stack) -> Iterator[Terminal]:
    started = Terminal(stack.url)
    yield started
    started.stop()


def test_a_cli_login_is_approved_by_clicking_approve_in_a_real_browser(stack, page, terminal):
    sent_elsewhere: list[tuple[str, str]] = []  # (url, referer) of requests to other origins

    def record(request) -> None:
        if not request.url.startswith(stack.url + "/"):
            sent_elsewhere.append((request.url, request.all_headers().get("referer", "")))

    page.on("requestfinished", record)
    page.on("requestfailed", record)
    page.goto(terminal.link())
    log_in_at_idp(page)  # no gateway session yet: the primary IdP first...
    page.wait_for_url(f"{stack.idps['gitlab'].url}/**")
    log_in_at_idp(page)  # ...then gitlab, and back to the approval page
    page.wait_for_url(stack.url + "/auth/cli/approve?**")
    # Approving logs in again for the CLI; the IdPs' sessions make that redirects only.
    with page.expect_navigation():
        page.get_by_role("button", name="Approve").click()
    heading = page.get_by_role("heading").inner_text()
    assert heading == "Command-line login approved", page.locator("main").inner_text()

    token = terminal.token()
    credential = SessionCredential.parse(token)
    cli_session = sync_store(stack.config).load(credential)
    assert cli_session is not None and cli_session.identity.subject
    reply = requests.get(
        stack.url + "/api/from-the-terminal",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["headers"]["authorization"] == [
        f"Bearer {cli_session.tokens['primary'].access_token}"
    ]
    # The pages keep Origin for our own forms but tell other sites nothing (codes, states and
    # user codes are in our URLs).
    assert sent_elsewhere, "the browser never went to an identity provider"
    leaks = [(url, referer) for url, referer in sent_elsewhere if referer.startswith(stack.url)]
    assert not leaks


# ---- other sites' cookies: a cookie bomb, a second session cookie under another path ---------


def log_in_in_browser(stack, page, path: str = "/api/hello") -> str:
    """Log in through both providers from ``path``; returns the session cookie's value."""
    page.goto(stack.url + path)
    log_in_at_idp(page)
    page.wait_for_url(f"{stack.idps['gitlab'].url}/**")
    log_in_at_idp(page)
    page.wait_for_url(stack.url + path)
    return next(c["value"] for c in page.context.cookies() if c["name"] == stack.cookie_name)


def echoed_page(page) -> dict:
    return json.loads(page.locator("body").inner_text())


@pytest.mark.parametrize("kilobytes", [9, 30])
def test_a_cookie_bomb_from_other_sites_does_not_cost_the_session(stack, page, kilobytes):
    """What a sibling host (or a script on the site) can do: fill the Cookie header."""
    value = log_in_in_browser(stack, page)
    page.context.add_cookies(
        [
            {"name": f"sibling{i}", "value": "v" * 3000, "url": stack.url}
            for i in range(kilobytes // 3)
        ]
    )
    response = page.goto(stack.url + "/api/hello")
    assert response is not None and response.status == 200
    assert page.url == stack.url + "/api/hello"
    (forwarded,) = echoed_page(page)["headers"]["cookie"]
    assert forwarded.count("sibling") == kilobytes // 3, "Chromium sent every cookie"
    assert len(forwarded) >= kilobytes * 1000
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies[stack.cookie_name] == value, "the session cookie was kept as it was"


def test_an_old_session_cookie_under_another_path_ends_on_the_page_logged_in(stack, page):
    """An old deploy's (or a sibling path's) cookie of our name under Path=/api comes first in
    every request there; before, that looped: ERR_TOO_MANY_REDIRECTS."""
    value = log_in_in_browser(stack, page)
    stale = SessionCredential.generate().encode()  # well-formed, its session long gone
    page.context.add_cookies(
        [{"name": stack.cookie_name, "value": stale, "domain": "127.0.0.1", "path": "/api"}]
    )
    response = page.goto(stack.url + "/api/hello")
    assert response is not None and response.status == 200
    assert page.url == stack.url + "/api/hello"
    session = sync_store(stack.config).load(SessionCredential.parse(value))
    assert session is not None
    assert echoed_page(page)["headers"]["authorization"] == [
        f"Bearer {session.tokens['primary'].access_token}"
    ]


def test_only_an_old_session_cookie_under_another_path_logs_in_and_stays(stack, page):
    stale = SessionCredential.generate().encode()
    page.context.add_cookies(
        [{"name": stack.cookie_name, "value": stale, "domain": "127.0.0.1", "path": "/api"}]
    )
    log_in_in_browser(stack, page)  # back on /api/hello with both cookies, not sent round again
    response = page.goto(stack.url + "/api/hello")
    assert response is not None and response.status == 200
    assert page.url == stack.url + "/api/hello"


def test_a_planted_live_session_of_someone_else_ends_on_a_page_not_a_loop(stack, page):
    log_in_in_browser(stack, page)
    planted = stack.create_session("mallory", tokens={"primary": "m-tok", "gitlab": "m-tok"})
    page.context.add_cookies(
        [
            {
                "name": stack.cookie_name,
                "value": planted.encode(),
                "domain": "127.0.0.1",
                "path": "/api",
            }
        ]
    )
    response = page.goto(stack.url + "/api/hello")
    assert response is not None and response.status == 400
    assert "Conflicting sessions" in page.title()
    assert "m-tok" not in page.content()
    # The user's own pages outside the planted path still work.
    assert page.goto(stack.url + "/gitlab/x").status == 200
