"""Serve the login app with a threaded WSGI server."""

from __future__ import annotations

import logging

from werkzeug.serving import make_server

from gateway.config import GatewayConfig
from login_app import create_app

logger = logging.getLogger(__name__)


def serve(config: GatewayConfig, listen: str | None = None) -> None:
    host, _, port = (listen or config.login_app.listen).rpartition(":")
    server = make_server(host, int(port), create_app(config), threaded=True)
    logger.info("login app listening", extra={"address": f"{host}:{server.server_port}"})
    server.serve_forever()
