"""A key of ours holding the wrong type of value (an operator's mistake, a restore, an old
bug): Redis answers WRONGTYPE. The gateway must treat it as "nothing there": a clean 401
for the session it names, and the browser can still log in and out, never a 503 that
lasts as long as the key."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
import requests

from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, session_admin, sync_store
from tests.support.login import HTML, browser_login, follow, session_of
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack, without_session_cache

pytestmark = pytest.mark.integration
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    # Its own Redis: these tests damage the keys of the dev IdP's one user.
    stack = start_stack(
        tmp_path_factory.mktemp("damaged"),
        own_redis,
        echo_backend,
        without_session_cache,
        with_login=True,
    )
    yield stack
    stack.stop()


@pytest.fixture
def client(stack: Stack) -> redis.Redis:
    return sync_client(stack.config.redis)


# Each one puts a value of another type at a key.
Damage = Callable[[redis.Redis, str], object]
DAMAGES: dict[str, Damage] = {
    "a hash": lambda client, key: client.hset(key, "field", "value"),
    "a list": lambda client, key: client.rpush(key, "item"),
    "a set": lambda client, key: client.sadd(key, "member"),
    "a string": lambda client, key: client.set(key, "text"),
}
RECORD_DAMAGES = ["a hash", "a list", "a set"]  # a string is a record that does not open
INDEX_DAMAGES = ["a list", "a set", "a string"]  # a hash is an index (its entries: elsewhere)


def damage(client: redis.Redis, key: str, how: str) -> None:
    client.delete(key)
    DAMAGES[how](client, key)


def logs_in_and_out(stack: Stack, browser: requests.Session) -> SessionCredential:
    """Log the browser in and out again through every provider; the credential it had."""
    _, page = browser_login(stack, "/api/whoami", browser)
    assert page.status_code == 200, page.text
    credential, _ = session_of(stack, browser)
    logout = browser.get(
        stack.url + "/auth/logout?redirect_url=/", headers=HTML, allow_redirects=False, timeout=10
    )
    assert logout.status_code == 302, logout.text
    final = follow(browser, logout)
    assert final.status_code == 200 and "logged out" in final.text, final.text
    assert sync_store(stack.config).load(credential) is None
    return credential


def logs_in_and_out_as(stack: Stack) -> str:
    """The subject the dev IdP's user has at the gateway (the IdP's ``sub``)."""
    browser = requests.Session()
    _, page = browser_login(stack, "/api/whoami", browser)
    assert page.status_code == 200, page.text
    _, session = session_of(stack, browser)
    browser.get(stack.url + "/auth/logout?redirect_url=/", headers=HTML, timeout=10)
    return session.identity.subject


@pytest.mark.parametrize("how", RECORD_DAMAGES)
def test_a_damaged_session_record_is_a_401_and_the_browser_logs_in_and_out_again(
    stack, client, how
):
    browser, page = browser_login(stack)
    assert page.status_code == 200
    credential, _ = session_of(stack, browser)
    damage(client, keyspace(stack.config).session_record(credential.lookup_id), how)

    denied = browser.get(stack.url + "/api/x", headers=JSON, timeout=10)
    assert denied.status_code == 401, denied.text
    # Logging out with that cookie works and clears the key; so does a new login.
    logout = requests.get(
        stack.url + "/auth/logout?redirect_url=/",
        headers={**HTML, "Cookie": f"{stack.cookie_name}={credential.encode()}"},
        timeout=10,
    )
    assert logout.status_code == 200 and "logged out" in logout.text, logout.text
    assert client.exists(keyspace(stack.config).session_record(credential.lookup_id)) == 0
    damage(client, keyspace(stack.config).session_record(credential.lookup_id), how)
    logs_in_and_out(stack, browser)


@pytest.mark.parametrize("how", INDEX_DAMAGES)
def test_a_damaged_user_index_neither_stops_a_login_nor_a_logout(stack, client, how):
    subject = logs_in_and_out_as(stack)
    index = keyspace(stack.config).user_index(subject)
    damage(client, index, how)
    browser = requests.Session()
    _, page = browser_login(stack, "/api/whoami", browser)
    assert page.status_code == 200, page.text
    credential, _ = session_of(stack, browser)
    # The login replaced the damaged index with one naming its session.
    assert client.type(index) == b"hash"
    assert credential.lookup_id in sync_store(stack.config).lookup_ids_of_user(subject)

    damage(client, index, how)
    logs_in_and_out(stack, browser)
    # Operators can still list and end the user's sessions.
    damage(client, index, how)
    assert session_admin(stack.config).list_sessions(subject) == []
    assert session_admin(stack.config).revoke_user(subject) == 0
    assert client.exists(index) == 0


@pytest.mark.parametrize("how", INDEX_DAMAGES)
def test_a_damaged_idp_session_index_neither_stops_a_logout_nor_a_login(stack, client, how):
    browser = requests.Session()
    _, page = browser_login(stack, "/api/whoami", browser)
    assert page.status_code == 200
    _, session = session_of(stack, browser)
    sid = session.identity.provider_session_id
    index = keyspace(stack.config).provider_session_index(sid)
    damage(client, index, how)

    # The IdP's back-channel logout of that sid is answered, not refused with a 503 that the
    # IdP would retry for ever (the damaged index names no session to end).
    outcomes = stack.idps["primary"].backchannel_logout(sid, sub=session.identity.subject)
    assert [outcome.get("status") for outcome in outcomes] == [200], outcomes
    assert client.exists(index) == 0
    damage(client, index, how)
    logout = browser.get(stack.url + "/auth/logout?redirect_url=/", headers=HTML, timeout=10)
    assert logout.status_code == 200 and "logged out" in logout.text, logout.text
    logs_in_and_out(stack, browser)
