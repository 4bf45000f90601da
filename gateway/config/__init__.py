"""The gateway's configuration, read once at start-up into one typed, validated object.

The package's modules each hold one part (shared value types, the sections, providers,
routes, the whole model, loading); the names other layers use are collected here.
"""

from gateway.config.loading import load_config, parse_config
from gateway.config.model import GatewayConfig
from gateway.config.providers import (
    ClaimNames,
    Provider,
    provider_secret_variable,
    provider_variable,
)
from gateway.config.routes import Route, TokenFormat
from gateway.config.sections import (
    EnvoySettings,
    ExtAuthzSettings,
    IdentityHeaders,
    LoginAppSettings,
    RedisSettings,
    SentinelSettings,
    SessionSettings,
    TokenSettings,
)
from gateway.config.values import (
    MAX_DURATION_SECONDS,
    is_loopback,
    join_host_port,
    split_host_port,
)

__all__ = [
    "MAX_DURATION_SECONDS",
    "ClaimNames",
    "EnvoySettings",
    "ExtAuthzSettings",
    "GatewayConfig",
    "IdentityHeaders",
    "LoginAppSettings",
    "Provider",
    "RedisSettings",
    "Route",
    "SentinelSettings",
    "SessionSettings",
    "TokenFormat",
    "TokenSettings",
    "is_loopback",
    "join_host_port",
    "load_config",
    "parse_config",
    "provider_secret_variable",
    "provider_variable",
    "split_host_port",
]
