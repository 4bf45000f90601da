"""`make run`: the whole gateway on this machine, from gateway.yaml.

Starts Redis, the demo echo backend, the dev identity providers, ext_authz, the login app
and Envoy; prints where to go; stops everything on Ctrl-C. Logs go to .run/logs/. When
GATEWAY_SECRET_KEYS is not set, a development secret is generated once into .run/ (never
committed) so sessions survive a restart of the stack.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from devtools.processes import REPO_ROOT, ManagedProcess, envoy_ready, find_binary, port_open
from gateway.config import GatewayConfig, load_config, provider_secret_variable
from gateway.envoy_config import render_envoy_yaml
from gateway.errors import ConfigError

RUN_DIR = REPO_ROOT / ".run"
LOGS = RUN_DIR / "logs"


def _dev_secret() -> str:
    path = RUN_DIR / "secret-key"
    if not path.exists():
        RUN_DIR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _listening(address: str) -> bool:
    """Something accepts connections at ``host:port`` or ``unix:/path``."""
    if not address.startswith("unix:"):
        host, port = _host_port(address)
        return port_open(port, host)
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(address.removeprefix("unix:"))
        except OSError:
            return False
    return True


def _local_port(url: str) -> int | None:
    """The explicit port of ``url`` when it is on this machine: where a dev server
    (echo backend, dev IdP) stands in; None for anything else (a real GitLab)."""
    parts = urlsplit(url)
    return parts.port if parts.hostname in ("127.0.0.1", "localhost") else None


def _processes(config: GatewayConfig, config_path: Path, env: dict[str, str]) -> list[tuple]:
    """(process, ready check) in start order."""
    python = sys.executable
    redis_port = urlsplit(config.redis.url).port or 6379
    (RUN_DIR / "redis").mkdir(parents=True, exist_ok=True)
    plan: list[tuple] = [
        (
            ManagedProcess(
                "redis",
                [
                    find_binary("redis-server"),
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(RUN_DIR / "redis"),
                    "--save",
                    "60 1",
                    "--appendonly",
                    "no",
                ],
                log_dir=LOGS,
            ),
            lambda: port_open(redis_port),
        )
    ]
    local_upstreams = {_local_port(route.upstream) for route in config.routes}
    for port in sorted(port for port in local_upstreams if port is not None):
        plan.append(
            (
                ManagedProcess(
                    f"echo-backend-{port}",
                    [python, "-m", "devtools.echo_backend", "--port", str(port)],
                    log_dir=LOGS,
                ),
                lambda port=port: port_open(port),
            )
        )
    plan += _dev_idps(config)
    gateway_servers = [
        ("ext-authz", "ext_authz", config.ext_authz.endpoints()),
        ("login-app", "login_app", (config.login_app.listen,)),
    ]
    for name, module, addresses in gateway_servers:
        argv = [python, "-m", module, "--config", str(config_path)]
        plan.append(
            (
                ManagedProcess(name, argv, env=env, log_dir=LOGS),
                lambda addresses=addresses: all(_listening(a) for a in addresses),
            )
        )
    bootstrap = RUN_DIR / "envoy.yaml"
    bootstrap.write_text(render_envoy_yaml(config))
    plan.append(
        (
            ManagedProcess(
                "envoy",
                [
                    find_binary("envoy"),
                    "-c",
                    str(bootstrap),
                    "--disable-hot-restart",
                    "--log-level",
                    "warning",
                ],
                log_dir=LOGS,
            ),
            lambda: envoy_ready(config.envoy.admin_port),
        )
    )
    return plan


DEV_CLIENT_SECRET = "dev-client-secret-not-for-production"


def _dev_idps(config: GatewayConfig) -> list[tuple]:
    """A dev identity provider for each provider whose endpoints are on this machine."""
    public = config.public_url
    prefix = config.login_app.path_prefix
    plan: list[tuple] = []
    for provider in config.providers:
        url = (provider.issuer if provider.kind == "oidc" else provider.authorize_url) or ""
        port = _local_port(url)
        if port is None:
            continue
        parts = urlsplit(url)
        argv = [
            sys.executable,
            "-m",
            "devtools.dev_idp",
            "--host",
            parts.hostname,
            "--port",
            str(port),
            "--mode",
            provider.kind,
            "--issuer",
            f"{parts.scheme}://{parts.netloc}",
            "--client",
            f"{provider.client_id}:{DEV_CLIENT_SECRET}:{public}{prefix}/callback",
            "--user",
            "alice:alice:alice@example.org:Alice Ärger:admins+users",
            "--user",
            "bob:bob:bob@example.org:Bob Bähr:users",
        ]
        if provider.kind == "oidc":
            argv += [
                "--post-logout-redirect-uri",
                f"{public}{prefix}/logged-out",
                "--backchannel-logout-uri",
                f"http://{config.login_app.listen}{prefix}/backchannel-logout",
            ]
        plan.append(
            (
                ManagedProcess(f"idp-{provider.id}", argv, log_dir=LOGS),
                lambda port=port: port_open(port),
            )
        )
    return plan


def _environment(secret_keys: str, provider_ids: list[str]) -> dict[str, str]:
    """Secrets for the processes: each provider's client secret from the environment, else
    the one the dev IdPs are started with."""
    env = {"GATEWAY_SECRET_KEYS": secret_keys}
    for provider_id in provider_ids:
        name = provider_secret_variable(provider_id)
        env[name] = os.environ.get(name) or DEV_CLIENT_SECRET
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "gateway.yaml"))
    args = parser.parse_args(argv)
    config_path = Path(args.config).resolve()
    secret_keys = os.environ.get("GATEWAY_SECRET_KEYS") or _dev_secret()
    try:
        config = load_config(config_path, {**os.environ, "GATEWAY_SECRET_KEYS": secret_keys})
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    env = _environment(secret_keys, [provider.id for provider in config.providers])

    started: list[ManagedProcess] = []
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for process, ready in _processes(config, config_path, env):
            # Ctrl-C ends the wait for a process at once, not when it is ready or timed out.
            process.start(lambda ready=ready: stop_requested or ready(), timeout=30)
            started.append(process)
            if stop_requested:
                return 0
            print(f"  started {process.name:<16} log: {process.log_path.relative_to(REPO_ROOT)}")
        print(f"\nThe gateway is up at {config.public_url}\n")
        print(f"Log in with a browser: open {config.public_url}/api/hello and sign in as")
        print("alice / alice at each dev identity provider. Log out: /auth/logout\n")
        print("Create a session and call the demo backend through Envoy:")
        if "GATEWAY_SECRET_KEYS" not in os.environ:
            print("  export GATEWAY_SECRET_KEYS=$(cat .run/secret-key)")
        print(
            "  COOKIE=$(.venv/bin/gateway session create --user alice --token primary=demo-token)"
        )
        print(f"  curl -s -b {config.cookie_name}=$COOKIE {config.public_url}/api/hello\n")
        print("Press Ctrl-C to stop.")
        while not stop_requested:
            for process in started:
                if process.process is not None and process.process.poll() is not None:
                    print(f"{process.name} exited; see {process.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    except RuntimeError as exc:  # a process exited or was not ready; with its output
        print(exc, file=sys.stderr)
        return 1
    finally:
        for process in reversed(started):
            process.stop()


if __name__ == "__main__":
    sys.exit(main())
