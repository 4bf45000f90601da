"""The login app's errors. Each maps to one error page (and one JSON error for the CLI API).

    LoginError
    ├── RedirectRejected     redirect_url points somewhere we do not send people
    ├── AttemptExpired       the login attempt is unknown, finished or timed out
    ├── StateMismatch        the callback's state is missing, wrong or already used
    ├── ProviderError        the provider answered with an error (access_denied, ...)
    ├── TokenExchangeFailed  the code could not be exchanged (network, 4xx/5xx, bad reply)
    ├── IdTokenInvalid       the ID token failed validation (signature, iss, aud, nonce, ...)
    ├── UnknownProvider      the login asks for a provider the configuration does not have
    ├── LoginLoop            a provider just logged in is asked for again (a redirect loop)
    └── LoginUnavailable     Redis or a provider cannot be reached now

Authlib, requests and Redis errors are translated into these where those libraries are
called; views only ever see a LoginError.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class LoginError(GatewayError):
    code = "login_failed"
    status = 400
    title = "Login failed"
    retry = True  # offer to start the login again

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class RedirectRejected(LoginError):
    code = "rejected_redirect"
    title = "That return address is not allowed"
    retry = False


class AttemptExpired(LoginError):
    code = "expired_attempt"
    title = "This login attempt has expired"


class StateMismatch(LoginError):
    code = "state_mismatch"
    title = "This login reply does not match a login we started"


class ProviderError(LoginError):
    code = "provider_error"
    title = "The identity provider did not log you in"


class TokenExchangeFailed(LoginError):
    code = "token_exchange_failed"
    status = 502
    title = "The identity provider's reply could not be used"


class IdTokenInvalid(LoginError):
    code = "invalid_id_token"
    title = "The identity provider's ID token is not valid"


class UnknownProvider(LoginError):
    code = "unknown_provider"
    title = "That identity provider is not known here"
    retry = False


class LoginLoop(LoginError):
    code = "login_loop"
    status = 409
    title = "This page keeps asking for the same login"
    retry = False


class LoginUnavailable(LoginError):
    code = "unavailable"
    status = 503
    title = "Login is unavailable right now"
