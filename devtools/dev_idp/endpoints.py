"""Authlib endpoints beyond the grants: revocation, RP-initiated logout, bearer tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import KeySet

from devtools.dev_idp.keys import SIGNING_ALG, KeyRing
from devtools.dev_idp.models import TOKEN_ENDPOINT_AUTH_METHODS, Client, Token
from devtools.dev_idp.store import Store


class Revocation(RevocationEndpoint):
    """RFC 7009 revocation; revoking a refresh token revokes its whole grant."""

    CLIENT_AUTH_METHODS = list(TOKEN_ENDPOINT_AUTH_METHODS)

    def __init__(self, store: Store):
        super().__init__()
        self._store = store

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        # A wrong hint only changes the search order (RFC 7009 §2.1).
        lookups = [self._store.token_for_access, self._store.token_for_refresh]
        if token_type_hint == "refresh_token":
            lookups.reverse()
        for lookup in lookups:
            token = lookup(token_string)
            if token is not None:
                return token
        return None

    def revoke_token(self, token: Token, request: Any) -> None:
        if request.form["token"] == token.refresh_token:
            # RFC 7009 §2.1: also invalidate access tokens based on the same grant.
            self._store.revoke_grant(token.grant_id)
        else:
            self._store.revoke_access_token(token)


class EndSession(EndSessionEndpoint):
    """OIDC RP-initiated logout; ends the session named by the ID token hint's ``sid``."""

    def __init__(self, keys: KeyRing, end_session: Callable[[str], object]):
        super().__init__()
        self._keys = keys
        self._end_session = end_session

    def get_server_jwks(self) -> KeySet:
        return KeySet.import_key_set(self._keys.public_jwks())  # type: ignore[arg-type]

    def get_algorithms(self) -> list[str]:
        return [SIGNING_ALG]

    def is_post_logout_redirect_uri_legitimate(
        self, request: Any, post_logout_redirect_uri: str, client: Client, logout_hint: Any
    ) -> bool:
        # Like Keycloak: a registered URI plus client_id is enough without an ID token hint.
        return True

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        claims = end_session_request.id_token_claims or {}
        if sid := claims.get("sid"):
            self._end_session(sid)


class BearerTokens(BearerTokenValidator):
    """Looks bearer access tokens up in the store."""

    def __init__(self, store: Store):
        super().__init__()
        self._store = store

    def authenticate_token(self, token_string: str) -> Token | None:
        return self._store.token_for_access(token_string)
