"""Start the development identity provider as a real process and drive it from tests.

    with start_dev_idp(clients=["gateway:s3cret:http://127.0.0.1:8080/callback"]) as idp:
        metadata = requests.get(f"{idp.url}/.well-known/openid-configuration").json()
        idp.set_faults(token_endpoint="error503")

``submit_login_form`` plays the user at the provider's login page, for tests that drive a
browser-like ``requests.Session`` through a login.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import requests

from devtools.processes import ManagedProcess, free_port, port_open

DEFAULT_CLIENT = "test-client:test-secret:http://127.0.0.1:8080/callback"
LISTENING_LINE = "dev-idp listening on "
ADMIN_TIMEOUT_SECONDS = 10.0


class DevIdp:
    """A running provider: its URLs plus the ``/_admin/`` controls."""

    def __init__(self, process: ManagedProcess, port: int, mode: str, issuer_path: str = ""):
        self._process = process
        self.port = port
        self.mode = mode
        self.url = f"http://127.0.0.1:{port}"
        self.issuer = self.url + issuer_path

    # Lifecycle

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL, as in a crash: the port refuses connections from now on."""
        self._process.signal(signal.SIGKILL)
        assert self._process.process is not None
        self._process.process.wait(ADMIN_TIMEOUT_SECONDS)

    def restart(self, timeout: float = 15.0) -> None:
        """Start the provider again on its port, with the same settings. It is a new process:
        its sessions and tokens from before are gone."""
        self._process.start(lambda: port_open(self.port), timeout=timeout)

    def output(self) -> str:
        """The provider's stdout and stderr so far (request log included)."""
        return self._process.output()

    def __enter__(self) -> DevIdp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Admin controls

    def stats(self) -> dict[str, Any]:
        """Counts of token requests, refreshes, revocations, logouts, deliveries."""
        return self._admin("GET", "stats")

    def reset(self) -> None:
        """Clear the stats and any injected fault."""
        self._admin("POST", "reset")

    def rotate_keys(self, *, drop_old: bool = False) -> dict[str, Any]:
        """Make a new signing key current; returns ``{"kid": new, "kids": [...]}``."""
        return self._admin("POST", "rotate-keys", params={"drop_old": "1"} if drop_old else None)

    def set_faults(
        self, token_endpoint: str = "ok", *, slow_seconds: float | None = None
    ) -> dict[str, Any]:
        """Make ``/token`` answer normally (``ok``), with 503 (``error503``) or ``slow``."""
        body: dict[str, Any] = {"token_endpoint": token_endpoint}
        if slow_seconds is not None:
            body["slow_seconds"] = slow_seconds
        return self._admin("POST", "faults", json=body)

    def token_info(self, access_tokens: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """What the provider knows of each access token (None: never issued by it)."""
        tokens: dict[str, dict[str, Any] | None] = self._admin(
            "POST", "token-info", json={"access_tokens": list(access_tokens)}
        )["tokens"]
        return tokens

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        alg: str | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """A JWT over ``claims`` signed with the provider's real key (for forged tokens)."""
        body: dict[str, Any] = {"claims": dict(claims)}
        if kid is not None:
            body["kid"] = kid
        if alg is not None:
            body["alg"] = alg
        if header is not None:
            body["header"] = dict(header)
        token: str = self._admin("POST", "sign", json=body)["token"]
        return token

    def backchannel_logout(
        self, sid: str, *, sub: str | None = None, client_id: str | None = None
    ) -> list[dict[str, Any]]:
        """End IdP session ``sid`` and POST a logout token; returns the delivery outcomes."""
        body = {"sid": sid, "sub": sub, "client_id": client_id}
        deliveries: list[dict[str, Any]] = self._admin(
            "POST", "backchannel-logout", json={k: v for k, v in body.items() if v}
        )["deliveries"]
        return deliveries

    def _admin(self, method: str, name: str, **kwargs: Any) -> dict[str, Any]:
        response = requests.request(
            method, f"{self.url}/_admin/{name}", timeout=ADMIN_TIMEOUT_SECONDS, **kwargs
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def start_dev_idp(
    *,
    mode: str = "oidc",
    clients: Sequence[str] = (DEFAULT_CLIENT,),
    users: Sequence[str] | None = None,
    access_token_ttl: int = 300,
    backchannel_logout_uri: str | None = None,
    post_logout_redirect_uris: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    timeout: float = 15.0,
    issuer_path: str = "",
) -> DevIdp:
    """Start ``python -m devtools.dev_idp`` on a free port and wait for its listening line.

    ``clients`` and ``users`` use the command-line specs
    (``ID:SECRET:URI[,URI2]``, ``USER:PASSWORD[:email[:Full Name[:g1+g2]]]``); without
    ``users`` the provider has ``alice``/``alice``; ``issuer_path`` follows the URL in its
    issuer (``"/"``: a trailing slash). Raises RuntimeError with the process
    output if it exits or does not listen within ``timeout`` seconds.
    """
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "devtools.dev_idp",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--issuer",
        f"http://127.0.0.1:{port}{issuer_path}",
        "--mode",
        mode,
        "--access-token-ttl",
        str(access_token_ttl),
    ]
    for client in clients:
        argv += ["--client", client]
    for user in users or ():
        argv += ["--user", user]
    for uri in post_logout_redirect_uris:
        argv += ["--post-logout-redirect-uri", uri]
    if backchannel_logout_uri:
        argv += ["--backchannel-logout-uri", backchannel_logout_uri]
    argv += list(extra_args)

    process = ManagedProcess(f"dev-idp-{mode}-{port}", argv)
    process.start(lambda: LISTENING_LINE in process.output(), timeout=timeout)
    return DevIdp(process, port, mode, issuer_path)


def submit_login_form(
    session: requests.Session,
    login_page: requests.Response,
    *,
    username: str = "alice",
    password: str = "alice",
    action: str = "login",
) -> requests.Response:
    """Fill in and submit the provider's login form; redirects are not followed."""
    form = _LoginForm()
    form.feed(login_page.text)
    if form.action is None:
        raise AssertionError(f"no login form on {login_page.url}:\n{login_page.text[:2000]}")
    fields = [*form.hidden, ("username", username), ("password", password), ("action", action)]
    return session.post(
        urljoin(login_page.url, form.action), data=fields, allow_redirects=False, timeout=10
    )


class _LoginForm(HTMLParser):
    """The first form's action and hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: list[tuple[str, str]] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
            self._in_form = True
        elif tag == "input" and self._in_form and attributes.get("type") == "hidden":
            self.hidden.append((attributes.get("name", ""), attributes.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
