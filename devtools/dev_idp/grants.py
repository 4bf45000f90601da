"""Authlib grants and extensions wired to the in-memory store.

Authlib builds a grant per request as ``grant_cls(request, server)``; the grants reach the
store, keys and settings through ``self.server`` (a ``DevAuthorizationServer``).
"""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, OpenIDToken, UserInfo

from devtools.dev_idp.keys import SIGNING_ALG, KeyRing
from devtools.dev_idp.models import (
    TOKEN_ENDPOINT_AUTH_METHODS,
    AuthorizationCode,
    BrowserSession,
    Client,
    Token,
    User,
)
from devtools.dev_idp.stats import Stats
from devtools.dev_idp.store import Store


class CodeGrant(AuthorizationCodeGrant):
    """The authorization code grant; ``grant_user`` is the IdP's :class:`BrowserSession`."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_ENDPOINT_AUTH_METHODS)

    def validate_authorization_request(self) -> str:
        # OIDC Core §3.1.2.1 and OAuth 2.1 make redirect_uri REQUIRED; Authlib would fall
        # back to the first registered URI. Raised before Authlib's checks, so without a
        # redirect URI attached: the user sees an error page and nothing is redirected.
        if not self.request.payload.redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        redirect_uri: str = super().validate_authorization_request()
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        session: BrowserSession = request.user
        data = request.payload.data
        store: Store = self.server.store
        store.save_code(
            AuthorizationCode(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope or "",
                username=session.username,
                sid=session.sid,
                auth_time=session.auth_time,
                nonce=data.get("nonce"),
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                expires_at=time.time() + self.server.config.authorization_code_ttl,
            )
        )
        store.add_client_to_session(session.sid, request.client.client_id)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        record, replayed = self.server.store.redeem_code(code, client.client_id)
        if replayed:
            stats: Stats = self.server.stats
            stats.code_replay()
        return record

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        # Nothing to do: redeem_code already marked the code used, and the record is kept
        # so that a second redemption is recognised as a replay.
        pass

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        user: User | None = self.server.store.user(authorization_code.username)
        return user


class RefreshGrant(RefreshTokenGrant):
    """The refresh token grant, rotating refresh tokens unless configured not to."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_ENDPOINT_AUTH_METHODS)

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:  # noqa: N802 - Authlib's attribute name
        rotate: bool = self.server.config.rotate_refresh_tokens
        return rotate

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token: Token | None = self.server.store.token_for_refresh(refresh_token)
        if token is not None and token.rotated:
            stats: Stats = self.server.stats
            stats.rotated_refresh_reuse()
        if token is None or not token.is_refresh_usable():
            return None
        return token

    def authenticate_user(self, refresh_token: Token) -> User:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        if self.server.config.rotate_refresh_tokens:
            self.server.store.retire_refresh_token(refresh_token)


class S256CodeChallenge(CodeChallenge):
    """PKCE that accepts only S256 and, when required, rejects requests without it.

    Authlib's ``required`` flag only covers public clients; every client here is
    confidential, so the requirement is enforced at the authorization endpoint instead.
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        super().validate_code_challenge(grant, redirect_uri)
        data = grant.request.payload.data
        challenge = data.get("code_challenge")
        if self.required and not challenge:
            raise InvalidRequestError("Missing 'code_challenge': this provider requires PKCE")
        # A missing method means "plain" (RFC 7636 §4.3), which is not accepted.
        if challenge and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")


class _IdTokenClaims:
    """ID token contents shared by the code flow and refresh responses."""

    def __init__(self, issuer: str, keys: KeyRing, ttl: int):
        self._issuer = issuer
        self._keys = keys
        self._ttl = ttl

    def resolve_client_private_key(self, client: Client) -> Any:
        # The whole set, so the key named by get_encode_header's kid is found even if a
        # rotation happens between the two calls.
        return self._keys.private_key_set()

    def get_client_algorithm(self, client: Client) -> str:
        return SIGNING_ALG

    def get_encode_header(self, client: Client) -> dict[str, Any]:
        return {"alg": SIGNING_ALG, "kid": self._keys.current().kid}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        # A plain string aud, like Keycloak: Authlib's end-session endpoint only resolves
        # the client from a string aud.
        return {
            "iss": self._issuer,
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": now,
            "exp": now + self._ttl,
        }

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        return UserInfo(user.claims())

    def session_claims(self, request: Any) -> dict[str, Any]:
        source = request.authorization_code or request.refresh_token
        if source is None:
            return {}
        return {"sid": source.sid, "auth_time": source.auth_time}


class IdTokenForCode(_IdTokenClaims, OpenIDCode):
    """OpenID Connect for the code flow: validates nonce and prompt, adds the ID token."""

    def __init__(self, issuer: str, keys: KeyRing, ttl: int, store: Store):
        _IdTokenClaims.__init__(self, issuer, keys, ttl)
        OpenIDCode.__init__(self, require_nonce=False)
        self._store = store

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return self._store.nonce_was_used(request.payload.client_id, nonce)

    def get_compatible_claims(self, request: Any) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_compatible_claims(request)
        claims.update(self.session_claims(request))
        return claims


class IdTokenForRefresh(_IdTokenClaims, OpenIDToken):
    """Adds a fresh ID token to refresh responses (OIDC Core §12.2).

    It keeps ``sub``, ``sid``, ``azp`` and the original ``auth_time``; it carries no
    ``nonce``, which belongs to the authentication request only.
    """

    def get_compatible_claims(self, request: Any) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_compatible_claims(request)
        claims.update(self.session_claims(request))
        return claims
