"""CLI login: a terminal starts it, a logged-in browser approves it, the terminal gets a token.

Approving logs the browser in through every identity provider once more (their SSO sessions
make that a few redirects), so the CLI's session gets token families of its own. Those tests
run against the whole stack (Envoy, ext_authz, login app, two dev IdPs); the ones that need no
approval use the Flask test client against a real Redis, each with its own keys.
"""

from __future__ import annotations

import queue
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from gateway.config import GatewayConfig
from gateway.device_client import DeviceLoginError, device_login
from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Identity, Session, TokenSet
from login_app.cli_login import GRANT_TYPE
from login_app.device_codes import GUESS_LIMIT, PollResult, device_id_for
from login_app.device_store import DeviceCodeStore, DeviceRecord, device_codes
from tests.support.login import HTML, browser_login, follow
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json"}
# The dev IdPs know a second person, for an approval that logs in as someone else.
IDP_USERS = [
    "--user",
    "alice:alice:alice@example.org:Alice Ärger:admins+users",
    "--user",
    "bob:bob",
]


def form_value(page_text: str, name: str) -> str:
    """The value of a form field on a page, as a browser would submit it."""
    match = re.search(rf'name="{name}" value="([^"]+)"', page_text)
    assert match, page_text
    return match.group(1)


# -- against the whole stack ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, echo_backend: EchoBackend
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("cli-login"),
        redis_server,
        echo_backend,
        with_login=True,
        idp_args=IDP_USERS,
    )
    yield stack
    stack.stop()


class Terminal:
    """The CLI's side, through Envoy: no cookies, only the device code."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.url + "/auth/cli"

    def start(self) -> dict[str, Any]:
        reply = requests.post(self.url + "/start", timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def poll(self, device_code: str) -> tuple[int, dict[str, Any]]:
        reply = requests.post(
            self.url + "/token",
            data={"grant_type": GRANT_TYPE, "device_code": device_code},
            timeout=10,
        )
        return reply.status_code, reply.json()


@dataclass
class Approver:
    """A person logged in to the gateway in a browser, and so at both identity providers."""

    stack: Stack
    browser: requests.Session

    @property
    def credential(self) -> SessionCredential:
        cookie = self.browser.cookies.get(self.stack.cookie_name)
        assert cookie, "the browser has no session"
        return SessionCredential.parse(cookie)

    def approval_page(self, user_code: str) -> requests.Response:
        return self.browser.get(
            self.stack.url + "/auth/cli/approve",
            params={"user_code": user_code},
            headers=HTML,
            allow_redirects=False,
            timeout=10,
        )

    def press(
        self,
        user_code: str,
        action: str = "approve",
        *,
        csrf_token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Open the approval page, then press Approve (or Deny) as the page's form would."""
        if csrf_token is None:
            page = self.approval_page(user_code)
            assert page.status_code == 200, page.text
            csrf_token = form_value(page.text, "csrf_token")
        return self.browser.post(
            self.stack.url + "/auth/cli/approve",
            params={"user_code": user_code},
            data={"user_code": user_code, "csrf_token": csrf_token, "action": action},
            headers={**HTML, **(headers or {})},
            allow_redirects=False,
            timeout=10,
        )

    def approve(self, user_code: str, **follow_args: Any) -> requests.Response:
        """Press Approve and pass through the identity providers to the final page."""
        return follow(self.browser, self.press(user_code), **follow_args)


@pytest.fixture
def terminal(stack: Stack) -> Terminal:
    return Terminal(stack)


@pytest.fixture
def approver(stack: Stack) -> Approver:
    browser, page = browser_login(stack)
    assert page.status_code == 200, page.text
    return Approver(stack, browser)


def stored(stack: Stack, credential: SessionCredential) -> Session:
    session = sync_store(stack.config).load(credential)
    assert session is not None
    return session


def cli_sessions_of(stack: Stack, subject: str) -> set[str]:
    return set(sync_store(stack.config).lookup_ids_of_user(subject))


def approved_cli(terminal: Terminal, approver: Approver) -> SessionCredential:
    """Run a CLI login to the end; the credential the terminal got."""
    started = terminal.start()
    done = approver.approve(started["user_code"])
    assert done.status_code == 200, done.text
    status, token = terminal.poll(started["device_code"])
    assert status == 200, token
    return SessionCredential.parse(token["access_token"])


