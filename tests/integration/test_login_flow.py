"""A person logging in through Envoy with two real identity providers, then logging out."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gateway.sessions.factory import sync_store
from tests.support.login import HTML, browser_login, follow, session_of, start_login
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(login_stack: Stack) -> Stack:
    return login_stack


def test_login_walks_both_providers_and_lands_on_the_original_page(stack):
    browser, page = browser_login(stack, "/api/whoami?tab=1")
    assert page.status_code == 200, page.text
    assert page.url == stack.url + "/api/whoami?tab=1"
    echoed = page.json()
    credential, session = session_of(stack, browser)
    assert session is not None
    assert set(session.tokens) == {"primary", "gitlab"}
    primary, gitlab = session.tokens["primary"], session.tokens["gitlab"]
    assert echoed["headers"]["authorization"] == [f"Bearer {primary.access_token}"]
    # Neither the session cookie nor the login app's binding cookie reaches a backend (the
    # dev IdPs' own cookies do: cookies ignore ports, and they share 127.0.0.1).
    sent = " ".join(echoed["headers"].get("cookie", []))
    assert stack.cookie_name not in sent and "gateway_login" not in sent
    assert gitlab.access_token not in json.dumps(echoed)

    gitlab_page = browser.get(stack.url + "/gitlab/api/v4/user", timeout=10).json()
    assert gitlab_page["headers"]["private-token"] == [gitlab.access_token]
    assert primary.access_token not in json.dumps(gitlab_page)
    assert session.identity.name == "Alice Ärger"
    assert session.identity.provider_session_id  # the IdP's sid, for back-channel logout


def test_session_cookie_is_httponly_lax_and_scoped_to_the_whole_site(stack):
    browser = requests.Session()
    seen: list[requests.Response] = []
    first = browser.get(stack.url + "/api/x", headers=HTML, allow_redirects=False, timeout=10)
    follow(browser, first, seen=seen)
    set_cookies = [
        r.headers["set-cookie"]
        for r in seen
        if r.headers.get("set-cookie", "").startswith(stack.cookie_name + "=")
    ]
    assert len(set_cookies) == 1
    attributes = set_cookies[0].split("; ")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)


def test_login_with_every_token_still_valid_returns_at_once(stack):
    browser, _ = browser_login(stack)
    old_credential, _ = session_of(stack, browser)
    again = start_login(stack, browser)
    assert again.status_code == 302 and again.headers["location"].endswith("/api/x")
    assert browser.cookies.get(stack.cookie_name) == old_credential.encode()


def test_relogin_skips_valid_providers_and_issues_a_new_session_id(stack):
    """No session fixation: the session after a login is never the one before it."""
    browser, _ = browser_login(stack)
    old_credential, old_session = session_of(stack, browser)
    expired = old_session.with_tokens(
        "primary", replace(old_session.tokens["primary"], needs_login=True)
    )
    sync_store(stack.config).save(old_credential, expired)
    before = stack.idps["gitlab"].stats()["token_requests"]
    _, page = browser_login(stack, "/api/again", browser=browser)
    assert page.status_code == 200
    new_credential, new_session = session_of(stack, browser)
    assert new_credential.lookup_id != old_credential.lookup_id
    assert sync_store(stack.config).load(old_credential) is None
    assert new_session.tokens["gitlab"] == old_session.tokens["gitlab"]  # gitlab was skipped
    assert stack.idps["gitlab"].stats()["token_requests"] == before


def test_two_tabs_logging_in_at_once_do_not_break_each_other(stack):
    browser = requests.Session()
    tab1 = start_login(stack, browser, "/api/one")
    tab2 = start_login(stack, browser, "/api/two")
    page2 = follow(browser, tab2)
    browser.cookies.pop(stack.cookie_name)  # tab 1 still finishes its own attempt
    page1 = follow(browser, tab1)
    assert urlsplit(page1.url).path == "/api/one"
    assert urlsplit(page2.url).path == "/api/two"


def test_user_endpoint_shows_the_profile_and_never_a_token(stack):
    browser, _ = browser_login(stack)
    _, session = session_of(stack, browser)
    profile = browser.get(stack.url + "/auth/user", timeout=10)
    assert profile.status_code == 200
    assert profile.json()["name"] == "Alice Ärger"
    for tokens in session.tokens.values():
        assert tokens.access_token not in profile.text
        assert tokens.refresh_token not in profile.text or not tokens.refresh_token


def test_logout_removes_the_session_revokes_at_the_idp_and_ends_access(stack):
    browser, _ = browser_login(stack)
    credential, session = session_of(stack, browser)
    before = {name: len(idp.stats()["revocations"]) for name, idp in stack.idps.items()}
    logout = browser.get(
        stack.url + "/auth/logout?redirect_url=/", headers=HTML, allow_redirects=False, timeout=10
    )
    assert logout.status_code == 302
    end_session = urlsplit(logout.headers["location"])
    assert end_session.netloc == urlsplit(stack.idps["primary"].url).netloc
    query = parse_qs(end_session.query)
    assert query["id_token_hint"] == [session.tokens["primary"].id_token]
    assert query["post_logout_redirect_uri"] == [stack.url + "/auth/logged-out"]
    final = follow(browser, logout)
    assert final.status_code == 200 and "logged out" in final.text

    assert sync_store(stack.config).load(credential) is None
    after = {name: idp.stats()["revocations"] for name, idp in stack.idps.items()}
    assert len(after["gitlab"]) > before["gitlab"]  # the IdPs confirm the revocations
    assert len(after["primary"]) > before["primary"]
    assert stack.idps["primary"].stats()["end_session_calls"] >= 1
    denied = requests.get(
        stack.url + "/api/x",
        headers={"Cookie": f"{stack.cookie_name}={credential.encode()}"},
        timeout=10,
    )
    assert denied.status_code == 401


def test_backchannel_logout_ends_every_session_of_that_idp_session(stack):
    browser, _ = browser_login(stack)
    credential, session = session_of(stack, browser)
    stack.idps["primary"].backchannel_logout(
        session.identity.provider_session_id, sub=session.identity.subject
    )
    assert sync_store(stack.config).load(credential) is None
    denied = browser.get(stack.url + "/api/x", headers={"Accept": "application/json"}, timeout=10)
    assert denied.status_code == 401


def test_a_cli_logs_out_with_its_bearer_credential_through_envoy(stack):
    credential = stack.create_session("carol", tokens={"primary": "tok"})
    bearer = {"Authorization": f"Bearer {credential.encode()}", "Accept": "application/json"}
    assert requests.get(stack.url + "/auth/user", headers=bearer, timeout=10).status_code == 200
    reply = requests.post(stack.url + "/auth/logout", headers=bearer, timeout=10)
    assert reply.status_code == 200 and reply.json()["logged_out"] is True
    assert sync_store(stack.config).load(credential) is None
    assert requests.get(stack.url + "/api/x", headers=bearer, timeout=10).status_code == 401


def test_a_login_adding_a_provider_cannot_revive_a_session_revoked_meanwhile(stack):
    browser, _ = browser_login(stack)
    credential, session = session_of(stack, browser)
    store = sync_store(stack.config)
    store.save(
        credential,
        session.with_tokens("gitlab", replace(session.tokens["gitlab"], needs_login=True)),
    )
    # The browser is sent through gitlab alone (primary is still good) ...
    start = start_login(stack, browser)
    assert urlsplit(start.headers["location"]).netloc == urlsplit(stack.idps["gitlab"].url).netloc
    store.delete(credential)  # ... and an operator revokes the session meanwhile
    browser.cookies.pop(stack.cookie_name)
    page = follow(browser, start)
    assert page.status_code == 400 and "<code>expired_attempt</code>" in page.text
    assert stack.cookie_name not in browser.cookies
