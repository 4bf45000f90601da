"""The records the provider keeps, shaped as Authlib's model mixins expect.

Records are mutable only through :mod:`devtools.dev_idp.store`, which holds the lock.
"""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin

from devtools.dev_idp.config import ClientConfig, UserConfig

TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class Client(ClientMixin):
    """A confidential client registered from the command line."""

    def __init__(self, config: ClientConfig, post_logout_redirect_uris: tuple[str, ...]):
        self.client_id = config.client_id
        self._secret = config.client_secret
        self.redirect_uris = config.redirect_uris
        # Authlib's end-session endpoint reads registered URIs from client_metadata.
        self.client_metadata: dict[str, Any] = {
            "post_logout_redirect_uris": list(post_logout_redirect_uris),
        }

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        # Like Keycloak with optional scopes enabled: whatever was asked for is granted.
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string match, as RFC 6749 §3.1.2.3 and OAuth 2.1 require.
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(self._secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in TOKEN_ENDPOINT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


class User:
    """A user; ``sub`` is a stable UUID that differs per issuer, never the username."""

    def __init__(self, config: UserConfig, issuer: str):
        self.username = config.username
        self._password = config.password
        self.email = config.email
        self.name = config.name
        self.groups = list(config.groups)
        self.sub = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{issuer}/users/{config.username}"))

    def get_user_id(self) -> str:
        return self.sub

    def check_password(self, password: str) -> bool:
        return hmac.compare_digest(self._password.encode(), password.encode())

    def claims(self) -> dict[str, Any]:
        """The identity claims shared by ID tokens and the userinfo endpoint."""
        return {
            "sub": self.sub,
            "email": self.email,
            "email_verified": True,
            "name": self.name,
            "preferred_username": self.username,
            "groups": list(self.groups),
        }


@dataclass
class BrowserSession:
    """The IdP's own login session (Keycloak's "SSO session"), found by a cookie."""

    cookie_value: str
    sid: str
    username: str
    auth_time: int
    client_ids: set[str] = field(default_factory=set)


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    """An issued authorization code; kept after use so reuse can be detected."""

    code: str
    client_id: str
    redirect_uri: str | None
    scope: str
    username: str
    sid: str
    auth_time: int
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used: bool = False

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass
class Token(TokenMixin):
    """One token response: an access token and maybe a refresh token.

    ``grant_id`` ties together every token descended from one authorization code, so
    that code reuse and refresh-token revocation can revoke the whole family.
    """

    access_token: str
    refresh_token: str | None
    client: Client
    user: User
    scope: str
    issued_at: float
    expires_in: int
    refresh_expires_at: float | None
    grant_id: str
    sid: str
    auth_time: int
    access_revoked: bool = False
    refresh_revoked: bool = False
    # Retired by rotation (a refresh used it), as opposed to revoked by a logout: presenting
    # it again means a client lost the answer that replaced it.
    rotated: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return self.client.get_client_id() == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.access_revoked

    def is_refresh_usable(self) -> bool:
        """True while the refresh token is neither revoked nor expired."""
        if self.refresh_token is None or self.refresh_revoked:
            return False
        return self.refresh_expires_at is None or time.time() < self.refresh_expires_at

    def get_user(self) -> User:
        return self.user

    def get_client(self) -> Client:
        return self.client
