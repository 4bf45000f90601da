"""What the login app's views use, built once per app from the config."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app, request

from gateway.config import GatewayConfig
from gateway.credentials import SessionCredential
from gateway.crypto import RecordCipher
from gateway.errors import CredentialError, SessionInvalid
from gateway.providers import ProviderClient
from gateway.redis_client import sync_client
from gateway.session_factory import session_codec
from gateway.sessions import Session
from gateway.store import SessionStore
from login_app.attempts import AttemptStore


@dataclass
class Services:
    config: GatewayConfig
    redis: redis.Redis
    sessions: SessionStore
    attempts: AttemptStore
    providers: dict[str, ProviderClient]

    @property
    def login_sequence(self) -> list[str]:
        return [p.id for p in self.config.providers if p.login_sequence]

    @property
    def primary(self) -> ProviderClient | None:
        """The first provider of the login sequence: it says who the user is."""
        sequence = self.login_sequence
        return self.providers[sequence[0]] if sequence else None

    def url(self, path: str) -> str:
        """An absolute URL under the login app's prefix on the public origin."""
        return f"{self.config.public_url}{self.config.login_app.path_prefix}{path}"


def build_services(config: GatewayConfig, client: redis.Redis | None = None) -> Services:
    client = client or sync_client(config.redis)
    callback = f"{config.public_url}{config.login_app.path_prefix}/callback"
    return Services(
        config=config,
        redis=client,
        sessions=SessionStore(client, session_codec(config), config.session),
        attempts=AttemptStore(
            client, RecordCipher(config.session.secret_keys), config.redis.key_prefix
        ),
        providers={p.id: ProviderClient(p, callback) for p in config.providers},
    )


def init_app(app: Flask, services: Services) -> None:
    app.extensions["gateway"] = services


def services() -> Services:
    return current_app.extensions["gateway"]  # type: ignore[no-any-return]


def parse_credential(text: str | None) -> SessionCredential | None:
    """A credential from a cookie or bearer value; None for anything unusable."""
    if not text:
        return None
    try:
        return SessionCredential.parse(text)
    except CredentialError:
        return None


def request_session(svc: Services) -> tuple[SessionCredential | None, Session | None]:
    """The credential the request carries (even when its session is gone or unreadable)
    and its live session, if any."""
    from login_app.cookies import request_credential  # cookies imports this module

    credential = request_credential(request, svc.config)
    if credential is None:
        return None, None
    try:
        return credential, svc.sessions.load(credential)
    except SessionInvalid:
        return credential, None
