"""What the login app's views use, built once per app from the config."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property

import redis
from flask import Flask, current_app, request

from gateway.config import GatewayConfig
from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from gateway.providers.client import ProviderClient
from gateway.redis.clients import sync_client
from gateway.sessions.choice import Conflict, choose_session
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, sync_store
from gateway.sessions.interface import SyncSessions
from gateway.sessions.model import Session
from gateway.sessions.store import Clock
from login_app.attempts import AttemptStore
from login_app.cookies import cookie_credentials, request_credentials
from login_app.device_store import DeviceCodeStore
from login_app.own_logouts import OwnLogouts

logger = logging.getLogger(__name__)


@dataclass
class Services:
    config: GatewayConfig
    redis: redis.Redis
    sessions: SyncSessions
    attempts: AttemptStore
    device_codes: DeviceCodeStore
    providers: dict[str, ProviderClient]
    own_logouts: OwnLogouts

    @cached_property
    def login_sequence(self) -> tuple[str, ...]:
        """Provider ids in login order; a tuple, as every request shares it."""
        return self.config.login_sequence

    @cached_property
    def optional(self) -> frozenset[str]:
        """Providers a login may go on without while they are down."""
        return frozenset(p.id for p in self.config.providers if p.optional)

    @cached_property
    def primary(self) -> ProviderClient | None:
        """The first provider of the login sequence: it says who the user is."""
        sequence = self.login_sequence
        return self.providers[sequence[0]] if sequence else None

    def url(self, path: str) -> str:
        return login_app_url(self.config, path)

    def live_session(self, credential: SessionCredential | None) -> Session | None:
        """The credential's session while it lasts; None when gone, expired or unreadable."""
        if credential is None:
            return None
        try:
            return self.sessions.load(credential)
        except SessionInvalid:
            return None


def login_app_url(config: GatewayConfig, path: str) -> str:
    """An absolute URL under the login app's prefix on the public origin."""
    return f"{config.public_url}{config.login_app.path_prefix}{path}"


def build_services(
    config: GatewayConfig, client: redis.Redis | None = None, clock: Clock = time.time
) -> Services:
    """The views' services over ``client`` (a new one when None); the session store reads
    the time from ``clock``."""
    client = client or sync_client(config.redis)
    cipher = RecordCipher(config.session.secret_keys)
    callback = login_app_url(config, "/callback")
    return Services(
        config=config,
        redis=client,
        sessions=sync_store(config, client, clock),
        attempts=AttemptStore(client, cipher, keyspace(config)),
        device_codes=DeviceCodeStore(client, cipher, keyspace(config)),
        providers={p.id: ProviderClient(p, callback) for p in config.providers},
        own_logouts=OwnLogouts(client, keyspace(config)),
    )


def init_app(app: Flask, services: Services) -> None:
    app.extensions["gateway"] = services


def services_of(app: Flask) -> Services:
    return app.extensions["gateway"]


def services() -> Services:
    return current_app.extensions["gateway"]


def request_session(svc: Services) -> tuple[SessionCredential | None, Session | None]:
    """The credential the request carries (even when its session is gone or unreadable)
    and its live session, if any."""
    return _session_among(svc, request_credentials(request, svc.config))


def browser_session(svc: Services) -> tuple[SessionCredential | None, Session | None]:
    """Like :func:`request_session`, from the browser's cookies alone (no bearer token)."""
    return _session_among(svc, cookie_credentials(request, svc.config))


def _session_among(
    svc: Services, candidates: tuple[SessionCredential, ...]
) -> tuple[SessionCredential | None, Session | None]:
    """By ext_authz's rule (gateway.sessions.choice): the one live session among the
    request's credentials; live sessions of different users count as none at all."""
    if not candidates:
        return None, None
    if len(candidates) == 1:
        return candidates[0], svc.live_session(candidates[0])
    choice = choose_session([(c, svc.live_session(c)) for c in candidates], time.time())
    if isinstance(choice, Conflict):
        logger.warning("live sessions of different users in one request")
        return None, None
    if choice is None:
        return candidates[0], None
    return choice.credential, choice.session
