"""What a provider tells us about itself: its endpoints and its signing keys.

oauth2 providers' endpoints come from the configuration; oidc ones from the discovery
document (OIDC Discovery §4), cached for an hour. The JWKS is cached as long, and refetched
early (at most every 30 seconds) when a token names a key we do not know: the provider
rotated its keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.config import Provider
from gateway.errors import ProviderUnavailable
from gateway.providers.json_values import optional_str, required_str
from gateway.providers.transport import ProviderHttp

METADATA_TTL = 3600
JWKS_REFETCH_INTERVAL = 30  # at most one forced JWKS refetch per this many seconds


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    userinfo_url: str | None = None
    revocation_url: str | None = None
    end_session_url: str | None = None
    jwks_uri: str | None = None
    issuer: str | None = None
    # Discovery's token_endpoint_auth_methods_supported; None: the document says nothing.
    token_auth_methods: tuple[str, ...] | None = None
    # RFC 9207 §3: the provider says every authorization reply carries `iss`.
    sends_iss_parameter: bool = False


def discovery_url(issuer: str) -> str:
    """OIDC Discovery §4.1: one terminating "/" of the issuer goes before the well-known path.

    (Authlib's ``get_well_known_url`` builds RFC 8414's form, which puts the well-known
    path before the issuer's path: another URL for an issuer with a path.)
    """
    return issuer.removesuffix("/") + "/.well-known/openid-configuration"


class ProviderMetadata:
    """One provider's endpoints and keys, cached; thread-safe (the app's threads share it)."""

    def __init__(
        self, provider: Provider, http: ProviderHttp, clock: Callable[[], float] = time.time
    ) -> None:
        self.provider = provider
        self._http = http
        self._clock = clock
        self._endpoints: Endpoints | None = None
        if provider.kind != "oidc":
            assert provider.authorize_url and provider.token_url  # the config guarantees both
            self._endpoints = Endpoints(
                provider.authorize_url,
                provider.token_url,
                provider.userinfo_url,
                provider.revocation_url,
                issuer=provider.issuer,
            )
        self._endpoints_at = 0.0
        self._endpoints_lock = threading.Lock()
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._keys_lock = threading.Lock()

    def endpoints(self) -> Endpoints:
        """Configured endpoints (oauth2) or the discovery document's (oidc), cached."""
        if self.provider.kind != "oidc":
            assert self._endpoints is not None
            return self._endpoints
        with self._endpoints_lock:
            if self._endpoints is None or self._clock() - self._endpoints_at > METADATA_TTL:
                self._endpoints = self._discover()
                self._endpoints_at = self._clock()
            return self._endpoints

    def _discover(self) -> Endpoints:
        issuer = self.provider.issuer
        assert issuer is not None  # the config requires it for oidc
        document = self._http.get_json(discovery_url(issuer), "discovery")
        # OIDC Discovery §4.3: the document must name exactly the issuer we asked.
        if document.get("issuer") != issuer:
            raise ProviderUnavailable("discovery names another issuer", provider=self.provider.id)
        methods = document.get("token_endpoint_auth_methods_supported")
        try:
            return Endpoints(
                authorize_url=required_str(document["authorization_endpoint"]),
                token_url=required_str(document["token_endpoint"]),
                userinfo_url=optional_str(document.get("userinfo_endpoint")),
                revocation_url=self.provider.revocation_url
                or optional_str(document.get("revocation_endpoint")),
                end_session_url=optional_str(document.get("end_session_endpoint")),
                jwks_uri=required_str(document["jwks_uri"]),
                issuer=issuer,
                token_auth_methods=tuple(m for m in methods if isinstance(m, str))
                if isinstance(methods, list)
                else None,
                sends_iss_parameter=document.get("authorization_response_iss_parameter_supported")
                is True,
            )
        except (KeyError, TypeError) as exc:
            raise ProviderUnavailable(
                "discovery document is incomplete", provider=self.provider.id
            ) from exc

    def key_set(self, kid: str | None) -> KeySet:
        """The provider's JWKS; refetched (rate-limited) when a token names an unknown kid."""
        with self._keys_lock:
            known = self._keys is not None and (
                kid is None or any(key.kid == kid for key in self._keys.keys)
            )
            age = self._clock() - self._keys_at
            if (
                self._keys is None
                or age > METADATA_TTL
                or (not known and age > JWKS_REFETCH_INTERVAL)
            ):
                jwks_uri = self.endpoints().jwks_uri
                assert jwks_uri is not None
                jwks = self._http.get_json(jwks_uri, "JWKS")
                try:
                    # joserfc types its argument as a TypedDict; a fetched JWKS is a plain dict,
                    # which the import itself checks (its errors are caught below).
                    self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
                except (JoseError, KeyError, ValueError, TypeError) as exc:
                    raise ProviderUnavailable(
                        "JWKS does not parse", provider=self.provider.id
                    ) from exc
                self._keys_at = self._clock()
            assert self._keys is not None
            return self._keys
