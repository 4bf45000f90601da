"""Verifying the JWTs a provider signs: ID tokens (OIDC Core §3.1.3.7) and back-channel
logout tokens (Back-Channel Logout 1.0 §2.6).

joserfc checks the signature and the registered claims (``iss``, ``aud``, ``exp``, ``iat``,
``nonce``, ``jti``); what it has no rule for (the algorithm allow-list checked before any
key is fetched, ``azp``, the age of ``iat``, the logout event) is checked here. Every
joserfc error becomes :class:`TokenInvalid` here.
"""

from __future__ import annotations

from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwt import ClaimsOption

from gateway.config import Provider
from gateway.errors import TokenInvalid
from gateway.providers.json_values import optional_str
from gateway.providers.metadata import ProviderMetadata

CLOCK_SKEW = 60  # seconds of leeway on exp/iat
MAX_ID_TOKEN_AGE = 600  # an ID token issued longer ago than this is not a fresh login
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class TokenVerifier:
    """Checks JWTs signed by one provider and meant for this gateway's client."""

    def __init__(self, provider: Provider, metadata: ProviderMetadata) -> None:
        self.provider = provider
        self._metadata = metadata

    def verify_id_token(self, id_token: str, nonce: str, now: float) -> dict[str, Any]:
        """Claims of a valid ID token for this client and this login attempt's nonce."""
        return self._verified_claims(
            id_token,
            now,
            "ID token",
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        )

    def verify_logout_token(self, logout_token: str, now: float) -> dict[str, Any]:
        """Claims of a valid OIDC back-channel logout token (Back-Channel Logout 1.0 §2.6)."""
        claims = self._verified_claims(logout_token, now, "logout token", jti={"essential": True})
        events = claims.get("events")
        if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
            raise self._invalid("logout token lacks the back-channel logout event")
        if "nonce" in claims:
            raise self._invalid("a logout token must not carry a nonce")
        if not (optional_str(claims.get("sid")) or optional_str(claims.get("sub"))):
            raise self._invalid("logout token names neither sid nor sub")
        return claims

    def _invalid(self, message: str) -> TokenInvalid:
        return TokenInvalid(message, provider=self.provider.id)

    def _verified_claims(
        self, token: str, now: float, what: str, **required: ClaimsOption
    ) -> dict[str, Any]:
        """Claims of a JWT signed by this provider, issued to this client lately.

        The registry also refuses an ``iat`` that is no number or lies in the future.
        """
        if self.provider.issuer is None:
            raise self._invalid("an oauth2 provider issues no ID tokens")
        claims = self._verify_signature(token)
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=CLOCK_SKEW,
            iss={"essential": True, "value": self.provider.issuer},
            iat={"essential": True},
            **required,
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise self._invalid(f"{what} claim refused: {exc}") from exc
        self._check_audience(claims)
        if claims["iat"] < now - MAX_ID_TOKEN_AGE:
            raise self._invalid(f"{what} is too old")
        return claims

    def _verify_signature(self, token: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise self._invalid("token is not a compact JWS") from exc
        # Checked before the keys are fetched: an `alg: none` token costs no JWKS request.
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise self._invalid(f"token algorithm {header.get('alg')!r} is not allowed")
        kid = header.get("kid")
        keys = self._metadata.key_set(kid if isinstance(kid, str) else None)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALLOWED_ALGORITHMS))
        # TypeError: joserfc 1.8 iterates a "crit" header without checking it is a list.
        except (JoseError, ValueError, TypeError) as exc:
            raise self._invalid(f"token signature does not verify: {exc}") from exc
        return dict(decoded.claims)

    def _check_audience(self, claims: dict[str, Any]) -> None:
        client_id = self.provider.client_id
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or client_id not in audiences:
            raise self._invalid("token is meant for another client")
        azp = claims.get("azp")
        # OIDC Core §3.1.3.7: with several audiences the authorized party must be us.
        if (azp is not None or len(audiences) > 1) and azp != client_id:
            raise self._invalid("token's authorized party is another client")
