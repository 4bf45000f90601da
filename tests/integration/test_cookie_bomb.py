"""Other sites' cookies never cost a user the session, and no cookie makes a redirect loop.

Any sibling host of the domain (or an old deploy, or a script on the site) can set cookies the
browser then sends us with ours: tens of kilobytes of them (a cookie bomb), or a second
session cookie under another path or domain. Through a real Envoy, ext_authz (both
transports) and the login app, with sessions in a real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from gateway.sessions.credentials import SessionCredential
from tests.support.login import HTML, follow
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

TOKENS = {"primary": "primary-token-bomb", "gitlab": "gitlab-token-bomb"}
# Envoy's default max_request_headers_kb (we render none) is 60: what fits under it must work.
ENVOY_HEADER_LIMIT_KB = 60


@pytest.fixture(scope="module", params=["grpc", "http"])
def stack(request, tmp_path_factory, redis_server, echo_backend) -> Iterator[Stack]:
    """The gateway with the login app, once with each ext_authz transport."""

    def transport(raw: dict) -> None:
        raw["ext_authz"]["transport"] = request.param

    stack = start_stack(
        tmp_path_factory.mktemp(f"bomb-{request.param}"),
        redis_server,
        echo_backend,
        transport,
        with_login=True,
    )
    yield stack
    stack.stop()


def sibling_cookies(kilobytes: int) -> str:
    """About ``kilobytes`` KB of cookies of other sites, each under a browser's 4 KB limit."""
    return "; ".join(f"sibling{i}={'v' * 1000}" for i in range(kilobytes))


def ours(stack: Stack, credential: SessionCredential) -> str:
    return f"{stack.cookie_name}={credential.encode()}"


def get(stack: Stack, path: str, cookie: str, accept: str = "application/json"):
    return requests.get(
        stack.url + path,
        headers={"Cookie": cookie, "Accept": accept},
        allow_redirects=False,
        timeout=10,
    )


@pytest.mark.parametrize("kilobytes", [9, 30, ENVOY_HEADER_LIMIT_KB - 5])
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_session_survives_sibling_cookies_up_to_envoys_header_limit(
    stack: Stack, kilobytes: int, where: str
) -> None:
    credential = stack.create_session(tokens=TOKENS)
    bomb = sibling_cookies(kilobytes)
    cookie = (
        f"{bomb}; {ours(stack, credential)}"
        if where == "before"
        else f"{ours(stack, credential)}; {bomb}"
    )
    reply = get(stack, "/api/x", cookie)
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["headers"]["authorization"] == [f"Bearer {TOKENS['primary']}"]
    assert "set-cookie" not in reply.headers
    # The backend still gets the other sites' cookies, without ours.
    (forwarded,) = reply.json()["headers"]["cookie"]
    assert stack.cookie_name not in forwarded and forwarded.count("sibling") == kilobytes
    assert get(stack, "/api/x", ours(stack, credential)).status_code == 200, "session expired"


def test_a_browser_page_under_a_cookie_bomb_is_the_page_not_a_redirect_loop(stack: Stack) -> None:
    credential = stack.create_session(tokens=TOKENS)
    browser = requests.Session()
    browser.headers["Cookie"] = f"{sibling_cookies(30)}; {ours(stack, credential)}"
    first = browser.get(stack.url + "/api/page", headers=HTML, allow_redirects=False, timeout=10)
    page = follow(browser, first)
    assert page.status_code == 200 and page.url == stack.url + "/api/page"


def test_the_login_app_knows_the_session_under_a_cookie_bomb(stack: Stack) -> None:
    """A login asked for while every token is valid goes straight back: the login app found
    the session among the other cookies instead of starting over at the IdP."""
    credential = stack.create_session(tokens=TOKENS)
    cookie = f"{sibling_cookies(30)}; {ours(stack, credential)}"
    reply = get(stack, "/auth/login?redirect_url=/api/back", cookie, accept=HTML["Accept"])
    assert reply.status_code == 302
    assert reply.headers["location"] in ("/api/back", stack.url + "/api/back")


def test_a_cookie_header_past_envoys_limit_is_refused_by_envoy_not_looped(stack: Stack) -> None:
    credential = stack.create_session(tokens=TOKENS)
    cookie = f"{sibling_cookies(ENVOY_HEADER_LIMIT_KB + 10)}; {ours(stack, credential)}"
    reply = get(stack, "/api/x", cookie, accept=HTML["Accept"])
    assert reply.status_code == 431
    assert "location" not in reply.headers and "set-cookie" not in reply.headers


@pytest.mark.parametrize("order", ["stale-first", "stale-last"])
def test_a_stale_session_cookie_under_another_path_does_not_hide_the_live_one(
    stack: Stack, order: str
) -> None:
    """What a browser sends with an old deploy's ``Path=/api`` cookie next to ours: both."""
    live = stack.create_session(tokens=TOKENS)
    stale = SessionCredential.generate()  # well-formed, its session long gone
    pair = [ours(stack, stale), ours(stack, live)]
    cookie = "; ".join(pair if order == "stale-first" else reversed(pair))
    browser = requests.Session()
    browser.headers["Cookie"] = cookie
    first = browser.get(stack.url + "/api/page", headers=HTML, allow_redirects=False, timeout=10)
    assert first.status_code == 200, first.headers.get("location")
    assert "set-cookie" not in first.headers
    api = get(stack, "/api/x", cookie)
    assert api.status_code == 200
    assert api.json()["headers"]["authorization"] == [f"Bearer {TOKENS['primary']}"]


def test_live_sessions_of_two_users_get_a_page_saying_what_to_do(stack: Stack) -> None:
    """A cookie planted by a sibling host that opens someone else's live session: neither is
    used, and the answer is a page, not a login that would come back to the same."""
    planted = stack.create_session("mallory", tokens=TOKENS)
    own = stack.create_session("alice", tokens=TOKENS)
    cookie = f"{ours(stack, planted)}; {ours(stack, own)}"
    page = get(stack, "/api/page", cookie, accept=HTML["Accept"])
    assert page.status_code == 400 and "Clear this site" in page.text
    assert "location" not in page.headers and "set-cookie" not in page.headers
    api = get(stack, "/api/x", cookie)
    assert api.status_code == 400 and api.json()["reason"] == "conflicting_sessions"
    assert get(stack, "/api/x", ours(stack, own)).status_code == 200  # nothing was ended
