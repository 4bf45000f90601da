"""The one reload rule both servers follow: what a SIGHUP applies and what waits for a restart."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.config.reload import RESTART_ONLY, reload_config, reloaded
from tests.unit.test_config import SECRETS, valid_data


def config(change: dict[str, dict[str, Any]] | None = None, **top: Any) -> GatewayConfig:
    raw = valid_data()
    for section, values in (change or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    raw.update(top)
    return parse_config(raw, SECRETS)


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("redis", {"key_prefix": "moved:"}, "redis.key_prefix"),
        ("session", {"cookie_name": "moved_session"}, "session.cookie_name"),
        ("login_app", {"listen": "127.0.0.1:5999"}, "login_app.listen"),
        ("ext_authz", {"workers": 1, "listen": "127.0.0.1:9999"}, "ext_authz.listen"),
    ],
)
def test_a_restart_only_key_keeps_its_running_value_and_is_named_in_a_warning(
    section: str, values: dict[str, Any], key: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = config()
    with caplog.at_level(logging.WARNING, logger="gateway.config.reload"):
        result = reloaded(running, config({section: values}))
    assert getattr(result, section) == getattr(running, section)
    assert any(f"{key} needs a restart" in record.getMessage() for record in caplog.records)


def test_the_other_sections_take_their_new_value() -> None:
    running = config()
    fresh = config({"redis": {"key_prefix": "moved:"}}, log_level="debug")
    result = reloaded(running, fresh)
    assert result.log_level == "debug"
    assert result.routes == fresh.routes and result.providers == fresh.providers
    assert result.redis == running.redis


def test_the_public_url_waits_for_a_restart_too() -> None:
    running = config()
    result = reloaded(running, config(public_url="https://elsewhere.example"))
    assert result.public_url == running.public_url
    assert "public_url" in RESTART_ONLY


def test_a_file_that_cannot_be_read_is_refused_and_nothing_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> GatewayConfig:
        return parse_config("not a mapping")

    with caplog.at_level(logging.ERROR, logger="gateway.config.reload"):
        assert reload_config(config(), broken) is None
    assert "reload refused" in caplog.text
