"""One ext_authz worker's lifecycle: build, bind, serve, stop gracefully.

The transport is Envoy's gRPC Authorization service (the default and reference, with gRPC
health and reflection) or its HTTP mode (``ext_authz.transport: http``). ``start_server``
binds port 0 in tests and returns the bound address; ``serve`` runs until SIGTERM/SIGINT,
then reports NOT_SERVING, lets in-flight checks finish within the grace period and closes
Redis. Health (gRPC health, ``/healthz`` in HTTP mode) says whether this process answers
checks: SERVING from start to shutdown, whatever Redis does. A worker that cannot reach Redis
still answers, with the gateway's own 503; reporting it unhealthy would only make kubelet
restart every worker, or the load balancer drop every pod, during a Redis outage, and users
would get a connection error instead (deploy/README.md, Probes).
SIGHUP reloads what gateway.config.reload allows; an invalid file keeps the
running configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ext_authz.components import Components, build_components, decision_parts
from ext_authz.reporting import log_decisions
from gateway.config import GatewayConfig
from gateway.config.reload import reload_config
from gateway.hangups import release_hangups
from gateway.observability.metrics import serve_metrics

logger = logging.getLogger(__name__)

GRACE_SECONDS = 5.0
ConfigLoader = Callable[[], GatewayConfig]


class Transport(Protocol):
    address: str

    def set_feed_live(self, live: bool) -> None: ...

    async def stop(self, grace: float) -> None: ...


@dataclass
class RunningServer:
    components: Components
    transport: Transport | None = None
    serving: bool = True
    redis_reachable: bool = False

    @property
    def address(self) -> str:
        """``host:port`` or ``unix:/path``, as Envoy should dial it."""
        return self.transport.address if self.transport else ""

    def healthy(self) -> bool:
        """Whether health checks are told SERVING: until shutdown, Redis or not."""
        return self.serving

    def redis_changed(self, reachable: bool) -> None:
        """The invalidation feed's word on Redis: logged, and deliberately not health."""
        self.redis_reachable = reachable
        if self.transport is not None and self.serving:
            self.transport.set_feed_live(reachable)
        logger.log(
            logging.INFO if reachable else logging.WARNING,
            "redis reachable" if reachable else "redis unreachable: checks answer 503",
        )

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, finish in-flight checks, then close Redis."""
        self.serving = False
        if self.transport is not None:
            await self.transport.stop(grace)
        await self.components.close()


def _unlink_stale_socket(listen: str) -> None:
    if listen.startswith("unix:"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen.removeprefix("unix:"))  # left behind by a killed predecessor


async def start_server(config: GatewayConfig, listen: str | None = None) -> RunningServer:
    """Build the services from ``config`` and start serving on ``listen`` (port 0 allowed)."""
    listen = listen or config.ext_authz.listen
    log_decisions(config.ext_authz.decision_log)
    _unlink_stale_socket(listen)
    components = build_components(config)
    running = RunningServer(components)
    if config.ext_authz.transport == "http":
        from ext_authz.http_service import start_http_server

        running.transport = await start_http_server(components.authorizer, listen, running.healthy)
    else:
        from ext_authz.grpc_server import start_grpc

        running.transport = await start_grpc(components.authorizer, listen)
    components.sessions.on_feed_change = running.redis_changed
    logger.info(
        "ext_authz listening",
        extra={"address": running.address, "transport": config.ext_authz.transport},
    )
    return running


def reload(running: RunningServer, current: GatewayConfig, load: ConfigLoader) -> GatewayConfig:
    """Swap in what a reload may change (routes, providers, tokens, ...; see
    gateway.config.reload); keep the running configuration if the file is bad."""
    fresh = reload_config(current, load)
    if fresh is None:
        return current
    components = running.components
    decider, refresher = decision_parts(
        fresh, components.store, components.clock, components.refresher
    )
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
    reload_due = [False]

    def reload_now() -> None:
        reload_due[0] = False  # a SIGHUP from here on asks for one more
        if load is None:
            logger.info("SIGHUP: no configuration file to reload")
            return
        current[0] = reload(running, current[0], load)

    def on_hangup() -> None:
        # One reload for every SIGHUP that came since the last one began: a storm of them
        # must not queue a reload each and starve the checks (and Redis) of the loop.
        if not reload_due[0]:
            reload_due[0] = True
            loop.call_soon(reload_now)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    # Held since the process began (gateway.hangups): one that came meanwhile reloads now.
    release_hangups()
    await stopping.wait()
    logger.info("ext_authz stopping", extra={"grace_seconds": GRACE_SECONDS})
    await running.stop()
