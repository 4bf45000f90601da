"""The ext_authz gRPC server's lifecycle: build, bind, serve, stop gracefully.

``start_server`` binds port 0 in tests and returns the bound address; ``serve`` runs until
SIGTERM/SIGINT, then reports NOT_SERVING, lets in-flight checks finish within the grace
period and closes Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Decider
from ext_authz.grpc_service import AuthorizationService
from ext_authz.refresh import Refresher
from ext_authz.session_cache import CachedSessions, SessionCache
from gateway.config import GatewayConfig
from gateway.providers import ProviderClient
from gateway.redis_client import async_subscriber_client
from gateway.session_factory import async_store, session_codec
from gateway.store import TOUCH_FRACTION, AsyncSessionStore

logger = logging.getLogger(__name__)

AUTHORIZATION_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
GRACE_SECONDS = 5.0


@dataclass
class RunningServer:
    server: grpc.aio.Server
    address: str  # "host:port" or "unix:/path", as Envoy should dial it
    health: HealthServicer
    store: AsyncSessionStore
    sessions: CachedSessions

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, finish in-flight checks, then close Redis."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.sessions.stop()
        await self.store.close()


def _bind(server: grpc.aio.Server, listen: str) -> str:
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:").removeprefix("//")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left behind by a killed predecessor
        server.add_insecure_port(f"unix:{path}")
        return f"unix:{path}"
    host, _, _ = listen.rpartition(":")
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return f"{host}:{port}"


async def start_server(config: GatewayConfig, listen: str | None = None) -> RunningServer:
    """Build the services from ``config`` and start serving on ``listen`` (port 0 allowed)."""
    store = async_store(config)
    codec = session_codec(config)
    callback = f"{config.public_url}{config.login_app.path_prefix}/callback"
    providers = {p.id: ProviderClient(p, callback) for p in config.providers}
    refresher = Refresher(store, codec, providers, config.tokens)
    # Entries never outlive a tenth of the idle window, so a busy session is re-read (and
    # its idle timeout slid, see gateway.store) before Redis could forget it.
    cache_ttl = min(
        config.ext_authz.session_cache_ttl, config.session.idle_timeout * TOUCH_FRACTION
    )
    sessions = CachedSessions(
        store,
        SessionCache(cache_ttl),
        async_subscriber_client(config.redis),
        codec.invalidation_channel,
    )
    if config.ext_authz.session_cache_ttl > 0:
        sessions.start()
    authorizer = Authorizer(Decider(config), sessions, refresher)

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
    address = _bind(server, listen or config.ext_authz.listen)
    await server.start()
    for service in ("", AUTHORIZATION_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info("ext_authz listening", extra={"address": address})
    return RunningServer(server, address, health, store, sessions)


async def serve(config: GatewayConfig, listen: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    running = await start_server(config, listen)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    logger.info("ext_authz stopping", extra={"grace_seconds": GRACE_SECONDS})
    await running.stop()
