"""JupyterHub 6 (which we did not write) in the login chain and behind the gateway.

The login sequence is the dev IdP ``primary`` (the identity), JupyterHub, then ``gitlab``. A
route sends ``/hub/api/`` to JupyterHub (through its configurable-http-proxy) with the
session's JupyterHub token as ``Authorization: token ...``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gateway.config import Provider
from gateway.errors import ProviderRejected
from gateway.providers.client import ProviderClient
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from tests.support.jupyterhub import JupyterHub, LoginRefused
from tests.support.login import HTML, browser_login, follow, session_of
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-at-jupyterhub", "mallory": "mallory-at-jupyterhub"}
ACCESS_SCOPE = "access:services!service=gateway"
DEFAULT_TOKEN_LIFETIME = 14 * 86400  # JupyterHub's cookie_max_age_days, in seconds


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterHub]:
    """JupyterHub with alice (allowed to use the gateway) and mallory (not); the stack
    starts it, once it knows the gateway's callback URL."""
    hub = JupyterHub(
        tmp_path_factory.mktemp("jupyterhub"),
        users=USERS,
        service_users=["alice"],
        groups={"notebook-users": ["alice"]},
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    echo_backend: EchoBackend,
    hub: JupyterHub,
) -> Iterator[Stack]:
    def with_jupyterhub(raw: dict[str, Any]) -> None:
        hub.start(redirect_uri=f"{raw['public_url']}/auth/callback")
        raw["providers"].insert(1, hub.provider_config())
        raw["routes"].append(
            {
                "name": "jupyterhub-api",
                "prefix": "/hub/api/",
                "upstream": hub.url,
                "provider": "jupyterhub",
                "token_format": "token",
            }
        )

    stack = start_stack(
        tmp_path_factory.mktemp("gateway"),
        redis_server,
        echo_backend,
        with_jupyterhub,
        with_login=True,
    )
    yield stack
    stack.stop()


def log_in(
    stack: Stack, hub: JupyterHub, jupyterhub_user: str = "alice"
) -> tuple[requests.Session, requests.Response]:
    """A new browser logs in: alice at the dev IdPs, ``jupyterhub_user`` at JupyterHub."""
    return browser_login(stack, "/api/whoami", other_login=hub.login_as(jupyterhub_user))


def error_code(page: requests.Response) -> str:
    """The code on a gateway error page (``token_exchange_failed``, ...)."""
    found = re.search(r"<code>([a-z_]+)</code>", page.text)
    return found.group(1) if found else "(no error code)"


def hub_api_through_gateway(stack: Stack, credential: SessionCredential) -> requests.Response:
    """``GET /hub/api/user`` through Envoy as an API client: the gateway's cookie only, so
    JupyterHub can only go by the token the gateway injects."""
    return requests.get(
        stack.url + "/hub/api/user",
        headers={
            "Cookie": f"{stack.cookie_name}={credential.encode()}",
            "Accept": "application/json",
        },
        timeout=10,
    )


def test_the_login_chains_through_jupyterhub_and_its_api_answers_through_the_gateway(
    stack: Stack, hub: JupyterHub
) -> None:
    browser, page = log_in(stack, hub)
    assert page.status_code == 200, f"{page.status_code} {error_code(page)} at {page.url}"
    assert page.url == stack.url + "/api/whoami"
    credential, session = session_of(stack, browser)
    assert set(session.tokens) == {"primary", "jupyterhub", "gitlab"}
    token = session.tokens["jupyterhub"].access_token

    reply = hub_api_through_gateway(stack, credential)
    assert reply.status_code == 200, reply.text
    model = reply.json()
    assert (model["kind"], model["name"], model["groups"]) == ("user", "alice", ["notebook-users"])
    assert model["token_id"] == hub.whoami(token).json()["token_id"]  # the session's token
    assert ACCESS_SCOPE in model["scopes"]
    without_session = requests.get(
        stack.url + "/hub/api/user", headers={"Accept": "application/json"}, timeout=10
    )
    assert without_session.status_code == 401


def test_jupyterhub_tokens_last_fourteen_days_and_come_without_a_refresh_token(
    stack: Stack, hub: JupyterHub
) -> None:
    browser, _ = log_in(stack, hub)
    _, session = session_of(stack, browser)
    tokens = session.tokens["jupyterhub"]
    assert tokens.refresh_token == ""
    assert tokens.expires_at - tokens.obtained_at == DEFAULT_TOKEN_LIFETIME
    assert set(tokens.scope.split()) == {
        ACCESS_SCOPE,
        "read:users:name!user",
        "read:users:groups!user",
    }


