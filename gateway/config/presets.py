"""Presets for the identity providers our users run: endpoints from a base URL, scopes,
claim names and the client authentication method each one expects.

A preset only fills keys the provider's configuration leaves out, so every value here can
be overridden. The facts behind each preset (paths, claim names, quirks) are the
providers' documented behaviour; README.md "Identity providers" lists the quirks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Defaults = dict[str, Any]


def _keycloak(base_url: str | None) -> Defaults:
    # base_url is the realm's URL (https://kc.example.org/realms/NAME): Keycloak's issuer.
    defaults: Defaults = {
        "kind": "oidc",
        "scopes": ["openid", "profile", "email"],
        # Keycloak's "groups" needs a Group Membership mapper on the client; realm roles are
        # claims: {groups: realm_access.roles} once "Add to userinfo" is on for the roles scope.
        "claims": {"groups": ["groups"]},
    }
    if base_url:
        defaults["issuer"] = base_url.rstrip("/")  # Keycloak's issuers end without one
    return defaults


def _gitlab(base_url: str | None) -> Defaults:
    base = (base_url or "https://gitlab.com").rstrip("/")
    return {
        "kind": "oauth2",
        "authorize_url": f"{base}/oauth/authorize",
        "token_url": f"{base}/oauth/token",
        # The REST user: numeric id, username, name, email (the OIDC userinfo needs `openid`).
        "userinfo_url": f"{base}/api/v4/user",
        "revocation_url": f"{base}/oauth/revoke",
        "scopes": ["api", "read_user"],
        "claims": {"subject": ["id"], "name": ["name", "username"]},
    }


def _github(base_url: str | None) -> Defaults:
    base = (base_url or "https://github.com").rstrip("/")
    # github.com serves its API on its own host; GitHub Enterprise Server under /api/v3.
    api = "https://api.github.com" if base == "https://github.com" else f"{base}/api/v3"
    return {
        "kind": "oauth2",
        "authorize_url": f"{base}/login/oauth/authorize",
        "token_url": f"{base}/login/oauth/access_token",
        "userinfo_url": f"{api}/user",
        "scopes": ["read:user", "user:email"],
        "token_endpoint_auth_method": "client_secret_post",
        "claims": {"subject": ["id"], "name": ["name", "login"]},
    }


def _jupyterhub(base_url: str | None) -> Defaults:
    defaults: Defaults = {
        "kind": "oauth2",
        # JupyterHub's token endpoint reads the client's credentials from the form body only.
        "token_endpoint_auth_method": "client_secret_post",
        "claims": {"subject": ["name"], "name": ["name"], "groups": ["groups"]},
    }
    if base_url:
        base = base_url.rstrip("/")
        defaults.update(
            authorize_url=f"{base}/hub/api/oauth2/authorize",
            token_url=f"{base}/hub/api/oauth2/token",
            userinfo_url=f"{base}/hub/api/user",
        )
    return defaults


def _google(base_url: str | None) -> Defaults:
    return {
        "kind": "oidc",
        "issuer": base_url or "https://accounts.google.com",
        "scopes": ["openid", "email", "profile"],
        # Google issues a refresh token only for offline access, and again only on consent.
        "authorize_params": {"access_type": "offline", "prompt": "consent"},
    }


def _generic(base_url: str | None) -> Defaults:
    return {}


PRESETS: dict[str, Callable[[str | None], Defaults]] = {
    "keycloak": _keycloak,
    "gitlab": _gitlab,
    "github": _github,
    "jupyterhub": _jupyterhub,
    "google": _google,
    "generic": _generic,
}

# Presets that cannot name their endpoints without being told where the provider is.
NEEDS_BASE_URL = frozenset({"jupyterhub"})


def apply_preset(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the preset's defaults under every key it does not set itself."""
    preset = raw.get("preset")
    if not isinstance(preset, str) or preset not in PRESETS:
        return raw  # no preset, or an unknown one that field validation reports
    base_url = raw.get("base_url")
    base = base_url if isinstance(base_url, str) and base_url else None
    if preset in NEEDS_BASE_URL and base is None:
        raise ValueError(f"base_url: the {preset} preset needs the provider's base URL")
    merged = dict(raw)
    for key, value in PRESETS[preset](base).items():
        if key == "claims" and isinstance(merged.get("claims"), dict):
            merged["claims"] = {**value, **merged["claims"]}
        else:
            merged.setdefault(key, value)
    return merged
