"""The whole configuration, with the checks that span its sections."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from gateway.config.providers import Provider, provider_secret_variable
from gateway.config.routes import Route
from gateway.config.sections import (
    EnvoySettings,
    ExtAuthzSettings,
    IdentityHeaders,
    LoginAppSettings,
    RedisSettings,
    SessionSettings,
    TokenSettings,
)
from gateway.config.values import _http_url, _Model, _origin_of


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
