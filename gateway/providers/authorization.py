"""The front channel: the authorization URL we send the browser to, and the reply's issuer."""

from __future__ import annotations

from gateway.config import Provider
from gateway.errors import TokenInvalid
from gateway.providers.client_auth import ClientAuth
from gateway.providers.metadata import ProviderMetadata


class AuthorizationRequests:
    """Authorization requests (PKCE S256, by Authlib) and replies for one provider."""

    def __init__(self, provider: Provider, metadata: ProviderMetadata, client_auth: ClientAuth):
        self.provider = provider
        self._metadata = metadata
        self._client_auth = client_auth

    def url(self, *, state: str, code_verifier: str, nonce: str | None) -> str:
        """Where to send the browser to log in with this provider."""
        extra = {**self.provider.authorize_params, **({"nonce": nonce} if nonce else {})}
        with self._client_auth.session(self.provider.scopes) as oauth:
            url, _ = oauth.create_authorization_url(
                self._metadata.endpoints().authorize_url,
                state=state,
                code_verifier=code_verifier,
                **extra,
            )
        return str(url)

    def check_reply_issuer(self, iss: str | None) -> None:
        """RFC 9207: the authorization reply's ``iss`` must name this provider's issuer.

        Required when the provider's metadata says it sends one; checked whenever present
        and an issuer is known (oauth2 providers without a configured issuer skip it).
        """
        endpoints = self._metadata.endpoints()
        if iss is None:
            if endpoints.sends_iss_parameter:
                raise TokenInvalid("the authorization reply has no iss", provider=self.provider.id)
            return
        if endpoints.issuer is not None and iss != endpoints.issuer:
            raise TokenInvalid(
                "the authorization reply names another issuer", provider=self.provider.id
            )
