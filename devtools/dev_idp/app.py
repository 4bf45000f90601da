"""The application factory: one Flask app per provider instance."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from devtools.dev_idp.authorization_server import (
    build_authorization_server,
    build_resource_protector,
)
from devtools.dev_idp.backchannel import BackchannelNotifier
from devtools.dev_idp.config import IdpConfig, Mode
from devtools.dev_idp.context import EXTENSION_KEY, IdpContext
from devtools.dev_idp.faults import Faults
from devtools.dev_idp.keys import KeyRing
from devtools.dev_idp.logout import SessionTerminator
from devtools.dev_idp.metadata import build_metadata
from devtools.dev_idp.models import Client, User
from devtools.dev_idp.stats import Stats
from devtools.dev_idp.store import Store
from devtools.dev_idp.views import admin, authorize, discovery, end_session, tokens


def create_app(config: IdpConfig) -> Flask:
    """Build a provider from ``config``.

    The issuer is plain http, so the process must set ``AUTHLIB_INSECURE_TRANSPORT``
    before requests arrive (the CLI does); Authlib refuses http otherwise.
    """
    app = Flask(__name__, template_folder=str(Path(__file__).with_name("templates")))
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # keep "Ärger" readable

    keys = KeyRing()
    stats = Stats()
    clients = [Client(c, config.post_logout_redirect_uris) for c in config.clients]
    store = Store(clients, [User(u, config.issuer) for u in config.users])
    backchannel = BackchannelNotifier(config.issuer, config.backchannel_logout_uri, keys, stats)
    sessions = SessionTerminator(store, backchannel)
    app.extensions[EXTENSION_KEY] = IdpContext(
        config=config,
        store=store,
        keys=keys,
        stats=stats,
        faults=Faults(),
        backchannel=backchannel,
        sessions=sessions,
        metadata=build_metadata(config),
        authorization_server=build_authorization_server(app, config, store, keys, stats, sessions),
        resource_protector=build_resource_protector(store),
    )

    app.register_blueprint(discovery.bp)
    app.register_blueprint(authorize.bp)
    app.register_blueprint(tokens.bp)
    if config.mode is Mode.OIDC:
        app.register_blueprint(end_session.bp)
    app.register_blueprint(admin.bp)
    return app
