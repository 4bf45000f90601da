"""The configuration sections of the gateway's own parts: sessions, tokens, Redis,
ext_authz, the login app, Envoy and the identity headers."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import redis
from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.values import (
    _HEADER_NAME,
    _RESERVED_HEADERS,
    MIN_SECRET_LENGTH,
    Duration,
    HostPort,
    ListenAddress,
    _http_url,
    _Model,
    _origin_of,
    _parse_duration,
    split_host_port,
)

# Connection options gateway.redis.clients sets from redis.timeout (fail fast: a timeout is
# never retried, a dead pooled connection is replaced once; a bounded pool). In the URL they
# would silently override those, or clash with them.
_GATEWAY_REDIS_OPTIONS = frozenset(
    {"socket_timeout", "socket_connect_timeout", "timeout", "retry", "retry_on_timeout",
     "health_check_interval", "max_connections"}
)  # fmt: skip


_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:/-]{0,64}$")


_logger = logging.getLogger(__name__)


class SessionSettings(_Model):
    cookie_name: str = Field(
        "gateway_session", description="Session cookie name; `__Host-` is prefixed on https."
    )
    absolute_lifetime: Duration = Field(
        12 * 3600.0, description="Longest a session lives, however busy."
    )
    idle_timeout: Duration = Field(2 * 3600.0, description="A session unused this long ends.")
    secret_keys: tuple[str, ...] = Field(
        (),
        description="Server secrets, newest first. Set them with GATEWAY_SECRET_KEYS.",
        validate_default=True,
    )

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value) or value.startswith("__"):
            raise ValueError("must be a plain cookie token without a __ prefix")
        return value

    @field_validator("secret_keys")
    @classmethod
    def _secret_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one secret key is required (set GATEWAY_SECRET_KEYS)")
        for key in value:
            if len(key) < MIN_SECRET_LENGTH:
                raise ValueError(f"each secret key needs at least {MIN_SECRET_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _lifetimes(self) -> SessionSettings:
        if self.idle_timeout > self.absolute_lifetime:
            raise ValueError("idle_timeout must not exceed absolute_lifetime")
        return self


class TokenSettings(_Model):
    refresh_margin: Duration = Field(
        60.0, description="Refresh an access token this long before it expires."
    )
    refresh_lock_lease: Duration = Field(
        5.0, description="Lease of the per-session refresh lock; a crashed holder blocks no longer."
    )
    refresh_wait: Duration = Field(
        0.5,
        description="How long a check waits for a refresh before answering with the still-valid "
        "old token (or 503 when it has expired). Must stay below ext_authz.timeout.",
    )
    refresh_timeout: Duration = Field(
        30.0,
        description="Read timeout of a refresh's token request. The call runs to it even when "
        "no check waits any more (the provider may rotate the refresh token either way), "
        "holding and extending the refresh lock. At least refresh_wait, at most 300s.",
    )

    @model_validator(mode="after")
    def _refresh_timeout(self) -> TokenSettings:
        # Shorter than a check's wait would abandon calls a check still waits for; longer
        # than five minutes keeps a session's refresh lock (and a pool thread) for no reply.
        if not self.refresh_wait <= self.refresh_timeout <= 300:
            raise ValueError("refresh_timeout must be at least refresh_wait and at most 300s")
        return self


def _url_db(url: str) -> int | None:
    """The database a redis:// URL selects (``?db=`` wins over the path), None when unreadable."""
    parts = urlsplit(url)
    text = parse_qs(parts.query).get("db", [parts.path.strip("/") or "0"])[0]
    return int(text) if text.isdigit() else None


class SentinelSettings(_Model):
    master_name: str = Field(min_length=1, description="The name the sentinels monitor.")
    sentinels: tuple[HostPort, ...] = Field(min_length=1, description="host:port of each sentinel")
    password: str | None = Field(
        None,
        description="The sentinels' own password (their requirepass), when they have one. "
        "The master's password is the URL's (GATEWAY_REDIS_URL).",
    )


