"""How this gateway authenticates itself to a provider, and the Authlib sessions that do it.

One method (``token_endpoint_auth_method``) serves the token and the revocation endpoint
(RFC 7009 §2.1). Authlib signs private_key_jwt assertions; we only make them short-lived,
give each its own ``jti``, and address them to the issuer.
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

from gateway.config import Provider
from gateway.errors import ClientRefused
from gateway.providers.metadata import ProviderMetadata

ASSERTION_LIFETIME = 60  # seconds a private_key_jwt client assertion is valid


class ClientAuth:
    """The client authentication method and the OAuth2Session factory for one provider."""

    def __init__(self, provider: Provider, metadata: ProviderMetadata, redirect_uri: str) -> None:
        self.provider = provider
        self._metadata = metadata
        self._redirect_uri = redirect_uri

    def method(self) -> str:
        """The client authentication method for the token and revocation endpoints."""
        configured = self.provider.token_endpoint_auth_method
        if configured is not None:
            return configured
        candidates = []
        if self.provider.signing_key is not None:
            candidates.append("private_key_jwt")
        if self.provider.client_secret:
            candidates += ["client_secret_basic", "client_secret_post"]
        if not candidates:
            return "none"
        if self.provider.kind != "oidc":
            return candidates[0]
        # OIDC Discovery §3: without the list, client_secret_basic is the default.
        supported = self._metadata.endpoints().token_auth_methods or ("client_secret_basic",)
        for method in candidates:
            if method in supported:
                return method
        # A configuration problem, not an outage: no retry can fix it.
        raise ClientRefused(
            "the provider supports none of the configured client authentication methods "
            f"({', '.join(candidates)}); set token_endpoint_auth_method",
            provider=self.provider.id,
            error="unsupported_client_auth",
        )

    def session(self, scope: tuple[str, ...] | None = None) -> OAuth2Session:
        """An Authlib session for one exchange; ``scope`` is sent only where it is given."""
        method = self.method()
        signing_key = self.provider.signing_key
        secret: Any = signing_key if method == "private_key_jwt" else self.provider.client_secret
        oauth = OAuth2Session(
            client_id=self.provider.client_id,
            client_secret=secret,
            scope=" ".join(scope) if scope else None,
            redirect_uri=self._redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
        )
        # A token or revocation request carries secrets (a refresh token, maybe the client
        # secret): never re-sent to wherever a redirect points.
        oauth.max_redirects = 0
        if method == "private_key_jwt":
            assert signing_key is not None
            kid = self.provider.private_key_id or signing_key.kid
            endpoints = self._metadata.endpoints()
            oauth.register_client_auth_method(
                _ShortLivedPrivateKeyJWT(
                    # The issuer as audience (as RFC 7523bis advises): an assertion sent to the
                    # revocation endpoint is then no token-endpoint credential for another host.
                    endpoints.issuer or endpoints.token_url,
                    headers={"kid": kid} if kid else None,
                    alg=_signing_algorithm(signing_key),
                )
            )
        return oauth


class _ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with assertions valid for a minute instead of an hour (some
    providers refuse longer ones), each with its own ``jti``.

    Authlib's own ``claims=`` cannot carry the lifetime: it stores the ``jti`` it adds in that
    one dict, so every assertion would repeat it.
    """

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            header=self.headers,
            alg=self.alg,
            expires_in=ASSERTION_LIFETIME,
        )


def _signing_algorithm(key: Any) -> str:
    """The JWS algorithm for a client assertion signed with ``key`` (RSA or EC)."""
    if key.key_type == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[key.curve_name]
    return "RS256"
