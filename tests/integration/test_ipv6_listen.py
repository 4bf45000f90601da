"""The servers on IPv6 listen addresses (``[::1]:port``), as the config accepts them."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.processes import ManagedProcess, free_port
from tests.support.polling import wait_for
from tests.support.servers import EchoBackend, RedisServer, base_config, gateway_env, write_config

pytestmark = pytest.mark.integration


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def open_on_ipv6(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection(("::1", port), timeout=0.2):
                return True
        except OSError:
            return False

    return probe


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("login", "login_metrics", "authz", "authz_metrics")}


@pytest.fixture
def ipv6_servers(
    tmp_path: Path, redis_server: RedisServer, echo_backend: EchoBackend, ports: dict[str, int]
) -> Iterator[dict[str, str]]:
    """The login app and an HTTP-mode ext_authz, every socket of theirs on [::1]."""
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    raw: dict[str, Any] = base_config(redis_url=redis_server.url, backend_url=echo_backend.url)
    urls = {name: f"http://[::1]:{port}" for name, port in ports.items()}
    raw["login_app"].update(
        listen=f"[::1]:{ports['login']}", metrics_listen=f"[::1]:{ports['login_metrics']}"
    )
    raw["ext_authz"].update(
        transport="http",
        listen=f"[::1]:{ports['authz']}",
        metrics_listen=f"[::1]:{ports['authz_metrics']}",
    )
    path = write_config(tmp_path / "gateway.yaml", raw)
    started = []
    try:
        for name, module in (("login", "login_app"), ("authz", "ext_authz")):
            process = ManagedProcess(
                module, [sys.executable, "-m", module, "--config", str(path)], env=gateway_env()
            )
            started.append(process.start(open_on_ipv6(ports[name])))
        yield urls
    finally:
        for process in reversed(started):
            process.stop()


def test_the_login_app_and_http_ext_authz_serve_on_ipv6(ipv6_servers):
    urls = ipv6_servers
    assert requests.get(urls["login"] + "/auth/health", timeout=10).status_code == 200

    def authz_healthy() -> bool:  # once its invalidation feed shows Redis answers
        return requests.get(urls["authz"] + "/healthz", timeout=10).status_code == 200

    wait_for(authz_healthy, "ext_authz to report healthy")
    json = {"Accept": "application/json"}
    check = requests.get(urls["authz"] + "/api/x", headers=json, timeout=10)
    assert check.status_code == 401  # a check Envoy would ask: no session, no entry

    for name in ("login_metrics", "authz_metrics"):
        wait_for(lambda name=name: open_on_ipv6(int(urls[name].rpartition(":")[2]))(), name)
        assert requests.get(urls[name] + "/metrics", timeout=10).status_code == 200
