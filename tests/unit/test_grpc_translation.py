"""The gRPC edge only translates: decisions to Envoy's CheckResponse, CheckRequest to ours."""

from __future__ import annotations

import asyncio

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as attributes_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from google.rpc import code_pb2

from ext_authz.decision import Allow, Decision, Deny
from ext_authz.grpc_service import AuthorizationService, from_check_request, to_check_response
from ext_authz.request import CheckRequest
from gateway.contract import ROUTE_KEY

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def header_pairs(options: list[base_pb2.HeaderValueOption]) -> list[tuple[str, str]]:
    return [(option.header.key, option.header.value) for option in options]


def check_request(
    method: str = "GET",
    path: str = "/api/items?page=2",
    headers: dict[str, str] | None = None,
    context_extensions: dict[str, str] | None = None,
) -> auth_pb2.CheckRequest:
    return auth_pb2.CheckRequest(
        attributes=attributes_pb2.AttributeContext(
            request=attributes_pb2.AttributeContext.Request(
                http=attributes_pb2.AttributeContext.HttpRequest(
                    method=method, path=path, headers=headers or {}
                )
            ),
            context_extensions=context_extensions or {},
        )
    )


# ---- decisions out -------------------------------------------------------------------------


def test_allow_becomes_ok_with_headers_to_overwrite_and_to_remove() -> None:
    decision = Allow(
        "api",
        "allowed",
        set_headers=(("authorization", "Bearer t"), ("x-gateway-user-id", "u%C3%A9")),
        remove_headers=("private-token", "cookie"),
    )
    response = to_check_response(decision)
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    assert header_pairs(list(ok.headers)) == list(decision.set_headers)
    assert all(option.append_action == OVERWRITE for option in ok.headers)
    assert list(ok.headers_to_remove) == ["private-token", "cookie"]


def test_allow_with_nothing_to_change_is_a_bare_ok() -> None:
    response = to_check_response(Allow("status", "public"))
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    assert list(response.ok_response.headers) == []
    assert list(response.ok_response.headers_to_remove) == []


def test_deny_becomes_permission_denied_with_status_headers_and_body() -> None:
    body = '{"error": "unauthorized", "reason": "no_session"}'
    decision = Deny(
        "api",
        "no_session",
        401,
        headers=(("content-type", "application/json"), ("www-authenticate", 'Bearer realm="x"')),
        body=body,
    )
    response = to_check_response(decision)
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == 401
    assert header_pairs(list(denied.headers)) == list(decision.headers)
    assert all(option.append_action == OVERWRITE for option in denied.headers)
    assert denied.body == body


def test_every_status_the_core_uses_survives_translation() -> None:
    for status in (302, 401, 403, 503):
        response = to_check_response(Deny(None, "r", status, (("location", "/auth/login"),)))
        assert response.denied_response.status.code == status


def test_a_redirect_keeps_its_location_and_has_an_empty_body() -> None:
    response = to_check_response(
        Deny("api", "no_session", 302, (("location", "http://gw.test/auth/login?x=1"),))
    )
    assert header_pairs(list(response.denied_response.headers)) == [
        ("location", "http://gw.test/auth/login?x=1")
    ]
    assert response.denied_response.body == ""


# ---- requests in ---------------------------------------------------------------------------


def test_from_check_request_reads_method_path_headers_and_route() -> None:
    headers = {"cookie": "gw_session=abc", "accept": "text/html", "origin": "http://gw.test"}
    request = from_check_request(
        check_request("POST", "/api/items?page=2", headers, {ROUTE_KEY: "api", "other": "x"})
    )
    assert request.method == "POST"
    assert request.path == "/api/items?page=2"
    assert request.path_only == "/api/items"
    assert request.route_name == "api"
    assert dict(request.headers) == headers
    assert request.header("cookie") == "gw_session=abc"
    assert request.header("authorization") == ""


def test_from_check_request_without_a_route_extension_has_no_route_name() -> None:
    request = from_check_request(check_request(context_extensions={"other": "x"}))
    assert request.route_name is None


def test_from_check_request_on_an_empty_message_gives_empty_values() -> None:
    request = from_check_request(auth_pb2.CheckRequest())
    assert (request.method, request.path, dict(request.headers), request.route_name) == (
        "",
        "",
        {},
        None,
    )


# ---- the servicer fails closed -------------------------------------------------------------


class _BrokenAuthorizer:
    async def check(self, request: CheckRequest) -> Decision:
        raise RuntimeError("a bug in the check")


class _AllowingAuthorizer:
    def __init__(self) -> None:
        self.seen: list[CheckRequest] = []

    async def check(self, request: CheckRequest) -> Decision:
        self.seen.append(request)
        return Allow("api", "allowed", (("authorization", "Bearer t"),))


def test_an_unexpected_error_in_the_check_denies_with_503() -> None:
    service = AuthorizationService(_BrokenAuthorizer())  # type: ignore[arg-type]
    response = asyncio.run(service.Check(check_request(), None))  # type: ignore[arg-type]
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.status.code == 503
    assert response.WhichOneof("http_response") == "denied_response"


def test_the_servicer_hands_the_translated_request_to_the_authorizer() -> None:
    authorizer = _AllowingAuthorizer()
    service = AuthorizationService(authorizer)  # type: ignore[arg-type]
    message = check_request("GET", "/api/x", {"x-request-id": "r-1"}, {ROUTE_KEY: "api"})
    response = asyncio.run(service.Check(message, None))  # type: ignore[arg-type]
    assert response.status.code == code_pb2.OK
    assert [(r.method, r.path, r.route_name) for r in authorizer.seen] == [("GET", "/api/x", "api")]
