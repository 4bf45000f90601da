"""The gateway's errors, drawn in one place.

    GatewayError
    ├── ConfigError          the configuration is missing or invalid (fail at start)
    ├── CredentialError      a cookie or bearer token is malformed (deny, 401)
    ├── SessionInvalid       a record cannot be decrypted or parsed (deny, 401)
    ├── StoreUnavailable     Redis cannot answer now (deny, 503; never a logout)
    └── ProviderFailure      an identity provider call did not give us what we need
        ├── ProviderUnavailable  network, timeout, 5xx, broken metadata: try again later
        ├── ProviderRejected     the provider said no (``error``: invalid_grant, ...)
        │   └── ClientRefused    ... to this gateway's client itself (invalid_client, ...)
        └── TokenInvalid         an ID or logout token failed validation

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


class ProviderFailure(GatewayError):
    code = "provider_failure"

    def __init__(self, message: str, *, provider: str | None = None, error: str = "") -> None:
        super().__init__(message)
        self.provider = provider
        self.error = error  # the provider's OAuth error code, when it gave one


class ProviderUnavailable(ProviderFailure):
    code = "provider_unavailable"


class ProviderRejected(ProviderFailure):
    code = "provider_rejected"


class ClientRefused(ProviderRejected):
    """The provider refuses the gateway's own client registration (a wrong secret or key, a
    method it does not take): no user's grant is to blame, and no login would help."""

    code = "client_refused"


class TokenInvalid(ProviderFailure):
    code = "invalid_token"
