"""WebSockets through Envoy (JupyterHub's kernels and terminals): the upgrade is authorized
like any request, the backend gets the provider's token instead of the session cookie, and
the connection then carries messages both ways."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from devtools.processes import ManagedProcess, free_port
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

WS_ROUTE = "notebooks-ws"
WS_LONG_LIVED_ROUTE = "notebooks-ws-short-timeout"
SHORT_ROUTE_TIMEOUT = 1.0  # seconds; a websocket must outlive its route's request timeout


class WsBackend:
    """``devtools.ws_backend`` as a child process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = ManagedProcess(
            "ws-backend", [sys.executable, "-m", "devtools.ws_backend", "--port", str(self.port)]
        )

    def start(self) -> WsBackend:
        self._process.start(lambda: "ws backend listening on" in self._process.output())
        return self

    def stop(self) -> None:
        self._process.stop()


@pytest.fixture(scope="module")
def ws_backend() -> Iterator[WsBackend]:
    backend = WsBackend().start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module", params=["grpc", "http"])
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    echo_backend: EchoBackend,
    ws_backend: WsBackend,
) -> Iterator[Stack]:
    """The stack with a websocket route, once with each ext_authz transport."""

    def add_ws_routes(raw: dict[str, Any]) -> None:
        raw["ext_authz"]["transport"] = request.param
        route = {"upstream": ws_backend.url, "provider": "primary", "token_format": "token"}
        raw["routes"].append({"name": WS_ROUTE, "prefix": "/ws/", **route})
        raw["routes"].append(
            {
                "name": WS_LONG_LIVED_ROUTE,
                "prefix": "/ws-short/",
                "timeout": f"{SHORT_ROUTE_TIMEOUT}s",
                **route,
            }
        )

    stack = start_stack(
        tmp_path_factory.mktemp(f"ws-{request.param}"),
        redis_server,
        echo_backend,
        add_ws_routes,
    )
    yield stack
    stack.stop()


@pytest.fixture
def primary_token() -> str:
    return "primary-" + secrets.token_urlsafe(12)


@pytest.fixture
def cookie(gateway: Stack, primary_token: str) -> str:
    return gateway.create_session(tokens={"primary": primary_token}).encode()


def ws_url(stack: Stack, path: str = "/ws/user/alice/api/kernels/1/channels?session_id=x") -> str:
    return stack.url.replace("http://", "ws://", 1) + path


def open_ws(stack: Stack, headers: dict[str, str], path: str | None = None) -> ClientConnection:
    url = ws_url(stack) if path is None else ws_url(stack, path)
    return connect(url, additional_headers=headers, open_timeout=5, close_timeout=2)


def handshake_seen_by_backend(ws: ClientConnection) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return report


def refused_status(stack: Stack, headers: dict[str, str]) -> int:
    """The HTTP status of an upgrade that must fail; fails the test if it succeeds."""
    with pytest.raises(InvalidStatus) as refused:
        with open_ws(stack, headers) as ws:
            ws.close()
    return refused.value.response.status_code


def test_logged_in_upgrade_reaches_backend_with_token_not_cookie(gateway, cookie, primary_token):
    headers = {
        "Cookie": f"_xsrf=abc; {gateway.cookie_name}={cookie}; theme=dark",
        "Origin": gateway.url,
    }
    with open_ws(gateway, headers) as ws:
        seen = handshake_seen_by_backend(ws)["headers"]
        assert seen["authorization"] == [f"token {primary_token}"]
        assert seen["upgrade"] == ["websocket"]
        cookies = "; ".join(seen.get("cookie", []))
        assert gateway.cookie_name not in cookies and cookie not in cookies
        assert "_xsrf=abc" in cookies and "theme=dark" in cookies  # the app's own cookies stay

        ws.send('{"msg_type": "execute_request"}')
        assert ws.recv(timeout=5) == '{"msg_type": "execute_request"}'
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=5) == b"\x00\x01binary\xff"
        for number in range(20):
            ws.send(f"message {number}")
        assert [ws.recv(timeout=5) for _ in range(20)] == [f"message {n}" for n in range(20)]


def test_bearer_session_upgrade_reaches_backend_with_provider_token(gateway, cookie, primary_token):
    """A CLI or script client: the session credential as a bearer token is swapped out."""
    with open_ws(gateway, {"Authorization": f"Bearer {cookie}"}) as ws:
        seen = handshake_seen_by_backend(ws)["headers"]
    assert seen["authorization"] == [f"token {primary_token}"]
    assert cookie not in json.dumps(seen)


def test_upgrade_without_session_is_refused_with_401(gateway):
    assert refused_status(gateway, {"Origin": gateway.url}) == 401


def test_upgrade_with_tampered_session_is_refused_with_401(gateway):
    real = gateway.create_session(tokens={"primary": "x"}).encode()
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    headers = {"Cookie": f"{gateway.cookie_name}={forged}", "Origin": gateway.url}
    assert refused_status(gateway, headers) == 401


def test_upgrade_with_session_missing_the_routes_token_is_refused(gateway):
    cookie = gateway.create_session(tokens={"gitlab": "gl-token"}).encode()
    headers = {"Cookie": f"{gateway.cookie_name}={cookie}", "Origin": gateway.url}
    assert refused_status(gateway, headers) == 401


def test_spoofed_authorization_on_an_anonymous_upgrade_never_reaches_backend(gateway):
    headers = {"Authorization": "token stolen-or-made-up", "Origin": gateway.url}
    assert refused_status(gateway, headers) == 401


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://127.0.0.1:1", "null"],
    ids=["cross-site", "same-site-other-port", "sandboxed-iframe"],
)
def test_cross_origin_upgrade_with_cookie_is_refused(gateway, cookie, origin):
    """Cross-site WebSocket hijacking: a handshake is a GET, but any page can open one with
    the user's cookies and read the replies. SameSite=Lax does not stop a same-site page on
    another port or subdomain, so the Origin check must."""
    headers = {"Cookie": f"{gateway.cookie_name}={cookie}", "Origin": origin}
    assert refused_status(gateway, headers) == 403


def test_same_site_upgrade_from_an_allowed_origin_is_not_mistaken_for_csrf(gateway, cookie):
    headers = {"Cookie": f"{gateway.cookie_name}={cookie}", "Origin": gateway.url}
    with open_ws(gateway, headers) as ws:
        assert "authorization" in handshake_seen_by_backend(ws)["headers"]


def test_upgraded_connection_outlives_its_routes_request_timeout(gateway, cookie):
    """Kernels stay connected for hours; the route timeout bounds responses, not websockets."""
    headers = {"Cookie": f"{gateway.cookie_name}={cookie}", "Origin": gateway.url}
    with open_ws(gateway, headers, path="/ws-short/user/alice/terminals/websocket/1") as ws:
        handshake_seen_by_backend(ws)
        time.sleep(SHORT_ROUTE_TIMEOUT * 2)
        ws.send("still there?")
        assert ws.recv(timeout=5) == "still there?"
