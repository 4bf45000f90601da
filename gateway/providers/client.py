"""Talking to identity providers, behind one facade per configured provider.

Shared by the login app and ext_authz (refresh). Each job has its module:

    transport      every HTTP call; requests/Authlib errors become gateway.errors there
    metadata       endpoints (config or OIDC discovery) and the JWKS cache
    client_auth    token_endpoint_auth_method and the Authlib OAuth2Session factory
    authorization  the authorization URL (PKCE) and the reply's RFC 9207 ``iss``
    tokens         code exchange, refresh, revocation, the TokenSet of a reply
    id_tokens      ID-token and logout-token verification (joserfc)
    claims         the Identity from claims and userinfo

Failures are :class:`ProviderUnavailable` (try again later), :class:`ProviderRejected` (the
provider said no, with its OAuth error code) or :class:`TokenInvalid` (a JWT failed
validation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from gateway.config import Provider
from gateway.errors import ProviderFailure
from gateway.providers.authorization import AuthorizationRequests
from gateway.providers.claims import IdentityReader, identity_from_claims
from gateway.providers.client_auth import ClientAuth
from gateway.providers.id_tokens import TokenVerifier
from gateway.providers.metadata import Endpoints, ProviderMetadata
from gateway.providers.tokens import TokenEndpoint
from gateway.providers.transport import ProviderHttp
from gateway.sessions.model import Identity, TokenSet


class ProviderClient:
    """One configured provider. Thread-safe: caches are shared by the app's threads.

    ``http`` and ``clock`` are seams for tests (a canned requests session, a clock that
    ages the metadata and JWKS caches).
    """

    def __init__(
        self,
        provider: Provider,
        redirect_uri: str,
        *,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.id = provider.id
        self.redirect_uri = redirect_uri
        transport = ProviderHttp(provider.id, http)
        self._transport = transport
        self._metadata = ProviderMetadata(provider, transport, clock)
        self._client_auth = ClientAuth(provider, self._metadata, redirect_uri)
        self._authorization = AuthorizationRequests(provider, self._metadata, self._client_auth)
        self._tokens = TokenEndpoint(provider, self._metadata, self._client_auth, transport)
        self._verifier = TokenVerifier(provider, self._metadata)
        self._identities = IdentityReader(provider, self._metadata, transport)

    @property
    def is_oidc(self) -> bool:
        return self.provider.kind == "oidc"

    def endpoints(self) -> Endpoints:
        """Configured endpoints (oauth2) or the discovery document's (oidc), cached."""
        return self._metadata.endpoints()

    def is_up(self) -> bool:
        """Does the provider answer now (its discovery too, for OIDC)? Asked before a login
        sends the browser to an optional or on-demand provider: a browser sent to one that is
        down sees its own connection error and never comes back. The token endpoint is asked
        because the login app must reach it to finish the login anyway (the authorization
        endpoint is the browser's, and may not be reachable from here). Nothing is cached: a
        provider that comes back is used at once."""
        try:
            token_url = self._metadata.endpoints().token_url
        except ProviderFailure:
            return False
        return self._transport.answers(token_url)

    def auth_method(self) -> str:
        """The client authentication method for the token and revocation endpoints."""
        return self._client_auth.method()

    def authorization_url(self, *, state: str, code_verifier: str, nonce: str | None) -> str:
        """Where to send the browser to log in (PKCE S256; ``nonce`` for oidc)."""
        return self._authorization.url(state=state, code_verifier=code_verifier, nonce=nonce)

    def check_reply_issuer(self, iss: str | None) -> None:
        """RFC 9207: the authorization reply's ``iss`` must name this provider's issuer."""
        self._authorization.check_reply_issuer(iss)

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Trade the authorization code for tokens (the provider enforces single use)."""
        return self._tokens.exchange_code(code, code_verifier)

    def token_set(self, reply: dict[str, Any], now: float) -> TokenSet:
        """A TokenSet from a token endpoint reply, refusing replies that lack what we need."""
        return self._tokens.token_set(reply, now)

    def refresh(
        self, tokens: TokenSet, now: float, *, read_timeout: float | None = None
    ) -> TokenSet:
        """Trade the refresh token for new tokens (RFC 6749 §6).

        What the reply omits is kept: a provider that does not rotate refresh tokens sends
        none, and a refresh reply without an ID token must not lose the one we have (the
        ID token is needed for logout). Raises ProviderRejected with ``error`` set to the
        provider's code (``invalid_grant``: the refresh token is revoked or expired), or
        ProviderUnavailable for anything that may work later (network, timeout, 5xx).
        ``read_timeout`` replaces the default read timeout (ext_authz's refresh_timeout).
        """
        return self._tokens.refresh(tokens, now, read_timeout=read_timeout)

    def revoke(self, tokens: TokenSet) -> bool:
        """RFC 7009 revocation of the refresh token (and access token); best effort."""
        return self._tokens.revoke(tokens)

    def verify_id_token(self, id_token: str, nonce: str, now: float) -> dict[str, Any]:
        """Claims of a valid ID token for this client and this login attempt's nonce."""
        return self._verifier.verify_id_token(id_token, nonce, now)

    def verify_logout_token(self, logout_token: str, now: float) -> dict[str, Any]:
        """Claims of a valid OIDC back-channel logout token (Back-Channel Logout 1.0 §2.6)."""
        return self._verifier.verify_logout_token(logout_token, now)

    def identity(
        self,
        access_token: str,
        id_claims: dict[str, Any] | None,
        keep: frozenset[str] = frozenset(),
    ) -> Identity:
        """Who logged in; ``keep`` names further claims to store (for route policies)."""
        return self._identities.identity(access_token, id_claims, keep)

    def identity_from_claims(
        self, claims: dict[str, Any], keep: frozenset[str] = frozenset()
    ) -> Identity:
        """The identity the configured claim names find in ``claims``."""
        return identity_from_claims(self.provider, claims, keep)
