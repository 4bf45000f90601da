"""An identity provider's configuration: endpoints or discovery, client authentication,
claims, presets, and the environment variables that carry its secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.presets import apply_preset
from gateway.config.values import Duration, _http_url, _Model, is_loopback

_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


# redis.key_prefix starts every key and SCAN pattern: no hash tag braces (they would put all
# sessions in one cluster slot), no glob characters, no spaces.
# Authorization request parameters that make the flow what it is (code + PKCE to our own
# callback, our state and nonce): extra parameters may never replace them.
_OWNED_AUTHORIZE_PARAMETERS = frozenset(
    {"response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
     "code_challenge_method", "code_verifier", "request", "request_uri", "response_mode"}
)  # fmt: skip


def _claim_paths(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _check_claim_paths(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("name at least one claim")
    for path in value:
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"{path!r} is not a claim path (names joined by '.')")
    return value


ClaimPaths = Annotated[
    tuple[str, ...], BeforeValidator(_claim_paths), AfterValidator(_check_claim_paths)
]


class ClaimNames(_Model):
    """Where the identity's parts are found in the merged ID-token and userinfo claims.

    Each is a list of claim paths, the first present one wins; a path's dots walk into
    nested objects (Keycloak's ``realm_access.roles``). A single string is a list of one.
    """

    subject: ClaimPaths = Field(("sub", "id"), description="The user's stable id.")
    email: ClaimPaths = Field(("email",), description="The user's email address.")
    name: ClaimPaths = Field(("name", "preferred_username"), description="The display name.")
    groups: ClaimPaths = Field(
        ("groups",), description="Group names: a list of strings, or one string."
    )


class Provider(_Model):
    id: str = Field(description="Short name routes refer to (lower-case, digits, - and _).")
    preset: Literal["keycloak", "gitlab", "github", "jupyterhub", "google", "generic"] | None = (
        Field(
            None,
            description="Fill the keys left out with this provider's usual values (endpoints "
            'from base_url, scopes, claims, auth method); see "Identity providers".',
        )
    )
    base_url: str | None = Field(
        None,
        description="With a preset: where the provider is (Keycloak: the realm URL; GitLab, "
        "GitHub Enterprise, JupyterHub: the server's URL).",
    )
    kind: Literal["oidc", "oauth2"] = Field(
        description="oidc: discovery, ID tokens, logout; oauth2: explicit endpoints (GitLab, "
        "JupyterHub). A preset sets it."
    )
    client_id: str = Field(min_length=1, description="This gateway's client id there.")
    client_secret: str | None = Field(
        None, repr=False, description="Set with GATEWAY_PROVIDER_<ID>_CLIENT_SECRET."
    )
    token_endpoint_auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] | None
    ) = Field(
        None,
        description="How the client authenticates at the token and revocation endpoints. "
        "Default: oidc, the first the discovery document supports of private_key_jwt (with a "
        "key), client_secret_basic, client_secret_post (with a secret), none; oauth2, "
        "client_secret_basic with a secret, private_key_jwt with a key, else none.",
    )
    private_key_file: str | None = Field(
        None,
        description="private_key_jwt (RFC 7523): PEM file of the client's RSA or EC private key; "
        "or set GATEWAY_PROVIDER_<ID>_PRIVATE_KEY to the PEM text.",
    )
    private_key: str | None = Field(
        None, repr=False, description="Set with GATEWAY_PROVIDER_<ID>_PRIVATE_KEY (PEM)."
    )
    private_key_id: str | None = Field(
        None, description="private_key_jwt: the `kid` the provider knows the key by."
    )
    scopes: tuple[str, ...] = Field((), description="Scopes to ask for.")
    refresh_scopes: tuple[str, ...] | None = Field(
        None,
        description="Scopes sent with a refresh; null sends none, so the provider keeps the "
        "granted ones (RFC 6749 §6).",
    )
    authorize_params: dict[str, str] = Field(
        default_factory=dict,
        description="Extra authorization request parameters (e.g. Google's access_type).",
    )
    claims: ClaimNames = Field(ClaimNames(), description="Where id, email, name and groups are.")
    userinfo: bool = Field(
        True,
        description="oidc: fetch the userinfo endpoint after the code exchange and merge it "
        "with the ID token's claims (its `sub` must match).",
    )
    login_sequence: bool = Field(
        True,
        description="Part of the browser login sequence; false: logged in on demand, when a "
        "route needs its token (the first provider, the primary, must be in the sequence).",
    )
    optional: bool = Field(
        False,
        description="In the sequence but not the primary: a login goes on without it while it "
        "is down (the session gets no tokens for it; a route that needs them logs in to it on "
        "demand).",
    )
    issuer: str | None = Field(
        None,
        description="oidc: the issuer, exactly as the provider writes it; endpoints come from "
        "discovery. oauth2: optional, checks the authorization reply's `iss` (RFC 9207).",
    )
    authorize_url: str | None = Field(None, description="oauth2: the authorization endpoint.")
    token_url: str | None = Field(None, description="oauth2: the token endpoint.")
    userinfo_url: str | None = Field(
        None, description="oauth2: where the identity comes from when this provider is primary."
    )
    revocation_url: str | None = Field(
        None, description="RFC 7009 endpoint; tokens are revoked there on logout."
    )
    token_max_lifetime: Duration | None = Field(
        None, description="Lifetime given to tokens that arrive without an expiry."
    )
    _signing_key: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        return apply_preset(value) if isinstance(value, dict) else value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _PROVIDER_ID.match(value):
            raise ValueError("must be lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("authorize_params")
    @classmethod
    def _authorize_params(cls, value: dict[str, str]) -> dict[str, str]:
        owned = sorted(_OWNED_AUTHORIZE_PARAMETERS & {name.lower() for name in value})
        if owned:
            raise ValueError(f"the gateway sets {', '.join(owned)} itself")
        return value

    @field_validator(
        "issuer", "authorize_url", "token_url", "userinfo_url", "revocation_url", "base_url"
    )
    @classmethod
    def _urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        url = _http_url(value, allow_path=True)
        if url.startswith("http://") and not is_loopback(urlsplit(url).hostname or ""):
            raise ValueError("must use https (plain http is only allowed on loopback)")
        # The issuer is compared byte for byte with ID tokens' `iss`: keep it exactly.
        return value if info.field_name == "issuer" else url

    @model_validator(mode="after")
    def _endpoints(self) -> Provider:
        if self.kind == "oidc" and not self.issuer:
            raise ValueError("an oidc provider needs issuer")
        if self.kind == "oauth2" and not (self.authorize_url and self.token_url):
            raise ValueError("an oauth2 provider needs authorize_url and token_url")
        if self.kind == "oidc" and self.claims.subject[0] != "sub":
            # Back-channel logout names users by the ID token's sub: it must be who they are.
            raise ValueError("claims.subject: an oidc provider's users are its ID tokens' sub")
        return self

    @model_validator(mode="after")
    def _client_authentication(self) -> Provider:
        method = self.token_endpoint_auth_method
        variable = provider_variable(self.id, "CLIENT_SECRET")
        if method in ("client_secret_basic", "client_secret_post") and not self.client_secret:
            raise ValueError(
                f"token_endpoint_auth_method: {method} needs a client secret (set {variable})"
            )
        if self.private_key_file and self.private_key:
            raise ValueError(
                "private_key_file: give the key as a file or in "
                f"{provider_variable(self.id, 'PRIVATE_KEY')}, not both"
            )
        if method == "private_key_jwt" and not (self.private_key or self.private_key_file):
            raise ValueError(
                "token_endpoint_auth_method: private_key_jwt needs private_key_file or "
                f"{provider_variable(self.id, 'PRIVATE_KEY')}"
            )
        if self.private_key_file or self.private_key:
            # Read and parsed once, here: a key that does not load fails at start, and a file
            # changed later cannot make the login app and ext_authz sign with different keys.
            self._signing_key = _load_signing_key(self)
        return self

    @property
    def signing_key(self) -> Any:
        """The private_key_jwt signing key (a joserfc RSA or EC key), None without one."""
        return self._signing_key


def _load_signing_key(provider: Provider) -> Any:
    """The provider's private_key_jwt signing key (a joserfc key), from its file or the
    environment. joserfc is imported here, not at the top: every process loads this module,
    and only configurations with a key need it."""
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    if provider.private_key_file:
        try:
            text = Path(provider.private_key_file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"private_key_file: cannot read it ({exc.__class__.__name__})"
            ) from None
    else:
        text = provider.private_key or ""
    for key_type in (RSAKey, ECKey):
        try:
            key = key_type.import_key(text)
        except (JoseError, ValueError, TypeError):
            continue
        if key.is_private:
            return key
    raise ValueError("private_key_file: not a PEM RSA or EC private key")


def provider_variable(provider_id: str, what: str) -> str:
    """The environment variable that carries one of a provider's secrets (``CLIENT_SECRET``,
    ``PRIVATE_KEY``)."""
    return "GATEWAY_PROVIDER_" + re.sub(r"[^A-Z0-9]", "_", provider_id.upper()) + "_" + what


def provider_secret_variable(provider_id: str) -> str:
    """The environment variable that carries a provider's client secret."""
    return provider_variable(provider_id, "CLIENT_SECRET")
