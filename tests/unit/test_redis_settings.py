"""The ``redis`` block: standalone, sentinel and cluster modes, validated with the key's path."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.config import GatewayConfig, RedisSettings, parse_config
from gateway.errors import ConfigError

SECRETS = {"GATEWAY_SECRET_KEYS": "k" * 40}
SENTINEL = {"master_name": "mymaster", "sentinels": ["10.0.0.1:26379", "10.0.0.2:26379"]}


def config_with(redis: dict[str, Any], environ: dict[str, str] | None = None) -> GatewayConfig:
    raw = {
        "public_url": "https://gateway.test",
        "session": {},
        "redis": redis,
        "routes": [{"name": "api", "prefix": "/api/", "upstream": "http://api.test"}],
    }
    return parse_config(raw, {**SECRETS, **(environ or {})})


@pytest.mark.parametrize(
    ("redis", "key_path", "reason"),
    [
        pytest.param(
            {"mode": "sentinel"},
            "redis.sentinel",
            "required in sentinel mode",
            id="sentinel-mode-without-sentinels",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": {"master_name": "m", "sentinels": []}},
            "redis.sentinel.sentinels",
            "at least 1",
            id="sentinel-list-empty",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": {"master_name": "", "sentinels": ["s:1"]}},
            "redis.sentinel.master_name",
            "at least 1",
            id="sentinel-master-name-empty",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": {"sentinels": ["s:1"]}},
            "redis.sentinel.master_name",
            "required",
            id="sentinel-master-name-missing",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": {**SENTINEL, "sentinels": ["s:1", "s"]}},
            "redis.sentinel.sentinels[1]",
            "host:port",
            id="sentinel-without-port",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": {**SENTINEL, "sentinels": ["s:99999"]}},
            "redis.sentinel.sentinels[0]",
            "host:port",
            id="sentinel-port-out-of-range",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": {**SENTINEL, "master": "m"}},
            "redis.sentinel.master",
            "Extra inputs",
            id="sentinel-unknown-key",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": SENTINEL, "url": "unix:///run/redis.sock"},
            "redis.url",
            "TCP",
            id="sentinel-over-unix-socket",
        ),
        pytest.param(
            {"sentinel": SENTINEL},
            "redis.sentinel",
            "only used in sentinel mode",
            id="sentinels-without-sentinel-mode",
        ),
        pytest.param(
            {"mode": "cluster", "url": "redis://10.0.0.1:7000/1"},
            "redis.url",
            "must be 0",
            id="cluster-db-in-path",
        ),
        pytest.param(
            {"mode": "cluster", "url": "redis://10.0.0.1:7000?db=2"},
            "redis.url",
            "must be 0",
            id="cluster-db-in-query",
        ),
        pytest.param(
            {"mode": "cluster", "url": "redis://10.0.0.1:port/0"},
            "redis.url",
            "port",
            id="cluster-port-not-a-number",
        ),
        pytest.param(
            {"mode": "cluster", "url": "unix:///run/redis.sock"},
            "redis.url",
            "TCP",
            id="cluster-over-unix-socket",
        ),
        pytest.param(
            {"mode": "cluster", "url": "redis://:secret@/0"},
            "redis.nodes",
            "at least one node",
            id="cluster-without-any-node",
        ),
        pytest.param(
            {"mode": "cluster", "nodes": ["10.0.0.1"]},
            "redis.nodes[0]",
            "host:port",
            id="cluster-node-without-port",
        ),
        pytest.param(
            {"nodes": ["10.0.0.1:7000"]},
            "redis.nodes",
            "only used in cluster mode",
            id="nodes-without-cluster-mode",
        ),
        pytest.param({"mode": "replicated"}, "redis.mode", "sentinel", id="unknown-mode"),
        pytest.param(
            {"url": "redis://10.0.0.1:port/0"},
            "redis.url",
            "port",
            id="standalone-port-not-a-number",
        ),
        pytest.param(
            {"url": "redis://10.0.0.1:99999/0"},
            "redis.url",
            "port",
            id="standalone-port-out-of-range",
        ),
        pytest.param(
            {"url": "redis://10.0.0.1/0?db=two"}, "redis.url", "'db'", id="db-in-query-not-a-number"
        ),
        pytest.param(
            {"url": "redis://10.0.0.1/0?colour=blue"},
            "redis.url",
            "'colour'",
            id="unknown-url-option",
        ),
        pytest.param(
            {"url": "redis://10.0.0.1/0?socket_timeout=30"},
            "redis.url",
            "sets socket_timeout itself",
            id="url-option-the-gateway-sets",
        ),
        pytest.param(
            {"mode": "sentinel", "sentinel": SENTINEL, "url": "redis://m/0?max_connections=1000"},
            "redis.url",
            "sets max_connections itself",
            id="sentinel-url-option-the-gateway-sets",
        ),
        pytest.param(
            {"key_prefix": "gw{1}:"}, "redis.key_prefix", "letters", id="key-prefix-with-hash-tag"
        ),
        pytest.param(
            {"key_prefix": "gw*"}, "redis.key_prefix", "letters", id="key-prefix-with-glob"
        ),
    ],
)
def test_an_invalid_redis_block_fails_naming_the_key(
    redis: dict[str, Any], key_path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(redis)
    message = str(raised.value)
    assert re.search(rf"(^|; ){re.escape(key_path)}: [^;]*{re.escape(reason)}", message), message


def test_a_wrong_mode_is_reported_once_not_again_for_every_field_that_depends_on_it() -> None:
    with pytest.raises(ConfigError) as raised:
        config_with({"mode": "replicated", "sentinel": SENTINEL, "nodes": ["a:1"]})
    assert str(raised.value).count("redis.") == 1, str(raised.value)


def test_standalone_stays_the_default() -> None:
    settings = config_with({}).redis
    assert settings.mode == "standalone"
    assert settings.sentinel is None and settings.nodes == ()


def test_sentinel_mode_reads_the_sentinels_as_addresses() -> None:
    settings = config_with({"mode": "sentinel", "sentinel": SENTINEL}).redis
    assert settings.sentinel is not None
    assert settings.sentinel.master_name == "mymaster"
    assert settings.sentinel_addresses() == (("10.0.0.1", 26379), ("10.0.0.2", 26379))


def test_sentinel_mode_takes_the_master_password_from_the_url_in_the_environment() -> None:
    environ = {"GATEWAY_REDIS_URL": "rediss://:p4ss@ignored.test/3"}
    settings = config_with({"mode": "sentinel", "sentinel": SENTINEL}, environ).redis
    assert settings.url == "rediss://:p4ss@ignored.test/3"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@redis.test:port/0",
        "redis://:hunter2@redis.test/0?db=x",
        "redis://:hunter2@redis.test/0?unknown=1",
    ],
)
def test_a_url_error_never_echoes_the_url_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with({}, {"GATEWAY_REDIS_URL": url})
    assert "hunter2" not in str(raised.value)


def test_url_options_redis_py_knows_are_accepted() -> None:
    url = "rediss://:pw@redis.test:6380/2?ssl_cert_reqs=required&client_name=gateway"
    assert config_with({"url": url}).redis.url == url


def test_a_sentinel_error_never_echoes_the_url_password() -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(
            {"mode": "sentinel", "sentinel": SENTINEL},
            {"GATEWAY_REDIS_URL": "unix://:hunter2@/run/redis.sock"},
        )
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("redis", "nodes"),
    [
        pytest.param(
            {"mode": "cluster", "url": "redis://10.0.0.1:7000/0"},
            (("10.0.0.1", 7000),),
            id="the-url-host",
        ),
        pytest.param(
            {"mode": "cluster", "url": "redis://10.0.0.1"},
            (("10.0.0.1", 6379),),
            id="the-url-host-default-port-and-db",
        ),
        pytest.param(
            {"mode": "cluster", "url": "redis://:pw@/0", "nodes": ["a:7000", "b:7001"]},
            (("a", 7000), ("b", 7001)),
            id="listed-nodes",
        ),
        pytest.param(
            {"mode": "cluster", "nodes": ["[::1]:7000"]}, (("::1", 7000),), id="ipv6-node"
        ),
    ],
)
def test_cluster_mode_finds_its_startup_nodes(
    redis: dict[str, Any], nodes: tuple[tuple[str, int], ...]
) -> None:
    assert config_with(redis).redis.startup_nodes() == nodes


def test_the_redis_block_is_frozen_like_the_rest_of_the_config() -> None:
    settings = RedisSettings(mode="cluster", nodes=("a:7000",))
    with pytest.raises(ValueError):
        settings.mode = "standalone"  # type: ignore[misc]
