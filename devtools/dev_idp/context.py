"""The provider's shared state, built once per app and reached from views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from devtools.dev_idp.authorization_server import DevAuthorizationServer
from devtools.dev_idp.backchannel import BackchannelNotifier
from devtools.dev_idp.config import IdpConfig
from devtools.dev_idp.faults import Faults
from devtools.dev_idp.keys import KeyRing
from devtools.dev_idp.logout import SessionTerminator
from devtools.dev_idp.stats import Stats
from devtools.dev_idp.store import Store

EXTENSION_KEY = "dev_idp"


@dataclass
class IdpContext:
    """Everything a view needs besides Authlib's server objects."""

    config: IdpConfig
    store: Store
    keys: KeyRing
    stats: Stats
    faults: Faults
    backchannel: BackchannelNotifier
    sessions: SessionTerminator
    metadata: dict[str, Any]
    authorization_server: DevAuthorizationServer
    resource_protector: Any  # Authlib's flask_oauth2.ResourceProtector


def current_context() -> IdpContext:
    """The context of the app handling the current request."""
    context: IdpContext = current_app.extensions[EXTENSION_KEY]
    return context
