"""The one host:port parser every address in the config goes through."""

from __future__ import annotations

import pytest

from gateway.config import join_host_port, parse_config, split_host_port
from gateway.errors import ConfigError
from tests.unit.test_config import SECRETS, valid_data


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("redis.internal:6379", ("redis.internal", 6379)),
        ("[::1]:5000", ("::1", 5000)),
        ("[2001:db8::7]:65535", ("2001:db8::7", 65535)),
    ],
)
def test_an_address_splits_into_host_and_port_and_joins_back(text, parts):
    assert split_host_port(text) == parts
    assert join_host_port(*parts) == text


@pytest.mark.parametrize(
    "text",
    [
        "localhost",
        ":5000",
        "host:",
        "host:http",
        "host:65536",
        "host:0",
        "::1:5000",  # an IPv6 address without brackets could be read two ways
        "[::1]5000",
        "[::1",
        "[127.0.0.1]:5000",
        "[not-an-address]:5000",
        "host:٣",  # a digit, but not an ASCII one
    ],
)
def test_what_is_not_host_port_is_refused(text):
    with pytest.raises(ValueError):
        split_host_port(text)


def test_only_a_listen_address_may_ask_for_any_free_port():
    assert split_host_port("[::1]:0", any_port=True) == ("::1", 0)
    with pytest.raises(ValueError):
        split_host_port("[::1]:0")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("login_app", "listen", "[::1]:5000"),
        ("login_app", "metrics_listen", "[::1]:9465"),
        ("ext_authz", "listen", "[::1]:50051"),
        ("ext_authz", "metrics_listen", "[::1]:9464"),
    ],
)
def test_every_listen_key_takes_an_ipv6_address_and_refuses_one_without_brackets(
    section, key, value
):
    raw = valid_data()
    raw.setdefault(section, {})[key] = value
    assert getattr(getattr(parse_config(raw, SECRETS), section), key) == value
    raw[section][key] = value.replace("[", "").replace("]", "")
    with pytest.raises(ConfigError, match=f"{section}.{key}.*brackets"):
        parse_config(raw, SECRETS)
