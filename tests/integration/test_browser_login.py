"""A real headless Chromium logs in through Envoy at both IdPs, uses the backend, logs out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.credentials import SessionCredential
from gateway.session_factory import sync_store
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
