"""Tokens for the benchmark: a real RS256 JWT for (c), and realistic stand-ins for sessions."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

JWT_ISSUER = "https://idp.bench.invalid"
JWT_AUDIENCE = "bench-api"
JWT_SUBJECT = "bench-user-0001"


@dataclass(frozen=True)
class SignedJwt:
    token: str
    jwks: dict[str, Any]


def signed_jwt(lifetime: float = 3600) -> SignedJwt:
    """A fresh 2048-bit RSA key, its public JWKS, and a valid RS256 token with common claims."""
    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"})
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": JWT_SUBJECT,
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "email": "alice@example.org",
        "name": "Alice Example",
        "scope": "openid profile email",
    }
    token = jwt.encode({"alg": "RS256", "kid": "bench"}, claims, key)
    return SignedJwt(token, {"keys": [key.as_dict(private=False)]})


def opaque_token(length: int = 40) -> str:
    """A provider's opaque token (GitLab, JupyterHub style)."""
    return secrets.token_urlsafe(length)[:length]


def jwt_like_token(length: int = 900) -> str:
    """Something shaped and sized like a provider's JWT (header.payload.signature, base64url):
    ext_authz never parses tokens, so only the size and alphabet matter."""
    header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoIn0"
    signature = base64.urlsafe_b64encode(secrets.token_bytes(256)).rstrip(b"=").decode()
    payload_length = max(1, length - len(header) - len(signature) - 2)
    payload = base64.urlsafe_b64encode(secrets.token_bytes(payload_length)).decode()
    return f"{header}.{payload[:payload_length]}.{signature}"
