"""Assemble Authlib's authorization server and resource protector for one provider."""

from __future__ import annotations

import time
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from flask import Flask

from devtools.dev_idp.config import IdpConfig, Mode
from devtools.dev_idp.endpoints import BearerTokens, EndSession, Revocation
from devtools.dev_idp.grants import (
    CodeGrant,
    IdTokenForCode,
    IdTokenForRefresh,
    RefreshGrant,
    S256CodeChallenge,
)
from devtools.dev_idp.keys import KeyRing
from devtools.dev_idp.logout import SessionTerminator
from devtools.dev_idp.models import Token
from devtools.dev_idp.stats import Stats
from devtools.dev_idp.store import Store


class DevAuthorizationServer(AuthorizationServer):
    """Authlib's Flask authorization server holding what the grants need."""

    def __init__(self, app: Flask, config: IdpConfig, store: Store, keys: KeyRing, stats: Stats):
        self.config = config
        self.store = store
        self.keys = keys
        self.stats = stats
        super().__init__(app, query_client=store.client, save_token=self._store_token)
        # Registered after init_app, which installs Authlib's config-driven default.
        self.register_token_generator("default", self._generate_token)
        self._bearer = BearerTokenGenerator(
            access_token_generator=lambda **_: generate_token(42),
            refresh_token_generator=lambda **_: generate_token(48),
            expires_generator=config.access_token_ttl,
        )

    def _generate_token(self, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = self._bearer(**kwargs)
        if "refresh_token" in token:
            # Keycloak's extension; lets the gateway see when a refresh will stop working.
            token["refresh_expires_in"] = self.config.refresh_token_ttl
        return token

    def _store_token(self, token: dict[str, Any], request: Any) -> None:
        now = time.time()
        parent = request.authorization_code or request.refresh_token
        grant_id = parent.code if request.authorization_code else parent.grant_id
        refresh_token = token.get("refresh_token")
        self.store.save_token(
            Token(
                access_token=token["access_token"],
                refresh_token=refresh_token,
                client=request.client,
                user=request.user,
                scope=token.get("scope", ""),
                issued_at=now,
                expires_in=int(token["expires_in"]),
                refresh_expires_at=now + self.config.refresh_token_ttl if refresh_token else None,
                grant_id=grant_id,
                sid=parent.sid,
                auth_time=parent.auth_time,
            )
        )


def build_authorization_server(
    app: Flask,
    config: IdpConfig,
    store: Store,
    keys: KeyRing,
    stats: Stats,
    sessions: SessionTerminator,
) -> DevAuthorizationServer:
    """Register the grants and endpoints this provider's mode calls for."""
    server = DevAuthorizationServer(app, config, store, keys, stats)
    code_extensions: list[Any] = [S256CodeChallenge(required=config.require_pkce)]
    refresh_extensions: list[Any] = []
    if config.mode is Mode.OIDC:
        ttl = config.access_token_ttl
        code_extensions.append(IdTokenForCode(config.issuer, keys, ttl, store))
        refresh_extensions.append(IdTokenForRefresh(config.issuer, keys, ttl))
        server.register_endpoint(EndSession(keys, sessions.end))
    server.register_grant(CodeGrant, code_extensions)
    server.register_grant(RefreshGrant, refresh_extensions)
    server.register_endpoint(Revocation(store))
    return server


def build_resource_protector(store: Store) -> ResourceProtector:
    """Guards ``/userinfo`` with the store's bearer tokens."""
    protector = ResourceProtector()
    protector.register_token_validator(BearerTokens(store))
    return protector
