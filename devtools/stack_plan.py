"""What run_stack starts for a configuration, and where it stands in with a demo server.

The rule: run_stack starts a demo server only for a URL on this machine
(``http://127.0.0.1:PORT`` or ``http://localhost:PORT``) whose PORT is one of its *dev
ports* (``--dev-ports``; by default 9000, 9100 and 9200, the stand-ins of the repository's
gateway.yaml): a dev identity provider for a provider whose issuer (oidc) or endpoints
(oauth2) are there, the echo backend for a route whose upstream is there. Every other
provider and backend is used as configured; it is checked, never started.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devtools.processes import find_binary
from devtools.redis_persistence import REDIS_PERSISTENCE_ARGS
from gateway.config import GatewayConfig, Provider, provider_secret_variable

DEFAULT_DEV_PORTS = frozenset({9000, 9100, 9200})
DEV_CLIENT_SECRET = "dev-client-secret-not-for-production"
DEV_USERS = (
    "alice:alice:alice@example.org:Alice Ärger:admins+users",
    "bob:bob:bob@example.org:Bob Bähr:users",
)
# Where the dev IdP serves each oauth2 endpoint (its paths are fixed).
DEV_IDP_PATHS = {
    "authorize_url": "/authorize",
    "token_url": "/token",
    "userinfo_url": "/userinfo",
    "revocation_url": "/revoke",
}


class PlanError(Exception):
    """The configuration asks for a stand-in run_stack cannot provide."""


@dataclass(frozen=True)
class Listener:
    """An address a server binds, and the setting that names it (for messages)."""

    address: str  # host:port or unix:/path
    setting: str
    awaited: bool = True  # part of "ready"; metrics endpoints are only checked to be free


@dataclass(frozen=True)
class Server:
    """One process to start and how to tell that it is up."""

    name: str
    argv: list[str]
    listeners: tuple[Listener, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    # A line the server prints once it listens: proof that the listener is this process's
    # and not something else's that happens to be on the port.
    announcement: str | None = None
    envoy_admin_port: int | None = None
    stand_in: bool = False  # a demo server on a dev port, in place of a real one


@dataclass(frozen=True)
class Plan:
    servers: list[Server]
    dev_idps: dict[str, int]  # provider id -> port of the dev IdP started for it
    external_providers: tuple[Provider, ...]


def parse_dev_ports(text: str) -> frozenset[int]:
    """``9000,9100,9200`` or ``none``; ValueError on anything else."""
    if text.strip().lower() == "none":
        return frozenset()
    ports = frozenset(int(part) for part in text.split(","))
    if not all(0 < port < 65536 for port in ports):
        raise ValueError(f"{text!r}: ports are 1 to 65535")
    return ports


def dev_port(url: str, dev_ports: Collection[int]) -> int | None:
    """The dev port ``url`` is on, when run_stack stands in there; None otherwise."""
    parts = urlsplit(url)
    on_this_machine = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    return parts.port if on_this_machine and parts.port in dev_ports else None


def plan_stack(
    config: GatewayConfig,
    config_path: Path,
    run_dir: Path,
    dev_ports: Collection[int],
    environ: Mapping[str, str],
) -> Plan:
    """The servers in start order; PlanError when the config mixes stand-ins and real ones
    where run_stack cannot."""
    dev_idps = _dev_idp_ports(config.providers, dev_ports)
    gateway_env = {"GATEWAY_SECRET_KEYS": environ["GATEWAY_SECRET_KEYS"]}
    for provider_id in dev_idps:
        gateway_env[provider_secret_variable(provider_id)] = _dev_secret_for(provider_id, environ)
    servers = [
        *_redis(config, run_dir),
        *_echo_backends(config, dev_ports, set(dev_idps.values())),
        *(_dev_idp(config, p, port, environ) for p, port in _with_ports(config, dev_idps)),
        *_gateway_servers(config, config_path, gateway_env),
        _envoy(config, run_dir / "envoy.yaml"),
    ]
    external = tuple(p for p in config.providers if p.id not in dev_idps)
    return Plan(servers, dev_idps, external)


def _with_ports(config: GatewayConfig, dev_idps: dict[str, int]) -> list[tuple[Provider, int]]:
    return [(p, dev_idps[p.id]) for p in config.providers if p.id in dev_idps]


def _dev_secret_for(provider_id: str, environ: Mapping[str, str]) -> str:
    # One secret for both sides: the dev IdP registers the client with the one the
    # gateway is given.
    return environ.get(provider_secret_variable(provider_id)) or DEV_CLIENT_SECRET


def _provider_urls(provider: Provider) -> dict[str, str]:
    if provider.kind == "oidc":
        return {"issuer": provider.issuer or ""}
    return {name: getattr(provider, name) for name in DEV_IDP_PATHS if getattr(provider, name)}


def _dev_idp_ports(providers: Collection[Provider], dev_ports: Collection[int]) -> dict[str, int]:
    owners: dict[int, str] = {}
    for provider in providers:
        urls = _provider_urls(provider)
        ports = {dev_port(url, dev_ports) for url in urls.values()}
        if ports == {None}:
            continue
        if len(ports) > 1:
            raise PlanError(
                f"provider {provider.id}: some endpoints are on a dev port and some are not; "
                "a dev IdP serves all of them (or use none: --dev-ports)"
            )
        (port,) = ports
        assert port is not None
        if port in owners:
            raise PlanError(f"providers {owners[port]} and {provider.id} share dev port {port}")
        _check_dev_idp_urls(provider, urls)
        owners[port] = provider.id
    return {provider_id: port for port, provider_id in owners.items()}


def _check_dev_idp_urls(provider: Provider, urls: dict[str, str]) -> None:
    for setting, url in urls.items():
        parts = urlsplit(url)
        if setting == "issuer" and parts.path:
            # The issuer is compared byte for byte: the dev IdP's has no path, no slash.
            raise PlanError(
                f"provider {provider.id}: issuer {url} is on a dev port, but the dev IdP's "
                f"issuer is http://{parts.netloc} (no path)"
            )
        if setting != "issuer" and parts.path != DEV_IDP_PATHS[setting]:
            raise PlanError(
                f"provider {provider.id}: {setting} {url} is on a dev port, but the dev IdP "
                f"serves it at path {DEV_IDP_PATHS[setting]!r}"
            )


def _redis(config: GatewayConfig, run_dir: Path) -> list[Server]:
    parts = urlsplit(config.redis.url)
    local = parts.scheme == "redis" and parts.hostname in ("127.0.0.1", "localhost")
    if config.redis.mode != "standalone" or not local:
        return []  # a Redis elsewhere (or with TLS, or a cluster) is used as configured
    port = parts.port or 6379
    argv = [
        find_binary("redis-server"),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(run_dir / "redis")),
        # The persistence refreshed tokens need (see devtools.redis_persistence), its files
        # in the run directory, so a restarted `make run` keeps everyone logged in.
        *REDIS_PERSISTENCE_ARGS,
    ]
    listener = Listener(f"127.0.0.1:{port}", "redis.url")
    return [Server("redis", argv, (listener,), announcement="Ready to accept connections")]


def _echo_backends(
    config: GatewayConfig, dev_ports: Collection[int], idp_ports: set[int]
) -> list[Server]:
    routes_by_port: dict[int, list[str]] = {}
    for route in config.routes:
        port = dev_port(route.upstream, dev_ports)
        if port is not None:
            routes_by_port.setdefault(port, []).append(route.name)
    servers = []
    for port, names in sorted(routes_by_port.items()):
        if port in idp_ports:
            raise PlanError(f"dev port {port} is both a provider's and route {names[0]}'s")
        servers.append(
            Server(
                f"echo-backend-{port}",
                [sys.executable, "-m", "devtools.echo_backend", "--port", str(port)],
                (Listener(f"127.0.0.1:{port}", f"routes[{names[0]}].upstream"),),
                announcement="echo backend listening on",
                stand_in=True,
            )
        )
    return servers


def _dev_idp(
    config: GatewayConfig, provider: Provider, port: int, environ: Mapping[str, str]
) -> Server:
    public = config.public_url
    prefix = config.login_app.path_prefix
    url = next(iter(_provider_urls(provider).values()))
    host = urlsplit(url).hostname or "127.0.0.1"
    secret = _dev_secret_for(provider.id, environ)
    argv = [
        sys.executable, "-m", "devtools.dev_idp", "--host", host, "--port", str(port),
        "--mode", provider.kind, "--issuer", f"http://{urlsplit(url).netloc}",
        "--client", f"{provider.client_id}:{secret}:{public}{prefix}/callback",
    ]  # fmt: skip
    for user in DEV_USERS:
        argv += ["--user", user]
    if provider.kind == "oidc":
        argv += [
            "--post-logout-redirect-uri",
            f"{public}{prefix}/logged-out",
            "--backchannel-logout-uri",
            f"http://{config.login_app.listen}{prefix}/backchannel-logout",
        ]
    setting = "issuer" if provider.kind == "oidc" else "authorize_url"
    listener = Listener(f"{host}:{port}", f"providers[{provider.id}].{setting}")
    announcement = "dev-idp listening on"
    return Server(f"idp-{provider.id}", argv, (listener,), announcement=announcement, stand_in=True)


def _gateway_servers(
    config: GatewayConfig, config_path: Path, env: Mapping[str, str]
) -> list[Server]:
    authz = [
        Listener(address, "ext_authz.listen" + (f" (worker {i})" if i else ""))
        for i, address in enumerate(config.ext_authz.endpoints())
    ]
    if config.ext_authz.metrics_listen:
        authz.append(Listener(config.ext_authz.metrics_listen, "ext_authz.metrics_listen", False))
    login = [Listener(config.login_app.listen, "login_app.listen")]
    if config.login_app.metrics_listen:
        login.append(Listener(config.login_app.metrics_listen, "login_app.metrics_listen", False))

    def argv(module: str) -> list[str]:
        return [sys.executable, "-m", module, "--config", str(config_path)]

    return [
        Server("ext-authz", argv("ext_authz"), tuple(authz), env),
        Server("login-app", argv("login_app"), tuple(login), env),
    ]


def _envoy(config: GatewayConfig, bootstrap: Path) -> Server:
    envoy = config.envoy
    argv = [
        find_binary("envoy"), "-c", str(bootstrap), "--disable-hot-restart",
        "--log-level", "warning",
    ]  # fmt: skip
    listeners = (
        Listener(f"{envoy.listen_address}:{envoy.listen_port}", "envoy.listen_port"),
        Listener(f"127.0.0.1:{envoy.admin_port}", "envoy.admin_port"),
    )
    return Server("envoy", argv, listeners, envoy_admin_port=envoy.admin_port)
