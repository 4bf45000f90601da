"""The gRPC transport's server: Authorization, health and reflection on one port.

Imported only when ``ext_authz.transport`` is grpc, so HTTP-mode workers never load grpcio.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ext_authz.authorizer import Authorizer
from ext_authz.grpc_service import AuthorizationService
from gateway import contract

AUTHORIZATION_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_SERVICES = ("", AUTHORIZATION_SERVICE)


class GrpcTransport:
    def __init__(self, server: grpc.aio.Server, health: HealthServicer, address: str) -> None:
        self._server = server
        self._health = health
        self.address = address
        self._health_updates: set[asyncio.Task[None]] = set()

    def set_feed_live(self, live: bool) -> None:
        """Report the session feed's state under its own name, never under the probes'."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if live
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        update = asyncio.get_running_loop().create_task(
            self._health.set(contract.SESSION_FEED_HEALTH_SERVICE, status)
        )
        # The loop keeps tasks only weakly: hold each until done, lest it be collected.
        self._health_updates.add(update)
        update.add_done_callback(self._health_updates.discard)

    async def stop(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)


def _bind(server: grpc.aio.Server, listen: str) -> str:
    if listen.startswith("unix:"):
        server.add_insecure_port(listen)
        return listen
    host, _, _ = listen.rpartition(":")
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return f"{host}:{port}"


async def start_grpc(authorizer: Authorizer, listen: str) -> GrpcTransport:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    auth_grpc.add_AuthorizationServicer_to_server(AuthorizationService(authorizer), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            AUTHORIZATION_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = _bind(server, listen)
    await server.start()
    for service in _SERVICES:
        # SERVING until shutdown, whatever Redis does (see ext_authz.server).
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    await health.set(
        contract.SESSION_FEED_HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING
    )
    return GrpcTransport(server, health, address)
