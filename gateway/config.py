"""The gateway's configuration: one YAML file plus environment overrides for secrets.

Everything is read once at start-up into a frozen, validated object. Nothing else in the
project reads ``os.environ``; the CLI hands the environment to :func:`load_config`.

Secrets never need to live in the file. These environment variables override it:

- ``GATEWAY_SECRET_KEYS``: comma-separated server secrets, newest first (key rotation).
- ``GATEWAY_REDIS_URL``: the Redis URL (it may carry a password).
- ``GATEWAY_PROVIDER_<ID>_CLIENT_SECRET``: a provider's client secret; ``<ID>`` is the
  provider id upper-cased with every character outside ``A-Z0-9`` replaced by ``_``.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import redis
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError
from gateway.provider_presets import apply_preset

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Headers that Envoy or HTTP itself own; a route may never inject or strip these.
_RESERVED_HEADERS = frozenset(
    {"host", "cookie", "content-length", "transfer-encoding", "connection", "upgrade", "te"}
)
MIN_SECRET_LENGTH = 32
# The login app's cookie binding a login attempt to the browser (``__Host-`` on https).
LOGIN_BINDING_COOKIE = "gateway_login"
# Set by Envoy (overwriting anything a client sent) on requests to the login app.
CLIENT_ADDRESS_HEADER = "x-gateway-client-address"
MAX_DURATION_SECONDS = 10 * 366 * 86400.0
# Connection options gateway.redis_client sets from redis.timeout (fail fast, no retries, a
# bounded pool). In the URL they would silently override those, or clash with them.
_GATEWAY_REDIS_OPTIONS = frozenset(
    {"socket_timeout", "socket_connect_timeout", "timeout", "retry", "retry_on_timeout",
     "health_check_interval", "max_connections"}
)  # fmt: skip
# redis.key_prefix starts every key and SCAN pattern: no hash tag braces (they would put all
# sessions in one cluster slot), no glob characters, no spaces.
# Authorization request parameters that make the flow what it is (code + PKCE to our own
# callback, our state and nonce): extra parameters may never replace them.
_OWNED_AUTHORIZE_PARAMETERS = frozenset(
    {"response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
     "code_challenge_method", "code_verifier", "request", "request_uri", "response_mode"}
)  # fmt: skip
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:/-]{0,64}$")


def _parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string such as ``"90s"``, ``"30m"``, ``"12h"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30m'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 90, '90s', '30m', '12h')")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        return value
    if not math.isfinite(seconds) or seconds > MAX_DURATION_SECONDS:
        raise ValueError("a duration must be finite and at most ten years")
    return seconds


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]


def _claim_paths(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _check_claim_paths(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("name at least one claim")
    for path in value:
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"{path!r} is not a claim path (names joined by '.')")
    return value


ClaimPaths = Annotated[
    tuple[str, ...], BeforeValidator(_claim_paths), AfterValidator(_check_claim_paths)
]


def _http_url(value: str, *, allow_path: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials in the URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if not allow_path and parts.path not in ("", "/"):
        raise ValueError("must not have a path")
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (where plain http is acceptable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_of(url: str) -> str:
    """scheme://host[:port] as browsers send it in Origin: lower-case, no default port."""
    parts = urlsplit(url)
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenFormat(StrEnum):
    """How a provider's access token is presented to a backend."""

    BEARER = "bearer"  # Authorization: Bearer <token>
    TOKEN = "token"  # Authorization: token <token>  (JupyterHub)
    PRIVATE_TOKEN = "private_token"  # Private-Token: <token>  (GitLab API)
    BASIC_OAUTH2 = "basic_oauth2"  # Authorization: Basic base64("oauth2:<token>")  (git)

    @property
    def header_name(self) -> str:
        return "private-token" if self is TokenFormat.PRIVATE_TOKEN else "authorization"


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


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError("must be host:port")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