def test_jupyterhub_as_identity_provider_names_the_user_by_name_with_groups(
    stack: Stack, hub: JupyterHub
) -> None:
    """JupyterHub's identity endpoint, /hub/api/user, has no sub, id or email claim: the
    user is ``name``, the groups are ``groups``."""
    browser, _ = log_in(stack, hub)
    _, session = session_of(stack, browser)
    client = ProviderClient(
        Provider.model_validate(hub.provider_config()), f"{stack.config.public_url}/auth/callback"
    )
    identity = client.identity(session.tokens["jupyterhub"].access_token, None)
    assert (identity.subject, identity.name, identity.email, identity.groups) == (
        "alice",
        "alice",
        "",
        ("notebook-users",),
    )


def test_jupyterhub_takes_client_credentials_from_the_form_body_only(
    stack: Stack, hub: JupyterHub
) -> None:
    """Why the jupyterhub preset uses client_secret_post: JupyterHub answers HTTP Basic
    with invalid_client (every login through it ended on token_exchange_failed), and the
    code survives the refusal."""
    callback = f"{stack.config.public_url}/auth/callback"
    basic, post = (
        ProviderClient(
            Provider.model_validate(hub.provider_config(token_endpoint_auth_method=method)),
            callback,
        )
        for method in ("client_secret_basic", "client_secret_post")
    )
    verifier = secrets.token_urlsafe(48)
    authorize = basic.authorization_url(state="s", code_verifier=verifier, nonce=None)
    back = hub.log_in(requests.Session(), authorize, "alice", USERS["alice"])
    code = parse_qs(urlsplit(back).query)["code"][0]
    with pytest.raises(ProviderRejected) as refused:
        basic.exchange_code(code, verifier)
    assert refused.value.error == "invalid_client"
    reply = post.exchange_code(code, verifier)
    assert hub.whoami(reply["access_token"]).json()["name"] == "alice"


def test_a_user_without_the_access_role_is_refused_at_jupyterhub(
    stack: Stack, hub: JupyterHub
) -> None:
    """JupyterHub lets only users with access:services!service=<name> authorize a service."""
    with pytest.raises(LoginRefused) as refused:
        log_in(stack, hub, jupyterhub_user="mallory")
    page = refused.value.response
    assert page.status_code == 403
    assert "You do not have permission to access JupyterHub service gateway" in page.text


def test_a_gateway_logout_leaves_the_jupyterhub_token_valid(stack: Stack, hub: JupyterHub) -> None:
    """JupyterHub has no RFC 7009 endpoint: the gateway's logout cannot end its token."""
    browser, _ = log_in(stack, hub)
    credential, session = session_of(stack, browser)
    token = session.tokens["jupyterhub"].access_token
    logout = browser.get(
        stack.url + "/auth/logout?redirect_url=/", headers=HTML, allow_redirects=False, timeout=10
    )
    assert "logged out" in follow(browser, logout).text
    assert sync_store(stack.config).load(credential) is None
    assert hub_api_through_gateway(stack, credential).status_code == 401

    assert hub.whoami(token).status_code == 200
    revocation = requests.post(
        f"{hub.url}/hub/api/oauth2/revoke", data={"token": token}, timeout=10
    )
    assert revocation.status_code == 404


def test_logging_out_at_jupyterhub_ends_the_token_the_gateway_injects(
    stack: Stack, hub: JupyterHub
) -> None:
    """JupyterHub's logout deletes the tokens issued in that browser's JupyterHub session,
    the gateway's included; the gateway session goes on, and JupyterHub answers 403."""
    browser, _ = log_in(stack, hub)
    credential, _ = session_of(stack, browser)
    assert hub_api_through_gateway(stack, credential).status_code == 200
    hub_logout = browser.get(
        f"{hub.url}/hub/logout", headers=HTML, allow_redirects=False, timeout=10
    )
    assert hub_logout.status_code == 302
    assert hub_api_through_gateway(stack, credential).status_code == 403
    assert browser.get(stack.url + "/auth/user", timeout=10).status_code == 200


def test_deleting_a_token_by_api_ends_every_token_jupyterhub_gave_the_gateway_for_that_user(
    stack: Stack, hub: JupyterHub
) -> None:
    """The one revocation the gateway could call: DELETE /hub/api/users/<name>/tokens/<id>,
    with a credential holding `tokens` (here the service's own, its client secret). It
    takes every token of that user issued to that client, other sessions' too."""
    first, _ = log_in(stack, hub)
    second, _ = log_in(stack, hub)
    tokens = [session_of(stack, b)[1].tokens["jupyterhub"].access_token for b in (first, second)]
    assert tokens[0] != tokens[1]
    token_id = hub.whoami(tokens[0]).json()["token_id"]
    own = hub.api("DELETE", f"/users/alice/tokens/{token_id}", tokens[0])
    assert own.status_code == 403  # the token cannot end itself: it lacks `tokens`

    deleted = hub.api("DELETE", f"/users/alice/tokens/{token_id}", hub.client_secret)
    assert deleted.status_code == 204
    assert [hub.whoami(token).status_code for token in tokens] == [403, 403]
    credential, _ = session_of(stack, second)
    assert hub_api_through_gateway(stack, credential).status_code == 403
