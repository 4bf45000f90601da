"""Envoy's ``envoy.service.auth.v3.Authorization`` service: protobuf in, protobuf out.

Only translation lives here; :class:`~ext_authz.authorizer.Authorizer` decides.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from google.rpc import code_pb2, status_pb2

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision
from ext_authz.reporting import INTERNAL_ERROR, record_decision
from ext_authz.request import CheckRequest
from gateway import contract

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

logger = logging.getLogger("ext_authz.check")

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK_STATUS = status_pb2.Status(code=code_pb2.OK)
_DENIED_STATUS = status_pb2.Status(code=code_pb2.PERMISSION_DENIED)


def _add_headers(
    options: RepeatedCompositeFieldContainer[base_pb2.HeaderValueOption],
    headers: tuple[tuple[str, str], ...],
) -> None:
    # Filled in place: building each HeaderValueOption and HeaderValue from keyword
    # arguments and copying them in costs more than twice as much per check.
    for name, value in headers:
        header = options.add(append_action=_OVERWRITE).header
        header.key = name
        header.value = value


def to_check_response(decision: Decision) -> auth_pb2.CheckResponse:
    """Envoy's CheckResponse for a decision."""
    if isinstance(decision, Allow):
        response = auth_pb2.CheckResponse(status=_OK_STATUS)
        ok = response.ok_response
        ok.SetInParent()  # an allow that changes no header is still an ok_response
        _add_headers(ok.headers, decision.set_headers)
        ok.headers_to_remove.extend(decision.remove_headers)
        return response
    response = auth_pb2.CheckResponse(status=_DENIED_STATUS)
    denied = response.denied_response
    denied.status.code = decision.status
    _add_headers(denied.headers, decision.headers)
    denied.body = decision.body
    return response


def from_check_request(message: auth_pb2.CheckRequest) -> CheckRequest:
    http = message.attributes.request.http
    return CheckRequest(
        method=http.method,
        path=http.path,
        headers=http.headers,
        route_name=message.attributes.context_extensions.get(contract.ROUTE_KEY),
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
