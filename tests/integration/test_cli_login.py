"""CLI login against a real Redis: start, approve in a browser, poll for the token, once."""

from __future__ import annotations

import queue
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from devtools.processes import free_port
from gateway.config import GatewayConfig, parse_config
from gateway.credentials import SessionCredential
from gateway.device_client import DeviceLoginError, device_login
from gateway.redis_client import sync_client
from gateway.session_factory import sync_store
from gateway.sessions import Identity, Session, TokenSet
from gateway.store import new_session_times
from login_app import create_app
from login_app.cli_login import device_codes
from login_app.device_codes import GUESS_LIMIT, PollResult, device_id_for
from login_app.device_store import DeviceRecord
from tests.support.servers import TEST_SECRET, RedisServer, base_config

pytestmark = pytest.mark.integration

HTML = {"Accept": "text/html"}


def form_value(page_text: str, name: str) -> str:
    """The value of a form field on a page, as a browser would submit it."""
    match = re.search(rf'name="{name}" value="([^"]+)"', page_text)
    assert match, page_text
    return match.group(1)


def make_config(redis_server: RedisServer, public_url: str | None = None) -> GatewayConfig:
    raw = base_config(redis_url=redis_server.url, backend_url="http://127.0.0.1:1")
    raw["redis"]["key_prefix"] = f"t{secrets.token_hex(6)}:"  # every test its own keys
    if public_url:
        raw["public_url"] = public_url
    return parse_config(raw, {"GATEWAY_SECRET_KEYS": TEST_SECRET})


@pytest.fixture
def config(redis_server: RedisServer) -> GatewayConfig:
    return make_config(redis_server)


@pytest.fixture
def app(config: GatewayConfig) -> Flask:
    return create_app(config)


