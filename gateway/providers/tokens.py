"""The token endpoint: code exchange, refresh and revocation, and the TokenSet a reply makes.

Authlib's ``OAuth2Session`` sends the requests (with PKCE and the client's authentication);
:mod:`gateway.providers.transport` turns its failures into ours.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.config import Provider
from gateway.errors import ProviderRejected
from gateway.providers.client_auth import ClientAuth
from gateway.providers.json_values import optional_str
from gateway.providers.metadata import ProviderMetadata
from gateway.providers.transport import HTTP_TIMEOUT, ProviderHttp
from gateway.sessions.model import TokenSet

MAX_EXPIRES_IN = 366 * 86400


def refresh_timeout(read_timeout: float | None) -> tuple[float, float]:
    """(connect, read) timeouts of a refresh: the default read timeout unless one is given.

    ext_authz gives its own (``tokens.refresh_timeout``): a provider that answers slowly has
    often rotated the refresh token by the time it answers, so giving up early loses it.
    """
    connect, read = HTTP_TIMEOUT
    return (connect, read if read_timeout is None else read_timeout)


class TokenEndpoint:
    """One provider's token and revocation endpoints."""

    def __init__(
        self,
        provider: Provider,
        metadata: ProviderMetadata,
        client_auth: ClientAuth,
        http: ProviderHttp,
    ) -> None:
        self.provider = provider
        self._metadata = metadata
        self._client_auth = client_auth
        self._http = http

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Trade the authorization code for tokens (the provider enforces single use)."""
        return self._http.token_request(
            "code exchange",
            self._client_auth.session,
            lambda oauth: oauth.fetch_token(
                self._metadata.endpoints().token_url,
                code=code,
                code_verifier=code_verifier,
                timeout=HTTP_TIMEOUT,
            ),
        )

    def refresh(
        self, tokens: TokenSet, now: float, *, read_timeout: float | None = None
    ) -> TokenSet:
        """Trade the refresh token for new tokens (RFC 6749 §6); see ProviderClient.refresh."""
        if not tokens.refresh_token:
            raise ProviderRejected(
                "no refresh token", provider=self.provider.id, error="invalid_grant"
            )
        # RFC 6749 §6: without `scope` the provider keeps what it granted; re-sending what
        # we asked for at login fails where it granted less (invalid_scope).
        scope = self.provider.refresh_scopes
        reply = self._http.token_request(
            "refresh",
            lambda: self._client_auth.session(scope),
            lambda oauth: oauth.refresh_token(
                self._metadata.endpoints().token_url,
                refresh_token=tokens.refresh_token,
                timeout=refresh_timeout(read_timeout),
            ),
        )
        fresh = self.token_set(reply, now)
        return replace(
            fresh,
            refresh_token=fresh.refresh_token or tokens.refresh_token,
            id_token=fresh.id_token or tokens.id_token,
            scope=fresh.scope or tokens.scope,
        )

    def token_set(self, reply: dict[str, Any], now: float) -> TokenSet:
        """A TokenSet from a token endpoint reply, refusing replies that lack what we need."""
        access_token = reply.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ProviderRejected("the reply has no access_token", provider=self.provider.id)
        expires_in = reply.get("expires_in")
        # bool is an int to Python; `"expires_in": true` is no lifetime.
        if (
            isinstance(expires_in, int | float)
            and not isinstance(expires_in, bool)
            and 0 < expires_in <= MAX_EXPIRES_IN
        ):
            expires_at = int(now + expires_in)
        elif self.provider.token_max_lifetime:
            expires_at = int(now + self.provider.token_max_lifetime)
        else:
            expires_at = 0
        tokens = TokenSet(
            access_token=access_token,
            refresh_token=optional_str(reply.get("refresh_token")) or "",
            id_token=optional_str(reply.get("id_token")) or "",
            token_type=optional_str(reply.get("token_type")) or "Bearer",
            scope=optional_str(reply.get("scope")) or "",
            expires_at=expires_at,
            obtained_at=int(now),
        )
        if not tokens.presentable:
            raise ProviderRejected(
                "the access token has characters a header cannot carry", provider=self.provider.id
            )
        return tokens

    def revoke(self, tokens: TokenSet) -> bool:
        """RFC 7009 revocation of the refresh token (and access token); best effort.

        The client authenticates as at the token endpoint (RFC 7009 §2.1).
        """
        url = self._metadata.endpoints().revocation_url
        if not url:
            return False
        revoked = True
        for token, hint in (
            (tokens.refresh_token, "refresh_token"),
            (tokens.access_token, "access_token"),
        ):
            if token:
                # Both are tried: a failure for one is no reason to leave the other valid.
                done = self._http.revoke(self._client_auth.session, url, token, hint)
                revoked = revoked and done
        return revoked
