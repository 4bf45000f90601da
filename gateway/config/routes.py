"""A route: a path prefix, its backend, and what the backend receives."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from gateway.config.values import Duration, _http_url, _Model

_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class TokenFormat(StrEnum):
    """How a provider's access token is presented to a backend."""

    BEARER = "bearer"  # Authorization: Bearer <token>
    TOKEN = "token"  # Authorization: token <token>  (JupyterHub)
    PRIVATE_TOKEN = "private_token"  # Private-Token: <token>  (GitLab API)
    BASIC_OAUTH2 = "basic_oauth2"  # Authorization: Basic base64("oauth2:<token>")  (git)

    @property
    def header_name(self) -> str:
        return "private-token" if self is TokenFormat.PRIVATE_TOKEN else "authorization"


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
