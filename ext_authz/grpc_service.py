"""Envoy's ``envoy.service.auth.v3.Authorization`` service: protobuf in, protobuf out.

Only translation lives here; :class:`~ext_authz.authorizer.Authorizer` decides.
"""

from __future__ import annotations

import logging
import time

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision
from ext_authz.reporting import INTERNAL_ERROR, record_decision
from ext_authz.request import CheckRequest

logger = logging.getLogger("ext_authz.check")

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK_STATUS = status_pb2.Status(code=code_pb2.OK)
_DENIED_STATUS = status_pb2.Status(code=code_pb2.PERMISSION_DENIED)


def _header_options(headers: tuple[tuple[str, str], ...]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
        )
        for name, value in headers
    ]


def to_check_response(decision: Decision) -> auth_pb2.CheckResponse:
    """Envoy's CheckResponse for a decision."""
    if isinstance(decision, Allow):
        return auth_pb2.CheckResponse(
            status=_OK_STATUS,
            ok_response=auth_pb2.OkHttpResponse(
                headers=_header_options(decision.set_headers),
                headers_to_remove=list(decision.remove_headers),
            ),
        )
    return auth_pb2.CheckResponse(
        status=_DENIED_STATUS,
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),  # type: ignore[arg-type]
            headers=_header_options(decision.headers),
            body=decision.body,
        ),
    )


def from_check_request(message: auth_pb2.CheckRequest) -> CheckRequest:
    http = message.attributes.request.http
    return CheckRequest(
        method=http.method,
        path=http.path,
        headers=http.headers,
        route_name=message.attributes.context_extensions.get("route"),
    )


class AuthorizationService(auth_grpc.AuthorizationServicer):
    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def Check(  # noqa: N802  (the name is gRPC's)
        self, request: auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CheckResponse:
        started = time.perf_counter()
        check = from_check_request(request)
        try:
            decision = await self._authorizer.check(check)
        except Exception:
            # A bug must not open the gate: deny, and say so in the log.
            logger.exception("check failed unexpectedly")
            decision = INTERNAL_ERROR
        record_decision(check, decision, time.perf_counter() - started, "grpc")
        return to_check_response(decision)
