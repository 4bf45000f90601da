"""Serve the login app with a threaded WSGI server; SIGHUP reloads what
gateway.config.reload allows (both servers follow the same rule)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from werkzeug.serving import make_server

from gateway.config import GatewayConfig, join_host_port, split_host_port
from gateway.config.reload import reload_config
from gateway.observability.metrics import serve_metrics
from login_app import create_app
from login_app.services import build_services, init_app, services_of

logger = logging.getLogger(__name__)


def serve(
    config: GatewayConfig,
    listen: str | None = None,
    load: Callable[[], GatewayConfig] | None = None,
) -> None:
    serve_metrics(config.login_app.metrics_listen)
    host, port = split_host_port(listen or config.login_app.listen, any_port=True)
    app = create_app(config)
    # Werkzeug picks the address family from the host: "::1" serves on IPv6.
    server = make_server(host, port, app, threaded=True)

    running = [config]

    def reload(_signum: int, _frame: object) -> None:
        if load is None:
            return
        fresh = reload_config(running[0], load)
        if fresh is None:
            return
        running[0] = fresh
        # Requests under way keep the services they started with. The Redis section is
        # kept by the reload, so the running client (and its pool) serves on.
        init_app(app, build_services(fresh, services_of(app).redis))
        logging.getLogger().setLevel(fresh.log_level.upper())
        logger.info("configuration reloaded", extra={"providers": len(fresh.providers)})

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # leaves serve_forever; a request under way is cut short

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    logger.info("login app listening", extra={"address": join_host_port(host, server.server_port)})
    server.serve_forever()
