"""One ext_authz worker's lifecycle: build, bind, serve, stop gracefully.

The transport is Envoy's gRPC Authorization service (the default and reference, with gRPC
health and reflection) or its HTTP mode (``ext_authz.transport: http``). ``start_server``
binds port 0 in tests and returns the bound address; ``serve`` runs until SIGTERM/SIGINT,
then reports NOT_SERVING, lets in-flight checks finish within the grace period and closes
Redis. Health is NOT_SERVING while Redis cannot be reached (the invalidation feed tells) and
during shutdown. SIGHUP reloads routes and providers; an invalid file keeps the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ext_authz.components import Components, build_components, decision_parts
from ext_authz.grpc_service import AuthorizationService
from ext_authz.http_service import start_http_server
from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.metrics import serve_metrics

logger = logging.getLogger(__name__)

AUTHORIZATION_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
GRACE_SECONDS = 5.0
# What a running worker cannot change on SIGHUP (sockets, Redis, keys, process layout).
RESTART_ONLY = ("redis", "session", "ext_authz", "envoy", "public_url")
ConfigLoader = Callable[[], GatewayConfig]


@dataclass
class RunningServer:
    address: str  # "host:port" or "unix:/path", as Envoy should dial it
    components: Components
    grpc_server: grpc.aio.Server | None = None
    health: HealthServicer | None = None
    http_server: asyncio.base_events.Server | None = None
    serving: list[bool] = field(default_factory=lambda: [True])
    redis_reachable: list[bool] = field(default_factory=lambda: [False])

    def healthy(self) -> bool:
        return self.serving[0] and self.redis_reachable[0]

    def redis_changed(self, reachable: bool) -> None:
        self.redis_reachable[0] = reachable
        if self.health is not None and self.serving[0]:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if reachable
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service in ("", AUTHORIZATION_SERVICE):
                asyncio.get_running_loop().create_task(self.health.set(service, status))
        logger.log(
            logging.INFO if reachable else logging.WARNING,
            "redis reachable" if reachable else "redis unreachable: reporting NOT_SERVING",
        )

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, finish in-flight checks, then close Redis."""
        self.serving[0] = False
        if self.grpc_server is not None and self.health is not None:
            await self.health.enter_graceful_shutdown()
            await self.grpc_server.stop(grace)
        if self.http_server is not None:
            self.http_server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.http_server.wait_closed(), grace)
        await self.components.close()


def _unlink_stale_socket(listen: str) -> None:
    if listen.startswith("unix:"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen.removeprefix("unix:"))  # left behind by a killed predecessor


def _bind(server: grpc.aio.Server, listen: str) -> str:
    if listen.startswith("unix:"):
        server.add_insecure_port(listen)
        return listen
    host, _, _ = listen.rpartition(":")
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return f"{host}:{port}"


async def _start_grpc(components: Components, listen: str) -> RunningServer:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    auth_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(components.authorizer), server
    )
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
    for service in ("", AUTHORIZATION_SERVICE):
        # NOT_SERVING until the invalidation feed shows Redis answers.
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    return RunningServer(address, components, grpc_server=server, health=health)


async def start_server(config: GatewayConfig, listen: str | None = None) -> RunningServer:
    """Build the services from ``config`` and start serving on ``listen`` (port 0 allowed)."""
    listen = listen or config.ext_authz.listen
    _unlink_stale_socket(listen)
    components = build_components(config)
    if config.ext_authz.transport == "http":
        running = RunningServer("", components)
        server, address = await start_http_server(components.authorizer, listen, running.healthy)
        running.address, running.http_server = address, server
    else:
        running = await _start_grpc(components, listen)
    components.sessions.on_feed_change = running.redis_changed
    logger.info(
        "ext_authz listening",
        extra={"address": running.address, "transport": config.ext_authz.transport},
    )
    return running


def reload(running: RunningServer, current: GatewayConfig, load: ConfigLoader) -> GatewayConfig:
    """Swap in routes and providers from the config file; keep the old ones if it is bad."""
    try:
        fresh = load()
    except ConfigError as exc:
        logger.error("reload refused; keeping the running configuration", extra={"why": str(exc)})
        return current
    for section in RESTART_ONLY:
        if getattr(fresh, section) != getattr(current, section):
            logger.warning("reload: this section needs a restart", extra={"section": section})
    components = running.components
    decider, refresher = decision_parts(fresh, components.store, components.codec)
    components.authorizer.reconfigure(decider, refresher)
    logging.getLogger().setLevel(fresh.log_level.upper())
    logger.info("configuration reloaded", extra={"routes": len(fresh.routes)})
    return fresh


async def serve(
    config: GatewayConfig,
    listen: str | None = None,
    *,
    load: ConfigLoader | None = None,
    metrics: bool = True,
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully; SIGHUP reloads via ``load``."""
    if metrics:
        serve_metrics(config.ext_authz.metrics_listen)
    running = await start_server(config, listen)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    current = [config]
    if load is not None:
        loader = load

        def on_hangup() -> None:
            current[0] = reload(running, current[0], loader)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    await stopping.wait()
    logger.info("ext_authz stopping", extra={"grace_seconds": GRACE_SECONDS})
    await running.stop()
