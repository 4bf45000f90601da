"""Serve the login app with a threaded WSGI server; SIGHUP reloads providers and routes."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from werkzeug.serving import make_server

from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.observability.metrics import serve_metrics
from login_app import create_app
from login_app.services import build_services, init_app

logger = logging.getLogger(__name__)


def serve(
    config: GatewayConfig,
    listen: str | None = None,
    load: Callable[[], GatewayConfig] | None = None,
) -> None:
    serve_metrics(config.login_app.metrics_listen)
    host, _, port = (listen or config.login_app.listen).rpartition(":")
    app = create_app(config)
    server = make_server(host, int(port), app, threaded=True)

    def reload(_signum: int, _frame: object) -> None:
        if load is None:
            return
        try:
            fresh = load()
        except ConfigError as exc:
            logger.error(
                "reload refused; keeping the running configuration", extra={"why": str(exc)}
            )
            return
        # Requests under way keep the services they started with.
        init_app(app, build_services(fresh))
        logger.info("configuration reloaded", extra={"providers": len(fresh.providers)})

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # leaves serve_forever; a request under way is cut short

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    logger.info("login app listening", extra={"address": f"{host}:{server.server_port}"})
    server.serve_forever()
