"""The whole gateway on real sockets: Redis, echo backend, ext_authz and Envoy together."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, load_config
from gateway.credentials import SessionCredential
from gateway.session_factory import sync_store
from gateway.sessions import Identity, Session, TokenSet
from tests.support.servers import (
    EchoBackend,
    EnvoyServer,
    ExtAuthzServer,
    RedisServer,
    base_config,
    gateway_env,
    write_config,
)


@dataclass
class Stack:
    config_path: Path
    config: GatewayConfig
    ext_authz: ExtAuthzServer
    envoy: EnvoyServer
    stoppers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def cookie_name(self) -> str:
        return self.config.cookie_name

    def create_session(
        self,
        user: str = "alice",
        *,
        tokens: dict[str, str] | None = None,
        token_ttl: float | None = 3600,
        lifetime: float = 3600,
        email: str = "alice@example.org",
        name: str = "Alice Ärger",
    ) -> SessionCredential:
        """Write a session straight into Redis, as the login app would."""
        now = time.time()
        token_expiry = int(now + token_ttl) if token_ttl is not None else 0
        session = Session(
            identity=Identity(subject=user, email=email, name=name),
            created_at=int(now),
            expires_at=int(now + lifetime),
            tokens={
                provider: TokenSet(access_token=token, expires_at=token_expiry)
                for provider, token in (tokens or {}).items()
            },
        )
        credential = SessionCredential.generate()
        sync_store(self.config).save(credential, session)
        return credential

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            stop()


def start_stack(
    directory: Path,
    redis: RedisServer,
    backend: EchoBackend,
    adjust: Callable[[dict[str, Any]], None] | None = None,
) -> Stack:
    raw = base_config(redis_url=redis.url, backend_url=backend.url)
    if adjust:
        adjust(raw)
    config_path = write_config(directory / "gateway.yaml", raw)
    config = load_config(config_path, gateway_env())
    ext_authz = ExtAuthzServer(config_path).start()
    try:
        envoy = EnvoyServer(config_path, directory / "envoy.yaml", ext_authz.address).start()
    except Exception:
        ext_authz.stop()
        raise
    return Stack(config_path, config, ext_authz, envoy, [ext_authz.stop, envoy.stop])
