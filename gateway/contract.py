"""What Envoy, ext_authz and the login app must agree on, said once.

Envoy's side is rendered from these names (``gateway.envoy.render``); ext_authz and the login
app read requests by them. A name changed here changes both sides together; a name written
anywhere else is a second copy that can drift.
"""

from __future__ import annotations

# ---- how Envoy reaches ext_authz ------------------------------------------------------------

# HTTP mode: Envoy puts this before the original path (``http_service.path_prefix``), and
# ext_authz takes it off again to decide on the path the backend will see.
CHECK_PATH_PREFIX = "/check"
# HTTP mode: the path ext_authz answers health on, which Envoy checks each worker at when
# there are several; gRPC mode uses the standard gRPC health service instead.
HEALTH_PATH = "/healthz"
# gRPC mode: a health service name of its own that is SERVING only while ext_authz's session
# change feed is subscribed to Redis (so its memory may answer): for dashboards and tests.
# No probe may use it: "" and the Authorization service stay SERVING through a Redis outage,
# in which ext_authz still answers every check (with a 503).
SESSION_FEED_HEALTH_SERVICE = "gateway.SessionFeed"
# HTTP mode: an allowing reply names here the request headers Envoy must remove.
HEADERS_TO_REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
# gRPC mode: the ``context_extensions`` key under which each route tells ext_authz its name.
ROUTE_KEY = "route"

# ---- the request headers Envoy forwards to ext_authz ----------------------------------------

COOKIE = "cookie"
AUTHORIZATION = "authorization"
ACCEPT = "accept"
ORIGIN = "origin"
REFERER = "referer"
X_REQUESTED_WITH = "x-requested-with"
SEC_FETCH_MODE = "sec-fetch-mode"
SEC_FETCH_SITE = "sec-fetch-site"
ACCESS_CONTROL_REQUEST_METHOD = "access-control-request-method"
X_REQUEST_ID = "x-request-id"
CONTENT_TYPE = "content-type"
UPGRADE = "upgrade"

# Our Envoy sends ext_authz these and no others (never the body): ext_authz reads all but
# SEC_FETCH_SITE and CONTENT_TYPE, which are forwarded though nothing reads them today. The
# order is the order of the rendered ``allowed_headers`` and of the deploy manifests' lists.
FORWARDED_REQUEST_HEADERS = (
    COOKIE, AUTHORIZATION, ACCEPT, ORIGIN, REFERER, X_REQUESTED_WITH, SEC_FETCH_MODE,
    SEC_FETCH_SITE, ACCESS_CONTROL_REQUEST_METHOD, X_REQUEST_ID, CONTENT_TYPE, UPGRADE,
)  # fmt: skip

# HTTP mode: what a denial may show the client (a login redirect, a challenge, an expired
# cookie); Envoy drops any other header of a denying reply.
DENIAL_CLIENT_HEADERS = (
    "location", "www-authenticate", "set-cookie", "content-type", "cache-control", "retry-after",
)  # fmt: skip

# ---- what Envoy tells the login app ----------------------------------------------------------

# Set by Envoy on every request to the login app, overwriting anything a client sent: the
# client's address as Envoy saw it, which the login app's rate limits key on.
CLIENT_ADDRESS_HEADER = "x-gateway-client-address"

# ---- what the login app and ext_authz share -------------------------------------------------

# The login app's cookie binding a login attempt to the browser (``__Host-`` on https);
# ext_authz strips it like the session cookie, since no backend needs to see it.
LOGIN_BINDING_COOKIE = "gateway_login"

# ---- where ext_authz sends a browser to log in -----------------------------------------------

# Under ``login_app.path_prefix``; the query names where to return and, optionally, the one
# provider the route needs.
LOGIN_PATH = "/login"
REDIRECT_URL_PARAMETER = "redirect_url"
PROVIDER_PARAMETER = "provider"