class RedisSettings(_Model):
    """Where Redis is and how long a command may take.

    - ``standalone``: one server at ``url``.
    - ``sentinel``: the master that ``sentinel.sentinels`` name for ``sentinel.master_name``
      when a connection is made (so failovers are followed). The URL's host and port are not
      used; its username, password, database and scheme (``rediss``: TLS) apply to the master,
      so the password still arrives in ``GATEWAY_REDIS_URL``, e.g.
      ``redis://:PASSWORD@redis-master/0``.
    - ``cluster``: the cluster found through ``nodes`` (startup nodes; without them, the URL's
      host:port). The URL's username, password and scheme apply to every node; its database
      must be 0, the only one a cluster has.
    """

    mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone",
        description="standalone: one server at url; sentinel: the master the sentinels name; "
        "cluster: a Redis Cluster found through nodes",
    )
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://, rediss:// or unix://; set it with GATEWAY_REDIS_URL when it "
        "carries a password (sentinel mode: only its credentials, db and scheme are used)",
    )
    nodes: tuple[HostPort, ...] = Field(
        (),
        description="cluster mode: host:port of startup nodes (any reachable one will do); "
        "empty: the URL's host:port",
        validate_default=True,
    )
    sentinel: SentinelSettings | None = Field(
        None, description="sentinel mode: where the sentinels are", validate_default=True
    )
    timeout: Duration = Field(0.25, description="Per-command timeout; must stay below Envoy's.")
    key_prefix: str = "gw:"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        mode = info.data.get("mode")
        if mode in ("sentinel", "cluster") and scheme == "unix":
            raise ValueError(f"{mode} mode connects over TCP: use redis:// or rediss://")
        try:
            _ = urlsplit(value).port  # raises on a port that is not a number
        except ValueError:
            raise ValueError("the port must be a number from 0 to 65535") from None
        owned = sorted(_GATEWAY_REDIS_OPTIONS & parse_qs(urlsplit(value).query).keys())
        if owned:
            raise ValueError(f"the gateway sets {', '.join(owned)} itself: remove it from the URL")
        try:
            # The URL's query options become connection arguments. Building one connection
            # (no I/O) makes an unknown or malformed option fail here, not in every command.
            redis.ConnectionPool.from_url(value).make_connection()
        except (TypeError, ValueError) as exc:
            # redis-py's messages name the option or the port, never the password.
            raise ValueError(f"is not a usable Redis URL: {exc}") from None
        if mode == "cluster" and _url_db(value) != 0:
            raise ValueError("the database must be 0 in cluster mode (a cluster has no other)")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX.match(value):
            raise ValueError("use at most 64 letters, digits and '_', '.', ':', '/' or '-'")
        return value

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if "mode" not in info.data:
            return value  # the mode itself is wrong, and reported
        mode = info.data["mode"]
        if value and mode != "cluster":
            raise ValueError("startup nodes are only used in cluster mode")
        url = info.data.get("url")
        if mode == "cluster" and not value and url is not None and not urlsplit(url).hostname:
            raise ValueError("cluster mode needs at least one node: list nodes or give url a host")
        return value

    @field_validator("sentinel")
    @classmethod
    def _sentinel(
        cls, value: SentinelSettings | None, info: ValidationInfo
    ) -> SentinelSettings | None:
        if "mode" not in info.data:
            return value
        mode = info.data["mode"]
        if mode == "sentinel" and value is None:
            raise ValueError("required in sentinel mode (master_name and sentinels)")
        if mode != "sentinel" and value is not None:
            raise ValueError("only used in sentinel mode (set redis.mode: sentinel)")
        return value

    def startup_nodes(self) -> tuple[tuple[str, int], ...]:
        """cluster mode: (host, port) of each node to learn the cluster's layout from."""
        if self.nodes:
            return tuple(split_host_port(node) for node in self.nodes)
        parts = urlsplit(self.url)
        return ((parts.hostname or "", parts.port or 6379),)

    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """sentinel mode: (host, port) of each sentinel."""
        assert self.sentinel is not None
        return tuple(split_host_port(sentinel) for sentinel in self.sentinel.sentinels)


