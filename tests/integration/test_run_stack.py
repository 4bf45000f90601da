"""`python -m devtools.run_stack` as a developer runs it, on free ports and its own run dir.

It starts a dev IdP only where the config puts a provider on one of its dev ports, uses
every other provider as it is, says "up" only once all it started is up, and names the
process and the cause when one cannot start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.processes import ManagedProcess, envoy_ready, free_port, listening
from tests.support.dev_idp import DevIdp, start_dev_idp
from tests.support.login import HTML, follow
from tests.support.servers import TEST_SECRET, write_config

pytestmark = pytest.mark.integration

UP_LINE = "The gateway is up at "
PRIMARY_SECRET = "external-primary-secret"
# Generous: a busy two-core machine starts Envoy and five Python servers one after another.
START_TIMEOUT_SECONDS = 240
STOP_TIMEOUT_SECONDS = 60


def gateway_config(
    envoy_port: int, redis_port: int, backend_url: str, providers: list[dict[str, Any]]
) -> dict[str, Any]:
    """A config of the repository's shape on free ports: two routes, the given providers."""
    return {
        "public_url": f"http://127.0.0.1:{envoy_port}",
        "session": {"cookie_name": "rs_session"},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
        "ext_authz": {"listen": f"127.0.0.1:{free_port()}", "metrics_listen": None},
        "login_app": {"listen": f"127.0.0.1:{free_port()}", "metrics_listen": None},
        "envoy": {
            "listen_address": "127.0.0.1",
            "listen_port": envoy_port,
            "admin_port": free_port(),
        },
        "providers": providers,
        "routes": [
            {
                "name": "api",
                "prefix": "/api/",
                "upstream": backend_url,
                "provider": providers[0]["id"],
                "identity_headers": True,
            },
            {
                "name": "gitlab",
                "prefix": "/gitlab/",
                "upstream": backend_url,
                "provider": providers[-1]["id"],
                "token_format": "private_token",
            },
        ],
    }


def oidc_provider(issuer: str) -> dict[str, Any]:
    return {
        "id": "primary",
        "kind": "oidc",
        "issuer": issuer,
        "client_id": "gw",
        "scopes": ["openid", "profile", "email"],
    }


def oauth2_provider(base: str) -> dict[str, Any]:
    return {
        "id": "gitlab",
        "kind": "oauth2",
        "client_id": "gw",
        "authorize_url": f"{base}/authorize",
        "token_url": f"{base}/token",
        "userinfo_url": f"{base}/userinfo",
        "revocation_url": f"{base}/revoke",
        "scopes": ["api"],
    }


