"""The gateway's real components as test servers: redis-server, echo backend, ext_authz, Envoy."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import redis
import yaml

from devtools.processes import (
    ManagedProcess,
    envoy_ready,
    find_binary,
    free_port,
    listening,
    port_open,
)
from devtools.redis_persistence import REDIS_PERSISTENCE_ARGS

TEST_SECRET = "test-server-secret-0123456789abcdef-0123456789"


class RedisServer:
    """A redis-server on a free port; without persistence unless ``persistence`` asks for
    the shipped one (devtools.redis_persistence), for tests that kill and restart it."""

    def __init__(self, directory: Path, *, persistence: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        durability = REDIS_PERSISTENCE_ARGS if persistence else ("--save", "", "--appendonly", "no")
        self._process = ManagedProcess(
            "redis-server",
            [
                find_binary("redis-server"),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *durability,
                *("--dir", str(directory)),
            ],
        )

    def start(self) -> RedisServer:
        self._process.start(lambda: port_open(self.port))
        return self

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel, never answered."""
        self._process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.signal(signal.SIGCONT)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, as in a crash: nothing is flushed that was not already."""
        self._process.signal(signal.SIGKILL)
        assert self._process.process is not None
        self._process.process.wait(timeout)

    def start_again(self, timeout: float = 30.0) -> None:
        """After :meth:`kill`: start on the same port and directory (loading what it had
        persisted, nothing more)."""
        self._process.start(lambda: port_open(self.port), timeout=timeout)

    def restart(self) -> None:
        """Stop and start the server on the same port with the same data (an RDB snapshot
        taken just before): every connection a client had pooled is now dead."""
        client = redis.Redis.from_url(self.url, socket_timeout=10)
        try:
            client.save()
        finally:
            client.close()
        self._process.stop()
        self._process.start(lambda: port_open(self.port))

    def stop(self) -> None:
        self._process.stop()


class EchoBackend:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = ManagedProcess(
            "echo-backend",
            [sys.executable, "-m", "devtools.echo_backend", "--port", str(self.port)],
        )

    def start(self) -> EchoBackend:
        self._process.start(lambda: port_open(self.port))
        return self

    def stop(self) -> None:
        self._process.stop()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def gateway_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"GATEWAY_SECRET_KEYS": TEST_SECRET, **(extra or {})}


class _ExtAuthzProcess:
    """What the tests do with an ext_authz process, one worker or a supervisor."""

    _process: ManagedProcess
    _stop_timeout = 10.0

    def output(self) -> str:
        return self._process.output()

    def signal(self, signum: int) -> None:
        """Signal the process (a supervisor forwards SIGHUP and SIGTERM to its workers)."""
        self._process.signal(signum)

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def stop(self) -> int | None:
        return self._process.stop(timeout=self._stop_timeout)


class ExtAuthzServer(_ExtAuthzProcess):
    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_address = f"127.0.0.1:{free_port()}"
        self._process = ManagedProcess(
            "ext-authz",
            [
                sys.executable, "-m", "ext_authz", "--config", str(config_path),
                "--listen", self.address, "--metrics-listen", self.metrics_address,
            ],
            env=gateway_env(env),
        )  # fmt: skip

    def start(self) -> ExtAuthzServer:
        self._process.start(lambda: port_open(self.port))
        return self


class SupervisedExtAuthz(_ExtAuthzProcess):
    """``python -m ext_authz`` as deployed: one supervisor and ``workers`` worker processes
    on consecutive ports (``ExtAuthzSettings.endpoints``)."""

    _stop_timeout = 20.0  # the workers stop first

    def __init__(self, config_path: Path, endpoints: list[str], env: dict[str, str]) -> None:
        self.endpoints = endpoints
        self.address = endpoints[0]
        self._process = ManagedProcess(
            "ext-authz-supervisor",
            [sys.executable, "-m", "ext_authz", "--config", str(config_path)],
            env=gateway_env(env),
        )

    def start(self, timeout: float = 30.0) -> SupervisedExtAuthz:
        self._process.start(lambda: all(listening(a) for a in self.endpoints), timeout=timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes, oldest first (from /proc, so at any log
        level): the supervisor's children that run multiprocessing's spawn entry point."""
        pid = self._process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = []
        for child in sorted(int(c) for c in children):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:  # exited meanwhile
                continue
            if any(b"spawn_main" in part for part in command):
                workers.append(child)
        return workers


