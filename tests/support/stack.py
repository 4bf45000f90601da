"""The whole gateway on real sockets: Redis, echo backend, ext_authz and Envoy together."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devtools.processes import free_ports
from gateway.config import GatewayConfig, load_config, provider_secret_variable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import sync_store
from gateway.sessions.model import Identity, TokenSet
from tests.support.dev_idp import DevIdp, start_dev_idp
from tests.support.redis_topologies import RedisCluster3, SentinelGroup
from tests.support.servers import (
    EchoBackend,
    EnvoyServer,
    ExtAuthzServer,
    LoginAppServer,
    RedisServer,
    SupervisedExtAuthz,
    base_config,
    gateway_env,
    write_config,
)

PRIMARY_SECRET = "primary-client-secret"
GITLAB_SECRET = "gitlab-client-secret"


@dataclass
class Stack:
    config_path: Path
    config: GatewayConfig
    ext_authz: ExtAuthzServer | SupervisedExtAuthz  # the first worker, or the supervisor
    envoy: EnvoyServer
    stoppers: list[Callable[[], Any]] = field(default_factory=list)
    login_app: LoginAppServer | None = None
    idps: dict[str, DevIdp] = field(default_factory=dict)
    workers: list[ExtAuthzServer] = field(default_factory=list)
    supervisor: SupervisedExtAuthz | None = None

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def cookie_name(self) -> str:
        return self.config.cookie_name

    def create_session(
        self,
        user: str = "alice",
        *,
        tokens: dict[str, str] | None = None,
        token_ttl: float | None = 3600,
        lifetime: float = 3600,
        email: str = "alice@example.org",
        name: str = "Alice Ärger",
    ) -> SessionCredential:
        """Write a session straight into Redis, as the login app would."""
        now = time.time()
        token_expiry = int(now + token_ttl) if token_ttl is not None else 0
        credential, _ = sync_store(self.config).create(
            Identity(subject=user, email=email, name=name),
            {
                provider: TokenSet(access_token=token, expires_at=token_expiry)
                for provider, token in (tokens or {}).items()
            },
            now,
            lifetime=lifetime,
        )
        return credential

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            stop()


def start_stack(
    directory: Path,
    redis: RedisServer,
    backend: EchoBackend,
    adjust: Callable[[dict[str, Any]], None] | None = None,
    *,
    with_login: bool = False,
    idp_args: Sequence[str] = (),
    authz_workers: int = 1,
    supervised: bool = False,
) -> Stack:
    """Start the gateway; ``with_login`` adds the login app and two dev IdPs:
    ``primary`` (OIDC, the identity) and ``gitlab`` (plain OAuth2). ``authz_workers`` are
    separate processes, or with ``supervised`` the workers of one supervisor as deployed
    (``Stack.supervisor``; ``Stack.workers`` is then empty)."""
    raw = base_config(redis_url=redis.url, backend_url=backend.url)
    stoppers: list[Callable[[], Any]] = []
    idps: dict[str, DevIdp] = {}
    env: dict[str, str] = {}
    try:
        if with_login:
            idps = _start_idps(raw, idp_args, stoppers)
            env = {
                provider_secret_variable("primary"): PRIMARY_SECRET,
                provider_secret_variable("gitlab"): GITLAB_SECRET,
            }
        if supervised:
            first = free_ports(authz_workers)
            raw["ext_authz"].update(listen=f"127.0.0.1:{first}", workers=authz_workers)
        if adjust:
            adjust(raw)
        config_path = write_config(directory / "gateway.yaml", raw)
        config = load_config(config_path, gateway_env(env))
        workers: list[ExtAuthzServer] = []
        supervisor = None
        if supervised:
            supervisor = SupervisedExtAuthz(config_path, list(config.ext_authz.endpoints()), env)
            stoppers.append(supervisor.start().stop)
        for _ in range(0 if supervised else authz_workers):
            workers.append(ExtAuthzServer(config_path, env).start())
            stoppers.append(workers[-1].stop)
        login_app = None
        if with_login:
            login_app = LoginAppServer(config_path, config.login_app.listen, env).start()
            stoppers.append(login_app.stop)
        addresses = supervisor.endpoints if supervisor else [w.address for w in workers]
        envoy = EnvoyServer(config_path, directory / "envoy.yaml", addresses).start()
        stoppers.append(envoy.stop)
    except Exception:
        for stop in reversed(stoppers):
            stop()
        raise
    first_worker = workers[0] if workers else supervisor
    assert first_worker is not None  # authz_workers >= 1 started one or the other
    return Stack(
        config_path, config, first_worker, envoy, stoppers, login_app, idps, workers, supervisor
    )


def without_session_cache(raw: dict[str, Any]) -> None:
    """An adjust for start_stack: every check reads Redis (what a test did to a key there
    shows at once, and each check draws a pooled connection)."""
    raw["ext_authz"]["session_cache_ttl"] = "0s"


def start_stack_on(
    directory: Path, topology: SentinelGroup | RedisCluster3, backend: EchoBackend
) -> Stack:
    """Start the gateway on a Sentinel group or a cluster instead of a single Redis."""

    def on_topology(raw: dict[str, Any]) -> None:
        raw["redis"].update(topology.redis_settings())
        # Cached sessions would answer for a minute: only invalidations can end them sooner.
        raw["ext_authz"]["session_cache_ttl"] = "60s"

    return start_stack(directory, topology, backend, on_topology)


def api_get(
    stack: Stack, credential: SessionCredential, http: requests.Session | None = None
) -> requests.Response:
    """GET /api/x through Envoy with the session's cookie, as an API client would."""
    return (http or requests).get(
        stack.url + "/api/x",
        headers={
            "Cookie": f"{stack.cookie_name}={credential.encode()}",
            "Accept": "application/json",
        },
        timeout=10,
    )


def _start_idps(
    raw: dict[str, Any], idp_args: Sequence[str], stoppers: list[Callable[[], Any]]
) -> dict[str, DevIdp]:
    public = raw["public_url"]
    callback = f"{public}/auth/callback"
    primary = start_dev_idp(
        mode="oidc",
        clients=[f"gw:{PRIMARY_SECRET}:{callback}"],
        post_logout_redirect_uris=[f"{public}/auth/logged-out"],
        backchannel_logout_uri=f"{public}/auth/backchannel-logout",
        extra_args=idp_args,
    )
    stoppers.append(primary.stop)
    gitlab = start_dev_idp(
        mode="oauth2", clients=[f"gw:{GITLAB_SECRET}:{callback}"], extra_args=idp_args
    )
    stoppers.append(gitlab.stop)
    raw["providers"] = [
        {
            "id": "primary",
            "kind": "oidc",
            "issuer": primary.issuer,
            "client_id": "gw",
            "scopes": ["openid", "profile", "email"],
        },
        {
            "id": "gitlab",
            "kind": "oauth2",
            "client_id": "gw",
            "authorize_url": f"{gitlab.url}/authorize",
            "token_url": f"{gitlab.url}/token",
            "userinfo_url": f"{gitlab.url}/userinfo",
            "revocation_url": f"{gitlab.url}/revoke",
            "scopes": ["api"],
        },
    ]
    return {"primary": primary, "gitlab": gitlab}
