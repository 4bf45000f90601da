"""What the provider client sends and accepts, request by request: client authentication,
refresh scope, issuers, RFC 9207 `iss`, userinfo and claim names, presets.

The independent providers (oidc-provider, JupyterHub) prove the same through the real
stack; these pin down each rule alone, against a recorded HTTP exchange.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from gateway.config import Provider, parse_config
from gateway.errors import (
    ClientRefused,
    ConfigError,
    ProviderRejected,
    ProviderUnavailable,
    TokenInvalid,
)
from gateway.providers.client import ProviderClient
from gateway.providers.metadata import discovery_url
from gateway.sessions.model import TokenSet
from tests.support.http_replies import Exchange, record_exchange

CALLBACK = "https://gw.test/auth/callback"


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Exchange:
    return record_exchange(monkeypatch)


def oauth2(**settings: Any) -> ProviderClient:
    values: dict[str, Any] = {
        "id": "p",
        "kind": "oauth2",
        "client_id": "gw",
        "client_secret": "s3cret",
        "authorize_url": "https://p.test/authorize",
        "token_url": "https://p.test/token",
        "userinfo_url": "https://p.test/userinfo",
        "revocation_url": "https://p.test/revoke",
        **settings,
    }
    return ProviderClient(Provider.model_validate(values), CALLBACK)


def discovery(issuer: str, **extra: Any) -> dict[str, Any]:
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/auth",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/me",
        "jwks_uri": f"{base}/jwks",
        **extra,
    }


def oidc(exchange: Exchange, issuer: str = "https://op.test", meta: Any = None, **settings: Any):
    exchange.replies[discovery_url(issuer)] = (200, meta or discovery(issuer))
    values = {"id": "o", "kind": "oidc", "client_id": "gw", "issuer": issuer, **settings}
    return ProviderClient(Provider.model_validate(values), CALLBACK)


TOKENS = {"access_token": "at-1", "refresh_token": "rt-2", "expires_in": 300}
OLD = TokenSet("at-0", refresh_token="rt-1", scope="openid offline_access")


# ---- client authentication ---------------------------------------------------------------


def test_client_secret_post_sends_the_credentials_in_the_body_and_no_basic_header(
    exchange: Exchange,
) -> None:
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    oauth2(token_endpoint_auth_method="client_secret_post").exchange_code("c", "v" * 43)
    assert exchange.form()["client_id"] == "gw"
    assert exchange.form()["client_secret"] == "s3cret"
    assert exchange.basic_credentials() is None


def test_client_secret_basic_sends_the_credentials_in_the_header_only(exchange: Exchange) -> None:
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    oauth2(token_endpoint_auth_method="client_secret_basic").exchange_code("c", "v" * 43)
    assert exchange.basic_credentials() == ("gw", "s3cret")
    assert "client_secret" not in exchange.form()


def test_a_public_client_sends_its_id_and_no_secret(exchange: Exchange) -> None:
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    oauth2(client_secret=None).exchange_code("c", "v" * 43)
    assert exchange.form()["client_id"] == "gw"
    assert exchange.form()["code_verifier"] == "v" * 43  # PKCE is what protects it
    assert exchange.basic_credentials() is None and "client_secret" not in exchange.form()


def test_private_key_jwt_sends_an_assertion_the_provider_can_verify(
    exchange: Exchange, tmp_path: Any
) -> None:
    key = RSAKey.generate_key(2048)
    pem = tmp_path / "client.pem"
    pem.write_bytes(key.as_pem(private=True))
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    client = oauth2(
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key_file=str(pem),
        private_key_id="client-key-1",
    )
    client.refresh(OLD, time.time())
    form = exchange.form()
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assertion = jwt.decode(form["client_assertion"], RSAKey.import_key(key.as_dict(private=False)))
    assert assertion.header["kid"] == "client-key-1" and assertion.header["alg"] == "RS256"
    claims = assertion.claims
    assert claims["iss"] == claims["sub"] == "gw"
    assert claims["aud"] == "https://p.test/token"
    assert claims["exp"] > time.time() and claims["jti"]
    assert exchange.basic_credentials() is None and "client_secret" not in form


def test_revocation_authenticates_like_the_token_endpoint(exchange: Exchange) -> None:
    exchange.replies["https://p.test/revoke"] = (200, {})
    assert oauth2(token_endpoint_auth_method="client_secret_post").revoke(OLD)
    assert [exchange.form(i)["token_type_hint"] for i in (0, 1)] == [
        "refresh_token",
        "access_token",
    ]
    assert all(exchange.form(i)["client_secret"] == "s3cret" for i in (0, 1))
    assert all(exchange.basic_credentials(i) is None for i in (0, 1))


@pytest.mark.parametrize(
    ("supported", "expected"),
    [
        (None, "client_secret_basic"),  # OIDC Discovery: the default when the list is absent
        (["client_secret_post"], "client_secret_post"),
        (["private_key_jwt", "client_secret_basic", "client_secret_post"], "client_secret_basic"),
    ],
)
def test_an_oidc_provider_s_default_method_comes_from_discovery(
    exchange: Exchange, supported: list[str] | None, expected: str
) -> None:
    extra = {} if supported is None else {"token_endpoint_auth_methods_supported": supported}
    client = oidc(exchange, meta=discovery("https://op.test", **extra), client_secret="s")
    assert client.auth_method() == expected


def test_a_provider_supporting_none_of_our_methods_is_a_clear_error(exchange: Exchange) -> None:
    meta = discovery("https://op.test", token_endpoint_auth_methods_supported=["tls_client_auth"])
    client = oidc(exchange, meta=meta, client_secret="s")
    with pytest.raises(ClientRefused, match="token_endpoint_auth_method"):
        client.auth_method()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token_endpoint_auth_method": "client_secret_post", "client_secret": None},
         "GATEWAY_PROVIDER_P_CLIENT_SECRET"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "GATEWAY_PROVIDER_P_PRIVATE_KEY"),
        ({"private_key": "not a key"}, "not a PEM RSA or EC private key"),
        ({"private_key_file": "/nonexistent/key.pem"}, "cannot read it"),
        ({"preset": "jupyterhub"}, "base_url: the jupyterhub preset needs"),
        ({"claims": {"groups": "realm_access..roles"}}, "not a claim path"),
        ({"preset": "nextcloud"}, "preset"),
    ],
)  # fmt: skip
def test_client_settings_that_cannot_work_fail_at_load_naming_the_key(
    settings: dict[str, Any], message: str
) -> None:
    provider = {
        "id": "p",
        "kind": "oauth2",
        "client_id": "gw",
        "client_secret": "s",
        "authorize_url": "https://p.test/a",
        "token_url": "https://p.test/t",
        **settings,
    }
    raw = {
        "public_url": "https://gw.test",
        "session": {"secret_keys": ["k" * 32]},
        "providers": [provider],
        "routes": [{"name": "r", "prefix": "/r/", "upstream": "http://127.0.0.1:1"}],
    }
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert "providers[0]" in str(raised.value) and message in str(raised.value)


def test_a_private_key_from_the_environment_is_used_and_never_shown() -> None:
    key = ECKey.generate_key("P-256").as_pem(private=True).decode()
    raw = {
        "public_url": "https://gw.test",
        "session": {"secret_keys": ["k" * 32]},
        "providers": [
            {"id": "kc", "kind": "oidc", "issuer": "https://op.test", "client_id": "gw",
             "token_endpoint_auth_method": "private_key_jwt"}
        ],
        "routes": [{"name": "r", "prefix": "/r/", "upstream": "http://127.0.0.1:1"}],
    }  # fmt: skip
    config = parse_config(raw, {"GATEWAY_PROVIDER_KC_PRIVATE_KEY": key})
    assert config.provider("kc").private_key == key
    assert "PRIVATE KEY" not in repr(config)


# ---- refresh -----------------------------------------------------------------------------


def test_a_refresh_sends_no_scope_so_the_provider_keeps_what_it_granted(
    exchange: Exchange,
) -> None:
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    fresh = oauth2(scopes=["api", "offline_access"]).refresh(OLD, time.time())
    assert exchange.form() == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    assert fresh.refresh_token == "rt-2" and fresh.scope == OLD.scope


def test_refresh_scopes_are_sent_when_configured(exchange: Exchange) -> None:
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    oauth2(refresh_scopes=["api"]).refresh(OLD, time.time())
    assert exchange.form()["scope"] == "api"


def test_a_refresh_refused_as_invalid_scope_is_a_rejection_with_its_code(
    exchange: Exchange,
) -> None:
    exchange.replies["https://p.test/token"] = (400, {"error": "invalid_scope"})
    with pytest.raises(ProviderRejected) as raised:
        oauth2().refresh(OLD, time.time())
    assert raised.value.error == "invalid_scope"


# ---- issuers -----------------------------------------------------------------------------


def test_an_issuer_with_a_trailing_slash_is_discovered_and_kept_exactly(
    exchange: Exchange,
) -> None:
    client = oidc(exchange, issuer="https://op.test/realms/r/")
    endpoints = client.endpoints()
    assert str(exchange.requests[0].url) == (
        "https://op.test/realms/r/.well-known/openid-configuration"
    )
    assert endpoints.issuer == "https://op.test/realms/r/"


def test_discovery_naming_the_issuer_without_its_slash_is_refused(exchange: Exchange) -> None:
    client = oidc(exchange, issuer="https://op.test/", meta=discovery("https://op.test"))
    with pytest.raises(ProviderUnavailable, match="another issuer"):
        client.endpoints()


def test_the_authorization_reply_iss_must_name_the_provider(exchange: Exchange) -> None:
    client = oidc(exchange)
    client.check_reply_issuer("https://op.test")
    client.check_reply_issuer(None)  # metadata does not promise one
    with pytest.raises(TokenInvalid, match="another issuer"):
        client.check_reply_issuer("https://attacker.test")


def test_the_iss_parameter_is_required_where_the_metadata_promises_it(exchange: Exchange) -> None:
    meta = discovery("https://op.test", authorization_response_iss_parameter_supported=True)
    client = oidc(exchange, meta=meta)
    with pytest.raises(TokenInvalid, match="no iss"):
        client.check_reply_issuer(None)
    client.check_reply_issuer("https://op.test")


def test_an_oauth2_provider_checks_iss_against_its_configured_issuer() -> None:
    oauth2().check_reply_issuer("https://anything.test")  # no issuer known: nothing to check
    client = oauth2(issuer="https://p.test")
    client.check_reply_issuer("https://p.test")
    with pytest.raises(TokenInvalid):
        client.check_reply_issuer("https://other.test")


# ---- identity ----------------------------------------------------------------------------


def id_claims(**claims: Any) -> dict[str, Any]:
    return {"iss": "https://op.test", "aud": "gw", "sub": "u-1", "sid": "s-9", **claims}


def test_oidc_identity_merges_userinfo_with_the_id_token(exchange: Exchange) -> None:
    client = oidc(exchange)
    exchange.replies["https://op.test/me"] = (
        200,
        {"sub": "u-1", "email": "zoe@example.org", "name": "Zoë", "groups": ["staff"]},
    )
    identity = client.identity("at-1", id_claims())
    assert (identity.subject, identity.email, identity.name) == ("u-1", "zoe@example.org", "Zoë")
    assert identity.groups == ("staff",) and identity.provider_session_id == "s-9"
    assert exchange.requests[-1].headers["Authorization"] == "Bearer at-1"


def test_userinfo_about_another_subject_is_refused(exchange: Exchange) -> None:
    client = oidc(exchange)
    exchange.replies["https://op.test/me"] = (200, {"sub": "u-2", "email": "mallory@x.test"})
    with pytest.raises(TokenInvalid, match="another subject"):
        client.identity("at-1", id_claims())


def test_userinfo_can_be_turned_off(exchange: Exchange) -> None:
    client = oidc(exchange, userinfo=False)
    identity = client.identity("at-1", id_claims(email="a@b.test"))
    assert identity.email == "a@b.test"
    assert not any(str(r.url).endswith("/me") for r in exchange.requests)


def test_nested_and_fallback_claim_names(exchange: Exchange) -> None:
    client = oidc(
        exchange,
        userinfo=False,
        claims={"groups": "realm_access.roles", "name": ["display", "preferred_username"]},
    )
    claims = id_claims(realm_access={"roles": ["admin", 7, "dev"]}, preferred_username="zoe")
    identity = client.identity("at-1", claims)
    assert identity.groups == ("admin", "dev") and identity.name == "zoe"


def test_a_single_string_group_claim_is_one_group(exchange: Exchange) -> None:
    client = oidc(exchange, userinfo=False)
    assert client.identity("at", id_claims(groups="staff")).groups == ("staff",)


def test_an_oidc_subject_other_than_sub_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="sub"):
        Provider.model_validate(
            {"id": "o", "kind": "oidc", "client_id": "gw", "issuer": "https://op.test",
             "claims": {"subject": "email"}}
        )  # fmt: skip


# ---- presets -----------------------------------------------------------------------------


def test_the_jupyterhub_preset_names_its_endpoints_and_posts_credentials(
    exchange: Exchange,
) -> None:
    provider = Provider.model_validate(
        {"id": "hub", "preset": "jupyterhub", "base_url": "https://hub.test/",
         "client_id": "service-gateway", "client_secret": "s"}
    )  # fmt: skip
    assert provider.kind == "oauth2"
    assert provider.token_url == "https://hub.test/hub/api/oauth2/token"
    client = ProviderClient(provider, CALLBACK)
    assert client.auth_method() == "client_secret_post"
    exchange.replies["https://hub.test/hub/api/user"] = (
        200,
        {"kind": "user", "name": "alice", "groups": ["research"], "admin": False},
    )
    identity = client.identity("t", None)
    assert identity.subject == "alice" and identity.groups == ("research",)


def test_the_gitlab_preset_names_users_by_their_numeric_id(exchange: Exchange) -> None:
    provider = Provider.model_validate(
        {"id": "gl", "preset": "gitlab", "base_url": "https://gitlab.test", "client_id": "gw"}
    )
    assert provider.authorize_url == "https://gitlab.test/oauth/authorize"
    exchange.replies["https://gitlab.test/api/v4/user"] = (
        200,
        {"id": 42, "username": "zoe", "name": "", "email": "z@x.test"},
    )
    identity = ProviderClient(provider, CALLBACK).identity("t", None)
    assert (identity.subject, identity.name, identity.email) == ("42", "zoe", "z@x.test")


def test_explicit_keys_win_over_the_preset() -> None:
    provider = Provider.model_validate(
        {"id": "gh", "preset": "github", "client_id": "gw", "client_secret": "s",
         "scopes": ["read:org"], "token_endpoint_auth_method": "client_secret_basic"}
    )  # fmt: skip
    assert provider.scopes == ("read:org",)
    assert provider.token_endpoint_auth_method == "client_secret_basic"
    assert provider.userinfo_url == "https://api.github.com/user"


def test_the_google_preset_asks_for_offline_access(exchange: Exchange) -> None:
    provider = Provider.model_validate({"id": "g", "preset": "google", "client_id": "gw"})
    exchange.replies[discovery_url("https://accounts.google.com")] = (
        200,
        discovery("https://accounts.google.com"),
    )
    url = ProviderClient(provider, CALLBACK).authorization_url(
        state="st", code_verifier="v" * 43, nonce="n"
    )
    query = parse_qs(urlsplit(url).query)
    assert query["access_type"] == ["offline"] and query["scope"] == ["openid email profile"]
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] == ["n"]


def test_an_ec_client_key_signs_its_assertions_with_es256(exchange: Exchange) -> None:
    key = ECKey.generate_key("P-256")
    exchange.replies["https://p.test/token"] = (200, TOKENS)
    client = oauth2(
        client_secret=None,
        private_key=key.as_pem(private=True).decode(),
        token_endpoint_auth_method="private_key_jwt",
    )
    client.exchange_code("c", "v" * 43)
    public = ECKey.import_key(key.as_dict(private=False))
    assert jwt.decode(exchange.form()["client_assertion"], public).header["alg"] == "ES256"


# ---- hostile or broken replies -----------------------------------------------------------


def test_the_private_key_jwt_assertion_names_the_issuer_and_lives_a_minute(
    exchange: Exchange,
) -> None:
    key = ECKey.generate_key("P-256")
    client = oidc(
        exchange,
        meta=discovery("https://op.test", revocation_endpoint="https://elsewhere.test/revoke"),
        private_key=key.as_pem(private=True).decode(),
        token_endpoint_auth_method="private_key_jwt",
    )
    exchange.replies["https://elsewhere.test/revoke"] = (200, {})
    client.revoke(OLD)
    public = ECKey.import_key(key.as_dict(private=False))
    first, second = (
        jwt.decode(exchange.form(i)["client_assertion"], public).claims for i in (1, 2)
    )
    # Not the token endpoint: the revocation host cannot replay it there as this client.
    assert first["aud"] == "https://op.test"
    assert first["exp"] - first["iat"] <= 60
    assert first["jti"] != second["jti"]


def test_a_token_endpoint_redirect_is_not_followed_with_the_refresh_token(
    exchange: Exchange,
) -> None:
    exchange.replies["https://p.test/token"] = (307, {})
    with pytest.raises(ProviderUnavailable):
        oauth2(token_endpoint_auth_method="client_secret_post").refresh(OLD, time.time())
    assert len(exchange.requests) == 1


@pytest.mark.parametrize("expires_in", [[1], {"x": 1}, 1e400])
def test_an_unreadable_expiry_is_a_provider_failure_not_a_crash(
    exchange: Exchange, expires_in: Any
) -> None:
    exchange.replies["https://p.test/token"] = (200, {**TOKENS, "expires_in": expires_in})
    with pytest.raises(ProviderUnavailable):
        oauth2().refresh(OLD, time.time())


@pytest.mark.parametrize(("status", "body"), [(429, {"error": "rate_limited"}), (408, {})])
def test_rate_limits_and_timeouts_are_transient(exchange: Exchange, status: int, body: Any) -> None:
    exchange.replies["https://p.test/token"] = (status, body)
    with pytest.raises(ProviderUnavailable):
        oauth2().refresh(OLD, time.time())


@pytest.mark.parametrize("error", ["invalid_client", "unauthorized_client"])
def test_a_refusal_of_our_own_client_is_told_apart_from_a_user_s_grant(
    exchange: Exchange, error: str
) -> None:
    exchange.replies["https://p.test/token"] = (401, {"error": error})
    with pytest.raises(ClientRefused):
        oauth2().refresh(OLD, time.time())


def test_userinfo_refusing_the_token_is_a_rejection_not_an_outage(exchange: Exchange) -> None:
    exchange.replies["https://p.test/userinfo"] = (401, {"error": "invalid_token"})
    with pytest.raises(ProviderRejected):
        oauth2().identity("at", None)


@pytest.mark.parametrize("name", ["redirect_uri", "response_type", "State", "scope"])
def test_extra_authorize_parameters_cannot_replace_the_flow_s_own(name: str) -> None:
    with pytest.raises(ValueError, match="sets"):
        Provider.model_validate(
            {"id": "p", "kind": "oauth2", "client_id": "gw", "authorize_url": "https://p.test/a",
             "token_url": "https://p.test/t", "authorize_params": {name: "x"}}
        )  # fmt: skip


def test_a_keycloak_realm_url_with_a_trailing_slash_names_keycloak_s_issuer() -> None:
    provider = Provider.model_validate(
        {"id": "kc", "preset": "keycloak", "base_url": "https://kc.test/realms/r/",
         "client_id": "gw"}
    )  # fmt: skip
    assert provider.issuer == "https://kc.test/realms/r"
