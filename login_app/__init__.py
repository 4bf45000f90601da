"""The login app: OAuth2/OIDC logins that fill the session, and logout."""

from __future__ import annotations

from typing import Any

from flask import Flask

from gateway.config import GatewayConfig


def create_app(config: GatewayConfig, overrides: dict[str, Any] | None = None) -> Flask:
    """Application factory: nothing happens at import time."""
    from login_app import cli_login, health, login, logout, pages
    from login_app.services import build_services, init_app

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, **(overrides or {}))
    init_app(app, (overrides or {}).get("SERVICES") or build_services(config))
    pages.init_app(app)
    prefix = config.login_app.path_prefix
    for module in (health, login, logout, cli_login):
        app.register_blueprint(module.blueprint, url_prefix=prefix)
    return app
