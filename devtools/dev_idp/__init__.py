"""A development identity provider: a real OAuth 2.0 / OpenID Connect server process.

It stands in for Keycloak (``--mode oidc``) or GitLab/JupyterHub (``--mode oauth2``)
during ``make run`` and in integration tests, built on Authlib's authorization-server
components with in-memory storage. Never deploy it: it has no persistence, no CSRF
protection on its login form, and unauthenticated ``/_admin/`` endpoints.

Layout (the request's path through it)::

    cli.py                  flags -> IdpConfig, bind, serve, SIGTERM
    app.py                  create_app(config): wires everything below
    views/                  HTTP: authorize, tokens (token/revoke/userinfo),
                            end_session, discovery (+ JWKS), admin
    authorization_server.py Authlib server: grants, endpoints, token generation
    grants.py, endpoints.py Authlib subclasses bound to the store
    store.py, models.py     in-memory records behind one lock
    keys.py                 RS256 key ring (rotation, JWKS, signing)
    logout.py, backchannel.py  ending sessions, back-channel logout tokens
    stats.py, faults.py     what tests observe and inject
"""

from devtools.dev_idp.app import create_app
from devtools.dev_idp.config import IdpConfig

__all__ = ["IdpConfig", "create_app"]
