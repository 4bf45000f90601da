"""Discovery documents (OIDC Discovery 1.0, RFC 8414), built and validated once at start."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc import discovery, rpinitiated

from devtools.dev_idp.config import IdpConfig, Mode
from devtools.dev_idp.keys import SIGNING_ALG
from devtools.dev_idp.models import TOKEN_ENDPOINT_AUTH_METHODS

OIDC_SCOPES = ["openid", "profile", "email", "offline_access", "groups"]
OIDC_CLAIMS = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "sid",
    "azp",
    "email",
    "email_verified",
    "name",
    "preferred_username",
    "groups",
]


def build_metadata(config: IdpConfig) -> dict[str, Any]:
    """The document served at ``/.well-known/...``; raises ValueError if it is invalid."""
    issuer = config.issuer.removesuffix("/")  # the base of every endpoint URL
    methods = list(TOKEN_ENDPOINT_AUTH_METHODS)
    data: dict[str, Any] = {
        "issuer": config.issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "revocation_endpoint": f"{issuer}/revoke",
        "jwks_uri": f"{issuer}/jwks",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "code_challenge_methods_supported": ["S256"],
    }
    if config.mode is Mode.OAUTH2:
        AuthorizationServerMetadata(data).validate()
        return data
    data.update(
        {
            "end_session_endpoint": f"{issuer}/end-session",
            "scopes_supported": OIDC_SCOPES,
            "claims_supported": OIDC_CLAIMS,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [SIGNING_ALG],
            "prompt_values_supported": ["none", "login"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "frontchannel_logout_supported": False,
        }
    )
    metadata = discovery.OpenIDProviderMetadata(data)
    metadata.validate(metadata_classes=[rpinitiated.OpenIDProviderMetadata])
    return data