def expire_access_token(stack: Stack, credential: SessionCredential, provider: str) -> None:
    session = stored(stack, credential)
    tokens = replace(session.tokens[provider], expires_at=int(time.time()) - 1)
    sync_store(stack.config).save(credential, session.with_tokens(provider, tokens))


def test_approval_logs_in_again_and_gives_the_cli_a_new_session(stack, terminal, approver):
    started = terminal.start()
    assert re.fullmatch(
        r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", started["user_code"]
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", started["device_code"])
    assert started["verification_uri"] == stack.url + "/auth/cli/approve"
    complete = urlsplit(started["verification_uri_complete"])
    assert parse_qs(complete.query) == {"user_code": [started["user_code"]]}
    assert (started["expires_in"], started["interval"]) == (600, 5)
    browser_session = stored(stack, approver.credential)

    page = approver.approval_page(started["user_code"])
    assert page.status_code == 200
    assert started["user_code"] in page.text and "Alice Ärger" in page.text
    pressed = approver.press(started["user_code"])
    assert pressed.status_code == 302
    first_provider = urlsplit(stack.idps["primary"].url).netloc
    assert urlsplit(pressed.headers["location"]).netloc == first_provider
    # The device stays pending until the browser's login is through.
    assert terminal.poll(started["device_code"]) == (400, {"error": "authorization_pending"})
    seen: list[requests.Response] = []
    done = follow(approver.browser, pressed, seen=seen)
    assert done.status_code == 200, done.text
    assert "return to your terminal" in done.text
    assert not any(stack.cookie_name + "=" in r.headers.get("set-cookie", "") for r in seen)

    status, token = terminal.poll(started["device_code"])
    assert status == 200, token
    assert token["token_type"] == "Bearer"
    assert 3590 <= token["expires_in"] <= 3600  # the new session's own lifetime (1h)
    credential = SessionCredential.parse(token["access_token"])
    assert credential.lookup_id != approver.credential.lookup_id
    session = stored(stack, credential)
    assert session.identity == browser_session.identity
    assert set(session.tokens) == set(browser_session.tokens) == {"primary", "gitlab"}
    assert session.created_at >= browser_session.created_at
    # Indexed like any session, so "log out everywhere" ends it too.
    assert credential.lookup_id in cli_sessions_of(stack, session.identity.subject)
    # The browser keeps its own session, untouched.
    assert stored(stack, approver.credential) == browser_session


def test_the_cli_session_has_token_families_of_its_own(stack, terminal, approver):
    cli = stored(stack, approved_cli(terminal, approver))
    browser = stored(stack, approver.credential)
    for provider in ("primary", "gitlab"):
        assert cli.tokens[provider].refresh_token and browser.tokens[provider].refresh_token
        assert cli.tokens[provider].refresh_token != browser.tokens[provider].refresh_token
        assert cli.tokens[provider].access_token != browser.tokens[provider].access_token


def test_refreshing_the_cli_session_leaves_the_browsers_refresh_token_working(
    stack, terminal, approver
):
    """GitLab rotates refresh tokens: with a shared one, the second refresh got invalid_grant."""
    cli = approved_cli(terminal, approver)
    gitlab = stack.idps["gitlab"]
    bearer = {"Authorization": f"Bearer {cli.encode()}"}
    for credential, client, headers in (
        (cli, requests, bearer),
        (approver.credential, approver.browser, {}),
    ):
        expire_access_token(stack, credential, "gitlab")
        before = gitlab.stats()["refreshes"]
        reply = client.get(stack.url + "/gitlab/x", headers={**JSON, **headers}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert gitlab.stats()["refreshes"] == before + 1
        tokens = stored(stack, credential).tokens["gitlab"]
        assert not tokens.needs_login
        assert reply.json()["headers"]["private-token"] == [tokens.access_token]


def test_the_token_is_handed_out_once(stack, terminal, approver):
    started = terminal.start()
    approver.approve(started["user_code"])
    assert terminal.poll(started["device_code"])[0] == 200
    assert terminal.poll(started["device_code"]) == (400, {"error": "invalid_grant"})


def test_an_approved_token_is_not_held_back_by_the_interval(terminal, approver):
    started = terminal.start()
    terminal.poll(started["device_code"])
    approver.approve(started["user_code"])
    assert terminal.poll(started["device_code"])[0] == 200  # right after the previous poll


def test_deny_gives_access_denied_and_creates_no_session(stack, terminal, approver):
    subject = stored(stack, approver.credential).identity.subject
    sessions = cli_sessions_of(stack, subject)
    started = terminal.start()
    done = approver.press(started["user_code"], "deny")
    assert done.status_code == 200 and "denied" in done.text
    assert terminal.poll(started["device_code"]) == (400, {"error": "access_denied"})
    assert cli_sessions_of(stack, subject) == sessions


def test_a_browser_without_a_session_logs_in_and_comes_back_to_approve(stack, terminal):
    started = terminal.start()
    browser = requests.Session()
    link = browser.get(
        started["verification_uri_complete"], headers=HTML, allow_redirects=False, timeout=10
    )
    assert link.status_code == 302 and "/auth/login?" in link.headers["location"]
    page = follow(browser, link)
    assert page.status_code == 200 and started["user_code"] in page.text
    approver = Approver(stack, browser)
    done = approver.approve(started["user_code"])
    assert done.status_code == 200 and "return to your terminal" in done.text
    assert terminal.poll(started["device_code"])[0] == 200


def test_a_same_origin_post_is_accepted(stack, terminal, approver):
    started = terminal.start()
    pressed = approver.press(
        started["user_code"],
        headers={"Origin": stack.config.public_origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert pressed.status_code == 302
    assert follow(approver.browser, pressed).status_code == 200
    assert terminal.poll(started["device_code"])[0] == 200


def test_approving_twice_shows_the_error_page(terminal, approver):
    started = terminal.start()
    assert approver.approve(started["user_code"]).status_code == 200
    page = approver.approval_page(started["user_code"])
    assert page.status_code == 400 and "unknown_user_code" in page.text


def test_a_second_approval_from_an_open_page_is_refused(stack, terminal, approver):
    subject = stored(stack, approver.credential).identity.subject
    sessions = cli_sessions_of(stack, subject)
    started = terminal.start()
    token = form_value(approver.approval_page(started["user_code"]).text, "csrf_token")
    first = follow(approver.browser, approver.press(started["user_code"], csrf_token=token))
    assert first.status_code == 200
    again = approver.press(started["user_code"], csrf_token=token)
    assert again.status_code == 400 and "unknown_user_code" in again.text
    assert terminal.poll(started["device_code"])[0] == 200
    assert len(cli_sessions_of(stack, subject) - sessions) == 1  # one CLI session was made


def test_of_two_approvals_in_flight_the_later_one_lapses_and_leaves_no_session(
    stack, terminal, approver
):
    subject = stored(stack, approver.credential).identity.subject
    sessions = cli_sessions_of(stack, subject)
    started = terminal.start()
    first, second = approver.press(started["user_code"]), approver.press(started["user_code"])
    assert follow(approver.browser, first).status_code == 200
    lapsed = follow(approver.browser, second)
    assert lapsed.status_code == 400 and "cli_login_lapsed" in lapsed.text
    assert "Start the login in your terminal again" in lapsed.text
    assert terminal.poll(started["device_code"])[0] == 200
    assert len(cli_sessions_of(stack, subject) - sessions) == 1


def test_a_code_expiring_during_the_browsers_login_approves_nothing(stack, terminal, approver):
    subject = stored(stack, approver.credential).identity.subject
    sessions = cli_sessions_of(stack, subject)
    started = terminal.start()
    pressed = approver.press(started["user_code"])
    key = f"{stack.config.redis.key_prefix}device:{{{device_id_for(started['device_code'])}}}"
    client = sync_client(stack.config.redis)
    client.hset(key, "expires_at", repr(time.time() - 1))
    client.close()
    lapsed = follow(approver.browser, pressed)
    assert lapsed.status_code == 400 and lapsed.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in lapsed.text and "cli_login_lapsed" in lapsed.text
    assert terminal.poll(started["device_code"]) == (400, {"error": "expired_token"})
    assert cli_sessions_of(stack, subject) == sessions  # the new session was deleted again


def test_an_approval_that_logs_in_as_someone_else_gives_the_cli_that_identity(
    stack, terminal, approver
):
    """The person just proved who they are at the IdP; the mismatch is logged."""
    for cookie in list(approver.browser.cookies):
        if cookie.name.startswith("dev_idp_session"):  # log out at the IdPs only
            approver.browser.cookies.clear(cookie.domain, cookie.path, cookie.name)
    started = terminal.start()
    done = approver.approve(started["user_code"], username="bob", password="bob")
    assert done.status_code == 200, done.text
    status, token = terminal.poll(started["device_code"])
    assert status == 200, token
    cli = stored(stack, SessionCredential.parse(token["access_token"]))
    browser = stored(stack, approver.credential)
    assert cli.identity.email == "bob@example.org"
    assert browser.identity.email == "alice@example.org"
    assert "logged in as another" in stack.login_app.output()


def test_concurrent_polls_hand_the_token_to_exactly_one(terminal, approver):
    started = terminal.start()
    approver.approve(started["user_code"])
    barrier = threading.Barrier(8)
    results: list[tuple[int, dict]] = []

    def poll() -> None:
        barrier.wait()
        results.append(terminal.poll(started["device_code"]))

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert sorted(status for status, _ in results) == [200] + [400] * 7
    assert {body["error"] for status, body in results if status == 400} == {"invalid_grant"}


def test_redis_never_holds_the_credential_or_device_code_in_clear(stack, terminal, approver):
    started = terminal.start()
    approver.approve(started["user_code"])
    raw_redis = sync_client(stack.config.redis)
    everything = b""
    for key in raw_redis.scan_iter(match=stack.config.redis.key_prefix + "*"):
        everything += key
        kind = raw_redis.type(key)
        if kind == b"hash":
            for field, value in raw_redis.hgetall(key).items():
                everything += field + value
        elif kind == b"string":
            everything += raw_redis.get(key) or b""
        elif kind == b"set":
            everything += b"".join(raw_redis.smembers(key))
        elif kind == b"zset":
            everything += b"".join(raw_redis.zrange(key, 0, -1))
    raw_redis.close()
    assert b"device:" in everything and b"approved" in everything
    assert b"gws_" not in everything
    assert started["device_code"].encode() not in everything
    assert terminal.poll(started["device_code"])[0] == 200


def backchannel_deliveries(stack: Stack, sid: str) -> list[dict[str, Any]]:
    deliveries = stack.idps["primary"].stats()["backchannel_deliveries"]
    return [d for d in deliveries if d["sid"] == sid]


def cli_get(stack: Stack, credential: SessionCredential, path: str) -> requests.Response:
    return requests.get(
        stack.url + path,
        headers={**JSON, "Authorization": f"Bearer {credential.encode()}"},
        timeout=10,
    )


def test_a_browser_logout_leaves_the_cli_sessions_it_approved_logged_in(stack, terminal, approver):
    """The browser's logout ends the provider's session too (RP-initiated logout), and the
    provider answers with a back-channel logout for it: that one ends nothing more."""
    cli = approved_cli(terminal, approver)
    browser_credential = approver.credential
    sid = stored(stack, browser_credential).identity.provider_session_id
    assert sid and stored(stack, cli).identity.provider_session_id == sid  # one IdP session

    logout = approver.browser.get(
        stack.url + "/auth/logout", headers=HTML, allow_redirects=False, timeout=10
    )
    page = follow(approver.browser, logout)
    assert page.status_code == 200 and "You are logged out" in page.text
    assert [d["status"] for d in backchannel_deliveries(stack, sid)] == [200]
    assert sync_store(stack.config).load(browser_credential) is None

    assert stored(stack, cli).identity.provider_session_id == sid
    assert cli_get(stack, cli, "/auth/user").status_code == 200
    reply = cli_get(stack, cli, "/gitlab/projects")
    assert reply.status_code == 200, reply.text
    # Ending its session, this provider revoked every token issued in it (as Keycloak does):
    # the CLI session learns so at its next refresh, and only that provider needs a login.
    expire_access_token(stack, cli, "primary")
    refused = cli_get(stack, cli, "/api/x")
    assert refused.status_code == 401 and refused.json()["reason"] == "provider_login_required"
    assert cli_get(stack, cli, "/gitlab/projects").status_code == 200
    # Then the provider's own session-wide logout of that session ends the CLI session too.
    ended = stack.idps["primary"].backchannel_logout(sid)
    assert [d["status"] for d in ended] == [200]
    assert sync_store(stack.config).load(cli) is None
    assert cli_get(stack, cli, "/gitlab/projects").status_code == 401


def test_a_cli_logout_ends_the_cli_session_only(stack, terminal, approver):
    cli = approved_cli(terminal, approver)
    reply = requests.post(
        stack.url + "/auth/logout",
        headers={**JSON, "Authorization": f"Bearer {cli.encode()}"},
        timeout=10,
    )
    assert reply.status_code == 200 and reply.json()["logged_out"] is True
    assert sync_store(stack.config).load(cli) is None
    assert approver.browser.get(stack.url + "/api/x", headers=JSON, timeout=10).status_code == 200
    # The CLI never visits the end-session URL it was given: nothing of the browser's
    # provider session is spared when the provider ends that session itself.
    sid = stored(stack, approver.credential).identity.provider_session_id
    assert [d["status"] for d in stack.idps["primary"].backchannel_logout(sid)] == [200]
    assert sync_store(stack.config).load(approver.credential) is None


def test_a_logout_at_the_provider_ends_the_browser_and_cli_sessions_of_its_session(
    stack, terminal, approver
):
    cli = approved_cli(terminal, approver)
    sid = stored(stack, approver.credential).identity.provider_session_id
    ended = stack.idps["primary"].backchannel_logout(sid)
    assert [d["status"] for d in ended] == [200]
    assert sync_store(stack.config).load(approver.credential) is None
    assert sync_store(stack.config).load(cli) is None


def test_a_logout_of_the_user_at_the_provider_ends_every_session(stack, terminal, approver):
    cli = approved_cli(terminal, approver)
    session = stored(stack, approver.credential)
    logout_token = stack.idps["primary"].sign(
        {
            "iss": stack.idps["primary"].issuer,
            "aud": "gw",
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
            "sub": session.identity.subject,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
    )
    reply = requests.post(
        stack.url + "/auth/backchannel-logout", data={"logout_token": logout_token}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    assert sync_store(stack.config).load(approver.credential) is None
    assert sync_store(stack.config).load(cli) is None


def _approve_when_printed(
    lines: queue.Queue[str], approver: Approver, action: str, errors: list[BaseException]
) -> None:
    try:
        for _ in range(2):
            line = lines.get(timeout=10)
            match = re.search(r"Or open (\S+)", line)
            if match:
                break
        else:
            raise AssertionError("the client printed no verification URL")
        browser = approver.browser
        page = browser.get(match.group(1), headers=HTML, timeout=10)  # the link, as clicked
        assert page.status_code == 200, page.text
        token = form_value(page.text, "csrf_token")
        code = form_value(page.text, "user_code")
        pressed = browser.post(
            page.url,
            data={"user_code": code, "csrf_token": token, "action": action},
            headers=HTML,
            allow_redirects=False,
            timeout=10,
        )
        done = follow(browser, pressed)
        assert done.status_code == 200, done.text
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def _run_device_login(
    stack: Stack, approver: Approver, action: str
) -> tuple[str | DeviceLoginError, list[str], list[float]]:
    printed: list[str] = []
    lines: queue.Queue[str] = queue.Queue()
    sleeps: list[float] = []
    errors: list[BaseException] = []

    def printer(text: str) -> None:
        printed.append(text)
        lines.put(text)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(0.05)

    thread = threading.Thread(target=_approve_when_printed, args=(lines, approver, action, errors))
    thread.start()
    try:
        outcome: str | DeviceLoginError = device_login(
            stack.url, open_browser=False, printer=printer, sleep=sleep, timeout=5
        )
    except DeviceLoginError as exc:
        outcome = exc
    thread.join(10)
    assert not errors, errors
    return outcome, printed, sleeps


def test_device_login_returns_the_token_once_approved(stack, approver):
    token, printed, sleeps = _run_device_login(stack, approver, "approve")
    assert isinstance(token, str)
    session = stored(stack, SessionCredential.parse(token))
    assert session.identity.email == "alice@example.org"
    assert re.search(r"enter the code [A-Z]{4}-[A-Z]{4}", printed[0])
    assert stack.url + "/auth/cli/approve" in printed[0]
    # It starts at the server's interval and adds 5 s after each slow_down.
    assert sleeps[0] == 5
    assert all(later - earlier in (0, 5) for earlier, later in pairwise(sleeps))


def test_device_login_reports_a_denial(stack, approver):
    outcome, _, _ = _run_device_login(stack, approver, "deny")
    assert isinstance(outcome, DeviceLoginError)
    assert outcome.error == "access_denied"


def test_device_login_refuses_plain_http_beyond_loopback():
    with pytest.raises(DeviceLoginError) as raised:
        device_login("http://gateway.example", open_browser=False, sleep=lambda _: None)
    assert raised.value.error == "insecure_url"


# -- against the login app alone, for what needs no approval ----------------------------------


@dataclass
class User:
    credential: SessionCredential
    session: Session

    @property
    def cookie(self) -> str:
        return self.credential.encode()


def log_in(config: GatewayConfig, subject: str = "alice") -> User:
    """A browser session made directly in Redis, as a finished login would leave it."""
    now = time.time()
    identity = Identity(
        subject=subject,
        email=f"{subject}@example.org",
        name=f"{subject.title()} Ärger",
        groups=("staff",),
        provider_session_id=f"idp-sid-{subject}",
    )
    tokens = {
        "primary": TokenSet(
            access_token=f"{subject}-primary-access",
            refresh_token=f"{subject}-primary-refresh",
            id_token="header.payload.signature",
            expires_at=int(now + 3600),
        ),
        "gitlab": TokenSet(access_token=f"{subject}-gitlab-access", scope="api"),
    }
    return User(*sync_store(config).create(identity, tokens, now))


@pytest.fixture
def alice(config: GatewayConfig) -> User:
    return log_in(config, "alice")


class CliLogin:
    """The CLI's and the approving browser's requests, against the Flask app."""

    def __init__(self, app: Flask, config: GatewayConfig) -> None:
        self.app = app
        self.config = config

    def client(self, user: User | None = None) -> FlaskClient:
        client = self.app.test_client()
        if user is not None:
            client.set_cookie(self.config.cookie_name, user.cookie)
        return client

    def start(self) -> dict[str, Any]:
        reply = self.client().post("/auth/cli/start")
        assert reply.status_code == 200, reply.text
        return reply.get_json()

    def poll(self, device_code: str) -> tuple[int, dict]:
        reply = self.client().post(
            "/auth/cli/token", data={"grant_type": GRANT_TYPE, "device_code": device_code}
        )
        return reply.status_code, reply.get_json()

    def approve_page(self, user: User | None, user_code: str, **headers: str):
        return self.client(user).get(
            "/auth/cli/approve", query_string={"user_code": user_code}, headers={**HTML, **headers}
        )

    def decide(
        self,
        user: User,
        user_code: str,
        action: str = "approve",
        *,
        csrf_token: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        """Open the approval page, then press Approve (or Deny) as the page's form would."""
        if csrf_token is None:
            page = self.approve_page(user, user_code)
            assert page.status_code == 200, page.text
            csrf_token = form_value(page.text, "csrf_token")
        return self.client(user).post(
            "/auth/cli/approve",
            query_string={"user_code": user_code},
            data={"user_code": user_code, "csrf_token": csrf_token, "action": action},
            headers={**HTML, **(headers or {})},
        )


@pytest.fixture
def cli(app: Flask, config: GatewayConfig) -> CliLogin:
    return CliLogin(app, config)


def test_polling_faster_than_the_interval_gets_slow_down_and_a_longer_interval(
    cli, config, raw_redis
):
    started = cli.start()
    assert cli.poll(started["device_code"])[1]["error"] == "authorization_pending"
    assert cli.poll(started["device_code"])[1]["error"] == "slow_down"
    assert cli.poll(started["device_code"])[1]["error"] == "slow_down"
    key = f"{config.redis.key_prefix}device:{{{device_id_for(started['device_code'])}}}"
    assert raw_redis.hget(key, "interval") == b"15"  # 5, then +5 per slow_down


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"device_code": secrets.token_urlsafe(32)}, "invalid_grant"),
        ({"device_code": "x" * 5000}, "invalid_grant"),
        ({}, "invalid_request"),
        ({"grant_type": "authorization_code", "device_code": "x"}, "unsupported_grant_type"),
    ],
)
def test_token_endpoint_refuses_bad_requests(cli, data, error):
    reply = cli.client().post("/auth/cli/token", data=data)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == error


def test_token_endpoint_accepts_json(cli):
    started = cli.start()
    reply = cli.client().post("/auth/cli/token", json={"device_code": started["device_code"]})
    assert reply.get_json() == {"error": "authorization_pending"}


def test_an_expired_code_gives_expired_token_and_cannot_be_approved(cli, config, raw_redis, alice):
    started = cli.start()
    key = f"{config.redis.key_prefix}device:{{{device_id_for(started['device_code'])}}}"
    raw_redis.hset(key, "expires_at", repr(time.time() - 1))
    assert cli.poll(started["device_code"]) == (400, {"error": "expired_token"})
    page = cli.approve_page(alice, started["user_code"])
    assert page.status_code == 400 and "unknown_user_code" in page.text


def test_keys_live_no_longer_than_the_code_plus_its_grace(cli, config, raw_redis):
    started = cli.start()
    device_key = f"{config.redis.key_prefix}device:{{{device_id_for(started['device_code'])}}}"
    user_key = f"{config.redis.key_prefix}device-user:{{{started['user_code'].replace('-', '')}}}"
    assert 590 <= raw_redis.ttl(user_key) <= 600
    assert 1190 <= raw_redis.ttl(device_key) <= 1200
    raw_redis.delete(device_key)  # as if Redis had expired it
    assert cli.poll(started["device_code"]) == (400, {"error": "invalid_grant"})


def test_approval_page_without_a_session_sends_the_browser_to_log_in(cli, config):
    started = cli.start()
    reply = cli.approve_page(None, started["user_code"].lower())
    assert reply.status_code == 302
    location = urlsplit(reply.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        config.public_url + "/auth/login"
    )
    assert parse_qs(location.query)["redirect_url"] == [started["verification_uri_complete"]]


def test_posting_an_approval_without_a_session_approves_nothing(cli, alice):
    started = cli.start()
    page = cli.approve_page(alice, started["user_code"])
    token = form_value(page.text, "csrf_token")
    reply = cli.client().post(
        "/auth/cli/approve",
        data={"user_code": started["user_code"], "csrf_token": token, "action": "approve"},
    )
    assert reply.status_code == 302 and "/auth/login?" in reply.headers["Location"]
    assert cli.poll(started["device_code"])[1]["error"] == "authorization_pending"


def test_code_entry_form_is_shown_without_a_code(cli, alice):
    page = cli.client(alice).get("/auth/cli/approve", headers=HTML)
    assert page.status_code == 200
    assert '<label for="user_code">' in page.text and 'id="user_code"' in page.text
    assert 'method="get"' in page.text


@pytest.mark.parametrize(
    ("csrf_token", "headers"),
    [
        ("forged-token", {}),
        ("", {}),
        (None, {"Origin": "https://evil.example"}),
        (None, {"Origin": "null"}),
        (None, {"Sec-Fetch-Site": "cross-site"}),
    ],
    ids=["bad-token", "no-token", "foreign-origin", "null-origin", "cross-site-fetch"],
)
def test_forged_approvals_are_refused_and_approve_nothing(cli, alice, csrf_token, headers):
    started = cli.start()
    reply = cli.decide(alice, started["user_code"], csrf_token=csrf_token, headers=headers)
    assert reply.status_code == 403
    assert reply.mimetype == "text/html" and 'role="alert"' in reply.text
    assert cli.poll(started["device_code"])[1]["error"] == "authorization_pending"


def test_a_csrf_token_from_another_users_page_is_refused(cli, config, alice):
    mallory = log_in(config, "mallory")
    started = cli.start()
    mallorys_token = form_value(cli.approve_page(mallory, started["user_code"]).text, "csrf_token")
    reply = cli.decide(alice, started["user_code"], csrf_token=mallorys_token)
    assert reply.status_code == 403
    assert cli.poll(started["device_code"])[1]["error"] == "authorization_pending"


def test_a_wrong_user_code_shows_the_error_page(cli, alice):
    cli.start()
    page = cli.approve_page(alice, "BBBB-BBBB")
    assert page.status_code == 400
    assert page.mimetype == "text/html"
    assert 'role="alert"' in page.text and "unknown_user_code" in page.text


def test_a_malformed_user_code_shows_the_error_page(cli, alice):
    page = cli.approve_page(alice, "AEIO-U123")
    assert page.status_code == 400 and page.mimetype == "text/html"


def test_twenty_wrong_codes_from_one_client_then_429(cli, alice):
    started = cli.start()
    wrong = [f"BBBB-{c}{c}{c}{c}" for c in "CDFGHJKLMNPQRSTVWXZ"] + ["CCCC-CCCC", "DDDD-DDDD"]
    for code in wrong[:GUESS_LIMIT]:
        assert cli.approve_page(alice, code).status_code == 400
    refused = cli.approve_page(alice, wrong[GUESS_LIMIT])
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "600"
    assert 'role="alert"' in refused.text
    # Once over the limit nothing is looked up, not even a right code...
    assert cli.approve_page(alice, started["user_code"]).status_code == 429
    # ...while a client behind another external address is unaffected.
    other = cli.approve_page(
        alice, started["user_code"], **{"X-Gateway-Client-Address": "203.0.113.9"}
    )
    assert other.status_code == 200


def test_right_codes_do_not_count_against_the_client(cli, alice):
    started = cli.start()
    for _ in range(GUESS_LIMIT + 5):
        assert cli.approve_page(alice, started["user_code"]).status_code == 200


def test_starts_are_limited_per_client(cli):
    for _ in range(60):
        assert cli.client().post("/auth/cli/start").status_code == 200
    refused = cli.client().post("/auth/cli/start")
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "too_many_requests"


def _interleave(monkeypatch: pytest.MonkeyPatch, rival) -> list[Any]:
    """Run ``rival()`` once, on its own connection, between a transaction's WATCH and EXEC."""
    original = DeviceRecord.from_fields.__func__  # type: ignore[attr-defined]
    outcome: list[Any] = []

    def from_fields(cls, device_id, fields):
        record = original(cls, device_id, fields)
        if not outcome:
            outcome.append(None)
            outcome[0] = rival()
        return record

    monkeypatch.setattr(DeviceRecord, "from_fields", classmethod(from_fields))
    return outcome


def _started_in_store(cli: CliLogin) -> tuple[dict[str, Any], DeviceCodeStore, str]:
    """A started CLI login, the store that holds it and its device id, to race the store."""
    started = cli.start()
    with cli.app.app_context():
        store = device_codes()
    return started, store, device_id_for(started["device_code"])


def test_a_poll_that_loses_the_race_between_read_and_delete_gets_nothing(cli, monkeypatch):
    started, store, device_id = _started_in_store(cli)
    credential = SessionCredential.generate().encode()
    assert store.approve(device_id, credential, int(time.time()) + 60, time.time())
    rival = _interleave(monkeypatch, lambda: store.poll(started["device_code"], time.time()))
    result, grant = store.poll(started["device_code"], time.time())
    assert rival[0][0] is PollResult.APPROVED and rival[0][1] is not None
    assert (result, grant) == (PollResult.INVALID_GRANT, None)


def test_an_approval_that_loses_the_race_to_a_denial_approves_nothing(cli, monkeypatch):
    started, store, device_id = _started_in_store(cli)
    rival = _interleave(monkeypatch, lambda: store.deny(device_id, time.time()))
    assert not store.approve(device_id, SessionCredential.generate().encode(), 0, time.time())
    assert rival == [True]
    assert cli.poll(started["device_code"]) == (400, {"error": "access_denied"})


def test_a_poll_racing_an_approval_does_not_lose_it(cli, monkeypatch):
    started, store, device_id = _started_in_store(cli)
    credential = SessionCredential.generate().encode()
    # The poll writes last_poll between the approval's read and write: the approval retries.
    rival = _interleave(monkeypatch, lambda: store.poll(started["device_code"], time.time()))
    assert store.approve(device_id, credential, int(time.time()) + 60, time.time())
    assert rival[0] == (PollResult.AUTHORIZATION_PENDING, None)
    monkeypatch.undo()
    status, token = cli.poll(started["device_code"])
    assert status == 200 and token["access_token"] == credential
