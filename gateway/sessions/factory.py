"""Session stores wired from the config, so every front-end builds them the same way."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.crypto import RecordCipher
from gateway.redis.clients import async_client, sync_client
from gateway.sessions.admin import SessionAdmin
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import SessionCodec
from gateway.sessions.store import AsyncSessionStore, SessionStore


def keyspace(config: GatewayConfig) -> Keyspace:
    return Keyspace(config.redis.key_prefix)


def session_codec(config: GatewayConfig) -> SessionCodec:
    return SessionCodec(RecordCipher(config.session.secret_keys), keyspace(config))


def sync_store(config: GatewayConfig) -> SessionStore:
    return SessionStore(sync_client(config.redis), session_codec(config), config.session)


def async_store(config: GatewayConfig) -> AsyncSessionStore:
    return AsyncSessionStore(async_client(config.redis), session_codec(config), config.session)


def session_admin(config: GatewayConfig) -> SessionAdmin:
    client = sync_client(config.redis)
    store = SessionStore(client, session_codec(config), config.session)
    return SessionAdmin(client, keyspace(config), store)
