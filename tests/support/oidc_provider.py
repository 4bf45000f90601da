"""node ``oidc-provider`` (an OpenID Certified provider we did not write) as a real process.

    op = start_oidc_provider(tmp_path, users=[OpUser("alice", "pw", "alice@example.org")])
    op.add_client(OpClient("gw", secret, redirect_uris=(callback,)))  # once its URL is known
    back = complete_login(requests.Session(), authorization_url, "alice", "pw")
    assert op.introspect(access_token)["active"]
    op.stop()

The server is ``devtools/oidc_provider/server.js`` (``make node-deps`` installs its packages).
It appends one JSON line per event (``grant.success`` with its ``grant_type`` and the
``client_auth`` the request used, ``grant.error``, ``backchannel.success``, ``revocation``,
...) to a log that :meth:`events` reads; no line carries a token. Clients can be added while
it runs: a gateway's redirect URIs are known only once the gateway has its port.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from devtools.processes import REPO_ROOT, ManagedProcess, free_port

SERVER_DIR = REPO_ROOT / "devtools" / "oidc_provider"
HTML = {"Accept": "text/html,application/xhtml+xml"}
HTTP_TIMEOUT = 10.0
INTROSPECTOR_ID = "introspector"  # a resource server: it may only introspect
EVENT_LOG = "oidc-provider-events.jsonl"
CLIENTS_FILE = "oidc-provider-clients.json"
DELAYS_FILE = "oidc-provider-delays.json"


@dataclass(frozen=True)
class OpUser:
    id: str
    password: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)  # more, e.g. nested ones

    def spec(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "password": self.password,
            "email": self.email or None,
            "name": self.name or None,
            "groups": list(self.groups),
            "claims": dict(self.claims),
        }


@dataclass(frozen=True)
class OpClient:
    """A client registered at the provider; ``jwks`` (public keys) for private_key_jwt."""

    client_id: str
    client_secret: str | None = None
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    token_endpoint_auth_method: str = "client_secret_basic"
    jwks: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "backchannel_logout_uri": self.backchannel_logout_uri,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "jwks": dict(self.jwks) if self.jwks is not None else None,
            **self.extra,
        }
        return {name: value for name, value in spec.items() if value not in (None, [])}


class OidcProvider:
    """A running oidc-provider: its URLs, its event log and an introspection client."""

    def __init__(
        self,
        process: ManagedProcess,
        port: int,
        directory: Path,
        introspector_secret: str,
        issuer: str,
    ) -> None:
        self._process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.issuer = issuer
        self.event_log = directory / EVENT_LOG
        self._clients_file = directory / CLIENTS_FILE
        self._delays_file = directory / DELAYS_FILE
        self._clients: dict[str, OpClient] = {}
        self._introspector = (INTROSPECTOR_ID, introspector_secret)
        self._metadata: dict[str, Any] | None = None

    def add_client(self, client: OpClient) -> OpClient:
        """Register ``client`` (or replace the one with its id); usable at once."""
        self._clients[client.client_id] = client
        specs = [known.spec() for known in self._clients.values()]
        # Written aside and renamed: the provider reads the file at every client lookup.
        scratch = self._clients_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(specs, indent=2))
        os.replace(scratch, self._clients_file)
        return client

    def delay_token_replies(self, grant_type: str, seconds: float) -> None:
        """Hold back the provider's answers to ``grant_type`` token requests by ``seconds``
        (0: none), after it has processed them: a refresh is rotated, then answered late."""
        scratch = self._delays_file.with_suffix(".tmp")
        scratch.write_text(json.dumps({grant_type: seconds}))
        os.replace(scratch, self._delays_file)  # the provider reads it at every request

    def stop(self) -> None:
        self._process.stop()

    def output(self) -> str:
        """What the node process printed (warnings, a crash's stack trace)."""
        return self._process.output()

    def owns(self, url: str) -> bool:
        """``url`` is on this provider (an authorization request being sent there)."""
        return _origin(url) == self.url

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            reply = requests.get(_discovery_url(self.issuer), timeout=HTTP_TIMEOUT)
            reply.raise_for_status()
            self._metadata = reply.json()
        return self._metadata

    def events(self, since: int = 0, **match: Any) -> list[dict[str, Any]]:
        """Event lines from number ``since`` on whose fields equal ``match``
        (``event="grant.success", grant_type="refresh_token"``)."""
        if not self.event_log.exists():
            return []
        lines = self.event_log.read_text().splitlines()[since:]
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if all(e.get(k) == v for k, v in match.items())]

    def event_count(self) -> int:
        """How many events were logged so far: a ``since`` for the events of what follows."""
        return len(self.events())

    def introspect(self, token: str, hint: str | None = None) -> dict[str, Any]:
        """RFC 7662 introspection of ``token`` as a resource server would ask."""
        data = {"token": token, **({"token_type_hint": hint} if hint else {})}
        reply = requests.post(
            self.metadata()["introspection_endpoint"],
            data=data,
            auth=self._introspector,
            timeout=HTTP_TIMEOUT,
        )
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result


def node_binary() -> str:
    found = shutil.which("node")
    if not found:
        raise RuntimeError("node not found: run `make node-deps` (devtools/ensure-node.sh)")
    return found


