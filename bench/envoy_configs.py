"""Envoy bootstraps for the benchmark: the backend Envoy and the front Envoys of (a), (b), (c).

Every front Envoy is the gateway's own rendered bootstrap (``render_envoy_config``) with only
the authorization filter and the routes swapped, so the scenarios differ in the authorization
hop and nothing else: same connection manager settings, same JSON access log, same overload
manager, one worker each.

The backend is a separate Envoy answering every request itself (``direct_response``), so the
thing being measured is the front Envoy and what it calls. It echoes the few request headers
the checks look at (the injected token, the JWT subject, the authorization marker, a leaked
cookie) back as ``x-seen-*`` response headers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from gateway.contract import FORWARDED_REQUEST_HEADERS

_TYPE = "type.googleapis.com/"
_HCM = "envoy.filters.network.http_connection_manager"
_HCM_TYPE = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3."
_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
}
BACKEND_BODY = "ok\n"
AUTHZ_PATH_PREFIX = "/authz"
AUTHZ_MARKER = "x-authz-checked"
JWT_SUBJECT_HEADER = "x-jwt-sub"
# Response header -> the request header the backend saw (absent when the request had none).
ECHOED_HEADERS = {
    "x-seen-authorization": "authorization",
    "x-seen-authz": AUTHZ_MARKER,
    "x-seen-jwt-sub": JWT_SUBJECT_HEADER,
    "x-seen-cookie": "cookie",
}
BACKEND_CLUSTER = "bench_backend"
NATIVE_AUTHZ_CLUSTER = "native_authz"
# Envoy's default circuit breakers (1024) would turn an overload into 503s, not queueing.
_CIRCUIT_LIMIT = 100_000


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _header(name: str, value: str) -> dict[str, Any]:
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _cluster(name: str, port: int) -> dict[str, Any]:
    limits = {key: _CIRCUIT_LIMIT for key in ("max_connections", "max_pending_requests")}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{**limits, "max_requests": _CIRCUIT_LIMIT}]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
    }


def backend_bootstrap(port: int, admin_port: int) -> dict[str, Any]:
    """An Envoy that answers 200 itself: the fast backend, and the native authorization server
    of (b) (requests under ``/authz`` answer with the marker header that (b) forwards)."""
    echo = [_header(name, f"%REQ({source})%") for name, source in ECHOED_HEADERS.items()]
    ok = {"status": 200, "body": {"inline_string": BACKEND_BODY}}
    routes = [
        {
            "name": "native_authz",
            "match": {"prefix": AUTHZ_PATH_PREFIX + "/"},
            "direct_response": ok,
            "response_headers_to_add": [_header(AUTHZ_MARKER, "native")],
        },
        {
            "name": "backend",
            "match": {"prefix": "/"},
            "direct_response": ok,
            "response_headers_to_add": echo,
        },
    ]
    manager = {
        "@type": _HCM_TYPE + "HttpConnectionManager",
        "stat_prefix": "backend",
        "codec_type": "AUTO",
        "http_filters": [_ROUTER],
        "route_config": {
            "name": "backend",
            "virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": routes}],
        },
    }
    listener = {
        "name": "backend",
        "address": _address(port),
        "filter_chains": [{"filters": [{"name": _HCM, "typed_config": manager}]}],
    }
    return {
        "admin": {"address": _address(admin_port)},
        "static_resources": {"listeners": [listener], "clusters": []},
    }


def front_bootstrap(
    gateway_bootstrap: dict[str, Any],
    *,
    port: int,
    admin_port: int,
    backend_port: int,
    authorization: list[dict[str, Any]],
    extra_clusters: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The gateway's bootstrap with ``authorization`` as its only filters before the router and
    one route to the backend; ``[]`` is (a), Envoy with no authorization."""
    bootstrap = copy.deepcopy(gateway_bootstrap)
    bootstrap["admin"] = {"address": _address(admin_port)}
    (listener,) = bootstrap["static_resources"]["listeners"]
    listener["address"] = _address(port)
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"] = [*authorization, _ROUTER]
    route = {"name": "backend", "match": {"prefix": "/"}, "route": {"cluster": BACKEND_CLUSTER}}
    manager["route_config"] = {
        "name": "bench",
        "virtual_hosts": [{"name": "bench", "domains": ["*"], "routes": [route]}],
    }
    clusters = [_cluster(BACKEND_CLUSTER, backend_port), *extra_clusters]
    bootstrap["static_resources"]["clusters"] = clusters
    return bootstrap


def native_ext_authz(authz_port: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(b): ext_authz in HTTP mode, settings as the gateway's gRPC one (fail closed, the same
    allowed headers), asking the backend Envoy, which allows at once."""
    patterns = [{"exact": name, "ignore_case": True} for name in FORWARDED_REQUEST_HEADERS]
    service = {
        "server_uri": {
            "uri": f"http://127.0.0.1:{authz_port}",
            "cluster": NATIVE_AUTHZ_CLUSTER,
            "timeout": "1s",
        },
        "path_prefix": AUTHZ_PATH_PREFIX,
        "authorization_response": {
            "allowed_upstream_headers": {"patterns": [{"exact": AUTHZ_MARKER}]}
        },
    }
    ext_authz = {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "http_service": service,
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": 503},
        "allowed_headers": {"patterns": patterns},
    }
    filters = [{"name": "envoy.filters.http.ext_authz", "typed_config": ext_authz}]
    return filters, [_cluster(NATIVE_AUTHZ_CLUSTER, authz_port)]


def native_jwt_authn(jwks: dict[str, Any], issuer: str, audience: str) -> list[dict[str, Any]]:
    """(c): Envoy's own RS256 JWT validation against an inline JWKS; every request needs one.
    No ``jwt_cache_config``, so every request's signature is verified."""
    provider = {
        "issuer": issuer,
        "audiences": [audience],
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "forward": False,
        "claim_to_headers": [{"header_name": JWT_SUBJECT_HEADER, "claim_name": "sub"}],
    }
    jwt_authn = {
        "@type": _TYPE + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
    }
    return [{"name": "envoy.filters.http.jwt_authn", "typed_config": jwt_authn}]
