"""Check that a target answers what it should, then load it: maximum throughput (closed loop)
and latency at a fixed rate (open loop). Any unexpected answer fails the scenario."""

from __future__ import annotations

import http.client
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2

from bench.check_frames import CHECK_PATH, allowed_headers, call_check, grpc_frame
from bench.envoy_configs import BACKEND_BODY
from bench.errors import BenchError
from bench.load import WRK_SCRIPT, run_h2load, run_wrk
from bench.openloop import run_open_loop
from bench.openloop_grpc import run_open_loop_grpc

PRE_CHECK_REQUESTS = 5
GRPC_STREAMS = 500  # per connection: a paced request waits for a stream only when far behind


@dataclass
class HttpTarget:
    """A front Envoy: GET ``url`` with ``headers``; the backend's answer must carry
    ``expect_headers`` (``None``: must be absent); without ``headers`` the status must be
    ``deny_status`` when given (proof that the authorization step is really on)."""

    url: str
    headers: dict[str, str]
    expect_headers: dict[str, str | None] = field(default_factory=dict)
    deny_status: int | None = None


@dataclass
class GrpcTarget:
    """A Check servicer at ``address``, sent ``request``; an OK answer setting
    ``expect_headers`` is required. ``answer_bytes`` is learnt by the pre-check."""

    address: str
    request: auth_pb2.CheckRequest
    frame_path: Path
    expect_headers: dict[str, str] = field(default_factory=dict)
    answer_bytes: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.address}{CHECK_PATH}"


Target = HttpTarget | GrpcTarget


@dataclass(frozen=True)
class LoadSettings:
    duration: float
    warmup: float
    latency_duration: float
    connections: int
    threads: int
    workdir: Path


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request("GET", parts.path, headers=headers)
        reply = connection.getresponse()
        body = reply.read().decode("utf-8", "replace")
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body
    finally:
        connection.close()


def verify(target: Target, settings: LoadSettings) -> None:
    """A few requests by hand; raises :class:`BenchError` at the first wrong answer."""
    if isinstance(target, HttpTarget):
        _verify_http(target)
    else:
        _verify_grpc(target, settings)


def _verify_http(target: HttpTarget) -> None:
    for _ in range(PRE_CHECK_REQUESTS):
        status, headers, body = _get(target.url, target.headers)
        if status != 200 or body != BACKEND_BODY:
            raise BenchError(f"GET {target.url}: {status} {body[:200]!r}, expected 200 ok")
        for name, expected in target.expect_headers.items():
            if headers.get(name) != expected:
                raise BenchError(f"backend saw {name}={headers.get(name)!r}, expected {expected!r}")
    if target.deny_status is not None:
        status, _, body = _get(target.url, {})
        if status != target.deny_status:
            raise BenchError(f"without credentials: {status}, expected {target.deny_status}")


def _verify_grpc(target: GrpcTarget, settings: LoadSettings) -> None:
    response = call_check(target.address, target.request)
    headers = allowed_headers(response)
    for name, expected in target.expect_headers.items():
        if headers.get(name) != expected:
            raise BenchError(f"Check set {name}={headers.get(name)!r}, expected {expected!r}")
    target.answer_bytes = len(grpc_frame(response.SerializeToString()))
    target.frame_path.write_bytes(grpc_frame(target.request.SerializeToString()))
    # The same bytes through h2load: a wrong path or method would still be HTTP 200 (gRPC
    # errors live in trailers), but it would carry no message, so count the data bytes.
    result = run_h2load(target.url, target.frame_path, clients=1, threads=1, streams=1, requests=20)
    _check_h2load(result, target)


def _check_h2load(result: dict[str, Any], target: GrpcTarget) -> None:
    done, data = result["succeeded"], result["data_bytes"]
    bad = {k: v for k, v in result["failures"].items() if v} or {
        k: v for k, v in result["statuses"].items() if k != "2xx" and v
    }
    if bad or done != result["requests"]:
        raise BenchError(f"h2load saw failed answers: {bad or result}")
    # At the end of a timed run a few answers may have their message but not yet their
    # trailers; whole messages of the expected size are all that is allowed.
    if data % target.answer_bytes or data < done * target.answer_bytes:
        raise BenchError(f"h2load got {data} bytes of messages for {done} answers")


def _check_wrk(result: dict[str, Any]) -> None:
    unexpected = {code: n for code, n in result["statuses"].items() if code != "200"}
    errors = {kind: n for kind, n in result["socket_errors"].items() if n and kind != "status"}
    if unexpected or errors:
        raise BenchError(f"unexpected answers under load: statuses {unexpected}, errors {errors}")


def max_throughput(target: Target, settings: LoadSettings) -> dict[str, Any]:
    """Closed-loop maximum: a warm-up run, then the measured one."""
    runs = [settings.warmup, settings.duration] if settings.warmup > 0 else [settings.duration]
    result: dict[str, Any] = {}
    for duration in runs:
        if isinstance(target, HttpTarget):
            script = settings.workdir / "statuses.lua"
            script.write_text(WRK_SCRIPT)
            result = run_wrk(
                target.url, target.headers, duration=duration, script=script,
                connections=settings.connections, threads=settings.threads,
            )  # fmt: skip
            _check_wrk(result)
        else:
            # Envoy multiplexes checks on one HTTP/2 connection per worker: few connections,
            # many streams; the same number of requests in flight as wrk has connections.
            streams = math.ceil(settings.connections / settings.threads)
            result = run_h2load(
                target.url, target.frame_path, clients=settings.threads,
                threads=settings.threads, streams=streams, duration=duration,
            )  # fmt: skip
            _check_h2load(result, target)
    return result


def fixed_rate_latency(target: Target, rate: float, settings: LoadSettings) -> dict[str, Any]:
    """Latency percentiles at ``rate`` requests per second, open loop (``bench.openloop``)."""
    if isinstance(target, HttpTarget):
        result = run_open_loop(target.url, target.headers, rate, settings.latency_duration)
    else:
        result = run_open_loop_grpc(
            target.address, CHECK_PATH, grpc_frame(target.request.SerializeToString()),
            target.answer_bytes, rate, settings.latency_duration,
            connections=settings.threads, streams=GRPC_STREAMS,
        )  # fmt: skip
    unexpected = {code: n for code, n in result["statuses"].items() if code != "200"}
    if unexpected or result["socket_errors"]:
        raise BenchError(
            f"unexpected answers at {rate:.0f}/s: statuses {unexpected}, "
            f"{result['socket_errors']} lost on broken connections"
        )
    return result
