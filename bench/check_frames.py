"""The Check call of (f): the CheckRequest Envoy sends for one request, framed for h2load.

The message has the shape the gateway's Envoy produces (captured from Envoy 1.40: addresses,
request time, id, method, the allowed headers, path, host, scheme, protocol and the route's
context extension), so the servicer parses what it parses in production.
"""

from __future__ import annotations

import time
import uuid

import grpc
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as attributes_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from bench.errors import BenchError
from gateway.contract import ROUTE_KEY

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


def _peer(port: int) -> attributes_pb2.AttributeContext.Peer:
    socket = address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    return attributes_pb2.AttributeContext.Peer(address=address_pb2.Address(socket_address=socket))


def check_request(path: str, route: str, cookie: str, host: str) -> auth_pb2.CheckRequest:
    """A GET of ``path`` on ``route`` carrying ``cookie``, as the gateway's Envoy describes it."""
    now = time.time()
    request = attributes_pb2.AttributeContext.Request(
        http=attributes_pb2.AttributeContext.HttpRequest(
            id="15692169532147095545",
            method="GET",
            headers={"x-request-id": str(uuid.uuid4()), "cookie": cookie, "accept": "*/*"},
            path=path,
            host=host,
            scheme="http",
            protocol="HTTP/1.1",
        )
    )
    request.time.FromNanoseconds(int(now * 1e9))
    return auth_pb2.CheckRequest(
        attributes=attributes_pb2.AttributeContext(
            source=_peer(40000),
            destination=_peer(int(host.rpartition(":")[2] or 80)),
            request=request,
            context_extensions={ROUTE_KEY: route},
        )
    )


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def call_check(address: str, request: auth_pb2.CheckRequest) -> auth_pb2.CheckResponse:
    """One Check through a real gRPC client, to see what the servicer answers."""
    with grpc.insecure_channel(address) as channel:
        try:
            return auth_grpc.AuthorizationStub(channel).Check(request, timeout=5)
        except grpc.RpcError as exc:
            raise BenchError(f"Check on {address} failed: {exc}") from exc


def allowed_headers(response: auth_pb2.CheckResponse) -> dict[str, str]:
    """The headers an OK response sets, or a :class:`BenchError` for any other answer."""
    if response.status.code != 0 or not response.HasField("ok_response"):
        raise BenchError(f"Check did not allow: status {response.status.code}")
    return {option.header.key: option.header.value for option in response.ok_response.headers}
