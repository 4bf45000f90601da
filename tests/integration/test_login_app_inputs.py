"""The login app facing odd input and a configuration reload: each ends in a clear answer,
never a 500. Against the Flask app and a real Redis, each test with its own keys."""

from __future__ import annotations

import re
import time

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from gateway.config import GatewayConfig
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Identity
from login_app.device_codes import normalize_user_code
from login_app.services import build_services, init_app
from tests.support.login import HTML
from tests.support.login_app_alone import isolated_config
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def browser(app: Flask, config: GatewayConfig) -> FlaskClient:
    """A browser with a session, made directly in Redis."""
    identity = Identity(subject="alice", name="Alice Ärger")
    credential, _ = sync_store(config).create(identity, {}, time.time())
    client = app.test_client()
    client.set_cookie(config.cookie_name, credential.encode())
    return client


def test_a_device_code_utf8_cannot_carry_is_an_invalid_grant(app: Flask) -> None:
    # JSON can spell a lone surrogate; hashing it for the device id once raised a 500.
    reply = app.test_client().post("/auth/cli/token", json={"device_code": "\ud800abc"})
    assert reply.status_code == 400
    assert reply.get_json() == {"error": "invalid_grant"}


def test_a_user_code_naming_garbage_in_redis_is_an_unknown_code(
    app: Flask, config: GatewayConfig, raw_redis: redis.Redis, browser: FlaskClient
) -> None:
    started = app.test_client().post("/auth/cli/start").get_json()
    user_code = normalize_user_code(started["user_code"])
    raw_redis.set(f"{config.redis.key_prefix}device-user:{{{user_code}}}", b"\xff\xfe")
    page = browser.get(
        "/auth/cli/approve", query_string={"user_code": started["user_code"]}, headers=HTML
    )
    assert page.status_code == 400 and page.mimetype == "text/html"
    assert "unknown_user_code" in page.text


def test_a_provider_failure_while_approving_shows_the_page_not_json(
    app: Flask, browser: FlaskClient
) -> None:
    # base_config's primary IdP (127.0.0.1:1) does not answer: approving cannot start its login.
    started = app.test_client().post("/auth/cli/start").get_json()
    page = browser.get(
        "/auth/cli/approve", query_string={"user_code": started["user_code"]}, headers=HTML
    )
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and csrf is not None, page.text
    reply = browser.post(
        "/auth/cli/approve",
        data={"user_code": started["user_code"], "csrf_token": csrf[1], "action": "approve"},
        headers=HTML,
    )
    assert reply.status_code == 503 and reply.mimetype == "text/html"
    assert 'role="alert"' in reply.text and "unavailable" in reply.text
    assert "Traceback" not in reply.text


def test_after_a_reload_cli_logins_are_stored_under_the_new_configuration(
    app: Flask, redis_server: RedisServer, raw_redis: redis.Redis
) -> None:
    reloaded = isolated_config(redis_server)  # another key prefix, as an edited config would have
    init_app(app, build_services(reloaded))  # what SIGHUP does in login_app.server
    started = app.test_client().post("/auth/cli/start").get_json()
    user_code = normalize_user_code(started["user_code"])
    assert raw_redis.exists(f"{reloaded.redis.key_prefix}device-user:{{{user_code}}}")
    reply = app.test_client().post("/auth/cli/token", data={"device_code": started["device_code"]})
    assert reply.get_json() == {"error": "authorization_pending"}
