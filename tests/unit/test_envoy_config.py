"""The Envoy bootstrap rendered from the gateway configuration."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

# The *_pb2 imports register the types named by the bootstrap's Any fields.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.resource_monitors.downstream_connections.v3 import (  # noqa: F401
    downstream_connections_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from gateway import contract
from gateway.config import GatewayConfig, load_config, parse_config
from gateway.envoy.render import (
    EXT_AUTHZ_FILTER,
    NOT_FOUND_BODY,
    SYSTEM_CA_BUNDLE,
    YAML_HEADER,
    render_envoy_config,
    render_envoy_yaml,
)
from gateway.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = {"GATEWAY_SECRET_KEYS": "k" * 40}
PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"

BASE_CONFIG: dict[str, Any] = {
    "public_url": "https://gateway.example.com",
    "ext_authz": {"listen": "127.0.0.1:50051", "timeout": "900ms"},
    "login_app": {"listen": "127.0.0.1:5000", "path_prefix": "/auth"},
    "providers": [{"id": "primary", "kind": "oidc", "issuer": "https://idp.example.com",
                   "client_id": "gateway"}],
    "routes": [
        {"name": "api", "prefix": "/api/", "upstream": "http://10.0.0.5:9000",
         "provider": "primary", "identity_headers": True, "timeout": "45s"},
        {"name": "api-v2", "prefix": "/api/v2/", "upstream": "http://10.0.0.6",
         "prefix_rewrite": "/v2/"},
        {"name": "gitlab", "prefix": "/gitlab/", "upstream": "https://gitlab.example.com",
         "provider": "primary", "token_format": "private_token"},
        {"name": "status", "prefix": "/status", "upstream": "http://10.0.0.7:8080",
         "public": True},
    ],
}  # fmt: skip


def make_config(**overrides: Any) -> GatewayConfig:
    raw = copy.deepcopy(BASE_CONFIG)
    raw.update(copy.deepcopy(overrides))
    return parse_config(raw, ENVIRONMENT)


@pytest.fixture
def config() -> GatewayConfig:
    return make_config()


@pytest.fixture
def bootstrap(config: GatewayConfig) -> dict[str, Any]:
    return render_envoy_config(config)


def connection_manager(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    typed_config: dict[str, Any] = manager["typed_config"]
    return typed_config


def ext_authz_settings(bootstrap: dict[str, Any]) -> dict[str, Any]:
    first = connection_manager(bootstrap)["http_filters"][0]
    assert first["name"] == EXT_AUTHZ_FILTER
    settings: dict[str, Any] = first["typed_config"]
    return settings


def routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    (virtual_host,) = connection_manager(bootstrap)["route_config"]["virtual_hosts"]
    assert virtual_host["domains"] == ["*"]
    entries: list[dict[str, Any]] = virtual_host["routes"]
    return entries


def routes_named(bootstrap: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found = [entry for entry in routes(bootstrap) if entry["name"] == name]
    assert found, f"no route entry named {name!r}"
    return found


def cluster(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name]
    return found


def addresses(cluster_config: dict[str, Any]) -> list[dict[str, Any]]:
    (locality,) = cluster_config["load_assignment"]["endpoints"]
    return [lb["endpoint"]["address"] for lb in locality["lb_endpoints"]]


def ext_authz_per_route(entry: dict[str, Any]) -> dict[str, Any]:
    per_route: dict[str, Any] = entry["typed_per_filter_config"][EXT_AUTHZ_FILTER]
    assert per_route["@type"] == PER_ROUTE
    return per_route


def test_admin_interface_listens_on_loopback_only(bootstrap: dict[str, Any]) -> None:
    address = bootstrap["admin"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": 9901}


def test_listener_uses_the_configured_address() -> None:
    config = make_config(envoy={"listen_address": "0.0.0.0", "listen_port": 8443})
    (listener,) = render_envoy_config(config)["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8443}


def test_connection_manager_normalises_paths_and_rejects_ambiguous_input(
    bootstrap: dict[str, Any],
) -> None:
    manager = connection_manager(bootstrap)
    assert manager["normalize_path"] is True
    assert manager["merge_slashes"] is True
    assert manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert manager["use_remote_address"] is True
    assert manager["common_http_protocol_options"]["headers_with_underscores_action"] == (
        "REJECT_REQUEST"
    )
    assert manager["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    assert manager["server_header_transformation"] == "OVERWRITE"
    assert manager["server_name"] == "gateway"
    assert {"request_timeout", "request_headers_timeout", "stream_idle_timeout"} <= set(manager)


def test_access_log_is_json_with_request_id_and_route_but_no_credentials(
    bootstrap: dict[str, Any],
) -> None:
    (access_log,) = connection_manager(bootstrap)["access_log"]
    fields = access_log["typed_config"]["log_format"]["json_format"]
    assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"
    assert fields["route"] == "%ROUTE_NAME%"
    assert fields["response_code"] == "%RESPONSE_CODE%"
    assert fields["response_flags"] == "%RESPONSE_FLAGS%"
    logged = " ".join(fields.values()).lower()
    for secret in ("cookie", "authorization", "private-token", "%path(wq"):
        assert secret not in logged


def test_http_filters_run_ext_authz_then_the_router(bootstrap: dict[str, Any]) -> None:
    names = [f["name"] for f in connection_manager(bootstrap)["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]


def test_ext_authz_fails_closed_with_503(bootstrap: dict[str, Any]) -> None:
    settings = ext_authz_settings(bootstrap)
    assert settings["@type"].endswith("envoy.extensions.filters.http.ext_authz.v3.ExtAuthz")
    assert settings["failure_mode_allow"] is False
    assert settings["status_on_error"] == {"code": 503}
    assert settings["transport_api_version"] == "V3"
    grpc_service = settings["grpc_service"]
    assert grpc_service["envoy_grpc"] == {"cluster_name": "ext_authz"}
    assert grpc_service["timeout"] == "0.9s"
    retry = grpc_service["retry_policy"]  # another worker, fast; never skipping the check
    assert retry["num_retries"] == 2 and "connect-failure" in retry["retry_on"]


def test_ext_authz_receives_only_the_headers_the_decision_needs(
    bootstrap: dict[str, Any],
) -> None:
    settings = ext_authz_settings(bootstrap)
    patterns = settings["allowed_headers"]["patterns"]
    assert all(p["ignore_case"] is True and set(p) == {"exact", "ignore_case"} for p in patterns)
    # That the decision reads no other header: test_decision.py, which records its reads.
    assert [p["exact"] for p in patterns] == list(contract.FORWARDED_REQUEST_HEADERS)
    assert settings["include_peer_certificate"] is False
    assert "with_request_body" not in settings


def test_login_app_comes_first_skips_ext_authz_and_strips_managed_headers(
    bootstrap: dict[str, Any], config: GatewayConfig
) -> None:
    first_two = routes(bootstrap)[:2]
    assert [entry["match"] for entry in first_two] == [{"path": "/auth"}, {"prefix": "/auth/"}]
    for entry in first_two:
        assert entry["name"] == "login_app"
        assert entry["route"]["cluster"] == "login_app"
        assert ext_authz_per_route(entry) == {"@type": PER_ROUTE, "disabled": True}
        stripped = entry["request_headers_to_remove"]
        # The CLI's bearer credential must reach the login app (logout, /auth/user).
        assert stripped == [h for h in config.managed_headers() if h != "authorization"]
        assert {"private-token", "x-gateway-user-id"} <= set(stripped)


def test_each_protected_route_tells_ext_authz_its_name(bootstrap: dict[str, Any]) -> None:
    for name in ("api", "api-v2", "gitlab"):
        for entry in routes_named(bootstrap, name):
            per_route = ext_authz_per_route(entry)
            assert per_route["check_settings"] == {"context_extensions": {contract.ROUTE_KEY: name}}
            assert "disabled" not in per_route


def test_protected_routes_keep_the_headers_ext_authz_sets(bootstrap: dict[str, Any]) -> None:
    # Route-level removal runs after ext_authz and would delete the injected credentials.
    for name in ("api", "api-v2", "gitlab"):
        for entry in routes_named(bootstrap, name):
            assert "request_headers_to_remove" not in entry


def test_public_routes_still_pass_ext_authz_which_strips_the_session_cookie(
    bootstrap: dict[str, Any],
) -> None:
    (entry,) = routes_named(bootstrap, "status")
    settings = ext_authz_per_route(entry)["check_settings"]
    assert settings == {"context_extensions": {contract.ROUTE_KEY: "status"}}
    assert "request_headers_to_remove" not in entry


def test_longest_prefix_is_matched_first(bootstrap: dict[str, Any]) -> None:
    prefixes = [entry["match"] for entry in routes(bootstrap)[2:-1]]
    assert prefixes == [
        {"path": "/api/v2"},
        {"prefix": "/api/v2/"},
        {"path": "/gitlab"},
        {"prefix": "/gitlab/"},
        {"path_separated_prefix": "/status"},
        {"path": "/api"},
        {"prefix": "/api/"},
    ]


def test_route_entries_carry_name_cluster_timeout_and_rewrite(bootstrap: dict[str, Any]) -> None:
    for entry in routes_named(bootstrap, "api"):
        assert entry["route"] == {"cluster": "upstream_api", "timeout": "45s"}
    for entry in routes_named(bootstrap, "api-v2"):
        assert entry["route"] == {
            "cluster": "upstream_api-v2",
            "timeout": "30s",
            "prefix_rewrite": "/v2/",
        }


def test_unknown_paths_get_a_json_404_without_ext_authz(bootstrap: dict[str, Any]) -> None:
    last = routes(bootstrap)[-1]
    assert last["match"] == {"prefix": "/"}
    assert last["direct_response"] == {"status": 404, "body": {"inline_string": NOT_FOUND_BODY}}
    assert yaml.safe_load(NOT_FOUND_BODY) == {"error": "not_found"}
    assert ext_authz_per_route(last) == {"@type": PER_ROUTE, "disabled": True}
    assert "route" not in last


def test_ext_authz_cluster_speaks_http2_with_raised_circuit_breakers(
    bootstrap: dict[str, Any],
) -> None:
    ext_authz = cluster(bootstrap, "ext_authz")
    options = ext_authz["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}
    assert ext_authz["connect_timeout"] == "0.25s"
    (thresholds,) = ext_authz["circuit_breakers"]["thresholds"]
    assert min(thresholds["max_requests"], thresholds["max_pending_requests"]) >= 100_000
    assert addresses(ext_authz) == [
        {"socket_address": {"address": "127.0.0.1", "port_value": 50051}}
    ]
    assert ext_authz["type"] == "STATIC"
    assert "lb_policy" not in ext_authz


def test_unix_socket_endpoint_becomes_a_pipe(config: GatewayConfig) -> None:
    bootstrap = render_envoy_config(config, ext_authz_endpoints=["unix:/run/gateway/authz.sock"])
    ext_authz = cluster(bootstrap, "ext_authz")
    assert addresses(ext_authz) == [{"pipe": {"path": "/run/gateway/authz.sock"}}]
    assert ext_authz["type"] == "STATIC"


def test_several_endpoints_are_balanced_by_least_request(config: GatewayConfig) -> None:
    endpoints = ["127.0.0.1:50051", "127.0.0.1:50052", "unix:/run/authz-3.sock"]
    ext_authz = cluster(render_envoy_config(config, ext_authz_endpoints=endpoints), "ext_authz")
    assert ext_authz["lb_policy"] == "LEAST_REQUEST"
    assert len(addresses(ext_authz)) == 3


def test_ext_authz_listen_with_a_host_name_uses_dns() -> None:
    config = make_config(ext_authz={"listen": "authz.internal:50051"})
    ext_authz = cluster(render_envoy_config(config), "ext_authz")
    assert ext_authz["type"] == "STRICT_DNS"


def test_login_app_cluster_speaks_http1(bootstrap: dict[str, Any]) -> None:
    login_app = cluster(bootstrap, "login_app")
    assert "typed_extension_protocol_options" not in login_app  # HTTP/1.1 is Envoy's default
    assert addresses(login_app) == [
        {"socket_address": {"address": "127.0.0.1", "port_value": 5000}}
    ]


def test_https_upstream_gets_verified_tls_with_sni(bootstrap: dict[str, Any]) -> None:
    gitlab = cluster(bootstrap, "upstream_gitlab")
    assert gitlab["type"] == "STRICT_DNS"
    assert addresses(gitlab) == [
        {"socket_address": {"address": "gitlab.example.com", "port_value": 443}}
    ]
    transport = gitlab["transport_socket"]
    assert transport["name"] == "envoy.transport_sockets.tls"
    tls = transport["typed_config"]
    assert tls["@type"].endswith("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
    assert tls["sni"] == "gitlab.example.com"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": SYSTEM_CA_BUNDLE}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "gitlab.example.com"}}
    ]


def test_https_upstream_by_ip_verifies_the_ip_and_sends_no_sni() -> None:
    config = make_config(routes=[{"name": "x", "prefix": "/x/", "upstream": "https://10.1.1.1"}])
    tls = cluster(render_envoy_config(config), "upstream_x")["transport_socket"]["typed_config"]
    assert "sni" not in tls
    (san,) = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert san == {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.1.1.1"}}


def test_plain_http_upstream_by_ip_is_static_on_port_80(bootstrap: dict[str, Any]) -> None:
    api_v2 = cluster(bootstrap, "upstream_api-v2")
    assert api_v2["type"] == "STATIC"
    assert "transport_socket" not in api_v2
    assert addresses(api_v2) == [{"socket_address": {"address": "10.0.0.6", "port_value": 80}}]


def test_each_route_gets_its_own_upstream_cluster(bootstrap: dict[str, Any]) -> None:
    names = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert names == [
        "ext_authz",
        "login_app",
        "upstream_api",
        "upstream_api-v2",
        "upstream_gitlab",
        "upstream_status",
    ]


@pytest.mark.parametrize(
    "endpoints",
    [[], ["127.0.0.1"], ["127.0.0.1:http"], ["127.0.0.1:70000"], ["unix:"], [":50051"],
     ["host:1/path"], ["authz.internal:50051", "unix:/run/authz.sock"]],
)  # fmt: skip
def test_bad_ext_authz_endpoints_are_config_errors(
    config: GatewayConfig, endpoints: list[str]
) -> None:
    with pytest.raises(ConfigError):
        render_envoy_config(config, ext_authz_endpoints=endpoints)


def test_rendered_bootstrap_parses_as_envoy_protos(bootstrap: dict[str, Any]) -> None:
    """Field names, enum values and type URLs checked against xds-protos, without Envoy."""
    json_format.ParseDict(bootstrap, bootstrap_pb2.Bootstrap())


def test_yaml_is_deterministic_and_says_it_is_generated(config: GatewayConfig) -> None:
    text = render_envoy_yaml(config)
    assert text.startswith(YAML_HEADER)
    assert "do not edit" in text.splitlines()[0]
    assert text == render_envoy_yaml(make_config())
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == render_envoy_config(config)


def test_secrets_never_reach_the_envoy_config(config: GatewayConfig) -> None:
    assert "k" * 40 not in render_envoy_yaml(config)


def test_committed_envoy_yaml_matches_gateway_yaml() -> None:
    config = load_config(REPO_ROOT / "gateway.yaml", ENVIRONMENT)
    committed = (REPO_ROOT / "envoy" / "envoy.yaml").read_text(encoding="utf-8")
    assert committed == render_envoy_yaml(config), (
        "envoy/envoy.yaml is out of date; regenerate it with "
        "`gateway render-envoy --config gateway.yaml > envoy/envoy.yaml`"
    )