def run_stack_argv(config_path: Path, run_dir: Path, dev_ports: list[int]) -> list[str]:
    return [
        sys.executable, "-m", "devtools.run_stack", "--config", str(config_path),
        "--run-dir", str(run_dir), "--dev-ports", ",".join(map(str, dev_ports)) or "none",
        "--start-timeout", str(START_TIMEOUT_SECONDS),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    from gateway.config import provider_secret_variable

    return {
        "GATEWAY_SECRET_KEYS": TEST_SECRET,
        provider_secret_variable("primary"): PRIMARY_SECRET,
    }


def addresses(raw: dict[str, Any]) -> list[str]:
    """Every address the stack's own servers listen on."""
    return [
        raw["redis"]["url"].removeprefix("redis://").removesuffix("/0"),
        raw["ext_authz"]["listen"],
        raw["login_app"]["listen"],
        f"127.0.0.1:{raw['envoy']['listen_port']}",
        f"127.0.0.1:{raw['envoy']['admin_port']}",
    ]


def dev_idp_ports_started_by(pid: int) -> set[int]:
    """The --port of every dev IdP that process ``pid`` has as a child (Linux /proc)."""
    ports = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == pid and "devtools.dev_idp" in argv:
            ports.add(int(argv[argv.index("--port") + 1]))
    return ports


@pytest.fixture
def external_idp(tmp_path: Path) -> Iterator[tuple[DevIdp, int]]:
    """Our dev IdP started here, not by run_stack: to run_stack a provider like any other.
    Yields it and the Envoy port its client's redirect URI names."""
    envoy_port = free_port()
    public = f"http://127.0.0.1:{envoy_port}"
    idp = start_dev_idp(
        clients=[f"gw:{PRIMARY_SECRET}:{public}/auth/callback"],
        post_logout_redirect_uris=[f"{public}/auth/logged-out"],
    )
    yield idp, envoy_port
    idp.stop()


def test_only_providers_on_dev_ports_get_a_dev_idp_and_up_means_up(
    tmp_path: Path, external_idp: tuple[DevIdp, int]
) -> None:
    idp, envoy_port = external_idp
    gitlab_port, backend_port = free_port(), free_port()
    raw = gateway_config(
        envoy_port,
        free_port(),
        f"http://127.0.0.1:{backend_port}",
        [oidc_provider(idp.issuer), oauth2_provider(f"http://127.0.0.1:{gitlab_port}")],
    )
    config_path = write_config(tmp_path / "gateway.yaml", raw)
    argv = run_stack_argv(config_path, tmp_path / "run", [gitlab_port, backend_port])
    run_stack = ManagedProcess("run-stack", argv, env=environment())

    def said_up() -> bool:
        return UP_LINE in run_stack.output()

    run_stack.start(said_up, timeout=START_TIMEOUT_SECONDS * 2)
    try:
        # Checked the moment it says "up": everything it started answers already.
        stack_addresses = addresses(raw)
        stand_ins = [f"127.0.0.1:{gitlab_port}", f"127.0.0.1:{backend_port}"]
        not_up = [a for a in stack_addresses + stand_ins if not listening(a)]
        assert not not_up, run_stack.output()
        assert envoy_ready(raw["envoy"]["admin_port"], envoy_port)
        assert dev_idp_ports_started_by(run_stack.pid) == {gitlab_port}

        output = run_stack.output()
        before_up = output.partition(UP_LINE)[0]
        assert "started idp-gitlab" in before_up
        assert f"started echo-backend-{backend_port}" in before_up
        assert "idp-primary" not in output
        assert "provider primary" in before_up and "discovery answers" in before_up
        assert "warning" not in output

        # alice logs in at the provider run_stack did not start, then at the one it did.
        browser = requests.Session()
        public = raw["public_url"]
        first = browser.get(f"{public}/api/whoami", headers=HTML, allow_redirects=False, timeout=10)
        page = follow(browser, first)
        assert page.status_code == 200, page.text
        assert page.url == f"{public}/api/whoami"
        seen = page.json()["headers"]
        assert seen["authorization"][0].startswith("Bearer ")
        assert seen["x-gateway-user-email"] == ["alice@example.org"]
        gitlab = browser.get(f"{public}/gitlab/x", headers=HTML, timeout=10)
        assert gitlab.status_code == 200 and gitlab.json()["headers"]["private-token"]
        # The code exchange authenticated with the secret from the environment.
        assert idp.stats()["token_requests"]["authorization_code"] == {"ok": 1}
    finally:
        status = run_stack.stop(timeout=STOP_TIMEOUT_SECONDS)
    assert status == 0, run_stack.output()
    left = [a for a in addresses(raw) + stand_ins if listening(a)]
    assert not left, f"still listening after run_stack stopped: {left}"


def run_to_failure(config_path: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_stack_argv(config_path, run_dir, []),
        env={**os.environ, **environment()},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS * 2,
    )


def test_a_port_in_use_is_named_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    raw = gateway_config(
        free_port(), free_port(), f"http://127.0.0.1:{free_port()}",
        [oidc_provider("http://127.0.0.1:1")],
    )  # fmt: skip
    config_path = write_config(tmp_path / "gateway.yaml", raw)
    login_address = raw["login_app"]["listen"]
    host, _, port = login_address.rpartition(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        result = run_to_failure(config_path, tmp_path / "run")

    assert result.returncode == 1, result
    assert UP_LINE not in result.stdout
    assert "started" not in result.stdout  # nothing was started to be left behind
    assert result.stderr.strip().splitlines() == [
        f"run_stack: login-app cannot start: port {login_address} (login_app.listen) is in use"
    ]


def test_a_process_dying_at_start_is_named_with_its_cause_and_the_rest_stopped(
    tmp_path: Path,
) -> None:
    raw = gateway_config(
        free_port(), free_port(), f"http://127.0.0.1:{free_port()}",
        [oidc_provider("http://127.0.0.1:1")],
    )  # fmt: skip
    # A socket in a directory that does not exist: ext_authz exits when it binds.
    raw["ext_authz"]["listen"] = f"unix:{tmp_path / 'missing' / 'authz.sock'}"
    config_path = write_config(tmp_path / "gateway.yaml", raw)
    result = run_to_failure(config_path, tmp_path / "run")

    assert result.returncode == 1, result
    assert UP_LINE not in result.stdout
    assert "started redis" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("run_stack: ext-authz exited during start (status "), line
    assert "log: " + str(tmp_path / "run" / "logs" / "ext-authz.log") in line
    redis_address = addresses(raw)[0]
    assert not listening(redis_address), "redis was left running"