class EnvoyServer:
    """A real Envoy running the bootstrap we render from the gateway config."""

    def __init__(
        self, config_path: Path, bootstrap_path: Path, ext_authz_addresses: list[str]
    ) -> None:
        self.config_path = config_path
        self.bootstrap_path = bootstrap_path
        self.ext_authz_addresses = ext_authz_addresses
        self._process: ManagedProcess | None = None

    def start(self) -> EnvoyServer:
        from gateway.config import load_config
        from gateway.envoy.render import render_envoy_yaml

        config = load_config(self.config_path, gateway_env())
        self.port = config.envoy.listen_port
        self.admin_port = config.envoy.admin_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.bootstrap_path.write_text(
            render_envoy_yaml(config, ext_authz_endpoints=self.ext_authz_addresses)
        )
        self._process = ManagedProcess(
            "envoy",
            [
                find_binary("envoy"),
                "-c",
                str(self.bootstrap_path),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
            ],
        )
        self._process.start(lambda: envoy_ready(self.admin_port, self.port), timeout=30)
        return self

    def output(self) -> str:
        return self._process.output() if self._process else ""

    def stop(self) -> None:
        if self._process:
            self._process.stop()


def base_config(
    *,
    redis_url: str,
    backend_url: str,
    envoy_port: int | None = None,
    admin_port: int | None = None,
) -> dict[str, Any]:
    """A small gateway config with two providers and one route of every kind."""
    envoy_port = envoy_port or free_port()
    return {
        "public_url": f"http://127.0.0.1:{envoy_port}",
        "log_level": "info",
        "session": {"cookie_name": "gw_session", "absolute_lifetime": "1h", "idle_timeout": "30m"},
        "redis": {"url": redis_url, "timeout": "250ms"},
        "ext_authz": {"timeout": "1s", "metrics_listen": f"127.0.0.1:{free_port()}"},
        "login_app": {
            "listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{free_port()}",
        },
        "envoy": {
            "listen_address": "127.0.0.1",
            "listen_port": envoy_port,
            "admin_port": admin_port or free_port(),
        },
        "providers": [
            {"id": "primary", "kind": "oidc", "issuer": "http://127.0.0.1:1", "client_id": "gw"},
            {
                "id": "gitlab",
                "kind": "oauth2",
                "authorize_url": "http://127.0.0.1:1/authorize",
                "token_url": "http://127.0.0.1:1/token",
                "client_id": "gw",
            },
        ],
        "routes": [
            {
                "name": "api",
                "prefix": "/api/",
                "upstream": backend_url,
                "provider": "primary",
                "identity_headers": True,
            },
            {
                "name": "gitlab",
                "prefix": "/gitlab/",
                "upstream": backend_url,
                "provider": "gitlab",
                "token_format": "private_token",
            },
            {
                "name": "git",
                "prefix": "/repos/",
                "upstream": backend_url,
                "provider": "gitlab",
                "token_format": "basic_oauth2",
            },
            {
                "name": "notebooks",
                "prefix": "/jupyter/",
                "upstream": backend_url,
                "provider": "primary",
                "token_format": "token",
            },
            {
                "name": "catalog",
                "prefix": "/catalog/",
                "upstream": backend_url,
                "provider": "primary",
                "anonymous": True,
                "identity_headers": True,
            },
            {"name": "status", "prefix": "/status", "upstream": backend_url, "public": True},
        ],
    }


class LoginAppServer:
    def __init__(self, config_path: Path, listen: str, env: dict[str, str] | None = None) -> None:
        self.address = listen
        self.port = int(listen.rpartition(":")[2])
        self._process = ManagedProcess(
            "login-app",
            [sys.executable, "-m", "login_app", "--config", str(config_path)],
            env=gateway_env(env),
        )

    def start(self) -> LoginAppServer:
        self._process.start(lambda: port_open(self.port))
        return self

    def output(self) -> str:
        return self._process.output()

    def signal(self, signum: int) -> None:
        self._process.signal(signum)

    def stop(self) -> None:
        self._process.stop()
