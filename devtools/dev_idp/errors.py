"""The development identity provider's own errors.

    DevIdpError
    ├── ConfigError       a command-line value is malformed (fail at start, exit 2)
    └── AdminRequestError a request to an ``/_admin/`` endpoint is malformed (400)

Protocol errors seen by OAuth clients are Authlib's ``OAuth2Error`` subclasses; they are
rendered by Authlib and never wrapped in these.
"""


class DevIdpError(Exception):
    """Base of every error the development IdP raises on purpose."""

    code = "dev_idp_error"


class ConfigError(DevIdpError):
    code = "invalid_config"


class AdminRequestError(DevIdpError):
    code = "invalid_admin_request"