class ExtAuthzSettings(_Model):
    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data: Any) -> Any:
        # max_cookie_header_bytes (0.1.0) refused large Cookie headers, which let other
        # sites' cookies log users out; Envoy's header limit bounds them now. Still accepted,
        # so an existing config keeps loading, and named so it can be deleted.
        if isinstance(data, dict) and "max_cookie_header_bytes" in data:
            data = {k: v for k, v in data.items() if k != "max_cookie_header_bytes"}
            _logger.warning(
                "ext_authz.max_cookie_header_bytes is no longer used and can be removed: "
                "the Cookie header is bounded by Envoy's request header limit"
            )
        return data

    listen: str = Field(
        "127.0.0.1:50051",
        description="host:port or unix:/path of the first worker; worker i listens on port+i "
        "(or /path with -i before its extension)",
    )
    transport: Literal["grpc", "http"] = Field(
        "grpc", description="Envoy's ext_authz mode: grpc (reference) or http (http_service)."
    )
    workers: int = Field(1, ge=1, le=64, description="Worker processes, one endpoint each.")
    metrics_listen: HostPort | None = Field(
        "127.0.0.1:9464",
        description="host:port of the Prometheus /metrics endpoint (all workers summed); null: off",
    )

    timeout: Duration = Field(1.0, description="How long Envoy waits for a decision.")
    allowed_origins: tuple[str, ...] = Field(
        (), description="Extra origins allowed to send cookie-authenticated unsafe requests."
    )
    decision_log: Literal["all", "denied", "none"] = Field(
        "denied",
        description="Which decisions get a JSON log line: all, only denials (the default; "
        "Envoy's access log already records every request with its request id), or none.",
    )
    session_cache_ttl: Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)] = Field(
        2.0,
        description="How long a worker may answer from its in-memory copy of a session; "
        "changes reach every worker at once via pub/sub, this only bounds the worst case. "
        "0 turns the cache off.",
    )
    session_cache_max_bytes: int = Field(
        2 * 1024 * 1024,
        gt=0,
        description="Memory each worker's session cache may take (estimated per session from "
        "its tokens' sizes, about 4 KiB with three providers); the oldest entries go first.",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_origin_of(_http_url(v, allow_path=False)) for v in value)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value.startswith("unix:"):
            if not value.removeprefix("unix:").startswith("/"):
                raise ValueError("a unix socket path must be absolute: unix:/path")
            return value
        try:
            split_host_port(value, any_port=True)
        except ValueError as exc:
            raise ValueError(f"{exc} (or unix:/path)") from None
        return value

    @model_validator(mode="after")
    def _worker_ports(self) -> ExtAuthzSettings:
        if self.workers > 1 and not self.listen.startswith("unix:"):
            port = int(self.listen.rpartition(":")[2])
            if port == 0 or port + self.workers - 1 > 65535:
                raise ValueError(
                    "listen: several workers need a fixed first port (worker i listens on "
                    "port+i, up to 65535)"
                )
        return self

    def endpoints(self) -> tuple[str, ...]:
        """Every worker's listen address, in worker order."""
        if self.workers == 1:
            return (self.listen,)
        if self.listen.startswith("unix:"):
            stem, dot, extension = self.listen.rpartition(".")
            if not dot or "/" in extension:
                stem, dot, extension = self.listen, "", ""
            return tuple(f"{stem}-{i}{dot}{extension}" for i in range(self.workers))
        host, _, port = self.listen.rpartition(":")
        return tuple(f"{host}:{int(port) + i}" for i in range(self.workers))


class LoginAppSettings(_Model):
    listen: ListenAddress = Field(
        "127.0.0.1:5000", description="host:port the login app serves on."
    )
    path_prefix: str = Field(
        "/auth", description="Where Envoy routes to the login app (without ext_authz)."
    )
    metrics_listen: HostPort | None = Field(
        "127.0.0.1:9465", description="host:port of the Prometheus /metrics endpoint; null: off"
    )

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"/[a-z0-9_-]+", value):
            raise ValueError("must look like /auth")
        return value


class EnvoySettings(_Model):
    listen_address: str = Field("0.0.0.0", description="Address of Envoy's public listener.")
    listen_port: int = Field(8080, ge=1, le=65535, description="Port of the public listener.")
    admin_port: int = Field(
        9901, ge=1, le=65535, description="Envoy's admin interface, always on 127.0.0.1."
    )


class IdentityHeaders(_Model):
    user_id: str = Field("X-Gateway-User-Id", description="Header carrying the user's subject.")
    email: str = Field("X-Gateway-User-Email", description="Header carrying the user's email.")
    name: str = Field(
        "X-Gateway-User-Name", description="Header carrying the user's name (percent-encoded)."
    )

    @field_validator("user_id", "email", "name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value) or value.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{value!r} is not a header name we may set")
        return value

    def names(self) -> tuple[str, str, str]:
        return (self.user_id.lower(), self.email.lower(), self.name.lower())
