"""What is measured, as data: one :class:`Scenario` per line of the report.

A scenario's ``start`` brings up what it needs in the :class:`Lab` and returns the target to
load; the shared pieces (the backend Envoy, Redis, the gateway's config and session, the real
ext_authz) start on first use and live for the whole run. A scenario whose ``start`` is
``None`` is reported as not available. Adding one is adding an entry to ``SCENARIOS``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from bench import envoy_configs, tokens
from bench.check_frames import check_request
from bench.gateway_setup import ROUTE_NAME, ROUTE_PATH, BenchSession, create_session, gateway_config
from bench.measure import GrpcTarget, HttpTarget, Target
from bench.servers import (
    start_envoy,
    start_python_server,
    start_redis,
    worker_memory,
)
from devtools.processes import ManagedProcess, free_port, free_ports
from gateway.config import GatewayConfig
from gateway.envoy.render import render_envoy_config


class Lab:
    """The processes and data of one run, each started the first time a scenario needs it."""

    def __init__(
        self, stack: ExitStack, workdir: Path, authz_log_level: str, authz_workers: int = 1
    ) -> None:
        self.stack = stack
        self.workdir = workdir
        self.authz_log_level = authz_log_level
        self.authz_workers = authz_workers
        self.endpoints: dict[str, list[str]] = {}  # first worker's address -> every worker's
        self.secret = secrets.token_urlsafe(48)
        self.ext_authz_memory_at_start: dict[str, float] = {}

    @cached_property
    def backend_port(self) -> int:
        port = free_port()
        # Answering directly is far cheaper than proxying; half the CPUs keep it out of the way.
        workers = max(1, min(4, len(os.sched_getaffinity(0)) // 2))
        bootstrap = envoy_configs.backend_bootstrap(port, free_port())
        start_envoy(self.stack, "envoy-backend", bootstrap, self.workdir, concurrency=workers)
        return port

    @cached_property
    def redis_url(self) -> str:
        port = free_port()
        start_redis(self.stack, port, self.workdir)
        return f"redis://127.0.0.1:{port}/0"

    @cached_property
    def gateway(self) -> GatewayConfig:
        """The gateway's configuration as ``make run`` would have it, with gRPC ext_authz."""
        return self.gateway_variant("gateway")

    @cached_property
    def session(self) -> BenchSession:
        return create_session(self.gateway)

    @cached_property
    def ext_authz(self) -> tuple[ManagedProcess, str]:
        """The real server for :attr:`gateway`, and its address."""
        self.gateway  # noqa: B018  (writes the config file it reads)
        process, address = self.start_ext_authz("gateway", self.authz_workers)
        self.ext_authz_memory_at_start = worker_memory(process.pid)
        return process, address

    def gateway_variant(
        self, name: str, redis_url: str | None = None, **ext_authz: Any
    ) -> GatewayConfig:
        """A gateway configuration written to ``<name>.yaml``: its own Envoy ports, the shared
        Redis unless told otherwise, ``ext_authz`` settings changed as given."""
        return gateway_config(
            self.workdir / f"{name}.yaml", self.secret, redis_url=redis_url or self.redis_url,
            backend_url=f"http://127.0.0.1:{self.backend_port}", envoy_port=free_port(),
            admin_port=free_port(), log_level=self.authz_log_level, ext_authz=ext_authz,
        )  # fmt: skip

    def start_ext_authz(self, name: str, workers: int = 1) -> tuple[ManagedProcess, str]:
        """``python -m ext_authz --config <name>.yaml --listen ... --workers N``, and the first
        worker's address (all of them in :attr:`endpoints`)."""
        port = free_ports(workers)
        argv = ["ext_authz", "--config", str(self.workdir / f"{name}.yaml")]
        argv += ["--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
        env = {"GATEWAY_SECRET_KEYS": self.secret}
        ports = [port + i for i in range(workers)]
        process = start_python_server(
            self.stack, f"ext-authz-{name}", argv, ports, self.workdir, env
        )
        address = f"127.0.0.1:{port}"
        self.endpoints[address] = [f"127.0.0.1:{worker_port}" for worker_port in ports]
        return process, address

    def another_redis(self, name: str) -> str:
        port = free_port()
        start_redis(self.stack, port, self.workdir, name=f"redis-{name}")
        return f"redis://127.0.0.1:{port}/0"

    @cached_property
    def jwt(self) -> tokens.SignedJwt:
        return tokens.signed_jwt()

    def front_envoy(
        self, key: str, authorization: list[dict[str, Any]], clusters: list[dict[str, Any]]
    ) -> str:
        """A front Envoy like the gateway's with ``authorization`` in it; returns its URL."""
        port = free_port()
        bootstrap = envoy_configs.front_bootstrap(
            render_envoy_config(self.gateway, ext_authz_endpoints=["127.0.0.1:1"]),
            port=port, admin_port=free_port(), backend_port=self.backend_port,
            authorization=authorization, extra_clusters=clusters,
        )  # fmt: skip
        start_envoy(self.stack, f"envoy-{key}", bootstrap, self.workdir)
        return f"http://127.0.0.1:{port}{ROUTE_PATH}"

    def check_target(self, address: str, expect: dict[str, str], name: str) -> GrpcTarget:
        host = f"127.0.0.1:{self.gateway.envoy.listen_port}"
        request = check_request(ROUTE_PATH, ROUTE_NAME, self.session.cookie, host)
        return GrpcTarget(address, request, self.workdir / f"{name}.frame", expect)


def _no_authorization(lab: Lab) -> Target:
    return HttpTarget(lab.front_envoy("a", [], []), headers={})


def _native_ext_authz(lab: Lab) -> Target:
    filters, clusters = envoy_configs.native_ext_authz(lab.backend_port)
    url = lab.front_envoy("b", filters, clusters)
    return HttpTarget(url, headers={}, expect_headers={"x-seen-authz": "native"})


def _native_jwt(lab: Lab) -> Target:
    filters = envoy_configs.native_jwt_authn(lab.jwt.jwks, tokens.JWT_ISSUER, tokens.JWT_AUDIENCE)
    return HttpTarget(
        lab.front_envoy("c", filters, []),
        headers={"authorization": f"Bearer {lab.jwt.token}"},
        expect_headers={"x-seen-jwt-sub": tokens.JWT_SUBJECT, "x-seen-authorization": None},
        deny_status=401,
    )


def _gateway_front(lab: Lab, key: str, config: GatewayConfig, ext_authz: str) -> Target:
    """The gateway's own Envoy (``render_envoy_config``) in front of ``ext_authz``."""
    endpoints = lab.endpoints.get(ext_authz, [ext_authz])
    bootstrap = render_envoy_config(config, ext_authz_endpoints=endpoints)
    start_envoy(lab.stack, f"envoy-{key}", bootstrap, lab.workdir)
    return HttpTarget(
        f"http://127.0.0.1:{config.envoy.listen_port}{ROUTE_PATH}",
        headers={"cookie": lab.session.cookie},
        expect_headers={
            "x-seen-authorization": lab.session.injected_authorization,
            "x-seen-cookie": None,
        },
        deny_status=401,
    )


def _gateway_grpc(lab: Lab) -> Target:
    _, address = lab.ext_authz
    return _gateway_front(lab, "d", lab.gateway, address)


def _gateway_http(lab: Lab) -> Target:
    config = lab.gateway_variant("gateway-http", transport="http")
    _, address = lab.start_ext_authz("gateway-http", lab.authz_workers)
    return _gateway_front(lab, "e", config, address)


def _check_gateway(lab: Lab) -> Target:
    _, address = lab.ext_authz
    expect = {"authorization": lab.session.injected_authorization}
    return lab.check_target(address, expect, "check-gateway")


def _check_noop(lab: Lab, *, sync: bool = False) -> Target:
    port = free_port()
    argv = ["bench.noop_authz", "--listen", f"127.0.0.1:{port}", *(["--sync"] if sync else [])]
    name = "noop-authz-sync" if sync else "noop-authz"
    start_python_server(lab.stack, name, argv, [port], lab.workdir)
    return lab.check_target(f"127.0.0.1:{port}", {}, f"check-{name}")


def _check_noop_sync(lab: Lab) -> Target:
    return _check_noop(lab, sync=True)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    description: str
    start: Callable[[Lab], Target] | None
    unavailable: str = ""  # why ``start`` is None


SCENARIOS = (
    Scenario(
        "a", "Envoy, no authorization", "front Envoy straight to the backend", _no_authorization
    ),
    Scenario(
        "b", "Envoy + native ext_authz (HTTP)",
        "ext_authz http_service to an Envoy answering 200 at once: the hop's ceiling",
        _native_ext_authz,
    ),
    Scenario(
        "c", "Envoy + jwt_authn (RS256)",
        "Envoy validates an RS256 JWT against an inline JWKS on every request", _native_jwt,
    ),
    Scenario(
        "d", "gateway, gRPC ext_authz",
        "the real ext_authz over gRPC, a session in Redis, cookie in, bearer token injected",
        _gateway_grpc,
    ),
    Scenario(
        "e", "gateway, HTTP ext_authz",
        "as (d) with ext_authz.transport: http (Envoy's http_service, HTTP/1.1)", _gateway_http,
    ),
    Scenario(
        "f-gateway", "Check alone: gateway servicer",
        "gRPC Check (h2c) straight to the real ext_authz: Redis lookup, decision, logging",
        _check_gateway,
    ),
    Scenario(
        "f-noop", "Check alone: do-nothing servicer",
        "gRPC Check (h2c) to a grpc.aio servicer that returns OK at once", _check_noop,
    ),
    Scenario(
        "f-noop-sync", "Check alone: do-nothing sync servicer",
        "as f-noop on grpcio's thread-pool server (grpc.server): sync vs aio, measured",
        _check_noop_sync,
    ),
)  # fmt: skip

# The reference for the fixed rate of the latency runs: half of (b)'s maximum.
RATE_REFERENCE = "b"
