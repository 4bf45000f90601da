"""Calling an ext_authz worker directly over gRPC, as Envoy would."""

from __future__ import annotations

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from gateway import contract


def check(
    address: str, cookie: str, *, path: str = "/api/x", route: str = "api", timeout: float = 5
) -> external_auth_pb2.CheckResponse:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", path
    http.headers["cookie"] = cookie
    http.headers["accept"] = "application/json"
    request.attributes.context_extensions[contract.ROUTE_KEY] = route
    with grpc.insecure_channel(address) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=timeout)


def injected(
    response: external_auth_pb2.CheckResponse, header: str = "authorization"
) -> str | None:
    for option in response.ok_response.headers:
        if option.header.key == header:
            return str(option.header.value)
    return None
