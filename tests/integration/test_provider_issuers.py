"""Issuers as providers really write them, and the RFC 9207 `iss` of authorization replies,
through Envoy with real provider processes (the dev IdP here: it can be given any issuer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from tests.support.dev_idp import DevIdp, start_dev_idp, submit_login_form
from tests.support.login import HTML, browser_login, start_login
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import PRIMARY_SECRET, Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    """The gateway with a primary provider whose issuer ends in "/" (as Keycloak's may and
    Auth0's do); the dev IdP checks redirect URIs, so it starts once the public URL is known."""
    holder: dict[str, DevIdp] = {}

    def use_slash_issuer(raw: dict[str, Any]) -> None:
        callback = f"{raw['public_url']}/auth/callback"
        idp = start_dev_idp(
            mode="oidc", clients=[f"gw:{PRIMARY_SECRET}:{callback}"], issuer_path="/"
        )
        holder["idp"] = idp
        assert idp.issuer.endswith("/")
        raw["providers"][0]["issuer"] = idp.issuer

    stack = start_stack(
        tmp_path_factory.mktemp("issuers"),
        redis_server,
        echo_backend,
        use_slash_issuer,
        with_login=True,
    )
    stack.idps["primary"].stop()  # the default one, replaced by the slash-issuer provider
    stack.idps["primary"] = holder["idp"]
    stack.stoppers.append(holder["idp"].stop)
    yield stack
    stack.stop()


def test_an_issuer_ending_in_a_slash_logs_in(stack: Stack) -> None:
    browser, page = browser_login(stack, "/api/whoami")
    assert page.status_code == 200, page.text[:300]
    assert page.json()["headers"]["authorization"][0].startswith("Bearer ")


def _callback_url(stack: Stack, browser: requests.Session) -> str:
    """Walk to the first provider's redirect back to the gateway; return that URL."""
    response = start_login(stack, browser)
    for _ in range(10):
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if "/auth/callback" in target:
                return target
            response = browser.get(target, headers=HTML, allow_redirects=False, timeout=10)
        else:
            response = submit_login_form(browser, response)
    raise AssertionError("never sent back to the gateway")


def test_an_authorization_reply_naming_another_issuer_is_refused_before_the_code_is_used(
    stack: Stack,
) -> None:
    idp = stack.idps["primary"]
    exchanges = idp.stats()["token_requests"].get("authorization_code", {}).get("ok", 0)
    browser = requests.Session()
    mixed_up = _callback_url(stack, browser) + "&iss=https%3A%2F%2Fattacker.example"
    reply = browser.get(mixed_up, headers=HTML, allow_redirects=False, timeout=10)
    assert reply.status_code == 400
    assert stack.cookie_name not in browser.cookies
    assert idp.stats()["token_requests"].get("authorization_code", {}).get("ok", 0) == exchanges


def test_an_authorization_reply_naming_the_provider_is_accepted(stack: Stack) -> None:
    browser = requests.Session()
    named = (
        _callback_url(stack, browser)
        + "&iss="
        + requests.utils.quote(stack.idps["primary"].issuer, safe="")
    )
    reply = browser.get(named, headers=HTML, allow_redirects=False, timeout=10)
    assert reply.is_redirect  # on to the next provider of the sequence
    assert "/auth/callback" not in reply.headers["location"]
