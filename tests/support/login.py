"""A scripted browser: follows redirects through the gateway's login and the IdPs' forms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from urllib.parse import urljoin

import requests

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Session
from tests.support.dev_idp import submit_login_form
from tests.support.stack import Stack

HTML = {"Accept": "text/html,application/xhtml+xml"}

# A provider whose login pages follow() does not know: given a redirect target, it logs the
# browser in there and returns where that provider sends it back to, or None when the
# target is not that provider's.
ProviderLogin = Callable[[requests.Session, str], str | None]


def follow(
    browser: requests.Session,
    response: requests.Response,
    *,
    username: str = "alice",
    password: str = "alice",
    max_hops: int = 20,
    seen: list[requests.Response] | None = None,
    other_login: ProviderLogin | None = None,
) -> requests.Response:
    """Follow redirects, logging in at every IdP form on the way; return the final page.

    Every response on the way is appended to ``seen`` when it is given; ``other_login``
    takes over at the redirects to a provider with login pages of its own (JupyterHub). A
    URL asked for a third time is a redirect loop (a browser would give up on it):
    AssertionError."""
    visits: Counter[str] = Counter()
    for _ in range(max_hops):
        if seen is not None:
            seen.append(response)
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if other_login is not None:
                target = other_login(browser, target) or target
            visits[target] += 1
            if visits[target] > 2:
                raise AssertionError(f"redirect loop: {target} asked for a third time")
            response = browser.get(target, headers=HTML, allow_redirects=False, timeout=10)
        elif response.status_code == 200 and 'id="password"' in response.text:
            response = submit_login_form(browser, response, username=username, password=password)
        else:
            return response
    raise AssertionError(f"more than {max_hops} hops, last at {response.url}")


def start_login(
    stack: Stack, browser: requests.Session, redirect_url: str = "/api/x", *, timeout: float = 10
) -> requests.Response:
    """Open the login app's start page, as a "log in" link would; its redirect is not followed."""
    return browser.get(
        f"{stack.url}/auth/login?redirect_url={redirect_url}",
        headers=HTML,
        allow_redirects=False,
        timeout=timeout,
    )


def browser_login(
    stack: Stack, path: str = "/api/whoami", browser: requests.Session | None = None, **kwargs
) -> tuple[requests.Session, requests.Response]:
    """Open a protected page and log in through every provider; returns (browser, page)."""
    browser = browser or requests.Session()
    first = browser.get(stack.url + path, headers=HTML, allow_redirects=False, timeout=10)
    return browser, follow(browser, first, **kwargs)


def session_of(stack: Stack, browser: requests.Session) -> tuple[SessionCredential, Session]:
    """The browser's session credential and the session Redis holds for it."""
    cookie = browser.cookies.get(stack.cookie_name)
    assert cookie is not None, "the browser has no session cookie"
    credential = SessionCredential.parse(cookie)
    session = sync_store(stack.config).load(credential)
    assert session is not None, "the browser's session is gone"
    return credential, session
