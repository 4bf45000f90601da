"""Calling an ext_authz worker directly over gRPC, as Envoy would."""

from __future__ import annotations

import time

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def wait_until_feed_serving(address: str, timeout: float = 20) -> None:
    """Wait until the ext_authz worker at ``address`` reports its session change feed
    SERVING (under a health service name of its own): subscribed again, so the worker
    answers from memory once more."""
    deadline = time.monotonic() + timeout
    request = health_pb2.HealthCheckRequest(service=contract.SESSION_FEED_HEALTH_SERVICE)
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if (
                    health.Check(request, timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{address} never reported SERVING"
            time.sleep(0.05)
