"""The development IdP's configuration: typed values parsed once from the command line.

Clients and users are given as compact ``:``-separated specs so that a test or a Makefile
can start a provider with one command line; the parsers here turn each spec into a frozen
dataclass or raise :class:`ConfigError` naming the flag and what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from devtools.dev_idp.errors import ConfigError


class Mode(StrEnum):
    """Which kind of provider to impersonate."""

    OIDC = "oidc"  # Keycloak-like: discovery, ID tokens, end-session, back-channel logout
    OAUTH2 = "oauth2"  # GitLab/JupyterHub-like: plain OAuth 2.0, never an ID token


@dataclass(frozen=True)
class ClientConfig:
    """A registered confidential client."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class UserConfig:
    """A user who can log in with a password."""

    username: str
    password: str
    email: str
    name: str
    groups: tuple[str, ...] = ()


DEFAULT_USER = UserConfig(
    username="alice",
    password="alice",
    email="alice@example.org",
    # Non-ASCII on purpose: headers and tokens must carry it intact.
    name="Alice Ärger",
    groups=("admins", "users"),
)


@dataclass(frozen=True)
class IdpConfig:
    """Everything the provider needs, fixed at start-up."""

    issuer: str
    clients: tuple[ClientConfig, ...]
    users: tuple[UserConfig, ...] = (DEFAULT_USER,)
    mode: Mode = Mode.OIDC
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    access_token_ttl: int = 300
    refresh_token_ttl: int = 1800
    rotate_refresh_tokens: bool = True
    require_pkce: bool = True
    authorization_code_ttl: int = 60
    session_cookie_name: str = "dev_idp_session"

    def __post_init__(self) -> None:
        _require_http_url(self.issuer, "--issuer")
        # A trailing "/" is allowed (issuers are compared byte for byte, and some providers
        # write one); endpoints are served at the root either way.
        if urlsplit(self.issuer).path not in ("", "/"):
            raise ConfigError("--issuer: give scheme://host:port[/] with no path")
        if not self.clients:
            raise ConfigError("--client: at least one client is required")
        ids = [client.client_id for client in self.clients]
        if len(set(ids)) != len(ids):
            raise ConfigError("--client: client ids must be unique")
        names = [user.username for user in self.users]
        if len(set(names)) != len(names):
            raise ConfigError("--user: usernames must be unique")
        for uri in self.post_logout_redirect_uris:
            _require_http_url(uri, "--post-logout-redirect-uri")
        if self.backchannel_logout_uri is not None:
            _require_http_url(self.backchannel_logout_uri, "--backchannel-logout-uri")
        for name in ("access_token_ttl", "refresh_token_ttl", "authorization_code_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be a positive number")


def parse_client_spec(spec: str) -> ClientConfig:
    """Parse ``CLIENT_ID:CLIENT_SECRET:REDIRECT_URI[,REDIRECT_URI2]``."""
    # maxsplit=2 because the redirect URIs themselves contain ':'.
    parts = spec.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"--client {spec!r}: expected CLIENT_ID:CLIENT_SECRET:REDIRECT_URI[,REDIRECT_URI2]"
        )
    client_id, client_secret, uris = parts
    redirect_uris = tuple(uri.strip() for uri in uris.split(",") if uri.strip())
    for uri in redirect_uris:
        _require_http_url(uri, f"--client {client_id}")
    return ClientConfig(client_id, client_secret, redirect_uris)


def parse_user_spec(spec: str) -> UserConfig:
    """Parse ``USERNAME:PASSWORD[:email[:Full Name[:group1+group2]]]``."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 5 or not parts[0] or not parts[1]:
        raise ConfigError(
            f"--user {spec!r}: expected USERNAME:PASSWORD[:email[:Full Name[:group1+group2]]]"
        )
    username, password = parts[0], parts[1]
    email = parts[2] if len(parts) > 2 and parts[2] else f"{username}@example.org"
    name = parts[3] if len(parts) > 3 and parts[3] else username.title()
    groups = tuple(g for g in parts[4].split("+") if g) if len(parts) > 4 else ()
    return UserConfig(username, password, email, name, groups)


def _require_http_url(value: str, flag: str) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:  # also a malformed IPv6 host
        raise ConfigError(f"{flag}: {value!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag}: {value!r} is not an absolute http(s) URL")
