"""A real JupyterHub (with its configurable-http-proxy) on free ports: the gateway's OAuth2
provider, and a backend whose API takes the token the gateway injects.

    hub = JupyterHub(directory, users={"alice": "pw"}, service_users=["alice"])
    hub.start(redirect_uri=f"{public_url}/auth/callback")
    back = hub.log_in(browser, authorize_url, "alice", "pw")  # the gateway's callback URL
    hub.stop()

JupyterHub comes from the ``dev`` extra (PyPI), configurable-http-proxy from
devtools/jupyterhub/package.json (``npm ci`` there; ``make node-deps`` runs it). The hub's
configuration is devtools/jupyterhub/jupyterhub_config.py; the gateway is its service
``gateway`` (client id ``service-gateway``) with a role granting the ``service_users``
``access:services!service=gateway``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from devtools.processes import REPO_ROOT, ManagedProcess, free_port
from tests.support.login import ProviderLogin

CONFIG_FILE = REPO_ROOT / "devtools" / "jupyterhub" / "jupyterhub_config.py"
PROXY_COMMAND = (
    REPO_ROOT / "devtools" / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy"
)
SERVICE_NAME = "gateway"
CLIENT_ID = f"service-{SERVICE_NAME}"  # JupyterHub insists on the service- prefix
HTML = {"Accept": "text/html,application/xhtml+xml"}
HTTP_TIMEOUT = 10.0
MAX_HOPS = 10


class LoginRefused(AssertionError):
    """JupyterHub did not send the browser back: ``response`` is where it stopped."""

    def __init__(self, message: str, response: requests.Response) -> None:
        super().__init__(f"{message}: {response.status_code} at {response.url}")
        self.response = response


class JupyterHub:
    """One JupyterHub: hub, proxy and a SQLite database in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        users: Mapping[str, str],
        service_users: Sequence[str],
        groups: Mapping[str, Sequence[str]] | None = None,
        oauth_token_expires_in: int | None = None,
    ) -> None:
        self.directory = directory
        self.users = dict(users)
        self.service_users = list(service_users)
        self.groups = {name: list(members) for name, members in (groups or {}).items()}
        self.oauth_token_expires_in = oauth_token_expires_in
        self.public_port, self.hub_port, self.proxy_api_port = (free_port() for _ in range(3))
        self.url = f"http://127.0.0.1:{self.public_port}"
        # JupyterHub wants at least 8 characters; it is also the service's own API token.
        self.client_secret = secrets.token_urlsafe(32)
        self.client_id = CLIENT_ID
        self.authorize_url = f"{self.url}/hub/api/oauth2/authorize"
        self.token_url = f"{self.url}/hub/api/oauth2/token"
        self.user_url = f"{self.url}/hub/api/user"  # JupyterHub's "who am I"
        self._process: ManagedProcess | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, *, redirect_uri: str, timeout: float = 90.0) -> JupyterHub:
        """Start hub and proxy for a gateway whose callback is ``redirect_uri``; wait until
        ``/hub/api/`` answers through the proxy."""
        if not PROXY_COMMAND.exists():
            raise RuntimeError(
                f"{PROXY_COMMAND.relative_to(REPO_ROOT)} is missing: run `make node-deps`"
                " (npm ci in devtools/jupyterhub)"
            )
        settings = self.directory / "settings.json"
        # The file carries the client secret: readable by us alone.
        descriptor = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(self._settings(redirect_uri), file)
        self._process = ManagedProcess(
            "jupyterhub",
            [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)],
            env={"GATEWAY_JUPYTERHUB_SETTINGS": str(settings)},
            log_dir=self.directory,
        )
        self._process.start(self._answers, timeout=timeout)
        return self

    def _settings(self, redirect_uri: str) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "public_port": self.public_port,
            "hub_port": self.hub_port,
            "proxy_api_port": self.proxy_api_port,
            "proxy_command": [str(PROXY_COMMAND)],
            "users": self.users,
            "service": {
                "name": SERVICE_NAME,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "redirect_uri": redirect_uri,
            },
            "service_users": self.service_users,
            "groups": self.groups,
            "oauth_token_expires_in": self.oauth_token_expires_in,
        }

    def _answers(self) -> bool:
        """The hub's API answers through the proxy: both are up and the hub's route is in."""
        try:
            with urllib.request.urlopen(f"{self.url}/hub/api/", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the hub (it stops its proxy); a proxy left behind by a killed hub goes too."""
        if self._process is None:
            return
        self._process.stop(timeout=20)
        self._stop_orphaned_proxy()

    def _stop_orphaned_proxy(self) -> None:
        pid_file = self.directory / "proxy.pid"
        try:
            pid = int(pid_file.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return  # the hub removed the file, or the proxy is gone already
        if b"configurable-http-proxy" in command:
            os.kill(pid, signal.SIGTERM)

    def output(self) -> str:
        """JupyterHub's and the proxy's log so far."""
        return self._process.output() if self._process else ""

    # ---- the gateway's view ---------------------------------------------------------------

    def provider_config(self, provider_id: str = "jupyterhub", **extra: Any) -> dict[str, Any]:
        """This hub as a provider in the gateway's configuration, through the ``jupyterhub``
        preset; ``extra`` adds or overrides keys.

        The client secret is in the file: it is generated per run, and the stack's
        environment only carries the dev IdPs' secrets."""
        return {
            "id": provider_id,
            "preset": "jupyterhub",
            "base_url": self.url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            **extra,
        }

    def whoami(self, token: str) -> requests.Response:
        """``GET /hub/api/user`` straight at the hub with ``token`` (no gateway between)."""
        return requests.get(
            self.user_url, headers={"Authorization": f"token {token}"}, timeout=HTTP_TIMEOUT
        )

    def api(self, method: str, path: str, token: str) -> requests.Response:
        """A hub API request (``path`` below ``/hub/api``) with ``token``."""
        return requests.request(
            method,
            f"{self.url}/hub/api{path}",
            headers={"Authorization": f"token {token}"},
            timeout=HTTP_TIMEOUT,
        )

    # ---- the user's view ------------------------------------------------------------------

    def owns(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.url).netloc

    def log_in(
        self, browser: requests.Session, authorize_url: str, username: str, password: str
    ) -> str:
        """Open ``authorize_url`` and fill in JupyterHub's login form (its ``_xsrf``
        included) when it shows one; returns the URL JupyterHub redirects back to.

        Raises LoginRefused where JupyterHub keeps the browser: a refused password shows
        the form again, a user without access to the service gets a 403 page."""
        response = browser.get(authorize_url, headers=HTML, allow_redirects=False, timeout=10)
        submitted = False
        for _ in range(MAX_HOPS):
            if response.is_redirect:
                target = urljoin(response.url, response.headers["location"])
                if not self.owns(target):
                    return target
                response = browser.get(target, headers=HTML, allow_redirects=False, timeout=10)
                continue
            form = _LoginForm.of(response)
            if form is None or submitted:
                raise LoginRefused(f"JupyterHub did not log {username} in", response)
            response = browser.post(
                urljoin(response.url, form.action),
                data=[*form.hidden, ("username", username), ("password", password)],
                headers=HTML,
                allow_redirects=False,
                timeout=10,
            )
            submitted = True
        raise LoginRefused(f"more than {MAX_HOPS} hops at JupyterHub", response)

    def login_as(self, username: str) -> ProviderLogin:
        """For tests.support.login.follow's ``other_login``: log in as ``username`` at
        every redirect to this hub's authorize endpoint."""

        def other_login(browser: requests.Session, target: str) -> str | None:
            if not target.startswith(self.authorize_url + "?"):
                return None
            return self.log_in(browser, target, username, self.users[username])

        return other_login


class _LoginForm(HTMLParser):
    """The form with a password field on a JupyterHub page: its action and hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.hidden: list[tuple[str, str]] = []
        self.has_password = False
        self._in_form = False
        self._done = False

    @classmethod
    def of(cls, response: requests.Response) -> _LoginForm | None:
        if response.status_code != 200:
            return None
        form = cls()
        form.feed(response.text)
        return form if form.has_password else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if self._done:
            return
        if tag == "form":
            self._in_form = True
            self.action = attributes.get("action", "")
            self.hidden = []
        elif tag == "input" and self._in_form:
            if attributes.get("type") == "hidden":
                self.hidden.append((attributes.get("name", ""), attributes.get("value", "")))
            elif attributes.get("name") == "password":
                self.has_password = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = self.has_password
