"""The gateway's errors, drawn in one place.

    GatewayError
    ├── ConfigError          the configuration is missing or invalid (fail at start)
    ├── CredentialError      a cookie or bearer token is malformed (deny, 401)
    ├── SessionInvalid       a record cannot be decrypted or parsed (deny, 401)
    └── StoreUnavailable     Redis cannot answer now (deny, 503; never a logout)

Third-party errors (redis, cryptography, protobuf) are translated into these in the module
that talks to the library, chained with ``from exc``.
"""


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "gateway_error"


class ConfigError(GatewayError):
    code = "invalid_config"


class CredentialError(GatewayError):
    code = "invalid_credential"


class SessionInvalid(GatewayError):
    code = "invalid_session"


class StoreUnavailable(GatewayError):
    code = "store_unavailable"
