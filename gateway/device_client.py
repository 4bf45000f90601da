"""Log a terminal in: the client side of the login app's device-style flow (after RFC 8628).

The CLI asks ``/auth/cli/start`` for a code, shows the person where to approve it, and polls
``/auth/cli/token`` until the approval arrives. Every failure becomes :class:`DeviceLoginError`
carrying the RFC 8628 error code (``access_denied``, ``expired_token``, ...) or one of ours
(``unavailable``, ``bad_reply``, ``insecure_url``); requests errors are translated in
:meth:`_Client.post` only.
"""

from __future__ import annotations

import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from gateway.config import is_loopback
from gateway.errors import GatewayError
from gateway.sessions.credentials import looks_like_credential

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_SECONDS = 5  # RFC 8628 §3.5
DEFAULT_TIMEOUT_SECONDS = 10.0
# A network blip or a restarting login app should not end a login the person is approving.
MAX_CONSECUTIVE_FAILURES = 3

_MESSAGES = {
    "access_denied": "the login was denied in the browser",
    "expired_token": "the code expired before it was approved; run the login again",
    "invalid_grant": "the server does not know this login any more; run the login again",
}


class DeviceLoginError(GatewayError):
    """The CLI login did not produce a token; ``error`` says why (an RFC 8628 code or ours)."""

    code = "device_login_failed"

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{message} ({error})")
        self.error = error


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class _Client:
    def __init__(self, base_url: str, timeout: float, http: requests.Session) -> None:
        self._base = base_url
        self._timeout = timeout
        self._http = http

    def post(self, path: str, data: dict[str, str] | None = None) -> requests.Response:
        try:
            return self._http.post(
                self._base + path,
                data=data,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise DeviceLoginError("unavailable", f"cannot reach {self._base}: {exc}") from exc


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DeviceLoginError(
            "bad_reply", f"the server answered HTTP {response.status_code} without a JSON object"
        )
    return body


def _checked_base_url(public_url: str) -> str:
    try:
        parts = urlsplit(public_url)
    except ValueError as exc:  # e.g. an unclosed "[" around an IPv6 address
        raise DeviceLoginError("insecure_url", f"{public_url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeviceLoginError("insecure_url", f"{public_url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # The reply carries a bearer credential: never over plain http beyond this machine.
        raise DeviceLoginError("insecure_url", f"{public_url!r} must use https")
    return public_url.rstrip("/")


def _authorization(body: dict[str, Any]) -> DeviceAuthorization:
    try:
        authorization = DeviceAuthorization(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body["verification_uri"]),
            verification_uri_complete=str(body.get("verification_uri_complete") or ""),
            expires_in=int(body["expires_in"]),
            interval=max(1, int(body.get("interval", 5))),  # RFC 8628 §3.2: default 5
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: Infinity
        raise DeviceLoginError("bad_reply", f"the start reply is malformed: {exc!r}") from exc
    return authorization


def device_login(
    public_url: str,
    *,
    open_browser: bool,
    printer: Callable[[str], object] = print,
    sleep: Callable[[float], object] = time.sleep,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    path_prefix: str = "/auth",
    http: requests.Session | None = None,
) -> str:
    """Run the CLI login against ``public_url`` and return the session credential (``gws_…``).

    ``timeout`` bounds each HTTP request; the whole login is bounded by the code's lifetime.
    """
    base_url = _checked_base_url(public_url) + path_prefix
    client = _Client(base_url, timeout, http or requests.Session())
    started = client.post("/cli/start")
    body = _json(started)
    if started.status_code != 200:
        raise DeviceLoginError(str(body.get("error") or "bad_reply"), "the server refused to start")
    authorization = _authorization(body)
    printer(
        f"To log in, open {authorization.verification_uri} and enter the code "
        f"{authorization.user_code}"
    )
    if authorization.verification_uri_complete:
        printer(f"Or open {authorization.verification_uri_complete}")
    if open_browser and authorization.verification_uri_complete.startswith(("https://", "http://")):
        webbrowser.open(authorization.verification_uri_complete)
    return _poll(client, authorization, sleep)


def _poll(
    client: _Client, authorization: DeviceAuthorization, sleep: Callable[[float], object]
) -> str:
    interval = authorization.interval
    deadline = time.monotonic() + authorization.expires_in
    failures = 0
    while True:
        # Never past the code's lifetime, however long an interval the server asks for.
        sleep(max(0.0, min(interval, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            raise DeviceLoginError("expired_token", _MESSAGES["expired_token"])
        try:
            reply = client.post(
                "/cli/token",
                {"grant_type": GRANT_TYPE, "device_code": authorization.device_code},
            )
            if reply.status_code >= 500:
                raise DeviceLoginError("unavailable", f"the server answered {reply.status_code}")
        except DeviceLoginError:
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise
            continue
        failures = 0
        body = _json(reply)
        if reply.status_code == 200:
            access_token = body.get("access_token")
            if not isinstance(access_token, str) or not looks_like_credential(access_token):
                raise DeviceLoginError("bad_reply", "the token reply holds no gateway credential")
            return access_token
        error = str(body.get("error") or "bad_reply")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_SECONDS  # for this and every later poll
            continue
        raise DeviceLoginError(error, _MESSAGES.get(error, f"the login failed: {error}"))