def split_host_port(host_port: str) -> tuple[str, int]:
    """A validated ``host:port`` (``[v6]:port`` too) as (host, port), for binding or connecting."""
    host, _, port = host_port.rpartition(":")
    return host.strip("[]"), int(port)


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
    listen: str = Field(
        "127.0.0.1:50051",
        description="host:port or unix:/path of the first worker; worker i listens on port+i "
        "(or /path with -i before its extension)",
    )
    transport: Literal["grpc", "http"] = Field(
        "grpc", description="Envoy's ext_authz mode: grpc (reference) or http (http_service)."
    )
    workers: int = Field(1, ge=1, le=64, description="Worker processes, one endpoint each.")
    metrics_listen: str | None = Field(
        "127.0.0.1:9464",
        description="host:port of the Prometheus /metrics endpoint (all workers summed); null: off",
    )

    @field_validator("metrics_listen")
    @classmethod
    def _metrics(cls, value: str | None) -> str | None:
        return _metrics_listen(value)

    timeout: Duration = Field(1.0, description="How long Envoy waits for a decision.")
    allowed_origins: tuple[str, ...] = Field(
        (), description="Extra origins allowed to send cookie-authenticated unsafe requests."
    )
    max_cookie_header_bytes: int = Field(
        8192, gt=0, description="A larger Cookie header is refused as a malformed credential."
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
        if not _is_listen_address(value):
            raise ValueError("must be host:port or unix:/path")
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


def _is_listen_address(value: str) -> bool:
    """host:port a server can bind (port 0: any free port)."""
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isascii() and port.isdigit() and int(port) <= 65535)


