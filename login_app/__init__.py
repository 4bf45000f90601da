"""The login app: OAuth2/OIDC logins that fill the session, and logout."""

from __future__ import annotations

from typing import Any

from flask import Flask

from gateway.config import GatewayConfig


def create_app(config: GatewayConfig, overrides: dict[str, Any] | None = None) -> Flask:
    """Application factory: nothing happens at import time."""
    app = Flask(__name__)
    app.config["GATEWAY"] = config
    app.config.update(overrides or {})

    from login_app import health

    app.register_blueprint(health.blueprint, url_prefix=config.login_app.path_prefix)
    return app