def start_oidc_provider(
    directory: Path,
    *,
    users: Sequence[OpUser],
    clients: Sequence[OpClient] = (),
    access_token_ttl: int = 300,
    trailing_slash: bool = False,
    scope_claims: Mapping[str, Sequence[str]] | None = None,
    timeout: float = 30.0,
) -> OidcProvider:
    """Start the provider on a free port, wait for its discovery document, return it.
    ``directory`` (its own) gets the config, the event log and the output. With
    ``trailing_slash`` the issuer is ``http://127.0.0.1:PORT/`` (its discovery document is
    then at ``/.well-known/openid-configuration``, OIDC Discovery §4). ``scope_claims`` adds
    scopes and the user claims each releases (``{"roles": ["realm_access"]}``).

    Raises RuntimeError with the process output if it exits or is not ready in time.
    """
    if not (SERVER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("oidc-provider is not installed: run `make node-deps`")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}" + ("/" if trailing_slash else "")
    introspector_secret = secrets.token_urlsafe(24)
    config = {
        "port": port,
        "issuer": issuer,
        "access_token_ttl": access_token_ttl,
        "event_log": str(directory / EVENT_LOG),
        "clients": [OpClient(INTROSPECTOR_ID, introspector_secret).spec()],
        "clients_file": str(directory / CLIENTS_FILE),
        "delays_file": str(directory / DELAYS_FILE),
        "users": [user.spec() for user in users],
        "scope_claims": {scope: list(names) for scope, names in (scope_claims or {}).items()},
    }
    config_path = directory / "oidc-provider.json"
    config_path.write_text(json.dumps(config, indent=2))
    process = ManagedProcess(
        f"oidc-provider-{port}",
        [node_binary(), str(SERVER_DIR / "server.js"), str(config_path)],
        log_dir=directory,
    )
    process.start(lambda: _discovery_ready(issuer), timeout=timeout)
    provider = OidcProvider(process, port, directory, introspector_secret, issuer)
    for client in clients:
        provider.add_client(client)
    return provider


def _discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _discovery_ready(issuer: str) -> bool:
    try:
        with urllib.request.urlopen(_discovery_url(issuer), timeout=1) as reply:
            return bool(reply.status == 200 and json.load(reply).get("issuer") == issuer)
    except (OSError, ValueError):
        return False


def complete_login(
    browser: requests.Session,
    authorization_url: str,
    username: str,
    password: str,
    *,
    max_hops: int = 12,
) -> str:
    """Play the user at the provider: open ``authorization_url``, sign in, allow what the
    client asks for. Returns the URL the provider sends the browser back to (the client's
    redirect URI with ``code``, ``state`` and ``iss``, or with ``error``)."""
    origin = _origin(authorization_url)
    response = browser.get(authorization_url, headers=HTML, allow_redirects=False, timeout=10)
    for _ in range(max_hops):
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if _origin(target) != origin:
                return target
            response = browser.get(target, headers=HTML, allow_redirects=False, timeout=10)
            continue
        forms = _forms(response.text)
        login = _form_ending(forms, "/login")
        consent = _form_ending(forms, "/confirm")
        if response.status_code == 200 and login is not None:
            fields = {**login.hidden, "username": username, "password": password}
            response = _post(browser, response, login, fields)
        elif response.status_code == 200 and consent is not None:
            response = _post(browser, response, consent, {**consent.hidden, "consent": "allow"})
        else:
            raise AssertionError(
                f"the provider answered {response.status_code} at {response.url}:\n"
                f"{response.text[:2000]}"
            )
    raise AssertionError(f"more than {max_hops} hops at the provider, last at {response.url}")


def logout_at_provider(
    browser: requests.Session, end_session_url: str, *, max_hops: int = 6
) -> requests.Response:
    """Open the provider's end-session page and confirm "Yes, sign me out", as a user
    logging out at the provider itself does. Returns the provider's last answer (its
    success page, or the redirect to a client's post-logout URI, not followed)."""
    origin = _origin(end_session_url)
    response = browser.get(end_session_url, headers=HTML, allow_redirects=False, timeout=10)
    for _ in range(max_hops):
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if _origin(target) != origin:
                return response
            response = browser.get(target, headers=HTML, allow_redirects=False, timeout=10)
            continue
        confirm = _form_ending(_forms(response.text), "/session/end/confirm")
        if confirm is None:
            return response
        response = _post(browser, response, confirm, {**confirm.hidden, "logout": "yes"})
    raise AssertionError(f"more than {max_hops} hops at the provider, last at {response.url}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _post(
    browser: requests.Session, page: requests.Response, form: _Form, fields: dict[str, str]
) -> requests.Response:
    return browser.post(
        urljoin(page.url, form.action),
        data=fields,
        headers=HTML,
        allow_redirects=False,
        timeout=10,
    )


@dataclass
class _Form:
    action: str
    hidden: dict[str, str] = field(default_factory=dict)


def _form_ending(forms: list[_Form], suffix: str) -> _Form | None:
    return next((form for form in forms if urlsplit(form.action).path.endswith(suffix)), None)


def _forms(html: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class _FormParser(HTMLParser):
    """Every form's action and hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._open: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._open = _Form(attributes.get("action", ""))
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and attributes.get("type") == "hidden":
            self._open.hidden[attributes.get("name", "")] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None
