"""Who logged in: the configured claim names (dotted paths allowed) read from the ID token's
claims, merged with userinfo for oidc, or from userinfo alone for oauth2."""

from __future__ import annotations

from typing import Any

from gateway.config import Provider
from gateway.errors import ProviderRejected, TokenInvalid
from gateway.providers.json_values import optional_str
from gateway.providers.metadata import ProviderMetadata
from gateway.providers.transport import ProviderHttp
from gateway.sessions.model import Identity


class IdentityReader:
    """Builds the Identity of a login from one provider's claims and userinfo."""

    def __init__(self, provider: Provider, metadata: ProviderMetadata, http: ProviderHttp) -> None:
        self.provider = provider
        self._metadata = metadata
        self._http = http

    def identity(
        self,
        access_token: str,
        id_claims: dict[str, Any] | None,
        keep: frozenset[str] = frozenset(),
    ) -> Identity:
        """Who logged in; ``keep`` names further claims to store (for route policies).

        oidc: the verified ID token's claims merged with userinfo, whose ``sub`` must be the
        ID token's (OIDC Core §5.3.4); the ID token keeps the last word on ``sub`` and
        ``sid``. oauth2: the userinfo endpoint alone.
        """
        if self.provider.kind == "oidc":
            assert id_claims is not None
            claims = dict(id_claims)
            if self.provider.userinfo and self._metadata.endpoints().userinfo_url:
                info = self._userinfo(access_token)
                if info.get("sub") != id_claims.get("sub"):
                    raise TokenInvalid("userinfo names another subject", provider=self.provider.id)
                claims = {**claims, **info, "sub": id_claims["sub"], "sid": id_claims.get("sid")}
        else:
            if not self._metadata.endpoints().userinfo_url:
                raise ProviderRejected(
                    "the provider has no userinfo endpoint", provider=self.provider.id
                )
            claims = {**self._userinfo(access_token), "sid": None}
        return identity_from_claims(self.provider, claims, keep)

    def _userinfo(self, access_token: str) -> dict[str, Any]:
        url = self._metadata.endpoints().userinfo_url
        assert url is not None
        return self._http.get_json(
            url,
            "userinfo",
            refused_on_4xx=True,
            headers={"Authorization": f"Bearer {access_token}"},
        )


def identity_from_claims(
    provider: Provider, claims: dict[str, Any], keep: frozenset[str] = frozenset()
) -> Identity:
    """The identity the provider's configured claim names find in ``claims``."""
    names = provider.claims
    subject = first_claim(claims, names.subject)
    # GitLab and GitHub name users by an integer id; a list, object, bool or "" names nobody.
    if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
        raise ProviderRejected("the provider's reply names no subject", provider=provider.id)
    groups = first_claim(claims, names.groups)
    if isinstance(groups, str):
        groups = [groups]
    kept = {}
    for name in keep:
        value = claim(claims, name)
        if isinstance(value, str | int | float | bool):
            kept[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return Identity(
        subject=str(subject),
        email=optional_str(first_claim(claims, names.email)) or "",
        name=optional_str(first_claim(claims, names.name)) or "",
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        provider_session_id=optional_str(claims.get("sid")) or "",
        claims=kept,
    )


def claim(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted claim path (``realm_access.roles``); None where it is missing.
    A claim whose own name has a dot (as some providers' URL-named claims do) wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def first_claim(claims: dict[str, Any], paths: tuple[str, ...]) -> Any:
    """The first of ``paths`` that holds a value (not None, not "")."""
    for path in paths:
        value = claim(claims, path)
        if value is not None and value != "":
            return value
    return None
