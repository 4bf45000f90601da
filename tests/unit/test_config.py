"""Configuration: a bad file fails at start naming the key; secrets come from the environment."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    GatewayConfig,
    TokenFormat,
    load_config,
    parse_config,
    provider_secret_variable,
)
from gateway.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40
OLD_SECRET = "o" * 40
SECRETS = {"GATEWAY_SECRET_KEYS": SECRET}
_VALID: dict[str, Any] = {
    "public_url": "http://gateway.test:8080",
    "session": {"cookie_name": "gw_session", "absolute_lifetime": "1h", "idle_timeout": "30m"},
    "providers": [
        {"id": "primary", "kind": "oidc", "issuer": "https://idp.test", "client_id": "gw"},
        {
            "id": "gitlab",
            "kind": "oauth2",
            "authorize_url": "https://gitlab.test/authorize",
            "token_url": "https://gitlab.test/token",
            "client_id": "gw",
        },
    ],
    "routes": [
        {
            "name": "api",
            "prefix": "/api/",
            "upstream": "http://backend.test",
            "provider": "primary",
            "identity_headers": True,
        },
        {
            "name": "gitlab",
            "prefix": "/gitlab/",
            "upstream": "http://backend.test",
            "provider": "gitlab",
            "token_format": "private_token",
        },
        {"name": "status", "prefix": "/status", "upstream": "http://backend.test", "public": True},
    ],
}


def valid_data() -> dict[str, Any]:
    return copy.deepcopy(_VALID)


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """The valid config with values set at key paths like ``routes[0].prefix``.

    The value ``DELETE`` removes the key instead.
    """
    data = valid_data()
    for path, value in changes.items():
        steps = [name if name else int(index) for name, index in _STEP.findall(path)]
        target: Any = data
        for step in steps[:-1]:
            target = target[step]
        if value is DELETE:
            del target[steps[-1]]
        elif isinstance(target, list) and steps[-1] == len(target):
            target.append(value)
        else:
            target[steps[-1]] = value
    return data


DELETE = object()
ROUTE = {"name": "extra", "prefix": "/extra/", "upstream": "http://backend.test"}
ON_DEMAND = {
    "id": "hub",
    "kind": "oauth2",
    "authorize_url": "https://hub.test/authorize",
    "token_url": "https://hub.test/token",
    "client_id": "gw",
    "login_sequence": False,
}


# ---- invalid configurations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "environ", "key_path"),
    [
        pytest.param({}, {}, "session.secret_keys", id="missing-secret-keys"),
        pytest.param(
            {}, {"GATEWAY_SECRET_KEYS": "too-short"}, "session.secret_keys", id="short-secret-key"
        ),
        pytest.param(
            {},
            {"GATEWAY_SECRET_KEYS": f"{SECRET},short"},
            "session.secret_keys",
            id="one-short-secret-among-good-ones",
        ),
        pytest.param(
            {},
            {"GATEWAY_SECRET_KEYS": " , ,"},
            "session.secret_keys",
            id="secret-keys-only-separators",
        ),
        pytest.param({"session": DELETE}, {}, "session", id="missing-session-section"),
        pytest.param(
            {"public_url": "ftp://gateway.test"}, SECRETS, "public_url", id="public-url-not-http"
        ),
        pytest.param(
            {"public_url": "gateway.test:8080"},
            SECRETS,
            "public_url",
            id="public-url-without-scheme",
        ),
        pytest.param(
            {"public_url": "http://gateway.test/app"},
            SECRETS,
            "public_url",
            id="public-url-with-path",
        ),
        pytest.param(
            {"public_url": "http://gateway.test/?x=1"},
            SECRETS,
            "public_url",
            id="public-url-with-query",
        ),
        pytest.param(
            {"public_url": "http://user:pw@gateway.test"},
            SECRETS,
            "public_url",
            id="public-url-with-credentials",
        ),
        pytest.param({"public_url": DELETE}, SECRETS, "public_url", id="public-url-missing"),
        pytest.param(
            {"routes[0].provider": "nope"},
            SECRETS,
            "routes[0].provider",
            id="route-with-unknown-provider",
        ),
        pytest.param(
            {"routes[1].prefix": "/api/"}, SECRETS, "routes", id="duplicate-route-prefixes"
        ),
        pytest.param({"routes[1].name": "api"}, SECRETS, "routes", id="duplicate-route-names"),
        pytest.param(
            {"providers[1].id": "primary"}, SECRETS, "providers", id="duplicate-provider-ids"
        ),
        pytest.param(
            {"routes[0].prefix": "api/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-without-leading-slash",
        ),
        pytest.param({"routes[0].prefix": ""}, SECRETS, "routes[0].prefix", id="empty-prefix"),
        pytest.param(
            {"routes[0].prefix": "/api/../admin/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-with-dot-dot-segment",
        ),
        pytest.param(
            {"routes[0].prefix": "/api/.."},
            SECRETS,
            "routes[0].prefix",
            id="prefix-ending-in-dot-dot",
        ),
        pytest.param(
            {"routes[0].prefix": "/./api/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-with-dot-segment",
        ),
        pytest.param(
            {"routes[0].prefix": "/api//v1/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-with-double-slash",
        ),
        pytest.param(
            {"routes[0].prefix": "/api/%2e%2e/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-with-percent-encoding",
        ),
        pytest.param(
            {"routes[0].prefix": "/api?x"}, SECRETS, "routes[0].prefix", id="prefix-with-query"
        ),
        pytest.param(
            {"routes[0].prefix": "/auth/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-is-the-login-app",
        ),
        pytest.param(
            {"routes[0].prefix": "/auth"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-is-the-login-app-without-slash",
        ),
        pytest.param(
            {"routes[0].prefix": "/auth/admin/"},
            SECRETS,
            "routes[0].prefix",
            id="prefix-under-the-login-app",
        ),
        pytest.param(
            {"routes[2].provider": "primary"}, SECRETS, "routes[2]", id="public-route-with-provider"
        ),
        pytest.param(
            {"routes[2].anonymous": True}, SECRETS, "routes[2]", id="public-route-marked-anonymous"
        ),
        pytest.param(
            {"routes[2].identity_headers": True},
            SECRETS,
            "routes[2]",
            id="public-route-with-identity-headers",
        ),
        pytest.param(
            {"routes[0].name": "API"}, SECRETS, "routes[0].name", id="route-name-upper-case"
        ),
        pytest.param(
            {"routes[0].upstream": "http://backend.test/base"},
            SECRETS,
            "routes[0].upstream",
            id="upstream-with-path",
        ),
        pytest.param(
            {"routes[0].token_format": "cookie"},
            SECRETS,
            "routes[0].token_format",
            id="unknown-token-format",
        ),
        pytest.param({"routes[0].bogus": 1}, SECRETS, "routes[0].bogus", id="unknown-route-key"),
        pytest.param({"routes": []}, SECRETS, "routes", id="no-routes"),
        pytest.param(
            {"providers[0].issuer": DELETE},
            SECRETS,
            "providers[0]",
            id="oidc-provider-without-issuer",
        ),
        pytest.param(
            {"providers[1].token_url": DELETE},
            SECRETS,
            "providers[1]",
            id="oauth2-provider-without-token-url",
        ),
        pytest.param(
            {"providers[0].issuer": "http://idp.test"},
            SECRETS,
            "providers[0].issuer",
            id="provider-url-plain-http-off-loopback",
        ),
        pytest.param(
            {"providers[0].kind": "saml"}, SECRETS, "providers[0].kind", id="unknown-provider-kind"
        ),
        pytest.param(
            {"providers[0].id": "Primary IdP"},
            SECRETS,
            "providers[0].id",
            id="provider-id-with-space",
        ),
        pytest.param(
            {"session.idle_timeout": "5 minutes"},
            SECRETS,
            "session.idle_timeout",
            id="duration-in-words",
        ),
        pytest.param(
            {"session.idle_timeout": "-5s"},
            SECRETS,
            "session.idle_timeout",
            id="negative-duration-string",
        ),
        pytest.param(
            {"session.idle_timeout": 0}, SECRETS, "session.idle_timeout", id="zero-duration"
        ),
        pytest.param(
            {"session.idle_timeout": True}, SECRETS, "session.idle_timeout", id="boolean-duration"
        ),
        pytest.param(
            {"session.idle_timeout": "2w"},
            SECRETS,
            "session.idle_timeout",
            id="duration-unknown-unit",
        ),
        pytest.param(
            {"providers[0].token_max_lifetime": "soon"},
            SECRETS,
            "providers[0].token_max_lifetime",
            id="optional-duration-invalid",
        ),
        pytest.param(
            {"session.idle_timeout": "2h"},
            SECRETS,
            "session",
            id="idle-timeout-longer-than-absolute-lifetime",
        ),
        pytest.param(
            {"session.cookie_name": "__Host-gw"},
            SECRETS,
            "session.cookie_name",
            id="cookie-name-with-prefix",
        ),
        pytest.param(
            {"session.cookie_name": "gw session"},
            SECRETS,
            "session.cookie_name",
            id="cookie-name-with-space",
        ),
        pytest.param(
            {"identity_headers": {"name": "Cookie"}},
            SECRETS,
            "identity_headers.name",
            id="identity-header-is-reserved",
        ),
        pytest.param(
            {"redis": {"url": "http://redis.test"}}, SECRETS, "redis.url", id="redis-url-not-redis"
        ),
        pytest.param(
            {"ext_authz": {"allowed_origins": ["https://app.test/path"]}},
            SECRETS,
            "ext_authz.allowed_origins",
            id="allowed-origin-with-path",
        ),
        pytest.param(
            {"envoy": {"listen_port": 70000}}, SECRETS, "envoy.listen_port", id="port-out-of-range"
        ),
        pytest.param({"log_level": "verbose"}, SECRETS, "log_level", id="unknown-log-level"),
        pytest.param(
            {"session.idle_timeout": 10**400},
            SECRETS,
            "session.idle_timeout",
            id="duration-too-large-for-a-float",
        ),
        pytest.param(
            {"ext_authz": {"listen": "127.0.0.1:0", "workers": 2}},
            SECRETS,
            "ext_authz",
            id="several-workers-on-port-0",
        ),
        pytest.param(
            {"ext_authz": {"listen": "127.0.0.1:65535", "workers": 2}},
            SECRETS,
            "ext_authz",
            id="worker-ports-past-65535",
        ),
        pytest.param(
            {"login_app": {"listen": "localhost"}},
            SECRETS,
            "login_app.listen",
            id="login-app-listen-without-port",
        ),
        pytest.param({"bogus": 1}, SECRETS, "bogus", id="unknown-top-level-key"),
        pytest.param(
            {"providers[0].login_sequence": False},
            SECRETS,
            "providers[0].login_sequence",
            id="primary-outside-the-login-sequence",
        ),
        pytest.param(
            {"providers[0].optional": True}, SECRETS, "providers[0].optional", id="optional-primary"
        ),
        pytest.param(
            {"providers[1].login_sequence": False, "providers[1].optional": True},
            SECRETS,
            "providers[1].optional",
            id="optional-on-demand-provider",
        ),
        pytest.param(
            {"providers[2]": {**ON_DEMAND, "id": "unused"}},
            SECRETS,
            "providers[2].login_sequence",
            id="on-demand-provider-no-route-needs",
        ),
        pytest.param(
            {"providers[1].optional": "sometimes"},
            SECRETS,
            "providers[1].optional",
            id="optional-not-a-bool",
        ),
    ],
)
def test_an_invalid_config_fails_naming_the_key(
    changes: dict[str, Any], environ: dict[str, str], key_path: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(changed(changes), environ)
    message = str(raised.value)
    # The key path must be named as a whole path, not as the tail of a longer one.
    assert re.search(rf"(^|[;:] ){re.escape(key_path)}[:.\[ ]", message), message


def test_providers_outside_the_sequence_are_logged_in_on_demand_and_others_may_be_optional():
    config = parse_config(
        changed(
            {
                "providers[1].optional": True,
                "providers[2]": ON_DEMAND,
                "routes[3]": {**ROUTE, "provider": "hub"},
            }
        ),
        SECRETS,
    )
    assert config.login_sequence == ("primary", "gitlab")
    assert [p.optional for p in config.providers] == [False, True, False]


@pytest.mark.parametrize(
    ("changes", "key_path"),
    [
        pytest.param({"routes[1].name": "api"}, "routes[1].name", id="duplicate-route-name"),
        pytest.param(
            {"routes[1].prefix": "/api/"}, "routes[1].prefix", id="duplicate-route-prefix"
        ),
        pytest.param({"providers[1].id": "primary"}, "providers[1].id", id="duplicate-provider-id"),
    ],
)
def test_a_duplicate_is_reported_at_the_key_path_of_the_second_occurrence(
    changes: dict[str, Any], key_path: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(key_path)):
        parse_config(changed(changes), SECRETS)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="empty-file"),
        pytest.param([_VALID], id="list"),
        pytest.param("public_url: x", id="string"),
        pytest.param(42, id="number"),
    ],
)
def test_a_config_that_is_not_a_mapping_is_refused(raw: Any) -> None:
    with pytest.raises(ConfigError, match=r"^\(top level\): .*mapping"):
        parse_config(raw, SECRETS)


def test_a_config_error_carries_the_machine_readable_code() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(valid_data(), {})
    assert raised.value.code == "invalid_config"


# ---- valid configurations ------------------------------------------------------------------


def test_the_valid_example_parses() -> None:
    config = parse_config(valid_data(), SECRETS)
    assert isinstance(config, GatewayConfig)
    assert [route.name for route in config.routes] == ["api", "gitlab", "status"]
    assert config.route("gitlab") is not None
    assert config.route("gitlab").token_format is TokenFormat.PRIVATE_TOKEN  # type: ignore[union-attr]
    assert config.route("nope") is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("30m", 1800.0, id="minutes"),
        pytest.param("12h", 43200.0, id="hours"),
        pytest.param("1d", 86400.0, id="days"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("1.5h", 5400.0, id="fractional"),
        pytest.param(" 45 ", 45.0, id="bare-string-with-spaces"),
        pytest.param(45, 45.0, id="integer"),
        pytest.param(2.5, 2.5, id="float"),
    ],
)
def test_durations_are_read_as_seconds(value: Any, seconds: float) -> None:
    config = parse_config(changed({"routes[0].timeout": value}), SECRETS)
    assert config.routes[0].timeout == seconds


def test_session_lifetimes_are_read_from_duration_strings() -> None:
    config = parse_config(valid_data(), SECRETS)
    assert (config.session.absolute_lifetime, config.session.idle_timeout) == (3600.0, 1800.0)


def test_secret_keys_come_from_a_comma_separated_environment_variable_newest_first() -> None:
    environ = {"GATEWAY_SECRET_KEYS": f" {SECRET} ,{OLD_SECRET},, "}
    config = parse_config(valid_data(), environ)
    assert config.session.secret_keys == (SECRET, OLD_SECRET)


def test_the_environment_overrides_secret_keys_in_the_file() -> None:
    data = changed({"session.secret_keys": [OLD_SECRET]})
    assert parse_config(data, SECRETS).session.secret_keys == (SECRET,)


def test_secret_keys_may_come_from_the_file_when_the_environment_has_none() -> None:
    data = changed({"session.secret_keys": [OLD_SECRET]})
    assert parse_config(data, {}).session.secret_keys == (OLD_SECRET,)


def test_the_redis_url_comes_from_the_environment() -> None:
    environ = {**SECRETS, "GATEWAY_REDIS_URL": "rediss://:p4ss@redis.test:6380/2"}
    config = parse_config(changed({"redis": {"url": "redis://file.test/0"}}), environ)
    assert config.redis.url == "rediss://:p4ss@redis.test:6380/2"


def test_the_redis_url_defaults_without_file_or_environment() -> None:
    assert parse_config(valid_data(), SECRETS).redis.url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("provider_id", "variable"),
    [
        pytest.param("primary", "GATEWAY_PROVIDER_PRIMARY_CLIENT_SECRET", id="plain"),
        pytest.param("my-idp", "GATEWAY_PROVIDER_MY_IDP_CLIENT_SECRET", id="dash"),
        pytest.param("idp_2", "GATEWAY_PROVIDER_IDP_2_CLIENT_SECRET", id="underscore-digit"),
    ],
)
def test_a_provider_client_secret_comes_from_its_environment_variable(
    provider_id: str, variable: str
) -> None:
    assert provider_secret_variable(provider_id) == variable
    data = changed({"providers[0].id": provider_id, "routes[0].provider": provider_id})
    config = parse_config(data, {**SECRETS, variable: "client-secret-value"})
    assert config.provider(provider_id).client_secret == "client-secret-value"
    assert config.provider("gitlab").client_secret is None


def test_an_unknown_provider_id_raises_key_error() -> None:
    with pytest.raises(KeyError):
        parse_config(valid_data(), SECRETS).provider("nope")


@pytest.mark.parametrize(
    ("public_url", "cookie_name", "secure"),
    [
        pytest.param("http://gateway.test:8080", "gw_session", False, id="http-plain-name"),
        pytest.param("https://gateway.test", "__Host-gw_session", True, id="https-host-prefix"),
    ],
)
def test_the_cookie_name_gets_the_host_prefix_on_https(
    public_url: str, cookie_name: str, secure: bool
) -> None:
    config = parse_config(changed({"public_url": public_url}), SECRETS)
    assert config.cookie_name == cookie_name
    assert config.secure_cookies is secure
    assert config.session.cookie_name == "gw_session"


def test_the_public_url_loses_its_trailing_slash_and_its_origin_is_lower_case() -> None:
    config = parse_config(changed({"public_url": "HTTPS://Gateway.Test:8443/"}), SECRETS)
    assert config.public_url == "HTTPS://Gateway.Test:8443"
    assert config.public_origin == "https://gateway.test:8443"


def test_managed_headers_cover_tokens_and_identity_in_lower_case() -> None:
    data = changed({"identity_headers": {"user_id": "X-Remote-User"}})
    managed = parse_config(data, SECRETS).managed_headers()
    assert {
        "authorization",
        "private-token",
        "x-remote-user",
        "x-gateway-user-email",
        "x-gateway-user-name",
    } == set(managed)


def test_parse_config_leaves_the_callers_data_unchanged() -> None:
    data = valid_data()
    parse_config(data, {**SECRETS, "GATEWAY_REDIS_URL": "redis://secret@redis.test/0"})
    assert data == _VALID


# ---- load_config ---------------------------------------------------------------------------


def test_the_repositorys_gateway_yaml_loads_with_secrets_from_the_environment() -> None:
    environ = {
        "GATEWAY_SECRET_KEYS": f"{SECRET},{OLD_SECRET}",
        "GATEWAY_PROVIDER_GITLAB_CLIENT_SECRET": "gitlab-secret",
    }
    config = load_config(REPO_ROOT / "gateway.yaml", environ)
    assert config.session.secret_keys == (SECRET, OLD_SECRET)
    assert config.provider("gitlab").client_secret == "gitlab-secret"
    assert {route.name for route in config.routes} >= {"api", "status"}


def test_the_repositorys_gateway_yaml_needs_secret_keys() -> None:
    with pytest.raises(ConfigError, match="session.secret_keys"):
        load_config(REPO_ROOT / "gateway.yaml", {})


def test_load_config_on_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(missing, SECRETS)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(b"routes: [unclosed\n", "not valid YAML", id="invalid-yaml"),
        pytest.param(b"key: value\n  bad indent: x\n", "not valid YAML", id="bad-indentation"),
        pytest.param(b"- a\n- b\n", "mapping", id="yaml-list"),
        pytest.param(b"", "mapping", id="empty-file"),
        pytest.param(b"public_url: \xff\xfe\n", "cannot read", id="not-utf8"),
        pytest.param(b"a: 1\nb: [x\n", r"not valid YAML: .* line 3, column 1", id="reports-where"),
    ],
)
def test_load_config_on_an_unusable_file_is_a_config_error(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_config(path, SECRETS)


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"GATEWAY_SECRET_KEYS": "hunter2-short"}, id="short-secret-key"),
        pytest.param(
            {**SECRETS, "GATEWAY_REDIS_URL": "http://:hunter2@redis.test"},
            id="redis-url-with-password",
        ),
    ],
)
def test_a_config_error_never_echoes_a_secret(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(valid_data(), environ)
    assert "hunter2" not in str(raised.value)


def test_a_yaml_error_never_quotes_the_line_it_is_on(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("providers:\n  - client_secret: hunter2: oops\n")
    with pytest.raises(ConfigError, match="not valid YAML") as raised:
        load_config(path, SECRETS)
    assert "hunter2" not in str(raised.value)


def test_a_retired_cookie_size_limit_still_loads_and_says_it_is_unused(caplog):
    from gateway.config import ExtAuthzSettings

    with caplog.at_level("WARNING"):
        settings = ExtAuthzSettings.model_validate({"max_cookie_header_bytes": 8192})
    assert not hasattr(settings, "max_cookie_header_bytes")
    assert "max_cookie_header_bytes is no longer used" in caplog.text
