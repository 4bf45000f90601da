"""Worker memory after many distinct sessions: does ext_authz keep what it has seen?

One real ext_authz process (a single worker, so it sees every check) with the default session
cache; ``count`` realistic sessions are written straight into a Redis of its own with the
session codec, then each is checked once over gRPC, then ``count`` cookies that name no
session (well-formed, random) are checked once each. Resident memory (VmRSS) is read from
/proc before, after each pass, and once the cache says (``gateway_session_cache_entries``) it
has let every entry go.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from bench.check_frames import check_request
from bench.errors import BenchError
from bench.gateway_setup import COOKIE_NAME, ROUTE_NAME, ROUTE_PATH, populate_sessions
from bench.scenarios import Lab
from bench.servers import memory_of
from gateway.config import GatewayConfig
from gateway.sessions.credentials import SessionCredential

IN_FLIGHT = 32
# google.rpc codes: OK with an ok_response, PERMISSION_DENIED with Envoy's denied_response.
ALLOWED, DENIED = 0, 7


async def _check_all(
    address: str, host: str, cookies: Iterable[str], expect: int
) -> tuple[int, float]:
    """Check every cookie once, ``IN_FLIGHT`` at a time; how many, and how long it took."""
    queue = iter(cookies)
    done = [0]
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_grpc.AuthorizationStub(channel)

        async def caller() -> None:
            for cookie in queue:
                request = check_request(ROUTE_PATH, ROUTE_NAME, f"{COOKIE_NAME}={cookie}", host)
                answer: auth_pb2.CheckResponse = await stub.Check(request, timeout=30)
                if answer.status.code != expect:
                    raise BenchError(f"Check answered {answer.status.code}, expected {expect}")
                done[0] += 1

        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return done[0], time.monotonic() - started


def _check(address: str, host: str, cookies: Iterable[str], expect: int) -> dict[str, float]:
    count, seconds = asyncio.run(_check_all(address, host, cookies, expect))
    return {"checks": count, "seconds": round(seconds, 1), "rps": round(count / seconds)}


def _cache_gauges(config: GatewayConfig) -> dict[str, float]:
    """What the worker says its session cache holds (reported once a second)."""
    assert config.ext_authz.metrics_listen is not None
    url = f"http://{config.ext_authz.metrics_listen}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("gateway_session_cache_entries", "gateway_session_cache_bytes"):
            found[name.removeprefix("gateway_session_cache_")] = float(value)
    return found


def _wait_until_cache_empty(config: GatewayConfig, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _cache_gauges(config).get("entries") != 0:
        if time.monotonic() > deadline:
            raise BenchError(f"the session cache still holds entries after {timeout:.0f} s")
        time.sleep(0.2)


def _bogus_cookies(count: int) -> Iterator[str]:
    """Well-formed credentials that name no session, and as many malformed ones."""
    for index in range(count):
        if index % 2:
            yield SessionCredential.generate().encode()
        else:
            yield "gws_" + secrets.token_urlsafe(65)  # the right length, not the right shape


def distinct_sessions_memory(
    lab: Lab, count: int, log: Callable[[str], None], **ext_authz: Any
) -> dict[str, Any]:
    """RSS of one worker before and after ``count`` valid and ``count`` bogus distinct cookies."""
    config = lab.gateway_variant("distinct", redis_url=lab.another_redis("distinct"), **ext_authz)
    log(f"memory: adding {count:,} sessions for the distinct-sessions run")
    credentials: list[SessionCredential] = []
    populated = populate_sessions(config, count, keep=credentials)
    process, address = lab.start_ext_authz("distinct")
    host = f"127.0.0.1:{config.envoy.listen_port}"
    at_start = memory_of(process.pid)
    valid = _check(address, host, (c.encode() for c in credentials), ALLOWED)
    after_valid = memory_of(process.pid)
    cache_after_valid = _cache_gauges(config)
    bogus = _check(address, host, _bogus_cookies(count), DENIED)
    after_bogus = memory_of(process.pid)
    cache_after_bogus = _cache_gauges(config)
    # Once the cache's entries expire it holds nothing, with no lookup to prompt it.
    _wait_until_cache_empty(config, timeout=config.ext_authz.session_cache_ttl + 30)
    idle = memory_of(process.pid)
    log(
        f"memory: {count:,} sessions + {count:,} bogus cookies: RSS {at_start['rss_mib']} -> "
        f"{after_valid['rss_mib']} -> {after_bogus['rss_mib']} MiB, {idle['rss_mib']} idle"
    )
    return {
        "sessions": count,
        "bogus_cookies": count,
        "fill_seconds": populated["seconds"],
        "valid_checks": valid,
        "bogus_checks": bogus,
        "at_start": at_start,
        "after_valid": after_valid,
        "after_bogus": after_bogus,
        "idle": idle,
        "cache_after_valid": cache_after_valid,
        "cache_after_bogus": cache_after_bogus,
        "cache_max_bytes": config.ext_authz.session_cache_max_bytes,
        "rss_mib": max(after_valid["rss_mib"], after_bogus["rss_mib"], idle["rss_mib"]),
    }
