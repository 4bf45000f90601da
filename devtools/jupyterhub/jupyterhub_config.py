"""JupyterHub configuration for the gateway's tests: JupyterHub as the gateway's OAuth2
provider, and its API as a backend behind the gateway.

JupyterHub executes this file with ``c`` from ``get_config()``. Everything that changes per
run (ports, data directory, users, the gateway's client) comes from the JSON file named by
``GATEWAY_JUPYTERHUB_SETTINGS``, written by tests/support/jupyterhub.py:

    {"directory": ..., "public_port": ..., "hub_port": ..., "proxy_api_port": ...,
     "proxy_command": [...], "users": {"alice": "password", ...},
     "service": {"name": ..., "client_id": "service-...", "client_secret": ...,
                 "redirect_uri": ...},
     "service_users": ["alice", ...], "groups": {"group": ["alice", ...]},
     "oauth_token_expires_in": null}

What the gateway needs from a JupyterHub, whatever else it runs:

- a service with ``oauth_client_id``, ``api_token`` (the client secret), ``oauth_redirect_uri``
  (the gateway's ``/auth/callback``) and ``oauth_no_confirm`` (no consent page);
- a role granting ``access:services!service=<name>`` to the users who log in through the
  gateway: without it JupyterHub refuses them at its authorize endpoint (403).
"""

import json
import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from traitlets import Dict

# JupyterHub defines get_config for the config files it executes.
c = get_config()  # type: ignore[name-defined]  # noqa: F821
settings = json.loads(Path(os.environ["GATEWAY_JUPYTERHUB_SETTINGS"]).read_text())
directory = Path(settings["directory"])


class KnownUsersAuthenticator(Authenticator):
    """Users with fixed passwords: a login form with real checking, and no system users."""

    passwords = Dict(config=True, help="user name -> password")

    async def authenticate(self, handler, data):
        expected = self.passwords.get(data.get("username", ""))
        given = data.get("password", "")
        if expected is not None and secrets.compare_digest(expected.encode(), given.encode()):
            return data["username"]
        return None


c.JupyterHub.authenticator_class = KnownUsersAuthenticator
c.KnownUsersAuthenticator.passwords = settings["users"]
c.Authenticator.allowed_users = set(settings["users"])

# Every file JupyterHub and its proxy write goes to the run's own directory; their defaults
# are relative to the working directory (the repository).
c.JupyterHub.db_url = f"sqlite:///{directory / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(directory / "cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(directory / "proxy.pid")

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["public_port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = settings["proxy_command"]
c.ConfigurableHTTPProxy.auth_token = secrets.token_hex(32)

# The gateway always sends a PKCE challenge (S256): insist on it, so the tests show it works.
c.JupyterHub.oauth_require_pkce = True
if settings.get("oauth_token_expires_in"):
    c.JupyterHub.oauth_token_expires_in = settings["oauth_token_expires_in"]

c.JupyterHub.load_groups = {
    group: {"users": members} for group, members in settings.get("groups", {}).items()
}

service = settings["service"]
c.JupyterHub.services = [
    {
        "name": service["name"],
        "oauth_client_id": service["client_id"],
        "api_token": service["client_secret"],
        "oauth_redirect_uri": service["redirect_uri"],
        "oauth_no_confirm": True,
        "display": False,
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "gateway-users",
        "description": "May log in to the gateway through JupyterHub",
        "scopes": [f"access:services!service={service['name']}"],
        "users": settings["service_users"],
    },
    # The service's own API token is its client secret. With `tokens` it may delete the
    # OAuth tokens JupyterHub issued to it (DELETE /hub/api/users/<name>/tokens/<id>), the
    # only revocation JupyterHub offers a client: it has no RFC 7009 endpoint. There is no
    # delete-only scope: `tokens` also creates tokens carrying any user's own permissions,
    # so whoever holds the client secret can then act as any user.
    {
        "name": "gateway-token-revoker",
        "description": "May delete the tokens JupyterHub issued to the gateway",
        "scopes": ["tokens"],
        "services": [service["name"]],
    },
]
