"""The gateway under test: its configuration, a realistic session, many sessions in Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.tokens import jwt_like_token, opaque_token
from devtools.processes import free_port
from gateway.config import GatewayConfig, load_config
from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import session_codec, sync_store
from gateway.sessions.model import Identity, Session, TokenSet
from gateway.sessions.store import ttl_ms_for

ROUTE_NAME = "api"
ROUTE_PATH = "/api/bench"
COOKIE_NAME = "gateway_session"
PROVIDERS = ("primary", "gitlab", "jupyter")
# Far from expiry, so no check ever tries to refresh against the (absent) providers.
TOKEN_LIFETIME = 6 * 3600


def gateway_config(
    path: Path,
    secret: str,
    *,
    redis_url: str,
    backend_url: str,
    envoy_port: int,
    admin_port: int,
    log_level: str,
    ext_authz: dict[str, Any] | None = None,
) -> GatewayConfig:
    """Three providers and one protected route that injects the primary provider's token;
    ``ext_authz`` overrides that section's defaults (``transport``, ``session_cache_ttl``)."""
    providers: list[dict[str, Any]] = [
        {"id": "primary", "kind": "oidc", "issuer": "http://127.0.0.1:9", "client_id": "gw"},
        *(
            {
                "id": provider,
                "kind": "oauth2",
                "authorize_url": "http://127.0.0.1:9/authorize",
                "token_url": "http://127.0.0.1:9/token",
                "client_id": "gw",
            }
            for provider in PROVIDERS[1:]
        ),
    ]
    raw = {
        "public_url": f"http://127.0.0.1:{envoy_port}",
        "log_level": log_level,
        "session": {"cookie_name": COOKIE_NAME, "absolute_lifetime": "12h", "idle_timeout": "2h"},
        "redis": {"url": redis_url, "timeout": "250ms"},
        # Its own metrics port: the default one may be taken (by another ext_authz, or `make run`).
        "ext_authz": {"metrics_listen": f"127.0.0.1:{free_port()}", **(ext_authz or {})},
        "envoy": {
            "listen_address": "127.0.0.1",
            "listen_port": envoy_port,
            "admin_port": admin_port,
        },
        "providers": providers,
        "routes": [
            {
                "name": ROUTE_NAME,
                "prefix": "/api/",
                "upstream": backend_url,
                "provider": "primary",
                "token_format": "bearer",
            }
        ],
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path, {"GATEWAY_SECRET_KEYS": secret})


def realistic_session(now: float | None = None) -> Session:
    """A user logged in with three providers: an OIDC one with a JWT access token (~900
    characters) and an ID token (~900), two OAuth2 ones with opaque 40-character tokens."""
    now = time.time() if now is None else now
    expires = int(now + TOKEN_LIFETIME)
    primary = TokenSet(
        access_token=jwt_like_token(900),
        refresh_token=opaque_token(40),
        id_token=jwt_like_token(900),
        scope="openid profile email",
        expires_at=expires,
    )
    others = {
        provider: TokenSet(
            access_token=opaque_token(40),
            refresh_token=opaque_token(40),
            scope="api read_user",
            expires_at=expires,
        )
        for provider in PROVIDERS[1:]
    }
    return Session(
        identity=Identity(
            subject="6f1c2e5a-8d4b-4c1e-9a7f-3b2d1e0c9f8a",
            email="alice@example.org",
            name="Alice Example",
            provider_session_id=opaque_token(36),
        ),
        created_at=int(now),
        expires_at=int(now + 12 * 3600),
        tokens={"primary": primary, **others},
    )


@dataclass(frozen=True)
class BenchSession:
    credential: SessionCredential
    session: Session

    @property
    def cookie(self) -> str:
        return f"{COOKIE_NAME}={self.credential.encode()}"

    @property
    def injected_authorization(self) -> str:
        return f"Bearer {self.session.tokens['primary'].access_token}"


def create_session(config: GatewayConfig) -> BenchSession:
    """Save a realistic session the way the login app does."""
    session = realistic_session()
    credential = SessionCredential.generate()
    sync_store(config).save(credential, session)
    return BenchSession(credential, session)


def session_memory(config: GatewayConfig, bench_session: BenchSession) -> dict[str, int]:
    """Redis's own count (MEMORY USAGE, exact) for one session record, and the record's size."""
    client = sync_client(config.redis)
    key = session_codec(config).record_key(bench_session.credential)
    sealed = client.get(key)
    usage = client.memory_usage(key, samples=0)
    return {"memory_usage_bytes": int(usage), "sealed_record_bytes": len(sealed)}  # type: ignore[arg-type]


def populate_sessions(
    config: GatewayConfig,
    count: int,
    batch: int = 2000,
    keep: list[SessionCredential] | None = None,
) -> dict[str, float]:
    """``count`` more realistic sealed records (each under its own credential), written by
    pipelined SETs; returns how long it took and Redis's used memory per added record. The
    credentials are appended to ``keep`` when given."""
    started = time.monotonic()
    client = sync_client(config.redis)
    codec = session_codec(config)
    session = realistic_session()
    ttl = ttl_ms_for(session, config.session, time.time())
    used_before = int(client.info("memory")["used_memory"])
    for first in range(0, count, batch):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, count - first)):
            credential = SessionCredential.generate()
            if keep is not None:
                keep.append(credential)
            pipe.set(codec.record_key(credential), codec.encode(credential, session), px=ttl)
        pipe.execute()
    used_after = int(client.info("memory")["used_memory"])
    return {
        "sessions_added": count,
        "seconds": round(time.monotonic() - started, 2),
        "used_memory_per_session_bytes": round((used_after - used_before) / max(count, 1)),
    }
