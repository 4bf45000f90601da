"""Session stores wired from the config, so every front-end builds them the same way."""

from __future__ import annotations

import time

import redis

from gateway.config import GatewayConfig
from gateway.crypto import RecordCipher
from gateway.redis.clients import async_client, sync_client
from gateway.sessions.admin import SessionAdmin
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import SessionCodec
from gateway.sessions.store import AsyncSessionStore, Clock, SessionStore


def keyspace(config: GatewayConfig) -> Keyspace:
    return Keyspace(config.redis.key_prefix)


def session_codec(config: GatewayConfig) -> SessionCodec:
    return SessionCodec(RecordCipher(config.session.secret_keys), keyspace(config))


def sync_store(
    config: GatewayConfig, client: redis.Redis | None = None, clock: Clock = time.time
) -> SessionStore:
    """The blocking store, on ``client`` (a new one when None) and reading time from ``clock``."""
    client = client or sync_client(config.redis)
    return SessionStore(client, session_codec(config), config.session, clock)


def async_store(config: GatewayConfig, clock: Clock = time.time) -> AsyncSessionStore:
    """The asyncio store on a new client, reading time from ``clock``."""
    return AsyncSessionStore(
        async_client(config.redis), session_codec(config), config.session, clock
    )


def session_admin(config: GatewayConfig) -> SessionAdmin:
    client = sync_client(config.redis)
    return SessionAdmin(client, keyspace(config), sync_store(config, client))
