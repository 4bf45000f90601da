"""Envoy's HTTP ext_authz mode (``http_service``): the same decision core over plain HTTP/1.1.

Envoy sends each request's method, path (behind ``contract.CHECK_PATH_PREFIX``) and allowed
headers with no body; a 200 reply allows it, and Envoy copies the reply's allowed upstream
headers onto the request and removes those named in ``contract.HEADERS_TO_REMOVE_HEADER``; any
other reply is sent to the client with the headers Envoy lets through. The peer is our own
Envoy on a private socket, so this parser is deliberately small: it reads request heads, never
bodies, and closes the connection on anything malformed or oversized.

HTTP mode carries no ``context_extensions``: the route comes from the longest matching
prefix, which is how Envoy itself chose the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision
from ext_authz.reporting import INTERNAL_ERROR, record_decision
from ext_authz.request import CheckRequest
from gateway import contract
from gateway.config import join_host_port, split_host_port

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
_REASONS = {status.value: status.phrase for status in HTTPStatus}


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(method, target, lower-case headers) of a request head, None when malformed."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        name, value = name.lower(), value.strip()
        # Repeated headers fold into one value, as Envoy's gRPC CheckRequest does.
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return method, target, headers


def render_response(decision: Decision) -> bytes:
    if isinstance(decision, Allow):
        lines = ["HTTP/1.1 200 OK"]
        lines += [f"{name}: {value}" for name, value in decision.set_headers]
        if decision.remove_headers:
            removed = ",".join(decision.remove_headers)
            lines.append(f"{contract.HEADERS_TO_REMOVE_HEADER}: {removed}")
        lines.append("content-length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    body = decision.body.encode("utf-8")
    reason = _REASONS.get(decision.status, "Denied")
    lines = [f"HTTP/1.1 {decision.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in decision.headers]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_HEALTHY = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
_UNHEALTHY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\nstopping"


class CheckConnection(asyncio.Protocol):
    """One keep-alive connection from Envoy; requests are answered in order."""

    def __init__(self, authorizer: Authorizer, serving: Callable[[], bool]) -> None:
        self._authorizer = authorizer
        self._serving = serving
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._worker = asyncio.get_running_loop().create_task(self._answer_in_order())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._close()
                return
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self._queue.put_nowait(head)

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(None)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def _answer_in_order(self) -> None:
        while (head := await self._queue.get()) is not None:
            parsed = parse_head(head)
            if parsed is None or parsed[2].get("content-length", "0") != "0":
                self._close()  # Envoy never sends these; refuse rather than guess
                return
            method, target, headers = parsed
            if target == contract.HEALTH_PATH:
                reply = _HEALTHY if self._serving() else _UNHEALTHY
            else:
                reply = render_response(await self._decide(method, target, headers))
            if self._transport is None or self._transport.is_closing():
                return
            self._transport.write(reply)

    async def _decide(self, method: str, target: str, headers: dict[str, str]) -> Decision:
        prefix = contract.CHECK_PATH_PREFIX
        path = target[len(prefix) :] if target.startswith(prefix + "/") else target
        check = CheckRequest(method=method, path=path, headers=headers, route_name=None)
        started = asyncio.get_running_loop().time()
        try:
            decision = await self._authorizer.check(check)
        except Exception:
            logger.exception("check failed unexpectedly")
            decision = INTERNAL_ERROR
        record_decision(check, decision, asyncio.get_running_loop().time() - started, "http")
        return decision


class HttpTransport:
    def __init__(self, server: asyncio.base_events.Server, address: str) -> None:
        self._server = server
        self.address = address

    def set_feed_live(self, live: bool) -> None:
        pass  # HTTP mode has one health path, and it does not follow Redis (ext_authz.server)

    async def stop(self, grace: float) -> None:
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), grace)


async def start_http_server(
    authorizer: Authorizer, listen: str, serving: Callable[[], bool]
) -> HttpTransport:
    """Serve on ``host:port`` (port 0 allowed) or ``unix:/path``."""
    loop = asyncio.get_running_loop()

    def factory() -> CheckConnection:
        return CheckConnection(authorizer, serving)

    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        server = await loop.create_unix_server(factory, path)
        return HttpTransport(server, f"unix:{path}")
    host, port = split_host_port(listen, any_port=True)
    server = await loop.create_server(factory, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    return HttpTransport(server, join_host_port(host, bound))