def _metrics_listen(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError("must be host:port (or null to serve no metrics)")
    return value


class LoginAppSettings(_Model):
    listen: str = Field("127.0.0.1:5000", description="host:port the login app serves on.")
    path_prefix: str = Field(
        "/auth", description="Where Envoy routes to the login app (without ext_authz)."
    )
    metrics_listen: str | None = Field(
        "127.0.0.1:9465", description="host:port of the Prometheus /metrics endpoint; null: off"
    )

    @field_validator("metrics_listen")
    @classmethod
    def _metrics(cls, value: str | None) -> str | None:
        return _metrics_listen(value)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if not _is_listen_address(value):
            raise ValueError("must be host:port")
        return value

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


class ClaimNames(_Model):
    """Where the identity's parts are found in the merged ID-token and userinfo claims.

    Each is a list of claim paths, the first present one wins; a path's dots walk into
    nested objects (Keycloak's ``realm_access.roles``). A single string is a list of one.
    """

    subject: ClaimPaths = Field(("sub", "id"), description="The user's stable id.")
    email: ClaimPaths = Field(("email",), description="The user's email address.")
    name: ClaimPaths = Field(("name", "preferred_username"), description="The display name.")
    groups: ClaimPaths = Field(
        ("groups",), description="Group names: a list of strings, or one string."
    )


class Provider(_Model):
    id: str = Field(description="Short name routes refer to (lower-case, digits, - and _).")
    preset: Literal["keycloak", "gitlab", "github", "jupyterhub", "google", "generic"] | None = (
        Field(
            None,
            description="Fill the keys left out with this provider's usual values (endpoints "
            'from base_url, scopes, claims, auth method); see "Identity providers".',
        )
    )
    base_url: str | None = Field(
        None,
        description="With a preset: where the provider is (Keycloak: the realm URL; GitLab, "
        "GitHub Enterprise, JupyterHub: the server's URL).",
    )
    kind: Literal["oidc", "oauth2"] = Field(
        description="oidc: discovery, ID tokens, logout; oauth2: explicit endpoints (GitLab, "
        "JupyterHub). A preset sets it."
    )
    client_id: str = Field(min_length=1, description="This gateway's client id there.")
    client_secret: str | None = Field(
        None, repr=False, description="Set with GATEWAY_PROVIDER_<ID>_CLIENT_SECRET."
    )
    token_endpoint_auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] | None
    ) = Field(
        None,
        description="How the client authenticates at the token and revocation endpoints. "
        "Default: oidc, the first the discovery document supports of private_key_jwt (with a "
        "key), client_secret_basic, client_secret_post (with a secret), none; oauth2, "
        "client_secret_basic with a secret, private_key_jwt with a key, else none.",
    )
    private_key_file: str | None = Field(
        None,
        description="private_key_jwt (RFC 7523): PEM file of the client's RSA or EC private key; "
        "or set GATEWAY_PROVIDER_<ID>_PRIVATE_KEY to the PEM text.",
    )
    private_key: str | None = Field(
        None, repr=False, description="Set with GATEWAY_PROVIDER_<ID>_PRIVATE_KEY (PEM)."
    )
    private_key_id: str | None = Field(
        None, description="private_key_jwt: the `kid` the provider knows the key by."
    )
    scopes: tuple[str, ...] = Field((), description="Scopes to ask for.")
    refresh_scopes: tuple[str, ...] | None = Field(
        None,
        description="Scopes sent with a refresh; null sends none, so the provider keeps the "
        "granted ones (RFC 6749 §6).",
    )
    authorize_params: dict[str, str] = Field(
        default_factory=dict,
        description="Extra authorization request parameters (e.g. Google's access_type).",
    )
    claims: ClaimNames = Field(ClaimNames(), description="Where id, email, name and groups are.")
    userinfo: bool = Field(
        True,
        description="oidc: fetch the userinfo endpoint after the code exchange and merge it "
        "with the ID token's claims (its `sub` must match).",
    )
    login_sequence: bool = Field(
        True,
        description="Part of the browser login sequence; false: logged in on demand, when a "
        "route needs its token (the first provider, the primary, must be in the sequence).",
    )
    optional: bool = Field(
        False,
        description="In the sequence but not the primary: a login goes on without it while it "
        "is down (the session gets no tokens for it; a route that needs them logs in to it on "
        "demand).",
    )
    issuer: str | None = Field(
        None,
        description="oidc: the issuer, exactly as the provider writes it; endpoints come from "
        "discovery. oauth2: optional, checks the authorization reply's `iss` (RFC 9207).",
    )
    authorize_url: str | None = Field(None, description="oauth2: the authorization endpoint.")
    token_url: str | None = Field(None, description="oauth2: the token endpoint.")
    userinfo_url: str | None = Field(
        None, description="oauth2: where the identity comes from when this provider is primary."
    )
    revocation_url: str | None = Field(
        None, description="RFC 7009 endpoint; tokens are revoked there on logout."
    )
    token_max_lifetime: Duration | None = Field(
        None, description="Lifetime given to tokens that arrive without an expiry."
    )
    _signing_key: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        return apply_preset(value) if isinstance(value, dict) else value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _PROVIDER_ID.match(value):
            raise ValueError("must be lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("authorize_params")
    @classmethod
    def _authorize_params(cls, value: dict[str, str]) -> dict[str, str]:
        owned = sorted(_OWNED_AUTHORIZE_PARAMETERS & {name.lower() for name in value})
        if owned:
            raise ValueError(f"the gateway sets {', '.join(owned)} itself")
        return value

    @field_validator(
        "issuer", "authorize_url", "token_url", "userinfo_url", "revocation_url", "base_url"
    )
    @classmethod
    def _urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        url = _http_url(value, allow_path=True)
        if url.startswith("http://") and not is_loopback(urlsplit(url).hostname or ""):
            raise ValueError("must use https (plain http is only allowed on loopback)")
        # The issuer is compared byte for byte with ID tokens' `iss`: keep it exactly.
        return value if info.field_name == "issuer" else url

    @model_validator(mode="after")
    def _endpoints(self) -> Provider:
        if self.kind == "oidc" and not self.issuer:
            raise ValueError("an oidc provider needs issuer")
        if self.kind == "oauth2" and not (self.authorize_url and self.token_url):
            raise ValueError("an oauth2 provider needs authorize_url and token_url")
        if self.kind == "oidc" and self.claims.subject[0] != "sub":
            # Back-channel logout names users by the ID token's sub: it must be who they are.
            raise ValueError("claims.subject: an oidc provider's users are its ID tokens' sub")
        return self

    @model_validator(mode="after")
    def _client_authentication(self) -> Provider:
        method = self.token_endpoint_auth_method
        variable = provider_variable(self.id, "CLIENT_SECRET")
        if method in ("client_secret_basic", "client_secret_post") and not self.client_secret:
            raise ValueError(
                f"token_endpoint_auth_method: {method} needs a client secret (set {variable})"
            )
        if self.private_key_file and self.private_key:
            raise ValueError(
                "private_key_file: give the key as a file or in "
                f"{provider_variable(self.id, 'PRIVATE_KEY')}, not both"
            )
        if method == "private_key_jwt" and not (self.private_key or self.private_key_file):
            raise ValueError(
                "token_endpoint_auth_method: private_key_jwt needs private_key_file or "
                f"{provider_variable(self.id, 'PRIVATE_KEY')}"
            )
        if self.private_key_file or self.private_key:
            # Read and parsed once, here: a key that does not load fails at start, and a file
            # changed later cannot make the login app and ext_authz sign with different keys.
            self._signing_key = _load_signing_key(self)
        return self

    @property
    def signing_key(self) -> Any:
        """The private_key_jwt signing key (a joserfc RSA or EC key), None without one."""
        return self._signing_key


def _load_signing_key(provider: Provider) -> Any:
    """The provider's private_key_jwt signing key (a joserfc key), from its file or the
    environment. joserfc is imported here, not at the top: every process loads this module,
    and only configurations with a key need it."""
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    if provider.private_key_file:
        try:
            text = Path(provider.private_key_file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"private_key_file: cannot read it ({exc.__class__.__name__})"
            ) from None
    else:
        text = provider.private_key or ""
    for key_type in (RSAKey, ECKey):
        try:
            key = key_type.import_key(text)
        except (JoseError, ValueError, TypeError):
            continue
        if key.is_private:
            return key
    raise ValueError("private_key_file: not a PEM RSA or EC private key")


class Route(_Model):
    name: str = Field(description="Envoy's route name and the label in logs and metrics.")
    prefix: str = Field(description="Path prefix; the longest matching prefix wins.")
    upstream: str = Field(description="http(s)://host[:port] of the backend.")
    provider: str | None = Field(None, description="Whose access token the backend receives.")
    token_format: TokenFormat = Field(
        TokenFormat.BEARER, description="How the token is presented (see the table above)."
    )
    identity_headers: bool = Field(False, description="Send the user's id, email and name.")
    anonymous: bool = Field(False, description="Let requests without a session through.")
    public: bool = Field(
        False,
        description="No session needed and none looked up; ext_authz still removes the "
        "session cookie and gateway headers before the backend.",
    )
    prefix_rewrite: str | None = Field(None, description="Replace the prefix before forwarding.")
    require_groups: tuple[str, ...] = Field(
        (), description="Only users in at least one of these groups (primary provider) get in."
    )
    require_claims: dict[str, str] = Field(
        default_factory=dict,
        description="ID token claims the user must have, with these exact values.",
    )
    timeout: Duration = Field(30.0, description="Envoy's upstream timeout for the route.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.match(value):
            raise ValueError("must be lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("prefix", "prefix_rewrite")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or any(c in value for c in "?#\\%") or "//" in value:
            raise ValueError("must be an absolute path without '?', '#', '%', '\\' or '//'")
        if "/../" in value + "/" or "/./" in value + "/":
            raise ValueError("must not contain dot segments")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        return _http_url(value, allow_path=False)

    @model_validator(mode="after")
    def _policy(self) -> Route:
        if self.public and (self.provider or self.identity_headers or self.anonymous):
            raise ValueError(
                "a public route skips authorization: no provider, identity or anonymous"
            )
        if self.restricted and (self.public or self.anonymous):
            raise ValueError("a route that requires groups or claims cannot be public or anonymous")
        return self

    @property
    def restricted(self) -> bool:
        return bool(self.require_groups or self.require_claims)

    def matches(self, path: str) -> bool:
        """True when ``path`` (without query) is under this route's prefix."""
        if self.prefix.endswith("/"):
            return path.startswith(self.prefix) or path == self.prefix[:-1]
        return path == self.prefix or path.startswith(self.prefix + "/")


class GatewayConfig(_Model):
    public_url: str = Field(description="The URL browsers use to reach Envoy.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Level of the JSON log lines every component writes to stderr."
    )
    session: SessionSettings = Field(description="Session cookie and lifetimes.")
    tokens: TokenSettings = Field(TokenSettings(), description="Access token refresh.")
    redis: RedisSettings = RedisSettings()
    ext_authz: ExtAuthzSettings = Field(
        ExtAuthzSettings(), description="The authorization server Envoy asks."
    )
    login_app: LoginAppSettings = Field(LoginAppSettings(), description="The login app.")
    envoy: EnvoySettings = Field(EnvoySettings(), description="Envoy's listeners.")
    identity_headers: IdentityHeaders = Field(
        IdentityHeaders(), description="Names of the identity headers routes may send."
    )
    allowed_redirect_origins: tuple[str, ...] = Field(
        (), description="Origins besides public_url that login/logout may redirect to."
    )
    providers: tuple[Provider, ...] = Field(
        (), description="Identity providers, in login-sequence order (the first is primary)."
    )
    routes: tuple[Route, ...] = Field(min_length=1, description="Backends behind Envoy.")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _http_url(value, allow_path=False)

    @field_validator("allowed_redirect_origins")
    @classmethod
    def _redirect_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_origin_of(_http_url(v, allow_path=False)) for v in value)

    @model_validator(mode="after")
    def _timeouts(self) -> GatewayConfig:
        budget = self.ext_authz.timeout
        if self.redis.timeout >= budget:
            raise ValueError("redis.timeout: must be below ext_authz.timeout")
        if self.tokens.refresh_wait + self.redis.timeout >= budget:
            raise ValueError(
                "tokens.refresh_wait: with redis.timeout it must stay below ext_authz.timeout"
            )
        return self

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        provider_ids = [p.id for p in self.providers]
        _no_duplicates("providers", "id", provider_ids)
        _no_duplicates("routes", "name", [r.name for r in self.routes])
        _no_duplicates("routes", "prefix", [r.prefix for r in self.routes])
        _no_duplicates(
            "providers",
            "id (as a secret variable)",
            [provider_secret_variable(p) for p in provider_ids],
        )
        auth_prefix = self.login_app.path_prefix
        for index, route in enumerate(self.routes):
            if route.provider is not None and route.provider not in provider_ids:
                raise ValueError(f"routes[{index}].provider: unknown provider {route.provider!r}")
            if route.matches(auth_prefix) or route.prefix.startswith(auth_prefix + "/"):
                raise ValueError(f"routes[{index}].prefix: overlaps the login app at {auth_prefix}")
        return self

    @model_validator(mode="after")
    def _login_sequence(self) -> GatewayConfig:
        """The sequence must be walkable: a primary to say who the user is, and every provider
        left out of it reachable on demand, through a route that needs it."""
        needed = {route.provider for route in self.routes}
        for index, provider in enumerate(self.providers):
            where = f"providers[{index}]"
            if index == 0 and not provider.login_sequence:
                raise ValueError(
                    f"{where}.login_sequence: the first provider is the primary (it says who "
                    "the user is) and must be in the login sequence"
                )
            if index == 0 and provider.optional:
                raise ValueError(
                    f"{where}.optional: the primary provider says who the user is; a login "
                    "cannot go on without it"
                )
            if not provider.login_sequence and provider.optional:
                raise ValueError(
                    f"{where}.optional: only a provider in the login sequence can be optional "
                    "(one outside it is only logged in when a route needs it)"
                )
            if not provider.login_sequence and provider.id not in needed:
                raise ValueError(
                    f"{where}.login_sequence: false, and no route needs {provider.id!r}: it "
                    "would never be logged in"
                )
        return self

    @property
    def login_sequence(self) -> tuple[str, ...]:
        """Provider ids in login order; the first is the primary."""
        return tuple(p.id for p in self.providers if p.login_sequence)

    @property
    def public_origin(self) -> str:
        return _origin_of(self.public_url)

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def cookie_name(self) -> str:
        """The session cookie's name as browsers see it (``__Host-`` on https)."""
        prefix = "__Host-" if self.secure_cookies else ""
        return prefix + self.session.cookie_name

    @property
    def kept_claims(self) -> frozenset[str]:
        """ID token claims worth storing in sessions: those some route's policy names."""
        return frozenset(name for route in self.routes for name in route.require_claims)

    def managed_headers(self) -> tuple[str, ...]:
        """Lower-case names of every header the gateway sets; clients may never send these."""
        names = {"authorization", "private-token", *self.identity_headers.names()}
        names.update(route.token_format.header_name for route in self.routes)
        return tuple(sorted(names))

    def provider(self, provider_id: str) -> Provider:
        for provider in self.providers:
            if provider.id == provider_id:
                return provider
        raise KeyError(provider_id)

    def route(self, name: str) -> Route | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None


def _no_duplicates(collection: str, field: str, values: list[str]) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{collection}[{index}].{field}: {value!r} appears twice")
        seen.add(value)


def provider_variable(provider_id: str, what: str) -> str:
    """The environment variable that carries one of a provider's secrets (``CLIENT_SECRET``,
    ``PRIVATE_KEY``)."""
    return "GATEWAY_PROVIDER_" + re.sub(r"[^A-Z0-9]", "_", provider_id.upper()) + "_" + what


def provider_secret_variable(provider_id: str) -> str:
    """The environment variable that carries a provider's client secret."""
    return provider_variable(provider_id, "CLIENT_SECRET")


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    if environ.get("GATEWAY_SECRET_KEYS"):
        keys = [k.strip() for k in environ["GATEWAY_SECRET_KEYS"].split(",") if k.strip()]
        raw.setdefault("session", {})
        if isinstance(raw["session"], dict):
            raw["session"]["secret_keys"] = keys
    if environ.get("GATEWAY_REDIS_URL"):
        raw.setdefault("redis", {})
        if isinstance(raw["redis"], dict):
            raw["redis"]["url"] = environ["GATEWAY_REDIS_URL"]
    providers = raw.get("providers")
    for provider in providers if isinstance(providers, list) else ():
        if isinstance(provider, dict) and isinstance(provider.get("id"), str):
            for variable, key in (
                ("CLIENT_SECRET", "client_secret"),
                ("PRIVATE_KEY", "private_key"),
            ):
                secret = environ.get(provider_variable(provider["id"], variable))
                if secret:
                    provider[key] = secret
    return raw


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ""
        for part in item["loc"]:
            location += (
                f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
            )
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location or '(top level)'}: {message}")
    return "; ".join(lines)


def parse_config(raw: Any, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate already-parsed YAML data (plus environment overrides) into a config."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level): the configuration must be a mapping")
    # Work on a copy: secrets from the environment must not leak into the caller's data.
    raw = _apply_environment(copy.deepcopy(raw), environ or {})
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without the excerpt of the file PyYAML quotes: the offending
    line may carry a client secret, and this message goes to logs."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(error, yaml.reader.ReaderError):
        return str(error)  # a character's code and position, no excerpt
    return type(error).__name__


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, override from the environment and validate the configuration file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
    return parse_config(raw, environ)