@pytest.fixture
def raw_redis(config: GatewayConfig) -> Iterator[redis.Redis]:
    client = sync_client(config.redis)
    yield client
    client.close()


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
    created_at, expires_at = new_session_times(config.session, now)
    session = Session(
        identity=Identity(
            subject=subject,
            email=f"{subject}@example.org",
            name=f"{subject.title()} Ärger",
            groups=("staff",),
            provider_session_id=f"idp-sid-{subject}",
        ),
        created_at=created_at,
        expires_at=expires_at,
        tokens={
            "primary": TokenSet(
                access_token=f"{subject}-primary-access",
                refresh_token=f"{subject}-primary-refresh",
                id_token="header.payload.signature",
                expires_at=int(now + 3600),
            ),
            "gitlab": TokenSet(access_token=f"{subject}-gitlab-access", scope="api"),
        },
    )
    credential = SessionCredential.generate()
    sync_store(config).save(credential, session)
    return User(credential, session)


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

    def poll(self, device_code: str, client: FlaskClient | None = None) -> tuple[int, dict]:
        reply = (client or self.client()).post(
            "/auth/cli/token",
            data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                  "device_code": device_code},
        )
        return reply.status_code, reply.get_json()

    def approve_page(self, user: User | None, user_code: str, **headers: str):
        return self.client(user).get(
            "/auth/cli/approve", query_string={"user_code": user_code}, headers={**HTML, **headers}
        )

    def decide(
        self, user: User, user_code: str, action: str = "approve", *,
        csrf_token: str | None = None, headers: dict[str, str] | None = None,
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


def test_full_flow_gives_the_cli_a_new_session_with_the_users_identity_and_tokens(
    cli, config, alice
):
    started = cli.start()
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}",
                        started["user_code"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", started["device_code"])
    assert started["verification_uri"] == config.public_url + "/auth/cli/approve"
    complete = urlsplit(started["verification_uri_complete"])
    assert parse_qs(complete.query) == {"user_code": [started["user_code"]]}
    assert (started["expires_in"], started["interval"]) == (600, 5)

    assert cli.poll(started["device_code"]) == (400, {"error": "authorization_pending"})

    page = cli.approve_page(alice, started["user_code"])
    assert page.status_code == 200
    assert started["user_code"] in page.text and "Alice Ärger" in page.text
    done = cli.decide(alice, started["user_code"])
    assert done.status_code == 200
    assert "return to your terminal" in done.text

    status, token = cli.poll(started["device_code"])
    assert status == 200, token
    assert token["token_type"] == "Bearer"
    assert 3590 <= token["expires_in"] <= 3600  # the new session's own lifetime (1h)
    credential = SessionCredential.parse(token["access_token"])
    assert credential != alice.credential
    session = sync_store(config).load(credential)
    assert session is not None
    assert session.identity == alice.session.identity
    assert session.tokens == alice.session.tokens
    assert session.created_at >= alice.session.created_at
    # Indexed like any session, so "log out everywhere" ends it too.
    store = sync_store(config)
    assert credential.lookup_id in store.lookup_ids_of_user("alice")
    # The browser's own session is untouched.
    assert store.load(alice.credential) == alice.session


def test_the_token_is_handed_out_once(cli, alice):
    started = cli.start()
    cli.decide(alice, started["user_code"])
    assert cli.poll(started["device_code"])[0] == 200
    assert cli.poll(started["device_code"]) == (400, {"error": "invalid_grant"})


def test_polling_faster_than_the_interval_gets_slow_down_and_a_longer_interval(
    cli, config, raw_redis
):
    started = cli.start()
    assert cli.poll(started["device_code"])[1]["error"] == "authorization_pending"
    assert cli.poll(started["device_code"])[1]["error"] == "slow_down"
    assert cli.poll(started["device_code"])[1]["error"] == "slow_down"
    key = f"{config.redis.key_prefix}device:{{{device_id_for(started['device_code'])}}}"
    assert raw_redis.hget(key, "interval") == b"15"  # 5, then +5 per slow_down


def test_an_approved_token_is_not_held_back_by_the_interval(cli, alice):
    started = cli.start()
    cli.poll(started["device_code"])
    cli.decide(alice, started["user_code"])
    assert cli.poll(started["device_code"])[0] == 200  # right after the previous poll


def test_deny_gives_access_denied_and_creates_no_session(cli, config, alice):
    started = cli.start()
    done = cli.decide(alice, started["user_code"], "deny")
    assert done.status_code == 200 and "denied" in done.text
    assert cli.poll(started["device_code"]) == (400, {"error": "access_denied"})
    assert sync_store(config).lookup_ids_of_user("alice") == [alice.credential.lookup_id]


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


def test_a_same_origin_post_is_accepted(cli, config, alice):
    started = cli.start()
    reply = cli.decide(alice, started["user_code"], headers={"Origin": config.public_origin,
                                                             "Sec-Fetch-Site": "same-origin"})
    assert reply.status_code == 200


def test_a_wrong_user_code_shows_the_error_page(cli, alice):
    cli.start()
    page = cli.approve_page(alice, "BBBB-BBBB")
    assert page.status_code == 400
    assert page.mimetype == "text/html"
    assert 'role="alert"' in page.text and "unknown_user_code" in page.text


def test_a_malformed_user_code_shows_the_error_page(cli, alice):
    page = cli.approve_page(alice, "AEIO-U123")
    assert page.status_code == 400 and page.mimetype == "text/html"


def test_approving_twice_shows_the_error_page(cli, alice):
    started = cli.start()
    assert cli.decide(alice, started["user_code"]).status_code == 200
    page = cli.approve_page(alice, started["user_code"])
    assert page.status_code == 400 and "unknown_user_code" in page.text


def test_a_second_approval_from_an_open_page_is_refused(cli, config, alice):
    started = cli.start()
    page = cli.approve_page(alice, started["user_code"])
    token = form_value(page.text, "csrf_token")
    assert cli.decide(alice, started["user_code"], csrf_token=token).status_code == 200
    again = cli.decide(alice, started["user_code"], csrf_token=token)
    assert again.status_code == 400 and "unknown_user_code" in again.text
    assert cli.poll(started["device_code"])[0] == 200
    # Only one CLI session was made, besides the browser's.
    assert len(sync_store(config).lookup_ids_of_user("alice")) == 2


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
    other = cli.approve_page(alice, started["user_code"],
                             **{"X-Envoy-External-Address": "203.0.113.9"})
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


def test_concurrent_polls_hand_the_token_to_exactly_one(cli, alice):
    started = cli.start()
    cli.decide(alice, started["user_code"])
    barrier = threading.Barrier(8)
    results: list[tuple[int, dict]] = []

    def poll() -> None:
        client = cli.client()
        barrier.wait()
        results.append(cli.poll(started["device_code"], client))

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert sorted(status for status, _ in results) == [200] + [400] * 7
    assert {body["error"] for status, body in results if status == 400} == {"invalid_grant"}


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


def test_a_poll_that_loses_the_race_between_read_and_delete_gets_nothing(
    cli, app, alice, monkeypatch
):
    started = cli.start()
    cli.decide(alice, started["user_code"])
    with app.app_context():
        store = device_codes()
    rival = _interleave(monkeypatch, lambda: store.poll(started["device_code"], time.time()))
    result, grant = store.poll(started["device_code"], time.time())
    assert rival[0][0] is PollResult.APPROVED and rival[0][1] is not None
    assert (result, grant) == (PollResult.INVALID_GRANT, None)


def test_an_approval_that_loses_the_race_to_a_denial_approves_nothing(cli, app, monkeypatch):
    started = cli.start()
    with app.app_context():
        store = device_codes()
    device_id = device_id_for(started["device_code"])
    rival = _interleave(monkeypatch, lambda: store.deny(device_id, time.time()))
    assert not store.approve(device_id, SessionCredential.generate().encode(), 0, time.time())
    assert rival == [True]
    assert cli.poll(started["device_code"]) == (400, {"error": "access_denied"})


def test_a_poll_racing_an_approval_does_not_lose_it(cli, app, monkeypatch):
    started = cli.start()
    with app.app_context():
        store = device_codes()
    device_id = device_id_for(started["device_code"])
    credential = SessionCredential.generate().encode()
    # The poll writes last_poll between the approval's read and write: the approval retries.
    rival = _interleave(monkeypatch, lambda: store.poll(started["device_code"], time.time()))
    assert store.approve(device_id, credential, int(time.time()) + 60, time.time())
    assert rival[0] == (PollResult.AUTHORIZATION_PENDING, None)
    monkeypatch.undo()
    status, token = cli.poll(started["device_code"])
    assert status == 200 and token["access_token"] == credential


def test_redis_never_holds_the_credential_or_device_code_in_clear(cli, config, raw_redis, alice):
    started = cli.start()
    cli.decide(alice, started["user_code"])
    everything = b""
    for key in raw_redis.scan_iter(match=config.redis.key_prefix + "*"):
        everything += key
        kind = raw_redis.type(key)
        if kind == b"hash":
            for field, value in raw_redis.hgetall(key).items():
                everything += field + value
        elif kind == b"string":
            everything += raw_redis.get(key) or b""
        elif kind == b"set":
            everything += b"".join(raw_redis.smembers(key))
    assert b"device:" in everything and b"approved" in everything
    assert b"gws_" not in everything
    assert started["device_code"].encode() not in everything
    assert cli.poll(started["device_code"])[0] == 200


@pytest.fixture
def live(redis_server: RedisServer) -> Iterator[tuple[GatewayConfig, str]]:
    """The login app on a real socket, its public URL pointing straight at it."""
    port = free_port()
    config = make_config(redis_server, public_url=f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield config, config.public_url
    server.shutdown()
    thread.join(5)


def _approve_when_printed(
    lines: queue.Queue[str], cookie_name: str, user: User, action: str, errors: list[BaseException]
) -> None:
    try:
        for _ in range(2):
            line = lines.get(timeout=10)
            match = re.search(r"Or open (\S+)", line)
            if match:
                break
        else:
            raise AssertionError("the client printed no verification URL")
        browser = requests.Session()
        browser.cookies.set(cookie_name, user.cookie)
        page = browser.get(match.group(1), headers=HTML, timeout=10)  # the link, as clicked
        assert page.status_code == 200, page.text
        token = form_value(page.text, "csrf_token")
        code = form_value(page.text, "user_code")
        done = browser.post(
            page.url, data={"user_code": code, "csrf_token": token, "action": action}, timeout=10
        )
        assert done.status_code == 200, done.text
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def _run_device_login(live, action: str) -> tuple[str | DeviceLoginError, list[str], list[float]]:
    config, url = live
    user = log_in(config)
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

    approver = threading.Thread(
        target=_approve_when_printed, args=(lines, config.cookie_name, user, action, errors)
    )
    approver.start()
    try:
        outcome: str | DeviceLoginError = device_login(
            url, open_browser=False, printer=printer, sleep=sleep, timeout=5
        )
    except DeviceLoginError as exc:
        outcome = exc
    approver.join(10)
    assert not errors, errors
    return outcome, printed, sleeps


def test_device_login_returns_the_token_once_approved(live):
    token, printed, sleeps = _run_device_login(live, "approve")
    config, url = live
    assert isinstance(token, str)
    session = sync_store(config).load(SessionCredential.parse(token))
    assert session is not None and session.identity.subject == "alice"
    assert re.search(r"enter the code [A-Z]{4}-[A-Z]{4}", printed[0])
    assert url + "/auth/cli/approve" in printed[0]
    # It starts at the server's interval and adds 5 s after each slow_down.
    assert sleeps[0] == 5
    assert all(later - earlier in (0, 5) for earlier, later in pairwise(sleeps))


def test_device_login_reports_a_denial(live):
    outcome, _, _ = _run_device_login(live, "deny")
    assert isinstance(outcome, DeviceLoginError)
    assert outcome.error == "access_denied"


def test_device_login_refuses_plain_http_beyond_loopback():
    with pytest.raises(DeviceLoginError) as raised:
        device_login("http://gateway.example", open_browser=False, sleep=lambda _: None)
    assert raised.value.error == "insecure_url"
