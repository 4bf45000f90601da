"""Both sides of the Envoy↔ext_authz contract, derived from ``gateway.contract``: what ext_authz
reads is among what Envoy forwards, and the HTTP-mode paths Envoy uses are the ones ext_authz
serves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ext_authz import reporting
from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decider, Decision, Lookup, SessionNeeded
from ext_authz.http_service import start_http_server
from ext_authz.request import CheckRequest
from gateway import contract
from gateway.config import GatewayConfig, parse_config
from gateway.envoy.render import render_envoy_config
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet

PUBLIC_URL = "http://gateway.test:8080"
COOKIE = "gw_session"
NOW = 1_700_000_000
HTML = "text/html,application/xhtml+xml,*/*;q=0.8"


def gateway_config(**ext_authz: Any) -> GatewayConfig:
    backend = "http://backend.test:9000"
    raw = {
        "public_url": PUBLIC_URL,
        "session": {"cookie_name": COOKIE},
        "ext_authz": {"listen": "127.0.0.1:50051", **ext_authz},
        "providers": [
            {"id": "primary", "kind": "oidc", "issuer": "https://idp.test", "client_id": "gw"},
        ],
        "routes": [
            {"name": "api", "prefix": "/api/", "upstream": backend, "provider": "primary",
             "identity_headers": True},
            {"name": "status", "prefix": "/status", "upstream": backend, "public": True},
        ],
    }  # fmt: skip
    return parse_config(raw, {"GATEWAY_SECRET_KEYS": "x" * 40})


class RecordingHeaders(dict[str, str]):
    """A request's headers that note every name the code under test looks up."""

    def __init__(self, headers: dict[str, str], read: set[str]) -> None:
        super().__init__(headers)
        self._read = read

    def get(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> str:
        self._read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self._read.add(name)
        return super().__contains__(name)


def requests_of_every_kind(credential: SessionCredential) -> Iterator[tuple[str, str, dict]]:
    """(method, path, headers) for the kinds of request the decision tells apart."""
    cookie = f"{COOKIE}={credential.encode()}; other=1"
    bearer = f"Bearer {credential.encode()}"
    yield "GET", "/api/items", {"cookie": cookie, "accept": HTML, "sec-fetch-mode": "navigate"}
    yield "GET", "/api/items", {"accept": HTML}  # a page load without a session
    yield "GET", "/api/items", {"x-requested-with": "XMLHttpRequest", "accept": HTML}
    yield "GET", "/api/items", {"authorization": bearer, "x-request-id": "r-1"}
    yield "GET", "/api/items", {"authorization": "Bearer someone-elses-jwt"}
    yield "POST", "/api/items", {"cookie": cookie, "origin": "https://evil.example"}
    yield "POST", "/api/items", {"cookie": cookie, "referer": f"{PUBLIC_URL}/api/form"}
    yield "PUT", "/api/items", {"cookie": cookie}
    yield "OPTIONS", "/api/items", {"origin": PUBLIC_URL, "access-control-request-method": "PUT"}
    yield "GET", "/api/socket", {"cookie": cookie, "upgrade": "websocket", "origin": PUBLIC_URL}
    yield "GET", "/status", {"cookie": cookie}
    yield "GET", "/nowhere", {"cookie": cookie}


def live_session() -> Session:
    return Session(
        identity=Identity("user-42", "ada@example.com", "Ada Lovelace"),
        created_at=NOW - 60,
        expires_at=NOW + 3600,
        tokens={"primary": TokenSet("primary-access-token", expires_at=NOW + 600)},
    )


@pytest.fixture
def every_decision_logged() -> Iterator[None]:
    reporting.log_decisions("all")  # the log line is where the request id is read
    yield
    reporting.log_decisions("denied")


@pytest.mark.usefixtures("every_decision_logged")
@pytest.mark.parametrize("session", [live_session(), None], ids=["live", "none"])
def test_ext_authz_reads_no_request_header_that_envoy_does_not_forward(
    session: Session | None,
) -> None:
    decider = Decider(gateway_config())
    read: set[str] = set()
    for method, path, headers in requests_of_every_kind(SessionCredential.generate()):
        request = CheckRequest(method, path, RecordingHeaders(headers, read))
        step = decider.begin(request)
        decision: Decision = (
            decider.complete(step, session, None, NOW) if isinstance(step, SessionNeeded) else step
        )
        reporting.record_decision(request, decision, 0.001, "grpc")
    assert read, "the recording saw nothing: the test no longer watches the reads"
    assert read <= set(contract.FORWARDED_REQUEST_HEADERS)


@pytest.mark.parametrize("failure", [None, Lookup.UNKNOWN, Lookup.UNAVAILABLE])
def test_a_denials_headers_are_all_ones_envoy_shows_the_client_in_http_mode(
    failure: str | None,
) -> None:
    decider = Decider(gateway_config())
    shown: set[str] = set()
    for method, path, headers in requests_of_every_kind(SessionCredential.generate()):
        step = decider.begin(CheckRequest(method, path, headers))
        decision = (
            decider.complete(step, None, failure, NOW) if isinstance(step, SessionNeeded) else step
        )
        if not isinstance(decision, Allow):
            shown |= {name for name, _ in decision.headers}
    assert {"content-type", "cache-control"} < shown, "the requests no longer reach denials"
    assert shown <= set(contract.DENIAL_CLIENT_HEADERS)


# ---- HTTP mode: the paths Envoy is given are the ones ext_authz answers ---------------------


def http_mode_settings() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ext_authz filter's http_service, the ext_authz cluster) of a two-worker HTTP mode."""
    bootstrap = render_envoy_config(gateway_config(transport="http", workers=2))
    resources = bootstrap["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    (cluster,) = [c for c in resources["clusters"] if c["name"] == "ext_authz"]
    return ext_authz["typed_config"]["http_service"], cluster


class SeeingAuthorizer(Authorizer):
    """Allows everything and keeps the requests it was asked about."""

    def __init__(self) -> None:  # no decider, no sessions: nothing is decided
        self.seen: list[CheckRequest] = []

    async def check(self, request: CheckRequest) -> Decision:
        self.seen.append(request)
        return Allow("api", "allowed", (), ())


async def exchange(address: str, head: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = int(reply.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), 30)
    writer.close()
    return reply + body


def test_in_http_mode_envoy_asks_on_the_paths_ext_authz_serves() -> None:
    service, cluster = http_mode_settings()
    (health,) = cluster["health_checks"]
    prefix, health_path = service["path_prefix"], health["http_health_check"]["path"]

    async def scenario() -> tuple[bytes, bytes, list[CheckRequest]]:
        authorizer = SeeingAuthorizer()
        transport = await start_http_server(authorizer, "127.0.0.1:0", lambda: True)
        try:
            check = await exchange(
                transport.address, f"GET {prefix}/api/items?x=1 HTTP/1.1\r\n\r\n".encode()
            )
            probe = await exchange(
                transport.address, f"GET {health_path} HTTP/1.1\r\n\r\n".encode()
            )
        finally:
            await transport.stop(1.0)
        return check, probe, authorizer.seen

    check, probe, seen = asyncio.run(scenario())
    assert check.startswith(b"HTTP/1.1 200 ")
    assert [request.path for request in seen] == ["/api/items?x=1"]  # the backend's path
    assert probe.startswith(b"HTTP/1.1 200 ") and probe.endswith(b"ok")
